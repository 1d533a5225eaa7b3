"""Two gloo ranks on localhost for the SyncBatchNorm tests: the scenarios, their inputs, the
worker that runs them all in one job, and run_two_ranks, which starts it and returns both ranks'
records (or fails with a worker's traceback, or after a timeout instead of hanging)."""
from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import socket
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

import normlab.nn as nl

C = 3  # channels
SPATIAL = {2: (), 3: (4,), 4: (3, 2)}  # input rank -> spatial dims
MODES = ("train", "train", "eval")  # two training steps, then one eval step
DEADLINE_S = 120.0  # both ranks must be done by then (a hang fails the tests instead)


@dataclass(frozen=True)
class Scenario:
    name: str
    rank: int  # input rank: (N, C), (N, C, L) or (N, C, H, W)
    affine: bool = True
    momentum: float | None = 0.1
    track: bool = True
    sizes: tuple[int, int] = (4, 4)  # examples on rank 0 and on rank 1
    dtype: torch.dtype = torch.float64
    channels_last: bool = False


SCENARIOS = [Scenario(f"{r}d-affine={a}-momentum={m}", r, a, m)
             for r in (2, 3, 4) for a in (True, False) for m in (0.1, None)] + [
    Scenario("unequal-3-5", 4, sizes=(3, 5)),
    Scenario("unequal-5-3-vectors", 2, momentum=None, sizes=(5, 3)),
    Scenario("rank-1-empty", 4, sizes=(4, 0)),
    Scenario("rank-0-empty-vectors", 2, affine=False, sizes=(0, 4)),
    Scenario("one-value-per-rank", 2, sizes=(1, 1)),  # global count 2: allowed
    Scenario("no-running-stats", 3, track=False, sizes=(3, 5)),  # eval uses local batch stats
    Scenario("float32-channels-last", 4, sizes=(3, 5), dtype=torch.float32, channels_last=True),
    Scenario("bfloat16", 3, dtype=torch.bfloat16),  # computed in float32
]


def inputs(sc: Scenario, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole batch x (N0 + N1, C, *spatial) of a step and the fixed loss weights w: the
    loss is (y·w).sum(), a sum over both ranks. Per-channel offsets and scales, float64."""
    g = torch.Generator().manual_seed(zlib.crc32(sc.name.encode()) + step)
    shape = (sum(sc.sizes), C, *SPATIAL[sc.rank])
    view = (1, C) + (1,) * len(SPATIAL[sc.rank])
    scale = (0.5 + 2 * torch.rand(C, generator=g, dtype=torch.float64)).view(view)
    offset = (3 * torch.randn(C, generator=g, dtype=torch.float64)).view(view)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset
    return x, torch.randn(shape, generator=g, dtype=torch.float64)


def make_layer(cls, sc: Scenario, dtype: torch.dtype | None = None, **kw) -> torch.nn.Module:
    """cls(C, ...) in sc.dtype (or dtype) with the scenario's settings and γ, β away from 1, 0."""
    layer = cls(C, momentum=sc.momentum, affine=sc.affine, track_running_stats=sc.track,
                dtype=dtype or sc.dtype, **kw)
    if sc.affine:
        with torch.no_grad():
            layer.weight.copy_(torch.linspace(0.5, 1.5, C, dtype=torch.float64))
            layer.bias.copy_(torch.linspace(-1.0, 1.0, C, dtype=torch.float64))
    return layer


def rank_slice(sc: Scenario, rank: int) -> slice:
    start = sum(sc.sizes[:rank])
    return slice(start, start + sc.sizes[rank])


def run_steps(layer: torch.nn.Module, sc: Scenario, part: slice) -> list[dict]:
    """MODES on the examples `part` of each step's batch: output, gradients, buffers."""
    records = []
    for step, mode in enumerate(MODES):
        layer.train(mode == "train")
        x, w = (t[part].to(sc.dtype) for t in inputs(sc, step))
        if sc.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(mode == "train")
        with contextlib.nullcontext() if mode == "train" else no_collectives():
            y = layer(x)
        if mode == "train":
            (y * w).sum().backward()
        records.append(snapshot(layer, y, x.grad if mode == "train" else None, grads=mode == "train"))
    return records


def snapshot(layer: torch.nn.Module, y: torch.Tensor, input_grad, grads: bool = True) -> dict:
    """What to compare after a step: output, gradients (then cleared for the next step), buffers."""
    record = {"output": y.detach()}
    if grads:
        record["input grad"] = input_grad
        for name in ("weight", "bias"):
            p = getattr(layer, name)
            record[f"{name} grad"] = None if p is None else p.grad
            if p is not None:
                p.grad = None
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        buf = getattr(layer, name)
        record[name] = None if buf is None else buf.clone()
    return record


@contextlib.contextmanager
def no_collectives():
    """Any collective inside raises instead of communicating (eval must not communicate)."""
    saved = dist.all_gather, dist.all_reduce

    def refuse(*args, **kwargs):
        raise AssertionError("a collective was called in eval mode")

    dist.all_gather = dist.all_reduce = refuse
    try:
        yield
    finally:
        dist.all_gather, dist.all_reduce = saved


def scenarios_on(rank: int) -> dict:
    """Every scenario on this rank, and the cases that are not full-batch comparisons."""
    records = {sc.name: run_steps(make_layer(nl.SyncBatchNorm, sc), sc, rank_slice(sc, rank))
               for sc in SCENARIOS}
    # A process group of this rank alone: no synchronization, each rank normalizes its own half.
    own = [dist.new_group([r]) for r in range(dist.get_world_size())][rank]  # every rank calls new_group
    sc = SCENARIOS[0]
    records["own group"] = run_steps(make_layer(nl.SyncBatchNorm, sc, process_group=own), sc,
                                     rank_slice(sc, rank))
    # Eval on rank 0 only: the other rank calls nothing, so a collective would hang.
    if rank == 0:
        layer = make_layer(nl.SyncBatchNorm, sc).eval()
        with no_collectives():
            records["eval on rank 0 alone"] = layer(inputs(sc, 0)[0])
    dist.barrier()
    # One value on rank 0, none on rank 1: a global count of 1 per channel.
    records["count 1 error"] = error_of(nl.SyncBatchNorm(C), torch.randn((1, C) if rank == 0 else (0, C)))
    # C + 1 channels in: batch norm's error, raised before any collective.
    records["channels error"] = error_of(nl.SyncBatchNorm(C), torch.randn(4, C + 1))
    dist.barrier()  # both ranks are still in step after the errors
    return records


def error_of(layer: torch.nn.Module, x: torch.Tensor) -> str | None:
    """'Type: message' of what layer(x) raises, None when it does not raise."""
    try:
        layer(x)
    except Exception as e:  # noqa: BLE001 - the test checks the type
        return f"{type(e).__name__}: {e}"
    return None


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=60))
        records = scenarios_on(rank)
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - the test shows the traceback
        records = {"error": traceback.format_exc()}
    torch.save(records, Path(out_dir) / f"rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(out_dir: Path) -> list[dict]:
    """worker on 2 spawned processes; both ranks' records, or AssertionError with what failed."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, 2, port, str(out_dir))) for r in range(2)]
    for p in procs:
        p.start()
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=DEADLINE_S)
    for p in procs:
        p.join(max(0.0, (deadline - datetime.datetime.now()).total_seconds()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for r in hung:
        procs[r].kill()
        procs[r].join()
    results = [torch.load(out_dir / f"rank{r}.pt") if (out_dir / f"rank{r}.pt").exists() else None
               for r in range(2)]
    errors = [f"rank {r}:\n{res['error']}" for r, res in enumerate(results)
              if res is not None and "error" in res]
    assert not errors, "a worker failed:\n" + "\n".join(errors)
    assert not hung, f"rank(s) {hung} still running after {DEADLINE_S} s: a collective hung"
    missing = [r for r, res in enumerate(results) if res is None]
    assert not missing, f"rank(s) {missing} exited (codes {[p.exitcode for p in procs]}) without results"
    return results
