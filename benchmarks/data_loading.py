"""Examples/sec for one epoch of Fashion-MNIST: normlab's loader against the book's pattern.

The book's pattern (d2l.load_data_fashion_mnist) is torchvision's FashionMNIST with
`transforms.ToTensor()` in a `DataLoader(..., shuffle=True, num_workers=4)`: every image becomes
a PIL image, then a tensor, one at a time, and the batches are collated in Python. It is restated
here without torchvision (which does not import beside this torch): the same per-sample steps.
normlab keeps the set as one uint8 tensor and makes each batch with one indexing op.

Both read the same in-memory data. This machine has bursts in which everything runs several times
slower, so: each measurement repeats a variant's epoch for at least --min-seconds (normlab's
epoch takes ~40 ms, the book's ~1 s: a burst would otherwise hit one 40 ms sample far harder than
a 1 s one); variants run interleaved in rounds; the speed-up is taken within each round (book
over normlab, both from the same minute) and the median over rounds is reported, with the range.

    python benchmarks/data_loading.py                 # batch 256, 9 rounds
    python benchmarks/data_loading.py --resize 96 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from book import BookFashionMNIST, Image

from normlab.data import FashionMNIST, load_fashion_mnist

def epoch_seconds(loader, min_seconds: float) -> float:
    """Seconds per epoch of `loader`, over as many whole epochs as fill min_seconds."""
    epochs, t0 = 0, time.perf_counter()
    while True:
        for _batch in loader:
            pass  # the batch exists; that is all a loader owes
        epochs += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return elapsed / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--resize", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="each measurement repeats whole epochs for at least this long")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 0],
                        help="DataLoader workers of the book's pattern (the book uses 4)")
    args = parser.parse_args()
    # The book asks for 4 workers whatever the core count; torch warns on a 2-core machine.
    warnings.filterwarnings("ignore", message="This DataLoader will create")

    train = FashionMNIST(train=True)
    normlab_iter, _ = load_fashion_mnist(args.batch_size, resize=args.resize, seed=0)
    book = BookFashionMNIST(train.data, train.targets, args.resize)
    variants = {"normlab": normlab_iter}
    for w in args.workers:
        variants[f"book, {w} workers"] = torch.utils.data.DataLoader(
            book, args.batch_size, shuffle=True, num_workers=w)

    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, loader in variants.items():  # interleaved: a slow burst hits every variant alike
            times[name].append(epoch_seconds(loader, args.min_seconds))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items())
              + "; speed-up " + ", ".join(f"{t[-1] / times['normlab'][-1]:.1f}×" for n, t in times.items()
                                         if n != "normlab"), flush=True)

    n = len(train)
    print(f"\nFashion-MNIST train, one epoch, batch {args.batch_size}, resize {args.resize}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, pillow {'yes' if Image else 'no'}, "
          f"{args.rounds} rounds")
    print(f"{'loader':<20} {'median s':>9} {'examples/sec':>13} {'normlab speed-up':>17} {'(per-round range)':>18}")
    for name, t in times.items():
        s = statistics.median(t)
        ratios = [a / b for a, b in zip(t, times["normlab"])]  # within each round
        print(f"{name:<20} {s:>9.3f} {n / s:>13,.0f} {statistics.median(ratios):>16.1f}× "
              f"{f'({min(ratios):.1f}-{max(ratios):.1f}×)':>18}")


if __name__ == "__main__":
    main()
