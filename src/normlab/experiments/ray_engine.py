"""Ray as the engine of `normlab experiment --ray`: each run a Ray task on a cluster.

    normlab experiment STUDY --ray                  a cluster from RAY_ADDRESS or `ray start` on this
                                                    machine, else a new one on this machine alone
    normlab experiment STUDY --ray HOST:6379        the cluster whose head is there
    normlab experiment STUDY --ray --gpus-per-run 0.5   two runs share a GPU

Each run asks Ray for its share (`num_cpus`, `num_gpus`) and trains with as many torch threads as
CPUs. The tasks train into the experiment folder, so every node must see it at the same path (a
shared filesystem) and have normlab installed. A task whose worker process or node is lost is
retried (up to `retries` times) and resumes from the run's last checkpoint, as `--resume` would;
the run's lock (runner.py) keeps a retried task and its lost predecessor from training together.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from normlab.experiments.runner import ExperimentError, execute
from normlab.experiments.spec import Run

FORWARDED = ("NORMLAB_DATA",)   # the driver's settings that the tasks need too


def engine(address: str | None = None, cpus: float = 1.0, gpus: float = 0.0, retries: int = 3):
    """An engine for `run_experiment`: each run of `todo` a Ray task with `cpus` CPUs and `gpus` GPUs."""
    if cpus <= 0 or gpus < 0 or retries < 0:
        raise ExperimentError(f"a Ray task needs a positive CPU share and no negative GPU share or "
                              f"retry count, got cpus {cpus}, gpus {gpus}, retries {retries}")

    try:  # here, before the experiment folder is written
        import ray
    except ImportError:
        raise ExperimentError("running on Ray needs the ray package: pip install 'normlab[ray]'") from None

    if address:
        _check_reachable(address)

    def run_on_ray(todo: list[Run], out: Path) -> Iterator[tuple[Run, dict[str, Any] | None]]:
        if not todo:
            return
        env = {name: os.environ[name] for name in FORWARDED if name in os.environ}
        ray.init(address=address or None, logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"env_vars": env} if env else None)
        try:
            task = ray.remote(_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries)
            pending = {task.remote(run.config, str(out.resolve() / "runs" / run.name), cpus): run for run in todo}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                run = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as e:  # the task was lost more often than it may be retried
                    result = {"status": "failed", "error": f"Ray: {type(e).__name__}: {e}".splitlines()[0],
                              "seconds": None}
                yield run, result
        finally:
            ray.shutdown()
    return run_on_ray


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail at once on a HOST:PORT where no Ray head listens (ray.init would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():  # ray://... (Ray Client), "auto": ray.init decides
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ExperimentError(f"no Ray cluster answers at {address} ({e.strerror or e}); start its head there "
                              "with `ray start --head --port PORT`, or check the address") from None


def _task(config, run_dir: str, cpus: float) -> dict[str, Any] | None:
    import torch
    torch.set_num_threads(max(1, int(cpus)))
    return execute(config, Path(run_dir))
