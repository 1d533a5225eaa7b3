"""`normlab inspect RUN_DIR`: γ/β, the norm layers, recorded statistics, plots and recalibration of a run."""
from __future__ import annotations

import argparse
from pathlib import Path

from normlab.cli.train import run_mod


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
    effect = run_mod().recalibration_effect(config, model, args.method, args.num_batches, args.device)
    if effect is None:
        print("--recalibrate: this model has no batch norm with running statistics; nothing to recalibrate")
        return
    before, after = effect["before"], effect["after"]
    print(f"recalibrated the batch norms ({args.method}, {effect['batches']} of {effect['of']} training batches) "
          f"on {effect['device']}:\n  {effect['metric']} before {before:.4f}, after {after:.4f} "
          f"({after - before:+.4f}); the checkpoint is unchanged")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a positive number of batches, got {text!r}")
    return value


def add_parser(commands) -> None:
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
