"""Data-parallel training on this machine: what 2 processes buy, and what synchronized BN costs.

    (1) throughput   examples/sec of `normlab train lenet_bn` for one epoch on a Fashion-MNIST
                     subset: 1 process with all the cores' threads, against torchrun with 2
                     processes of one thread each, with per-rank BN and with --sync-bn
    (2) sync cost    one BN-LeNet training step (forward + backward + DDP's gradient all-reduce)
                     on 2 gloo processes, batch 256 split 128 + 128: SyncBatchNorm against
                     per-rank BatchNorm2d, and the layers alone at LeNet's BN shapes

Each measurement is a fresh set of processes; the variants run interleaved in rounds and the
medians are reported, since this machine has bursts in which everything runs several times slower.
There is no target: the figures say what scale-out costs on a CPU.

    python benchmarks/distributed.py                 # 3 rounds, 20000 examples
    python benchmarks/distributed.py --rounds 5 --subset 60000
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# --------------------------------------------------------------------------- (1) throughput


def train_rate(nproc: int, sync_bn: bool, subset: int, threads: int) -> float:
    """examples/sec of one training epoch, as the run's metrics.jsonl reports it (all ranks counted)."""
    with tempfile.TemporaryDirectory() as out:
        args = ["train", "lenet_bn", "--epochs", "1", "--train-subset", str(subset), "--set", "data.test_subset=1000",
                "--quiet", "--out", out] + (["--sync-bn"] if sync_bn else [])
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                    "-m", "normlab.cli"] if nproc > 1 else [sys.executable, "-m", "normlab.cli"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(launcher + args, capture_output=True, text=True, env=env)
        if done.returncode:
            raise RuntimeError(f"{' '.join(launcher + args)} failed:\n{done.stderr}")
        return json.loads((Path(out) / "metrics.jsonl").read_text().splitlines()[-1])["examples_per_sec"]


# --------------------------------------------------------------------------- (2) sync cost, per step


def _step_times(rank: int, port: int, steps: int, results) -> None:
    """In each of 2 processes: median ms of a training step, per variant, variants interleaved."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    from normlab.models import create_model
    from normlab.nn import BatchNorm1d, BatchNorm2d, SyncBatchNorm, convert_sync_batchnorm

    torch.manual_seed(0)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    nets = {}
    for sync in (False, True):
        net = create_model("lenet_bn", norm="batch")
        net = convert_sync_batchnorm(net) if sync else net
        nets[f"lenet_{'sync' if sync else 'local'}"] = torch.nn.parallel.DistributedDataParallel(net)
    layers = {}
    for shape in ((128, 6, 24, 24), (128, 16, 8, 8), (128, 120)):
        inp = torch.randn(*shape, requires_grad=True)
        local = (BatchNorm2d if len(shape) == 4 else BatchNorm1d)(shape[1])
        layers[f"bn{shape}"] = (inp, local, SyncBatchNorm(shape[1]))

    def lenet_step(net):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()

    def layer_step(inp, layer):
        layer(inp).sum().backward()

    tasks = {name: (lambda n=net: lenet_step(n)) for name, net in nets.items()}
    one = torch.zeros(1)
    tasks["allreduce_local"] = lambda: None  # the latency of one collective, for scale
    tasks["allreduce_sync"] = lambda: dist.all_reduce(one)
    for name, (inp, local, sync) in layers.items():
        tasks[f"{name}_local"] = lambda i=inp, m=local: layer_step(i, m)
        tasks[f"{name}_sync"] = lambda i=inp, m=sync: layer_step(i, m)
    times = {name: [] for name in tasks}
    for _ in range(steps):
        for name, task in tasks.items():
            dist.barrier()
            t0 = time.perf_counter()
            task()
            times[name].append((time.perf_counter() - t0) * 1e3)
    if rank == 0:
        results.put({name: statistics.median(ts[2:]) for name, ts in times.items()})
    dist.destroy_process_group()


def step_costs(steps: int) -> dict[str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_step_times, args=(rank, port, steps, results)) for rank in range(2)]
    for p in procs:
        p.start()
    out = results.get(timeout=600)
    for p in procs:
        p.join(timeout=60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subset", type=int, default=20000, help="training examples per epoch")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant in (2)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    variants = {f"1 process, {cores} threads": (1, False, cores),
                "2 processes (torchrun), per-rank BN": (2, False, max(cores // 2, 1)),
                "2 processes (torchrun), --sync-bn": (2, True, max(cores // 2, 1))}
    rates = {name: [] for name in variants}
    costs = []
    for r in range(args.rounds):
        for name, (nproc, sync, threads) in variants.items():
            rates[name].append(train_rate(nproc, sync, args.subset, threads))
        costs.append(step_costs(args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{n}: {v[-1]:,.0f}/s" for n, v in rates.items()), flush=True)
    base = statistics.median(rates[f"1 process, {cores} threads"])
    print(f"\n(1) BN-LeNet, one epoch of {args.subset} examples, batch 256 (global); medians of {args.rounds} rounds, "
          f"torch {torch.__version__}, {cores} cores\n")
    print("| launch | examples/sec | vs 1 process |\n|---|---|---|")
    for name, values in rates.items():
        m = statistics.median(values)
        print(f"| {name} | {m:,.0f} | {m / base:.2f}× |")
    print("\n(2) one training step on 2 gloo processes (one thread each), batch 128 per rank; "
          f"medians of {args.rounds} rounds of {args.steps} steps\n")
    print("| step | per-rank BN | SyncBatchNorm | sync − local |\n|---|---|---|---|")
    names = sorted({k.rsplit("_", 1)[0] for k in costs[0]}, key=lambda n: (not n.startswith("lenet"), n.startswith("all"), n))
    for n in names:
        local = statistics.median(c[f"{n}_local"] for c in costs)
        sync = statistics.median(c[f"{n}_sync"] for c in costs)
        label = {"lenet": "BN-LeNet forward + backward + DDP all-reduce",
                 "allreduce": "one gloo all_reduce of one float (in the sync column)"}.get(n, f"BN layer {n[2:]} fwd + bwd")
        print(f"| {label} | {local:.3f} ms | {sync:.3f} ms | {sync - local:+.3f} ms |")


if __name__ == "__main__":
    main()
