"""The `normlab` command line. Only this module (and the experiment runner) prints.

    normlab data status              where each dataset was found, and whether it verifies
    normlab data verify              check every file found (MD5, header, counts); exit 1 on a problem
    normlab data fetch [DATASET]     download from the official mirrors into the cache
    normlab data summary [DATASET]   counts, class names, pixel mean/std
"""
from __future__ import annotations

import argparse
import sys
import time

from normlab import __version__
from normlab.data import fashion_mnist as fm
from normlab.data.idx import DataError

EPILOG_DATA = """examples:
  normlab data status
  normlab data verify
  NORMLAB_DATA=/data normlab data fetch fashion-mnist
  normlab data summary mnist --root ./my-data
"""


def _file_report(info: fm.DatasetInfo, folder, resource) -> tuple[str, str]:
    path = fm.find_file(folder, resource)
    if path is None:
        return resource.filename, "missing"
    try:
        return str(path), fm.verified_content(path, resource)[1]
    except DataError as e:
        return str(path), f"FAILED: {e}"


def cmd_data_status(args) -> int:
    for key, info in fm.DATASETS.items():
        found = fm.locate(info, info.resources, args.root)
        if found is None:
            print(f"{key}: not found (looked in {', '.join(str(d) for _, d in fm.candidate_dirs(info, args.root))})")
            continue
        label, folder = found
        print(f"{key}: {folder} [{label}]")
        for name, state in (_file_report(info, folder, r) for r in info.resources):
            print(f"  {state:<18} {name}")
    return 0


def cmd_data_verify(args) -> int:
    problems = 0
    for key in args.datasets or fm.DATASETS:
        info, cls = fm.DATASETS[key], _dataset_class(key)
        if fm.locate(info, info.resources, args.root) is None:
            print(f"{key}: not found, nothing to verify")
            problems += key in (args.datasets or ())
            continue
        for train in (True, False):
            try:
                ds = cls(args.root, train=train)
                print(f"{key} {'train' if train else 'test'}: ok, {len(ds)} images, "
                      f"{tuple(ds.data.shape[1:])} uint8, labels 0-{len(ds.classes) - 1} ({ds.folder})")
            except DataError as e:
                print(f"{key} {'train' if train else 'test'}: FAILED\n  {e}")
                problems += 1
    return 1 if problems else 0


def cmd_data_fetch(args) -> int:
    for key in args.datasets or ["fashion-mnist"]:
        folder = fm.fetch(fm.DATASETS[key], args.root)
        print(f"{key}: {folder}")
    return 0


def cmd_data_summary(args) -> int:
    cls = _dataset_class(args.dataset)
    t0 = time.perf_counter()
    train, test = cls(args.root, train=True), cls(args.root, train=False)
    seconds = time.perf_counter() - t0
    mean, std = fm.pixel_mean_std(train.data)
    print(f"{cls.info.name} from {train.folder} [{train.source}], verified, loaded in {seconds:.2f} s")
    print(f"  train: {len(train)} images   test: {len(test)} images   "
          f"size: {train.data.shape[1]}×{train.data.shape[2]} uint8")
    print(f"  pixel mean {mean:.4f}, std {std:.4f} (training set, scaled to [0, 1])")
    k = len(train.classes)  # minlength: a class may be absent from a split
    train_counts, test_counts = train.targets.bincount(minlength=k), test.targets.bincount(minlength=k)
    print("  label  class          train   test")
    for i, name in enumerate(train.classes):
        print(f"  {i:>5}  {name:<12} {int(train_counts[i]):>7} {int(test_counts[i]):>6}")
    return 0


def _dataset_key(name: str) -> str:
    if name not in fm.DATASETS:
        raise argparse.ArgumentTypeError(f"unknown dataset {name!r}; choose one of: {', '.join(fm.DATASETS)}")
    return name


def _dataset_class(key: str):
    return {"fashion-mnist": fm.FashionMNIST, "mnist": fm.MNIST}[key]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="normlab", description="normlab: classic CNNs and normalization layers, written from scratch.",
        epilog="Run `normlab COMMAND --help` for a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = commands.add_parser("data", help="datasets: status, verify, fetch, summary",
                               description="Find, verify, download and describe the datasets.",
                               epilog=EPILOG_DATA, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)
    choices = list(fm.DATASETS)
    for name, func, help_ in [("status", cmd_data_status, "where each dataset was found, verified or not"),
                              ("verify", cmd_data_verify, "check every file found; exit 1 on a problem"),
                              ("fetch", cmd_data_fetch, "download from the official mirrors (MD5-checked)"),
                              ("summary", cmd_data_summary, "counts, class names, pixel mean/std")]:
        sub = actions.add_parser(name, help=help_, description=help_)
        sub.add_argument("--root", help="a folder to look in first (before $NORMLAB_DATA and the cache)")
        if name == "summary":
            sub.add_argument("dataset", nargs="?", default="fashion-mnist", choices=choices)
        elif name in ("verify", "fetch"):
            sub.add_argument("datasets", nargs="*", type=_dataset_key, metavar="DATASET",
                             help=f"one of {', '.join(choices)} "
                                  f"(default: {'all found' if name == 'verify' else 'fashion-mnist'})")
        sub.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as e:
        print(f"normlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("normlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
