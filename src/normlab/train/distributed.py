"""Data-parallel training on torch's own engine: torchrun, DistributedDataParallel, gloo or nccl.

    torchrun --nproc_per_node 2 -m normlab.cli train lenet_bn --sync-bn

torchrun starts one process per replica and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; `process_group()` joins them (nccl on CUDA, gloo on CPU). The run then divides
every step's work and keeps the numbers of a single process with the same global batch:

    data       --batch-size is the global batch B; rank r gets part r of every batch of the
               epoch's seeded permutation (torch.tensor_split: sizes differ by at most 1)
    loss       rank r back-propagates mean_r(loss) · W·n_r/n, so DDP's average of the W
               gradients is the gradient of the mean loss over all n examples of the step
    metrics    loss sums, correct counts and examples are summed over ranks every step; test
               accuracy over the ranks' shards of the test set
    files      only rank 0 writes the run directory; a resumed run reads the checkpoint on
               rank 0 and sends it to the others

Batch norm stays per replica unless `--sync-bn` converts it to normlab.nn.SyncBatchNorm, whose
statistics are those of the whole global batch (see docs/distributed.md).
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets for every process


class RankLostError(RuntimeError):
    """A collective failed: another rank died or stopped answering; this one stops too."""


@dataclass(frozen=True)
class Replica:
    """This process's place in the job: rank `rank` of `world_size` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0, which prints and writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current() -> Replica:
    """The replica this process is, from the initialized default process group (else a single one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Replica()
    return Replica(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched() -> bool:
    """True in a process that torchrun (or a launcher setting the same variables) started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group(device: str = "auto", timeout_s: float = 600):
    """Join the job's default process group for the duration (a no-op outside torchrun or when the
    group already exists): nccl when the run is on CUDA, gloo otherwise."""
    if not launched() or dist.is_initialized():
        yield current()
        return
    missing = [k for k in ENV if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set; "
                         "start distributed runs with torchrun, which sets them for every process")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield current()
    finally:
        # What held the group and is no longer referenced (a DDP model) goes first: gloo threads
        # still alive at interpreter exit abort the process ("terminate called without an
        # active exception"), even after a run that went well.
        gc.collect()
        dist.destroy_process_group()


def leave_together(replica: Replica) -> None:
    """Wait for every rank at the end of a run: a rank that tears its group down while rank 0
    still writes the run directory can abort in gloo's threads ("terminate called without an
    active exception")."""
    if replica.distributed:
        with lost_rank_explained("the end of the run"):
            dist.barrier()


def replica_device(device: torch.device, replica: Replica) -> torch.device:
    """cuda -> cuda:LOCAL_RANK, so each process on a node drives its own GPU."""
    if replica.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", replica.local_rank)
    return device


def check_batch_size(batch_size: int, replica: Replica) -> None:
    if batch_size % replica.world_size:
        below = batch_size - batch_size % replica.world_size
        raise ValueError(
            f"batch size {batch_size} is the global batch, split evenly among the {replica.world_size} processes "
            f"(torchrun's processes per node × nodes), and {replica.world_size} does not divide it; use a multiple "
            f"of {replica.world_size}, e.g. {below or replica.world_size} or {below + replica.world_size}")


def shard(loader, replica: Replica):
    """Make `loader` serve this replica's part of every batch; it must have `shard(rank, world_size)`."""
    if not replica.distributed:
        return loader
    if not hasattr(loader, "shard"):
        raise TypeError(f"distributed training needs loaders that can shard their batches (normlab.data.TensorLoader); "
                        f"got {type(loader).__name__}")
    loader.shard(replica.rank, replica.world_size)
    return loader


def all_reduce_sum(values: list[float]) -> list[float]:
    """Σ over the ranks of each number, in float64 (on the GPU under nccl, which reduces only CUDA tensors)."""
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


@contextlib.contextmanager
def lost_rank_explained(what: str):
    """Turn a failed collective (a peer died, or the group timed out) into a RankLostError that says what to do."""
    try:
        yield
    except RuntimeError as e:
        if isinstance(e, RankLostError) or not _is_collective_error(e):
            raise  # already explained (an inner collective), or not a collective's failure
        raise RankLostError(
            f"rank {dist.get_rank()} of {dist.get_world_size()} lost contact with the other ranks during {what} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'}). Another process probably "
            "died: its own log says why. The last checkpoint stays valid; fix the cause and resume the run.") from e


def _is_collective_error(e: RuntimeError) -> bool:
    backend_error = getattr(dist, "DistBackendError", ())
    if backend_error and isinstance(e, backend_error):
        return True
    text = str(e).lower()
    return any(s in text for s in ("gloo", "nccl", "connection", "timed out", "peer", "socket"))


def broadcast_object(obj, replica: Replica):
    """Rank 0's `obj` on every rank (pickled between the job's own processes)."""
    if not replica.distributed:
        return obj
    box = [obj if replica.is_main else None]
    with lost_rank_explained("the start of the run"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, replica: Replica) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not replica.distributed:
        return [obj]
    out = [None] * replica.world_size
    with lost_rank_explained("a checkpoint"):
        dist.all_gather_object(out, obj)
    return out
