"""What happens inside: norm statistics recorded over training, and batch-norm recalibration.

    normlab train lenet_bn --record-stats --out runs/bn      writes runs/bn/stats.jsonl
    normlab inspect runs/bn                                  γ/β, a per-layer table, plots
    normlab inspect runs/bn --recalibrate --method precise   test accuracy before and after

    from normlab.inspect import recalibrate
    recalibrate(model, train_iter, method="precise", num_batches=200)
"""
from .recalibrate import METHODS, recalibrate, running_stat_layers
from .stats import NORM_TYPES, StatsRecorder, describe_norms, norm_layers, read_stats, weighted_layers

__all__ = ["METHODS", "NORM_TYPES", "StatsRecorder", "describe_norms", "norm_layers", "read_stats",
           "recalibrate", "running_stat_layers", "weighted_layers"]
