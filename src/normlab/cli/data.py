"""`normlab data status|verify|fetch|summary`: where the datasets are, whether they verify, what they hold."""
from __future__ import annotations

import argparse
import time

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
        info, cls = fm.DATASETS[key], fm.DATASET_CLASSES[key]
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
    cls = fm.DATASET_CLASSES[args.dataset]
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


def add_parser(commands) -> None:
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
