"""Examples/sec for one epoch of Fashion-MNIST: normlab's loader against the book's pattern.

The book's pattern (d2l.load_data_fashion_mnist) is torchvision's FashionMNIST with
`transforms.ToTensor()` in a `DataLoader(..., shuffle=True, num_workers=4)`: every image becomes
a PIL image, then a tensor, one at a time, and the batches are collated in Python. It is restated
here without torchvision (which does not import beside this torch): the same per-sample steps.
normlab keeps the set as one uint8 tensor and makes each batch with one indexing op.

Both read the same in-memory data; variants run interleaved in rounds and the medians are
reported, since this machine has bursts in which everything runs several times slower.

    python benchmarks/data_loading.py                 # batch 256, 5 rounds
    python benchmarks/data_loading.py --resize 96 --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from book import BookFashionMNIST, Image

from normlab.data import FashionMNIST, load_fashion_mnist

def epoch_seconds(loader) -> float:
    t0 = time.perf_counter()
    for X, y in loader:
        pass  # the batch exists; that is all a loader owes
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--resize", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
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
            times[name].append(epoch_seconds(loader))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), flush=True)

    n = len(train)
    normlab_s = statistics.median(times["normlab"])
    print(f"\nFashion-MNIST train, one epoch, batch {args.batch_size}, resize {args.resize}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, pillow {'yes' if Image else 'no'}")
    print(f"{'loader':<20} {'median s':>9} {'examples/sec':>13} {'normlab speed-up':>17}")
    for name, t in times.items():
        s = statistics.median(t)
        print(f"{name:<20} {s:>9.3f} {n / s:>13,.0f} {s / normlab_s:>16.1f}×")


if __name__ == "__main__":
    main()
