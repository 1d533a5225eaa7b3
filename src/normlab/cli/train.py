"""`normlab train` and `normlab models`: one run into a run directory, and the zoo with its book settings."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normlab.train.distributed import RankLostError


EPILOG_TRAIN = """examples:
  normlab train lenet_bn                          # the book's BN-LeNet: lr 1.0, batch 256, 10 epochs
  normlab train lenet_bn --schedule cosine --seed 1
  normlab train resnet20 --norm group --epochs 5 --out runs/r20-group
  normlab train lenet_bn --resume --out runs/r20-group   # continue a stopped run exactly
  normlab train mlp --norm batch --set model.options.activation=sigmoid
  normlab train --config my-recipe.toml --set optim.lr=0.5 --set train.epochs=3
  normlab train lenet_bn --record-stats --out runs/bn    # then: normlab inspect runs/bn
  torchrun --nproc_per_node 2 -m normlab.cli train lenet_bn --sync-bn --out runs/ddp   # 2 processes, one run
"""

# CLI flag -> config key; None (flag not given) leaves the config's value
TRAIN_FLAGS = {"norm": "model.norm", "norm_position": "model.norm_position", "epochs": "train.epochs",
               "lr": "optim.lr", "batch_size": "data.batch_size", "resize": "data.resize",
               "optimizer": "optim.optimizer", "momentum": "optim.momentum", "schedule": "optim.schedule",
               "weight_decay": "optim.weight_decay", "seed": "train.seed", "device": "train.device",
               "dataset": "data.dataset", "amp": "train.amp", "channels_last": "train.channels_last",
               "compile": "train.compile", "init": "train.init", "train_subset": "data.train_subset",
               "record_stats": "train.record_stats", "record_every": "train.record_every",
               "sync_bn": "train.sync_bn"}


def _train_config(args):
    from normlab.train import config as cfg

    flags = {key: getattr(args, name) for name, key in TRAIN_FLAGS.items()}
    sets = cfg.parse_set(args.set)
    if not args.resume:
        return cfg.resolve(args.model, args.config, sets, flags), None
    return run_mod().resume_config(args.out, args.model, args.config, sets, flags)


def run_mod():
    """normlab.run, imported when a command needs it (it imports torch)."""
    from normlab import run
    return run


class EpochPrinter:
    """One line per epoch, as the run goes."""

    def on_epoch_end(self, trainer, m) -> None:
        scores = f"test mse {m['test_mse']:.4g}" if trainer.regression else \
            f"train acc {m['train_acc']:.3f}, test acc {m['test_acc']:.3f}"
        print(f"epoch {m['epoch']:>3}/{trainer.config.train.epochs}: loss {m['train_loss']:.3f}, {scores}, "
              f"{m['examples_per_sec']:,.0f} examples/sec, {m['epoch_seconds']:.1f} s", flush=True)


def cmd_train(args) -> int:
    from normlab.train import distributed

    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    config, out = _train_config(args)
    with distributed.process_group(config.train.device) as replica:
        # in a function of its own, so that the trainer (a DDP model holds the group) is gone
        # before the group is destroyed
        return _train_in_group(args, config, out, replica)


def _train_in_group(args, config, out, replica) -> int:
    """cmd_train's run, inside the process group."""
    from normlab.train.callbacks import StopOnSignal
    from normlab.train.loop import DivergenceError

    out = out or Path(args.out or run_mod().default_out(config))
    run_mod().check_out(out)  # a file, or a place this user cannot write: said now, before the data loads
    if not args.resume:
        _check_new_run_dir(out, args.overwrite)
    say = print if replica.is_main else (lambda *a, **k: None)  # rank 0 speaks for the job
    ranks = f", {replica.world_size} processes" if replica.distributed else ""
    say(f"training {config.model.name} (norm {run_mod().norm_name(config)}) on {config.data.dataset}: "
        f"lr {config.optim.lr}, batch {config.data.batch_size}{ranks}, {config.train.epochs} epochs -> {out}",
        flush=True)
    printer = [] if args.quiet or not replica.is_main else [EpochPrinter()]
    with StopOnSignal() as stop:
        try:
            status, trainer = run_mod().run(config, out, resume=args.resume, quiet=args.quiet,
                                            extra_callbacks=[stop] + printer)
        except (DivergenceError, RankLostError) as e:
            kept = (f"The last good checkpoint is {out / 'checkpoint.pt'}." if (out / "checkpoint.pt").is_file()
                    else "No epoch had finished, so there is no checkpoint to keep.")
            # a lost rank is told by every survivor (each saw its own failure); a divergence once, by rank 0
            (print if isinstance(e, RankLostError) else say)(f"normlab: error: {e}\n{kept}", file=sys.stderr)
            return 1
    if status == "interrupted":
        say(f"interrupted at epoch {trainer.epoch + 1}, batch {trainer.step}; checkpoint written.\n"
            f"resume with: normlab train {config.model.name} --resume --out {out}", file=sys.stderr)
        return 130
    if replica.is_main:
        _print_book_lines(trainer)
        print(f"run directory: {out} ({', '.join(_run_files(out))})")
        if (out / "stats.jsonl").is_file():
            print(f"look inside with: normlab inspect {out}")
    return 0


def _check_new_run_dir(out: Path, overwrite: bool) -> None:
    """A new run goes into a new or empty directory, or replaces a run there with --overwrite."""
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a run" if (out / "config.toml").is_file() else "files"
        raise ValueError(f"{out} holds {what} already; continue it with --resume, replace it with --overwrite, "
                         "or choose another --out")


def _run_files(out: Path) -> list[str]:
    """The files a run writes that `out` holds: curves.png is missing without matplotlib."""
    return [name for name in run_mod().RUN_FILES if (out / name).is_file()]


def _print_book_lines(trainer) -> None:
    """The book's closing lines: final loss and accuracies, then examples/sec over all training steps."""
    from normlab.train.loop import overall_examples_per_sec

    if not trainer.history.epochs:
        return
    m = trainer.history.last
    if trainer.regression:
        print(f"loss {m['train_loss']:.3f}, test mse {m['test_mse']:.4g}")
    else:
        print(f"loss {m['train_loss']:.3f}, train acc {m['train_acc']:.3f}, test acc {m['test_acc']:.3f}")
    print(f"{overall_examples_per_sec(trainer.history.epochs):.1f} examples/sec on {trainer.device}")


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


def add_parser(commands) -> None:
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
    p.add_argument("--record-stats", action="store_true", default=None,
                   help="write stats.jsonl: γ/β, running statistics, the norms' inputs and gradient norms "
                        "(see `normlab inspect`)")
    p.add_argument("--record-every", type=int, metavar="K", help="with --record-stats: every K steps (default 50), "
                   "and at each epoch end")
    p.add_argument("--sync-bn", action="store_true", default=None,
                   help="under torchrun: batch norm statistics over the whole global batch (all ranks), "
                        "not each process's part (normlab.nn.SyncBatchNorm; works on CPU/gloo too)")
    p.add_argument("--config", help="a TOML file with [data] [model] [optim] [train] tables")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. optim.lr=0.5 or width_divisor in model.options={width_divisor=8}")
    p.add_argument("--out", help="run directory (default: runs/MODEL-NORM-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (default: the newest of this model)")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds (its files are removed "
                   "when the new run starts); without it an existing run directory is refused")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    p.set_defaults(func=cmd_train)
    models = commands.add_parser("models", help="the zoo, with each model's book settings",
                                 description="The models normlab builds, with the book's lr, batch size and input size.")
    models.set_defaults(func=cmd_models)
