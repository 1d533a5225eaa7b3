"""Run an experiment: every run of a spec in its own run directory, in parallel, resumable, in shards.

    experiments/<name>-<scale>/results.json       the index: spec, scale, metrics, one entry per run
                               results.json.lock  held while a process rewrites the index
                               runs/<run>/        a run directory (config.toml, metrics.jsonl, ...)
                                    result.json   the run's outcome: status, error, seconds, resumed, host
                                    run.lock      held by the process that trains the run
                               report.md, results.csv, test_acc.png, train_loss.png  (report.py)

A run's own directory is the truth about it, and the index gathers it. A run whose summary.json
says finished (or diverged: a NaN loss is an outcome, not an accident) is skipped; one with a
checkpoint is resumed exactly; a run that raises is recorded as failed with its error and the
others go on. A process trains a run only while it holds the run's lock, so two commands on one
folder (a second `--resume`, the shards of a Slurm array, Ray's workers) never train a run twice;
and each process rewrites the index under the index's lock, changing only the entries of the runs
it trained, so they never lose each other's results. A killed experiment leaves a readable index,
and `--resume` picks up where it stopped.

Where the runs train: in this process (jobs=1), in a pool of processes (jobs > 1), or as tasks on
a Ray cluster (ray_engine.py). `shard=(k, n)` takes every n-th run from the k-th, so n commands,
one per node or per job of a Slurm array, share a study.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from normlab._io import Locked, atomic_write_text, exclusive_lock, lock_holder
from normlab.experiments.spec import Run, Spec, expand
from normlab.run import check_out
from normlab.train import config as cfg
from normlab.train.config import RunConfig

DONE = ("finished", "diverged")   # outcomes that a rerun would only repeat
INDEX, RESULT, RUN_LOCK = "results.json", "result.json", "run.lock"
LOCK_WAIT = 2.0   # seconds a run waits for its lock: `lock_holder` may hold it for an instant
PARENT_POLL = 1.0  # seconds between a pool worker's checks that its parent is alive


class ExperimentError(ValueError):
    """An experiment folder that cannot be (re)used as asked; the message says what to do."""


def default_out(spec: Spec, scale: str, root: str | Path = "experiments") -> Path:
    return Path(root) / f"{spec.name}-{scale}"


def shard_runs(runs: list[Run], shard: tuple[int, int] | None) -> list[Run]:
    """The k-th of n shards (k from 1): every n-th run from the k-th, so each shard gets a mix of variants."""
    if shard is None:
        return runs
    k, n = shard
    if not 1 <= k <= n:
        raise ExperimentError(f"shard {k}/{n} does not exist: shards are numbered 1 to {n}")
    return runs[k - 1::n]


def run_experiment(spec: Spec, scale: str = "full", out: str | Path | None = None, jobs: int = 1,
                   resume: bool = False, shard: tuple[int, int] | None = None, engine: Callable | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the runs of `spec` at `scale` under `out` (only shard k of n when `shard` is
    (k, n)); returns the results index. `engine(todo, out)` yields (run, result) per run of `todo`;
    the default trains in this process (jobs=1) or in a process pool."""
    runs = expand(spec, scale)
    mine = shard_runs(runs, shard)
    out = Path(out) if out is not None else default_out(spec, scale)
    check_out(out, "experiment folder")
    if (out / INDEX).is_file() and not resume and shard is None:
        raise ExperimentError(f"{out} holds an experiment already; resuming continues it "
                              "(finished runs are kept), or choose another folder")
    with exclusive_lock(out / f"{INDEX}.lock"):
        index = _new_index(spec, scale, runs, _read_index(out))
        todo, names = [], {run.name for run in mine}
        for run, entry in zip(runs, index["runs"]):
            fields, runnable = observe(out / entry["dir"], run.config)
            entry.pop("holder", None)
            entry.update(fields)
            if runnable and run.name in names:
                todo.append(run)
        _write_index(out, index)
    elsewhere = [e["name"] for e in index["runs"] if e["status"] == "running"]
    part = "" if shard is None else f"shard {shard[0]}/{shard[1]}: {len(mine)} of "
    log(f"experiment {spec.name} ({scale}): {part}{len(runs)} runs, "
        f"{sum(e['status'] in DONE for e in index['runs'])} already done, "
        + (f"{len(elsewhere)} running elsewhere, " if elsewhere else "")
        + f"{len(todo)} to run" + ("" if engine else f" with {jobs} job(s)") + f" -> {out}")
    engine = engine or (lambda todo, out: _in_processes(todo, out, jobs))
    done = 0
    for run, result in engine(todo, out):
        done += 1
        if result is None:  # another process holds the run, or has just finished it
            fields, _ = observe(out / "runs" / run.name)
            entry = _record(out, run.name, fields)
            log(f"[{done}/{len(todo)}] {run.name}: skipped, " + (
                f"another process trains it ({fields['holder']})" if fields["status"] == "running"
                else f"another process trained it: {_describe(entry)}"))
            continue
        entry = _record(out, run.name, result)
        index["runs"] = [entry if e["name"] == run.name else e for e in index["runs"]]
        log(f"[{done}/{len(todo)}] {run.name}: {_describe(entry)}")
    return _read_index(out)


def _new_index(spec: Spec, scale: str, runs: list[Run], old: dict[str, Any] | None) -> dict[str, Any]:
    """The index of `runs`; entries that `old` has keep what it recorded (seconds, errors, host)."""
    regression = any(r.config.data.dataset == "poly" for r in runs)
    kept = {e["name"]: e for e in (old or {}).get("runs", [])}
    return {"name": spec.name, "description": spec.description, "spec": spec.source, "scale": scale,
            "baseline": spec.baseline, "metrics": list(spec.report_metrics(regression)), "regression": regression,
            "runs": [{**{"status": "pending", "error": None, "seconds": None}, **kept.get(r.name, {}),
                      "name": r.name, "group": r.group, "variant": r.variant, "point": r.point,
                      "seed": r.seed, "dir": f"runs/{r.name}"} for r in runs]}


def _read_index(out: Path) -> dict[str, Any] | None:
    text = _read_text(out / INDEX)
    if text is None:
        return None
    try:
        index = json.loads(text)
        if not (isinstance(index, dict) and isinstance(index.get("runs"), list)):
            raise ValueError("it has no list of runs")
    except ValueError as e:  # json.JSONDecodeError too
        raise ExperimentError(f"{out / INDEX} is damaged ({e}); remove it and resume the experiment: the "
                              "index is rebuilt from the run directories, and finished runs are kept") from None
    return index


def _write_index(out: Path, index: dict[str, Any]) -> None:
    atomic_write_text(out / INDEX, json.dumps(index, indent=2) + "\n")


def _record(out: Path, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Write one run's result into the index, under its lock, keeping every other entry as it is on disk."""
    with exclusive_lock(out / f"{INDEX}.lock"):
        index = _read_index(out)
        entry = next(e for e in index["runs"] if e["name"] == name)
        entry.update(result)
        entry.pop("holder", None)
        _write_index(out, index)
    return entry


def refresh_index(out: str | Path) -> dict[str, Any]:
    """Bring every entry of the index in `out` up to date with its run directory (the shards' results
    too) and write it back; returns it. `normlab experiment report` calls this first."""
    out = Path(out)
    if out.is_file():
        raise NotADirectoryError(f"{out} is a file, not an experiment folder; give the folder that holds results.json")
    if not (out / INDEX).is_file():
        raise FileNotFoundError(f"{out} holds no {INDEX}; is it an experiment folder "
                                "(made by `normlab experiment`)?")
    with exclusive_lock(out / f"{INDEX}.lock"):
        index = _read_index(out)
        for entry in index["runs"]:
            entry.pop("holder", None)
            entry.update(observe(out / entry["dir"])[0])
        _write_index(out, index)
    return index


def observe(run_dir: Path, config: RunConfig | None = None) -> tuple[dict[str, Any], bool]:
    """(index fields, runnable) of a run directory: whether a process holds it ("holder" names it),
    what it ended as, or how far it got. `config` is what the run should be; None takes the run's own."""
    holder = lock_holder(run_dir / RUN_LOCK)
    if holder:
        return {"status": "running", "error": None, "holder": holder}, False
    state, detail = run_state(run_dir, config)
    record = _read_json(run_dir / RESULT) or {}
    record.pop("holder", None)
    if state in DONE:
        return {**record, "status": state, "error": detail}, False
    if state == "conflict":
        return {"status": "failed", "error": detail}, False
    if record.get("status") in ("failed", "interrupted"):
        return record, True
    status = "stopped" if state == "resume" else "pending"   # stopped: killed, resume continues it
    return {"status": status, "error": None}, True


def run_state(run_dir: Path, config: RunConfig | None = None) -> tuple[str, str | None]:
    """("finished" | "diverged", error), ("resume", None), ("fresh", None) or ("conflict", why)."""
    saved = cfg.load(run_dir / "config.toml") if (run_dir / "config.toml").is_file() else None
    if saved is not None and config is not None:
        changed = cfg.unresumable_changes(saved, config)
        if changed:
            return "conflict", (f"{run_dir} holds a run with another config ({', '.join(changed)} differ); "
                                "remove it or choose another folder")
    summary = _read_json(run_dir / "summary.json") or {}
    epochs = (config or saved).train.epochs if (config or saved) else summary.get("epochs", 0)
    if summary.get("status") in DONE and summary.get("epochs_done", 0) >= epochs:
        return summary["status"], summary.get("error")
    if summary.get("status") == "diverged":
        return "diverged", summary.get("error")
    return ("resume", None) if (run_dir / "checkpoint.pt").is_file() else ("fresh", None)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _in_processes(todo: list[Run], out: Path, jobs: int) -> Iterator[tuple[Run, dict[str, Any] | None]]:
    """Yield (run, result) as runs end: in this process for one job, else in a process pool."""
    if jobs <= 1 or len(todo) <= 1:
        for run in todo:
            yield run, execute(run.config, out / "runs" / run.name)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with cf.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                initargs=(threads, os.getpid())) as pool:
        futures = {pool.submit(execute, run.config, out / "runs" / run.name): run for run in todo}
        for future in cf.as_completed(futures):
            try:
                result = future.result()
            except Exception as e:  # the worker process itself died
                result = {"status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": None}
            yield futures[future], result


def _init_worker(threads: int, parent: int) -> None:
    import torch
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="exit-with-parent").start()


def _exit_with(parent: int) -> None:
    """Stop this pool worker once `parent` is gone (killed with SIGKILL, it cannot stop its pool), so
    that no run goes on training for nobody; the run's lock dies with it and its checkpoint stays."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(1)


def execute(config: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """Train one run while holding its lock: resumed from its checkpoint when it has one. Returns the
    result that it also writes to run_dir/result.json, or None when another process holds the run
    or has finished it meanwhile.
    Never raises for the run's own failure: that comes back as {"status": "failed", "error": ...}."""
    try:
        with exclusive_lock(run_dir / RUN_LOCK, timeout=LOCK_WAIT):
            return _execute(config, run_dir)
    except Locked:
        return None


def _execute(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    from normlab.run import run
    from normlab.train.loop import DivergenceError

    state, detail = run_state(run_dir, config)
    if state in DONE:  # another process finished it meanwhile
        return None
    if state == "conflict":  # the directory holds another run
        return {"status": "failed", "error": detail}
    (run_dir / RESULT).unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        status, _ = run(config, run_dir, resume=state == "resume", quiet=True)
        error = None
    except DivergenceError as e:
        status, error = "diverged", str(e)
    except Exception as e:  # recorded, so the other runs go on
        status, error = "failed", f"{type(e).__name__}: {e}"
        atomic_write_text(run_dir / "error.txt", traceback.format_exc(limit=-3))
    result = {"status": status, "error": error, "seconds": round(time.perf_counter() - start, 2),
              "resumed": state == "resume", "host": socket.gethostname()}
    atomic_write_text(run_dir / RESULT, json.dumps(result, indent=2) + "\n")
    return result


def _describe(entry: dict[str, Any]) -> str:
    text = entry["status"]
    if entry.get("error"):
        text += f" ({entry['error'].splitlines()[0][:200]})"
    if entry.get("resumed"):
        text += ", resumed from its checkpoint"
    if entry.get("seconds") is not None:
        text += f", {entry['seconds']:.1f} s"
    return text
