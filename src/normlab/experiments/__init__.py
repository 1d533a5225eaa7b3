"""Declarative comparisons: a TOML spec -> runs (grid × variants × seeds) -> a report.

    spec.py      load_spec, expand, list_presets
    runner.py      run_experiment: one run directory per run, in parallel processes, resumable,
                   in shards (--shard K/N) that share one folder
    ray_engine.py  every run a task on a Ray cluster (--ray)
    report.py      write_report: report.md, results.csv and overlay plots, mean ± std over seeds
    verdicts.py    95% intervals over seeds, Welch's test against the baseline variant
"""
from normlab.experiments.spec import Run, Spec, SpecError, expand, list_presets, load_spec, parse_spec

__all__ = ["Run", "Spec", "SpecError", "expand", "list_presets", "load_spec", "parse_spec"]
