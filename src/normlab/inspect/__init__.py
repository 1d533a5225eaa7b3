"""What happens inside: norm statistics recorded over training.

    normlab train lenet_bn --record-stats --out runs/bn      writes runs/bn/stats.jsonl
"""
from .stats import NORM_TYPES, StatsRecorder, describe_norms, norm_layers, read_stats, weighted_layers

__all__ = ["NORM_TYPES", "StatsRecorder", "describe_norms", "norm_layers", "read_stats", "weighted_layers"]
