"""The seeds' BN-LeNet code, unchanged, on `normlab.d2l` against the book's own pipeline.

Both sides run the study notes' code: their from-scratch BatchNorm in LeNet, then
`d2l.train_ch6(net, train_iter, test_iter, num_epochs, 1.0, device)` on batches of 256; train_ch6
is the book's loop on both (its Animator writes animator.png, as it does outside Jupyter). What
differs is where the batches come from:

    (n) normlab.d2l   d2l.load_data_fashion_mnist: normlab's in-memory loader
    (b) book          d2l's own loader (benchmarks/book.py): the per-sample dataset with
                      ToTensor in a DataLoader with 4 workers

After one untimed call of each, one round is one call of each with num_epochs=1 (an epoch of 60,000 images and the test pass);
the variants alternate, and the medians are reported. Two figures per variant:
- wall: 60,000 / the wall-clock seconds of the whole call: what a user waits for;
- printed: the 'examples/sec' line train_ch6 prints: the book counts only the time inside the
  training steps, so data loading and evaluation are not in it.
Target: (n) >= 1.5x (b) in wall-clock examples/sec.

    python benchmarks/d2l_book.py --rounds 5
    python benchmarks/d2l_book.py --rounds 3 --device cuda
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import statistics
import tempfile
import time
import warnings

import book
import torch

from normlab import d2l


def run(loaders, device) -> tuple[float, float]:
    """One train_ch6 call of one epoch on the seeds' BN-LeNet: (wall examples/sec, printed examples/sec)."""
    torch.manual_seed(0)
    net = book.seeds_bn_lenet()
    out = io.StringIO()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        d2l.train_ch6(net, *loaders, 1, 1.0, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    printed = float(re.search(r"([\d.]+) examples/sec", out.getvalue()).group(1))
    return 60000 / wall, printed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default=None, help="default: d2l.try_gpu()")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # the book's 4 workers on 2 cores
    device = torch.device(args.device) if args.device else d2l.try_gpu()
    os.chdir(tempfile.mkdtemp(prefix="d2l-bench-"))  # where the Animator's PNG goes

    variants = {"(n) normlab.d2l": d2l.load_data_fashion_mnist(256),
                "(b) book": book.load_data_fashion_mnist(256)}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    printed: dict[str, list[float]] = {name: [] for name in variants}
    for loaders in variants.values():  # untimed: CUDA and cuDNN set-up, first worker start
        run(loaders, device)
    for r in range(args.rounds):
        for name, loaders in variants.items():
            w, p = run(loaders, device)
            wall[name].append(w)
            printed[name].append(p)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in wall.items()),
              flush=True)

    med = {name: statistics.median(v) for name, v in wall.items()}
    med_printed = {name: statistics.median(v) for name, v in printed.items()}
    print(f"\nThe seeds' BN-LeNet (from-scratch BatchNorm), one train_ch6 epoch of 60000 images, batch 256, "
          f"on {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.rounds} rounds")
    print(f"{'variant':<17} {'wall examples/sec':>18} {'vs (b)':>7} {'printed examples/sec':>21} {'vs (b)':>7}")
    for name in variants:
        print(f"{name:<17} {med[name]:>18,.0f} {med[name] / med['(b) book']:>6.2f}x "
              f"{med_printed[name]:>21,.0f} {med_printed[name] / med_printed['(b) book']:>6.2f}x")


if __name__ == "__main__":
    main()
