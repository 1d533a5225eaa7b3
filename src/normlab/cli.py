"""The `normlab` command line. Only this module (and the experiment runner) prints.

    normlab data status              where each dataset was found, and whether it verifies
    normlab data verify              check every file found (MD5, header, counts); exit 1 on a problem
    normlab data fetch [DATASET]     download from the official mirrors into the cache
    normlab data summary [DATASET]   counts, class names, pixel mean/std
    normlab summary MODEL [--norm N]  a model's layers: output shapes, parameters, MACs
    normlab summary --inception-table the seeds' Inception-vs-convolution table
    normlab experiment SPEC|PRESET    a study: grid × variants × seeds, then report.md
    normlab experiment report DIR     rebuild an experiment's report
    normlab inspect RUN_DIR           γ/β, running statistics, recorded statistics and plots of a run
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

from normlab import __version__
from normlab.data import fashion_mnist as fm
from normlab.data.idx import DataError
from normlab.train.distributed import RankLostError

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
    out = Path(args.out) if args.out else run_mod().latest_run(cfg.resolve(args.model, args.config, sets, flags))
    if out is None or not (out / "config.toml").is_file():
        raise cfg.ConfigError(f"--resume found no run to continue ({out or 'no runs/ folder with a checkpoint'}); "
                              "name it with --out RUN_DIR, or start without --resume")
    saved = cfg.load(out / "config.toml")
    if args.model and args.model != saved.model.name:
        raise cfg.ConfigError(f"{out} is a run of model {saved.model.name!r}, not {args.model!r}")
    asked = cfg.override(cfg.override(saved, sets), {k: v for k, v in flags.items() if v is not None})
    changed = cfg.unresumable_changes(saved, asked)
    if changed:
        raise cfg.ConfigError(f"a resumed run keeps its config ({out / 'config.toml'}); only "
                              f"{', '.join(sorted(cfg.RESUMABLE))} may change, not {', '.join(changed)}")
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
    from normlab.train import distributed

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


RUN_FILES = ("curves.png", "metrics.jsonl", "checkpoint.pt", "config.toml", "summary.json", "stats.jsonl")


def _run_files(out: Path) -> list[str]:
    """The files a run writes that `out` holds: curves.png is missing without matplotlib."""
    return [name for name in RUN_FILES if (out / name).is_file()]


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


# ---- normlab summary ------------------------------------------------------------------------

EPILOG_SUMMARY = """examples:
  normlab summary lenet                          the book's LeNet at 28×28, as the book prints it
  normlab summary lenet_bn --norm group --format table
  normlab summary vgg -o width_divisor=4 --input-size 224 --format table --depth 1
  normlab summary resnet18 --norm layer --norm-position after_act
  normlab summary mlp -o in_features=2 -o hidden=[4] --num-classes 1 --norm batch --input-size 1,2
  normlab summary --inception-table              the seeds' Inception table (at 28×28)
"""


def _model_name(name: str) -> str:
    from normlab.models import list_models
    if name not in list_models():
        raise argparse.ArgumentTypeError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return name


def _norm_name(name: str) -> str:
    from normlab.nn import list_norms
    if name not in list_norms():
        raise argparse.ArgumentTypeError(f"unknown norm {name!r}; choose one of: {', '.join(list_norms())}")
    return name


def _input_size(text: str):
    """"28" (a square image, batch 1) or a full shape "1,1,28,28" (also "1x1x28x28")."""
    try:
        sizes = [int(t) for t in text.replace("x", ",").replace("×", ",").split(",") if t.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"input size {text!r}: give a side (28) or a shape (1,1,28,28)")
    return sizes[0] if len(sizes) == 1 else tuple(sizes)


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE, VALUE read as a Python literal (4, 0.5, (1, 2), 'relu') or else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"option {text!r}: expected KEY=VALUE, e.g. width_divisor=4")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def cmd_summary(args) -> int:
    from normlab.models import create_model, summary
    if args.inception_table:
        print(_inception_report())
        return 0
    if args.model is None:
        print("normlab summary: error: give a MODEL or --inception-table", file=sys.stderr)
        return 2
    try:
        net = create_model(args.model, norm=args.norm, norm_position=args.norm_position,
                           num_classes=args.num_classes, in_channels=args.in_channels,
                           **dict(args.option or ()))
        size = args.input_size or _default_input(net)
        s = summary(net, size)
    except ValueError as e:
        print(f"normlab: error: {e}", file=sys.stderr)
        return 1
    if args.format == "book":
        print(s.book(depth=args.depth or 1))
        print(f"# {args.model}: {s.total_params:,} parameters, {s.total_macs:,} MACs "
              f"for input {tuple(s.input_shape)}")
    else:
        print(s.table(depth=args.depth))
    return 0


def _default_input(net):
    """The side the book feeds the model (28 for ResNet-20), or an MLP's feature count."""
    if hasattr(net, "in_features"):
        return (1, net.in_features)
    return getattr(net, "book_size", None) or 28


def _inception_report() -> str:
    from normlab.models.summary import SEED_INCEPTION_TABLE, format_table, inception_sides, inception_table
    side = 28
    rows = [(name, f"{p:,}", pm, f"{m:,}", mm, " / ".join(SEED_INCEPTION_TABLE[name]))
            for name, p, m, pm, mm in inception_table(side)]
    sides = inception_sides()
    table = format_table(("layer", "parameters", "", "MACs", "", "seed: params / FLOPs"), rows,
                         align="lrlrll")
    return (f"An Inception block against plain convolutions, 192 input and 256 output channels,\n"
            f"on a {side}×{side} map (computed with normlab.models.summary; MACs are what the seed\n"
            f"calls FLOPs; millions truncated, as the seed's table is)\n\n{table}\n\n"
            f"Sides up to 64 at which all six of the seed's numbers hold: "
            f"{', '.join(map(str, sides)) or 'none'} (28 = 224/8, GoogLeNet's stage 3 on ImageNet).")


def _add_summary_parser(commands) -> None:
    from normlab.models import list_models
    from normlab.nn.blocks import NORM_POSITIONS
    p = commands.add_parser(
        "summary", help="a model's layers: output shapes, parameters, MACs",
        description="Build a model from the zoo and print what each layer outputs, holds and "
                    "computes (one forward pass of a random input in eval mode).",
        epilog=EPILOG_SUMMARY, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", type=_model_name, metavar="MODEL",
                   help=f"one of: {', '.join(list_models())}")
    p.add_argument("--norm", type=_norm_name, help="norm layer to plug in (default: the model's)")
    p.add_argument("--norm-position", choices=NORM_POSITIONS, help="norm before (default) or "
                   "after each activation")
    p.add_argument("--input-size", type=_input_size, help="a side (224) or a full shape "
                   "(1,1,224,224); default: the size the book uses")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-channels", type=int)
    p.add_argument("-o", "--option", type=_option, action="append", metavar="KEY=VALUE",
                   help="another model option, e.g. width_divisor=4, norm_slots=(2,4); repeatable")
    p.add_argument("--format", choices=("book", "table"), default="book",
                   help="book: `Conv2d output shape: torch.Size([...])` per top-level layer; "
                        "table: every module with parameters and MACs, and totals")
    p.add_argument("--depth", type=int, help="how deep to list modules (book: 1; table: all)")
    p.add_argument("--inception-table", action="store_true",
                   help="print the seeds' Inception table instead (parameters and MACs of an "
                        "Inception block against 3×3 and 5×5 convolutions)")
    p.set_defaults(func=cmd_summary)


# ---- normlab experiment -----------------------------------------------------------------------

EPILOG_EXPERIMENT = """examples:
  normlab experiment --list                       the shipped studies
  normlab experiment bn_layers --scale quick      a data subset and 1-2 epochs: a smoke test
  normlab experiment bn_layers --jobs 2           the full study (10 epochs, 3 seeds)
  normlab experiment my-study.toml --out experiments/mine --resume   continue a stopped one
  normlab experiment report experiments/bn_layers-full               rebuild report.md
"""


def cmd_experiment(args) -> int:
    from normlab.experiments import expand, list_presets, load_spec
    from normlab.experiments.report import write_report
    from normlab.experiments.runner import default_out, run_experiment

    if args.list:
        for name in list_presets():
            spec = load_spec(name)
            first = " ".join(spec.description.split()).split(". ")[0].split(" (")[0]
            print(f"{name:<14} {len(expand(spec, 'full')):>3} runs  {first}")
        return 0
    if not args.target:
        print("normlab experiment: error: give a SPEC.toml or PRESET (--list shows them), "
              "or `report DIR`", file=sys.stderr)
        return 2
    if args.target[0] == "report":
        if len(args.target) != 2:
            print("normlab experiment: error: `report` takes one experiment folder", file=sys.stderr)
            return 2
        print(f"report: {write_report(args.target[1])}")
        return 0
    if len(args.target) != 1:
        print(f"normlab experiment: error: one spec at a time, got {' '.join(args.target)}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        raise ValueError(f"--jobs takes a positive count, got {args.jobs}")
    spec = load_spec(args.target[0])
    index = run_experiment(spec, args.scale, args.out, jobs=args.jobs, resume=args.resume)
    folder = Path(args.out) if args.out else default_out(spec, args.scale)
    print(f"report: {write_report(folder)}")
    failed = [e["name"] for e in index["runs"] if e["status"] == "failed"]
    if failed:
        print(f"normlab: error: {len(failed)} run(s) failed: {', '.join(failed)} (errors in results.json; "
              "--resume retries them)", file=sys.stderr)
        return 1
    return 0


def _add_experiment_parser(commands) -> None:
    p = commands.add_parser(
        "experiment", help="run a study (a spec or a preset) over seeds and write its report",
        description="Run every run of a spec (grid × variants × seeds), each in its own run directory "
                    "under the experiment folder, then write report.md, results.csv and overlay plots. "
                    "With --resume, finished runs are kept and unfinished ones continue.",
        epilog=EPILOG_EXPERIMENT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="*", metavar="SPEC|PRESET",
                   help="a spec file or a preset name; or `report DIR`")
    p.add_argument("--list", action="store_true", help="list the presets")
    p.add_argument("--scale", choices=["quick", "full"], default="full",
                   help="quick: the spec's small settings (a data subset, 1-2 epochs); full (default): the study")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process with "
                   "torch threads = cores / jobs (default 1)")
    p.add_argument("--out", help="the experiment folder (default: experiments/NAME-SCALE)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment in the folder: skip finished runs, resume the others")
    p.set_defaults(func=cmd_experiment)


# ---- normlab inspect --------------------------------------------------------------------------

EPILOG_INSPECT = """examples:
  normlab train lenet_bn --record-stats --out runs/bn     record statistics while training
  normlab inspect runs/bn                                 γ/β of net[1], a per-layer table, plots
  normlab inspect runs/bn --out figures/bn                the plots in another folder
  normlab inspect runs/bn --recalibrate                   test accuracy before and after update_bn
  normlab inspect runs/bn --recalibrate --method precise --num-batches 50
"""


def cmd_inspect(args) -> int:
    from normlab.inspect import read_stats, report

    run_dir = Path(args.run_dir)
    config, model = run_mod().load_trained(run_dir)
    print(f"{run_dir}: {config.model.name}, norm {run_mod().norm_name(config)}, "
          f"{config.data.dataset}, lr {config.optim.lr}\n")
    print(report.first_norm_text(model) + "\n")
    print(report.norm_table(model) + "\n")
    records = read_stats(run_dir / "stats.jsonl")
    if records:
        print(report.stats_text(records) + "\n")
        _inspect_plots(records, Path(args.out) if args.out else run_dir, config)
    else:
        print(f"no stats.jsonl in {run_dir}: to record γ/β, the norms' inputs and the gradient norms over "
              f"training, train with --record-stats (or train.record_stats = true in a config or spec), e.g.\n"
              f"  normlab train {config.model.name} --record-stats --out {run_dir.parent / (run_dir.name + '-stats')}")
    if args.recalibrate:
        _inspect_recalibrate(args, config, model)
    return 0


def _inspect_plots(records, out: Path, config) -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        print("no plots: matplotlib is not installed; pip install 'normlab[plot]' to get them")
        return
    from normlab.inspect.plots import save_stats_plots

    title = f"{config.model.name}, norm {run_mod().norm_name(config)}, lr {config.optim.lr}"
    paths = save_stats_plots(records, out, title=title)
    print(f"plots: {', '.join(str(p) for p in paths)}")


def _inspect_recalibrate(args, config, model) -> None:
    from normlab.inspect import recalibrate
    from normlab.inspect.recalibrate import running_stat_layers
    from normlab.train.loop import evaluate, resolve_device

    if not running_stat_layers(model):
        print("--recalibrate: this model has no batch norm with running statistics; nothing to recalibrate")
        return
    device = resolve_device(args.device)
    model.to(device)
    train_iter, test_iter = run_mod().build_loaders(config.data, config.train.seed)
    regression = config.data.dataset == "poly"
    key = "test mse" if regression else "test acc"
    before = evaluate(model, test_iter, device, regression=regression)
    recalibrate(model, train_iter, args.method, num_batches=args.num_batches, device=device)
    after = evaluate(model, test_iter, device, regression=regression)
    used = len(train_iter) if args.num_batches is None else min(args.num_batches, len(train_iter))
    print(f"recalibrated the batch norms ({args.method}, {used} of {len(train_iter)} training batches) on {device}:\n"
          f"  {key} before {before:.4f}, after {after:.4f} ({after - before:+.4f}); the checkpoint is unchanged")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a positive number of batches, got {text!r}")
    return value


def _add_inspect_parser(commands) -> None:
    from normlab.inspect import METHODS

    p = commands.add_parser(
        "inspect", help="look inside a run: γ/β, running statistics, recorded statistics, recalibration",
        description="Print a run's first norm layer's γ and β (as the seeds did) and a table of every norm "
                    "layer, from its checkpoint. When the run recorded statistics (--record-stats), also "
                    "summarize stats.jsonl and draw gamma_beta.png, norm_inputs.png and grad_norms.png. "
                    "With --recalibrate, recompute the batch norms' running statistics on the training set "
                    "and show the test accuracy before and after.",
        epilog=EPILOG_INSPECT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (normlab train --out, or an experiment's runs/NAME)")
    p.add_argument("--out", help="folder for the plots (default: RUN_DIR)")
    p.add_argument("--recalibrate", action="store_true",
                   help="recompute the running statistics and compare test accuracy (the checkpoint is not changed)")
    p.add_argument("--method", choices=METHODS, default="cumulative",
                   help="cumulative (default): torch's update_bn, the average of per-batch statistics; precise: "
                        "precise-BN's population statistics of all values seen, which also covers D2LBatchNorm")
    p.add_argument("--num-batches", type=_positive, metavar="N", help="recalibrate on the first N training batches "
                   "(default: all)")
    p.add_argument("--device", default="auto", help="for --recalibrate: auto (default), cpu, cuda, ...")
    p.set_defaults(func=cmd_inspect)


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
    _add_summary_parser(commands)
    _add_experiment_parser(commands)
    _add_inspect_parser(commands)
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
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    p.set_defaults(func=cmd_train)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ValueError, FileNotFoundError, RankLostError) as e:  # the message says what to do
        print(f"normlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("normlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
