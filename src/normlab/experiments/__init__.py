"""Declarative comparisons: a TOML spec -> runs (grid × variants × seeds) -> a report.

    spec.py      load_spec, expand, list_presets
    runner.py    run_experiment: one run directory per run, in parallel processes, resumable
    report.py    write_report: report.md, results.csv and overlay plots, mean ± std over seeds
"""
from normlab.experiments.spec import Run, Spec, SpecError, expand, list_presets, load_spec, parse_spec

__all__ = ["Run", "Spec", "SpecError", "expand", "list_presets", "load_spec", "parse_spec"]
