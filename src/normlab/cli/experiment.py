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
    p.set_defaults(func=cmd_experiment)
