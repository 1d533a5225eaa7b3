"""Speed of the research norm layers (issue 7) against normlab's BatchNorm, in the same run.

For each shape it times one training step of each layer, forward + backward (input and
parameter gradients), in interleaved rounds (every round visits every layer in a shuffled order,
so a burst of load on a shared machine hits them alike), and prints the median time of
normlab.nn.BatchNorm*d and each layer's median as a ratio to it (lower is faster).

Shapes: LeNet's first conv map (256, 6, 28, 28) and first hidden Linear layer (256, 120), and a
ResNet map (128, 64, 32, 32). Every layer is built by the factory with its defaults
(create_norm(name, C, dim=...)), as a model gets it.

    python benchmarks/research_norms.py --threads 1
    python benchmarks/research_norms.py --threads 1 --rounds 3 --shapes 256x120
"""
from __future__ import annotations

import argparse
import platform
import random
import statistics

import torch
from norm_layers import per_call, train_step  # the sibling benchmark's timing helpers

import normlab.nn as nl

SHAPES = [(256, 6, 28, 28), (256, 120), (128, 64, 32, 32)]
NORMS = ["batch", "batch_renorm", "ghost_batch", "whiten_zca", "iternorm", "rank_gauss", "frozen_batch",
         "switchable", "batch_mean_only", "batch_var_only"]


def bench_shape(shape, norms, rounds: int, min_seconds: float) -> dict[str, float]:
    """{norm: median seconds per forward + backward}."""
    torch.manual_seed(0)
    x = torch.randn(shape).requires_grad_()
    dy = torch.randn(shape)
    dim = 1 if len(shape) == 2 else 2
    steps = {name: train_step(nl.create_norm(name, shape[1], dim=dim), x, dy) for name in norms}
    for fn in steps.values():  # warm-up: first-touch allocations
        fn(), fn()
    times = {name: [] for name in steps}
    order = list(steps)
    for r in range(rounds):
        random.Random(r).shuffle(order)
        for name in order:
            times[name].append(per_call(steps[name], min_seconds))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="least time per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--shapes", default=None, help="e.g. '256x6x28x28,256x120' (default: the three)")
    parser.add_argument("--norms", default=None, help=f"comma-separated (default: {','.join(NORMS)})")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = SHAPES
    if args.shapes:
        shapes = [tuple(int(s) for s in item.split("x")) for item in args.shapes.split(",")]
    norms = args.norms.split(",") if args.norms else NORMS
    if "batch" not in norms:
        norms = ["batch", *norms]

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} thread(s); {args.rounds} interleaved rounds, ≥{args.min_seconds}s "
          "per measurement, medians; training forward + backward, time / normlab BatchNorm's\n")
    results = {shape: bench_shape(shape, norms, args.rounds, args.min_seconds) for shape in shapes}
    print("| norm | " + " | ".join(str(shape) for shape in shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    print("| batch (normlab BatchNorm) | " + " | ".join(f"{results[s]['batch'] * 1e3:.2f} ms" for s in shapes) + " |")
    for name in norms:
        if name != "batch":
            print(f"| {name} | " + " | ".join(f"{results[s][name] / results[s]['batch']:.2f}×" for s in shapes) + " |")


if __name__ == "__main__":
    main()
