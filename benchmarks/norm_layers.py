"""Speed of normlab's BatchNorm against torch's native layer and the book's formula.

For each shape it times, in the same run and in interleaved rounds (so a burst of slowness on
a shared machine hits every variant alike), the median of:
  train  forward + backward in training mode (input, γ and β gradients)
  eval   forward in eval mode under no_grad
for normlab.nn.BatchNorm*d, torch.nn.BatchNorm*d (native kernels) and the book's layer
(D2LBatchNorm), eager and under torch.compile, and prints each as a ratio to torch's eager time.

The ideal time comes from this machine's memory bandwidth, measured here with a large copy:
training forward reads x twice and writes y, backward reads x and dy twice and writes dx
(8 tensor passes); eval reads x once and writes y (2 passes).

    python benchmarks/norm_layers.py            # all shapes, eager and compiled
    python benchmarks/norm_layers.py --quick    # fewer rounds, small shapes, eager only
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

import torch

import normlab.nn as nl

SHAPES = [(256, 6, 24, 24), (256, 16, 8, 8), (256, 120), (128, 64, 56, 56), (32, 256, 28, 28)]
QUICK_SHAPES = [(256, 6, 24, 24), (256, 16, 8, 8), (256, 120)]
MALLOC_VARS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
               "MALLOC_TOP_PAD_", "LD_PRELOAD")


def make_layer(kind: str, C: int, rank: int) -> torch.nn.Module:
    dim = {2: 1, 3: 1, 4: 2, 5: 3}[rank]
    name = {"normlab": "batch", "torch": "batch_torch", "book": "batch_d2l"}[kind]
    return nl.create_norm(name, C, dim=dim)


def train_step(layer, x, dy):
    def step():
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        layer(x).backward(dy)
    return step


def eval_step(layer, x):
    def step():
        with torch.no_grad():
            layer(x)
    return step


def per_call(fn, min_seconds: float) -> float:
    """Seconds per call: repeat fn until min_seconds have passed (at least twice)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= 2 and elapsed >= min_seconds:
            return elapsed / calls


def bandwidth(numel: int = 32 * 2**20, repeats: int = 7) -> float:
    """Bytes per second of a large float32 copy (read + write), median of repeats."""
    src, dst = torch.randn(numel), torch.empty(numel)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return 2 * numel * 4 / statistics.median(times)


def build_variants(shape, compile_too: bool):
    """{(kind, backend, mode): zero-argument callable}, fresh modules for every variant."""
    torch.manual_seed(0)
    x = torch.randn(shape).requires_grad_()
    dy = torch.randn(shape)
    variants = {}
    for kind in ("normlab", "torch", "book"):
        for backend in ("eager", "compiled") if compile_too else ("eager",):
            for mode in ("train", "eval"):
                layer = make_layer(kind, shape[1], len(shape)).train(mode == "train")
                run = torch.compile(layer, dynamic=False) if backend == "compiled" else layer
                fn = train_step(run, x, dy) if mode == "train" else eval_step(run, x)
                variants[(kind, backend, mode)] = fn
    return variants


def bench_shape(shape, rounds: int, min_seconds: float, compile_too: bool):
    variants = build_variants(shape, compile_too)
    for fn in variants.values():  # warm-up: compilation, first-touch allocations
        fn(), fn()
    times = {key: [] for key in variants}
    order = list(variants)
    for r in range(rounds):
        random.Random(r).shuffle(order)  # interleave: every round visits every variant
        for key in order:
            times[key].append(per_call(variants[key], min_seconds))
    return {key: statistics.median(ts) for key, ts in times.items()}


def report(shape, medians, bytes_per_s):
    nbytes = torch.Size(shape).numel() * 4
    ideal = {"train": 8 * nbytes / bytes_per_s, "eval": 2 * nbytes / bytes_per_s}
    print(f"\n### {tuple(shape)}  ({nbytes / 2**20:.1f} MiB per tensor)\n")
    print("| mode | torch eager | ideal | normlab eager | normlab compiled | torch compiled "
          "| book eager | book compiled |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("train", "eval"):
        base = medians[("torch", "eager", mode)]
        cells = [f"{base * 1e3:.3f} ms", f"{ideal[mode] / base:.2f}×"]
        for kind, backend in (("normlab", "eager"), ("normlab", "compiled"),
                              ("torch", "compiled"), ("book", "eager"), ("book", "compiled")):
            t = medians.get((kind, backend, mode))
            cells.append("–" if t is None else f"{t / base:.2f}×")
        print(f"| {mode} | " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds on the three small shapes, eager only")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--shapes", default=None,
                        help="e.g. '256x6x24x24,256x120' (default: the issue's five)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(s) for s in item.split("x")) for item in args.shapes.split(",")]
    rounds = args.rounds or (3 if args.quick else 7)
    compile_too = not (args.quick or args.no_compile)
    min_seconds = 0.05 if args.quick else 0.2

    bytes_per_s = bandwidth()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, copy bandwidth {bytes_per_s / 1e9:.1f} GB/s "
          f"(read + write)")
    print("allocator: " + ", ".join(f"{v}={os.environ.get(v, '(unset)')}" for v in MALLOC_VARS))
    print(f"{rounds} interleaved rounds, ≥{min_seconds}s per measurement, medians; ratios are "
          "time / torch eager time (lower is faster); ideal = bandwidth-bound time / torch eager")
    for shape in shapes:
        report(shape, bench_shape(shape, rounds, min_seconds, compile_too), bytes_per_s)


if __name__ == "__main__":
    main()
