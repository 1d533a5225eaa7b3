"""Run an experiment: every run of a spec in its own run directory, in parallel, resumable.

    experiments/<name>-<scale>/results.json      the index: spec, scale, metrics, one entry per run
                               runs/<run>/       a run directory (config.toml, metrics.jsonl, ...)
                               report.md, results.csv, test_acc.png, train_loss.png  (report.py)

A run whose summary.json says finished (or diverged: a NaN loss is an outcome, not an accident)
is skipped; one with a checkpoint is resumed exactly; a run that raises is recorded as failed with
its error and the others go on. The index is rewritten atomically after every run, so a killed
experiment leaves a readable one, and `--resume` picks up where it stopped.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from normlab._io import atomic_write_text
from normlab.experiments.spec import Run, Spec, expand
from normlab.train import config as cfg
from normlab.train.config import RunConfig

DONE = ("finished", "diverged")   # outcomes that a rerun would only repeat


class ExperimentError(ValueError):
    """An experiment folder that cannot be (re)used as asked; the message says what to do."""


def default_out(spec: Spec, scale: str, root: str | Path = "experiments") -> Path:
    return Path(root) / f"{spec.name}-{scale}"


def run_experiment(spec: Spec, scale: str = "full", out: str | Path | None = None, jobs: int = 1,
                   resume: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) every run of `spec` at `scale` under `out`; returns the results index."""
    runs = expand(spec, scale)
    out = Path(out) if out is not None else default_out(spec, scale)
    if (out / "results.json").is_file() and not resume:
        raise ExperimentError(f"{out} holds an experiment already; resuming continues it "
                              "(finished runs are kept), or choose another folder")
    index = _new_index(spec, scale, runs)
    todo = []
    for i, run in enumerate(runs):
        entry = index["runs"][i]
        state, detail = run_state(out / entry["dir"], run.config)
        if state in DONE:
            entry.update(status=state, error=detail)
        elif state == "conflict":
            entry.update(status="failed", error=detail)
        else:
            todo.append((i, run, state == "resume"))
    _write_index(out, index)
    skipped = len(runs) - len(todo)
    log(f"experiment {spec.name} ({scale}): {len(runs)} runs, {skipped} already done, "
        f"{len(todo)} to run with {jobs} job(s) -> {out}")
    done = 0
    for i, result in _execute_all(todo, out, jobs):
        done += 1
        index["runs"][i].update(result)
        _write_index(out, index)
        log(f"[{done}/{len(todo)}] {index['runs'][i]['name']}: {_describe(index['runs'][i])}")
    return index


def _new_index(spec: Spec, scale: str, runs: list[Run]) -> dict[str, Any]:
    regression = any(r.config.data.dataset == "poly" for r in runs)
    return {"name": spec.name, "description": spec.description, "spec": spec.source, "scale": scale,
            "metrics": list(spec.report_metrics(regression)), "regression": regression,
            "runs": [{"name": r.name, "group": r.group, "variant": r.variant, "point": r.point,
                      "seed": r.seed, "dir": f"runs/{r.name}", "status": "pending", "error": None,
                      "seconds": None} for r in runs]}


def _write_index(out: Path, index: dict[str, Any]) -> None:
    atomic_write_text(out / "results.json", json.dumps(index, indent=2) + "\n")


def run_state(run_dir: Path, config: RunConfig) -> tuple[str, str | None]:
    """("finished" | "diverged", error), ("resume", None), ("fresh", None) or ("conflict", why)."""
    if (run_dir / "config.toml").is_file():
        changed = cfg.unresumable_changes(cfg.load(run_dir / "config.toml"), config)
        if changed:
            return "conflict", (f"{run_dir} holds a run with another config ({', '.join(changed)} differ); "
                                "remove it or choose another folder")
    summary = _read_json(run_dir / "summary.json")
    if summary and summary.get("status") in DONE and summary.get("epochs_done", 0) >= config.train.epochs:
        return summary["status"], summary.get("error")
    if summary and summary.get("status") == "diverged":
        return "diverged", summary.get("error")
    return ("resume", None) if (run_dir / "checkpoint.pt").is_file() else ("fresh", None)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _execute_all(todo, out: Path, jobs: int):
    """Yield (index, result) as runs end: in this process for one job, else in a process pool."""
    if jobs <= 1 or len(todo) <= 1:
        for i, run, resume in todo:
            yield i, execute(run.config, out / "runs" / run.name, resume)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with cf.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(execute, run.config, out / "runs" / run.name, resume): i for i, run, resume in todo}
        for future in cf.as_completed(futures):
            try:
                result = future.result()
            except Exception as e:  # the worker process itself died
                result = {"status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": None}
            yield futures[future], result


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def execute(config: RunConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """One run; never raises: a failure comes back as {"status": "failed", "error": ...}."""
    from normlab.train.loop import DivergenceError
    from normlab.run import run

    start = time.perf_counter()
    try:
        status, _ = run(config, run_dir, resume=resume, quiet=True)
        error = None
    except DivergenceError as e:
        status, error = "diverged", str(e)
    except Exception as e:  # recorded, so the other runs go on
        status, error = "failed", f"{type(e).__name__}: {e}"
        tail = traceback.format_exc(limit=-3)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "error.txt", tail)
    return {"status": status, "error": error, "seconds": round(time.perf_counter() - start, 2)}


def _describe(entry: dict[str, Any]) -> str:
    text = entry["status"]
    if entry.get("error"):
        text += f" ({entry['error'].splitlines()[0][:200]})"
    if entry.get("seconds") is not None:
        text += f", {entry['seconds']:.1f} s"
    return text
