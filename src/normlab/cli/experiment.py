"""`normlab experiment`: a study (grid × variants × seeds) and its report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


EPILOG_EXPERIMENT = """examples:
  normlab experiment --list                       the shipped studies
  normlab experiment bn_layers --scale quick      a data subset and 1-2 epochs: a smoke test
  normlab experiment bn_layers --jobs 2           the full study (10 epochs, 3 seeds)
  normlab experiment my-study.toml --out experiments/mine --resume   continue a stopped one
  normlab experiment report experiments/bn_layers-full               rebuild report.md
  normlab experiment bn_layers --shard 2/4 --out /shared/bn_layers    the 2nd of 4 parts (a Slurm array job)
  normlab experiment bn_layers --ray head-node:6379                   every run a task on a Ray cluster
  (docs/cluster.md: a Slurm array script and a Ray cluster)
"""


def cmd_experiment(args) -> int:
    from normlab.experiments import expand, list_presets, load_spec
    from normlab.experiments.report import write_report
    from normlab.experiments.runner import default_out, run_experiment, shard_runs

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
    shard = _shard(args.shard) if args.shard is not None else None
    engine = None
    if args.ray is not None:
        from normlab.experiments import ray_engine
        if args.jobs != 1:
            raise ValueError("--jobs does not apply with --ray: the cluster runs as many runs at once as its "
                             "CPUs (and GPUs) hold at --cpus-per-run (and --gpus-per-run) each")
        engine = ray_engine.engine(args.ray or None, cpus=args.cpus_per_run, gpus=args.gpus_per_run)
    elif (args.cpus_per_run, args.gpus_per_run) != (1.0, 0.0):
        raise ValueError("--cpus-per-run and --gpus-per-run are Ray's task shares; use them with --ray")
    spec = load_spec(args.target[0])
    index = run_experiment(spec, args.scale, args.out, jobs=args.jobs, resume=args.resume, shard=shard,
                           engine=engine)
    folder = Path(args.out) if args.out else default_out(spec, args.scale)
    print(f"report: {write_report(folder)}")
    if shard is not None:
        mine = {run.name for run in shard_runs(expand(spec, args.scale), shard)}
        index["runs"] = [e for e in index["runs"] if e["name"] in mine]
    failed = [e["name"] for e in index["runs"] if e["status"] == "failed"]
    if failed:
        print(f"normlab: error: {len(failed)} run(s) failed: {', '.join(failed)} (errors in results.json; "
              "--resume retries them)", file=sys.stderr)
        return 1
    return 0


def _shard(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit()) or not 1 <= int(k) <= int(n):
        raise ValueError(f"--shard takes K/N, the K-th of N parts with 1 <= K <= N (a Slurm array's "
                         f"--array=1-N gives K as $SLURM_ARRAY_TASK_ID), got {text!r}")
    return int(k), int(n)


def add_parser(commands) -> None:
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
    p.add_argument("--shard", metavar="K/N", help="run only the K-th of N parts of the study (every N-th run "
                   "from the K-th), for N commands on a shared folder, e.g. a Slurm job array; finished runs are "
                   "kept, and `report DIR` merges the parts")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="run every run as a task on a Ray "
                   "cluster: at ADDRESS (host:port), else the one RAY_ADDRESS or `ray start` names, else a new "
                   "one on this machine (needs the `ray` extra; docs/cluster.md)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, metavar="N",
                   help="with --ray: CPUs (and torch threads) per run (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=0.0, metavar="N",
                   help="with --ray: GPUs per run, a fraction to share one (default 0)")
    p.set_defaults(func=cmd_experiment)
