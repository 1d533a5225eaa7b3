"""Training examples per wall-clock second of one BN-LeNet epoch on Fashion-MNIST, four ways.

    (a) normlab        normlab's loader and loop, normlab's BatchNorm
    (b) book           the book's pipeline: per-sample Dataset + DataLoader(num_workers=4) +
                       train_ch6's loop, with torch's BatchNorm (the reference)
    (c) batch_torch    normlab's loader and loop, torch's BatchNorm
    (d) compiled       (a) under torch.compile

Data loading is included and evaluation excluded, as an epoch's training part. Each variant
keeps its model and optimizer across rounds (compilation happens in a warm-up epoch); the
variants run interleaved in rounds and the medians are reported, since this machine has bursts
in which everything runs several times slower. Targets: (a) >= 1.3x (b), (d) >= 1.6x (b),
(a) >= 0.9x (c).

    python benchmarks/training_throughput.py                # 3 rounds of full epochs
    python benchmarks/training_throughput.py --rounds 5 --subset 20000
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from book import BookFashionMNIST, book_bn_lenet, train_ch6_epoch

from normlab.data import FashionMNIST
from normlab.models import create_model
from normlab.train import Trainer
from normlab.train.config import override, resolve
from normlab.run import build_loaders


class NormlabVariant:
    def __init__(self, norm: str, compile: bool, subset: int | None):
        config = override(resolve("lenet_bn"), {"norm": norm, "compile": compile, "device": "cpu",
                                                "train_subset": subset, "epochs": 10**6})
        torch.manual_seed(0)
        model = create_model("lenet_bn", norm=norm)
        self.trainer = Trainer(model, *build_loaders(config.data, seed=0), config)

    def epoch(self) -> tuple[float, int]:
        t = self.trainer
        t.sums, t.step = t._zero_sums(), 0
        sums = t.train_epoch()
        t.epoch += 1
        return sums["train_seconds"], sums["count"]


class BookVariant:
    def __init__(self, subset: int | None):
        train = FashionMNIST(train=True)
        dataset = BookFashionMNIST(train.data[:subset], train.targets[:subset])
        self.loader = torch.utils.data.DataLoader(dataset, 256, shuffle=True, num_workers=4)
        torch.manual_seed(0)
        self.net = book_bn_lenet()
        for m in self.net:
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                torch.nn.init.xavier_uniform_(m.weight)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=1.0)

    def epoch(self) -> tuple[float, int]:
        t0 = time.perf_counter()
        _, _, n = train_ch6_epoch(self.net, self.loader, self.optimizer)
        return time.perf_counter() - t0, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subset", type=int, default=None, help="train on the first N images (default: all 60000)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # the book's 4 workers on 2 cores

    variants = {"(a) normlab": NormlabVariant("batch", False, args.subset),
                "(b) book": BookVariant(args.subset),
                "(c) batch_torch": NormlabVariant("batch_torch", False, args.subset),
                "(d) compiled": NormlabVariant("batch", True, args.subset)}
    t0 = time.perf_counter()
    variants["(d) compiled"].epoch()  # warm-up: compilation
    print(f"warm-up (compile) epoch: {time.perf_counter() - t0:.1f} s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, variant in variants.items():
            seconds, n = variant.epoch()
            rates[name].append(n / seconds)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()), flush=True)

    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"\nBN-LeNet, one epoch of {args.subset or 60000} images, batch 256, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; medians of {args.rounds} rounds")
    print(f"{'variant':<18} {'examples/sec':>13} {'vs (b) book':>12}")
    for name, rate in med.items():
        print(f"{name:<18} {rate:>13,.0f} {rate / med['(b) book']:>11.2f}x")
    print(f"(a) / (c) = {med['(a) normlab'] / med['(c) batch_torch']:.2f}  (normlab's BN against torch's, same loop)")


if __name__ == "__main__":
    main()
