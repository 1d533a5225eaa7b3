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
from pathlib import Path

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


EPILOG_TRAIN = """examples:
  normlab train lenet_bn                          # the book's BN-LeNet: lr 1.0, batch 256, 10 epochs
  normlab train lenet_bn --schedule cosine --seed 1
  normlab train resnet20 --norm group --epochs 5 --out runs/r20-group
  normlab train lenet_bn --resume --out runs/r20-group   # continue a stopped run exactly
  normlab train mlp --norm batch --set model.options.activation=sigmoid
  normlab train --config my-recipe.toml --set optim.lr=0.5 --set train.epochs=3
"""

# CLI flag -> config key; None (flag not given) leaves the config's value
TRAIN_FLAGS = {"norm": "model.norm", "norm_position": "model.norm_position", "epochs": "train.epochs",
               "lr": "optim.lr", "batch_size": "data.batch_size", "resize": "data.resize",
               "optimizer": "optim.optimizer", "momentum": "optim.momentum", "schedule": "optim.schedule",
               "weight_decay": "optim.weight_decay", "seed": "train.seed", "device": "train.device",
               "dataset": "data.dataset", "amp": "train.amp", "channels_last": "train.channels_last",
               "compile": "train.compile", "init": "train.init", "train_subset": "data.train_subset"}
RESUMABLE = {"train.epochs", "train.device"}  # what a resumed run may change


def _train_config(args):
    from normlab.train import config as cfg

    flags = {key: getattr(args, name) for name, key in TRAIN_FLAGS.items()}
    sets = cfg.parse_set(args.set)
    if not args.resume:
        return cfg.resolve(args.model, args.config, sets, flags), None
    out = Path(args.out) if args.out else run_mod().latest_run(cfg.resolve(args.model, args.config, sets, flags))
    if out is None or not (out / "config.toml").is_file():
        raise cfg.ConfigError(f"--resume found no run to continue ({out or 'no runs/ folder with a checkpoint'}); "
                              "name it with --out RUN_DIR, or start without --resume")
    saved = cfg.load(out / "config.toml")
    if args.model and args.model != saved.model.name:
        raise cfg.ConfigError(f"{out} is a run of model {saved.model.name!r}, not {args.model!r}")
    asked = cfg.override(cfg.override(saved, sets), {k: v for k, v in flags.items() if v is not None})
    before, after = (cfg.flatten(x) for x in (saved, asked))
    changed = sorted(k for k in after if after[k] != before[k] and k not in RESUMABLE)
    if changed:
        raise cfg.ConfigError(f"a resumed run keeps its config ({out / 'config.toml'}); only "
                              f"{', '.join(sorted(RESUMABLE))} may change, not {', '.join(changed)}")
    return asked, out


def run_mod():
    from normlab.train import run
    return run


class EpochPrinter:
    """One line per epoch, as the run goes."""

    def on_epoch_end(self, trainer, m) -> None:
        scores = f"test mse {m['test_mse']:.4g}" if trainer.regression else \
            f"train acc {m['train_acc']:.3f}, test acc {m['test_acc']:.3f}"
        print(f"epoch {m['epoch']:>3}/{trainer.config.train.epochs}: loss {m['train_loss']:.3f}, {scores}, "
              f"{m['examples_per_sec']:,.0f} examples/sec, {m['epoch_seconds']:.1f} s", flush=True)


def cmd_train(args) -> int:
    from normlab.train.callbacks import StopOnSignal
    from normlab.train.loop import NonFiniteLossError

    config, out = _train_config(args)
    out = out or Path(args.out or run_mod().default_out(config))
    print(f"training {config.model.name} (norm {config.model.norm or 'default'}) on {config.data.dataset}: "
          f"lr {config.optim.lr}, batch {config.data.batch_size}, {config.train.epochs} epochs -> {out}", flush=True)
    with StopOnSignal() as stop:
        try:
            status, trainer = run_mod().run(config, out, resume=args.resume, quiet=args.quiet,
                                            extra_callbacks=[stop] + ([] if args.quiet else [EpochPrinter()]))
        except NonFiniteLossError as e:
            print(f"normlab: error: {e}\nThe last good checkpoint is {out / 'checkpoint.pt'}.", file=sys.stderr)
            return 1
    if status == "interrupted":
        print(f"interrupted at epoch {trainer.epoch + 1}, batch {trainer.step}; checkpoint written.\n"
              f"resume with: normlab train {config.model.name} --resume --out {out}", file=sys.stderr)
        return 130
    _print_book_lines(trainer)
    print(f"run directory: {out} (curves.png, metrics.jsonl, checkpoint.pt, config.toml, summary.json)")
    return 0


def _print_book_lines(trainer) -> None:
    """The book's closing lines: final loss and accuracies, then examples/sec over all training steps."""
    if not trainer.history.epochs:
        return
    m = trainer.history.last
    if trainer.regression:
        print(f"loss {m['train_loss']:.3f}, test mse {m['test_mse']:.4g}")
    else:
        print(f"loss {m['train_loss']:.3f}, train acc {m['train_acc']:.3f}, test acc {m['test_acc']:.3f}")
    rates = [e["examples_per_sec"] for e in trainer.history.epochs]
    total = len(rates) / sum(1 / r for r in rates)  # equal examples per epoch: the harmonic mean
    print(f"{total:.1f} examples/sec on {trainer.device}")


def _book_table() -> str:
    """Each model's book settings (its defaults for `normlab train`), as a table."""
    from normlab.models import list_models
    from normlab.train.config import BOOK_SETTINGS

    lines = ["each model's book settings (its defaults; 10 epochs unless said):",
             f"  {'model':<12} {'lr':>6} {'batch':>6} {'resize':>7}  other"]
    for name in list_models():
        book = BOOK_SETTINGS.get(name, {})
        other = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in book.items()
                          if k not in ("optim.lr", "data.batch_size", "data.resize"))
        lines.append(f"  {name:<12} {book.get('optim.lr', '-'):>6} {book.get('data.batch_size', '-'):>6} "
                     f"{book.get('data.resize', '-'):>7}  {other}")
    return "\n".join(lines)


def cmd_models(args) -> int:
    print(_book_table())
    return 0


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
    _add_train_parser(commands)
    models = commands.add_parser("models", help="the zoo, with each model's book settings",
                                 description="The models normlab builds, with the book's lr, batch size and input size.")
    models.set_defaults(func=cmd_models)
    return parser


def _add_train_parser(commands) -> None:
    from normlab.train.loop import OPTIMIZERS, SCHEDULES

    p = commands.add_parser("train", help="train a zoo model on Fashion-MNIST, MNIST or the regression task",
                            description="Train a model. Settings resolve as: defaults, the model's book settings "
                                        "(`normlab models`), --config, --set, then these flags.",
                            epilog=EPILOG_TRAIN + "\n" + _book_table(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="a model name (`normlab models` lists them); default: the config's")
    p.add_argument("--norm", help="any name from normlab.nn.list_norms(), or none")
    p.add_argument("--norm-position", choices=["before_act", "after_act"])
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--resize", type=int, help="input size (224: AlexNet/VGG/NiN, 96: GoogLeNet/ResNet-18)")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--momentum", type=float)
    p.add_argument("--schedule", choices=SCHEDULES, help="cosine decays to 0 over the whole run, per step")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--seed", type=int, help="seeds torch, numpy, Python and the data order")
    p.add_argument("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--dataset", choices=["fashion-mnist", "mnist", "poly"])
    p.add_argument("--train-subset", type=int, metavar="N", help="train on the first N examples only")
    p.add_argument("--init", choices=["xavier", "torch"], help="xavier: the book's (default); torch: torch's own")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], help="CUDA autocast")
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--config", help="a TOML file with [data] [model] [optim] [train] tables")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. optim.lr=0.5 or width_divisor in model.options={width_divisor=8}")
    p.add_argument("--out", help="run directory (default: runs/MODEL-NORM-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (default: the newest of this model)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    p.set_defaults(func=cmd_train)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ValueError, FileNotFoundError) as e:  # user errors: the message says what to do
        print(f"normlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("normlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
