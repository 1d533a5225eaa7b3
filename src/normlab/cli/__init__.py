"""The `normlab` command line, a module per command. Only this package (and the experiment
runner) prints.

    normlab data status              where each dataset was found, and whether it verifies
    normlab data verify              check every file found (MD5, header, counts); exit 1 on a problem
    normlab data fetch [DATASET]     download from the official mirrors into the cache
    normlab data summary [DATASET]   counts, class names, pixel mean/std
    normlab train MODEL [...]         one run into a run directory (train.py; `normlab models`)
    normlab summary MODEL [--norm N]  a model's layers: output shapes, parameters, MACs
    normlab summary --inception-table the seeds' Inception-vs-convolution table
    normlab experiment SPEC|PRESET    a study: grid × variants × seeds, then report.md
    normlab experiment report DIR     rebuild an experiment's report
    normlab inspect RUN_DIR           γ/β, running statistics, recorded statistics and plots of a run
"""
from __future__ import annotations

import argparse
import errno
import sys

from normlab import __version__
from normlab.cli import data, experiment, inspect, summary, train
from normlab.data.idx import DataError
from normlab.train.distributed import RankLostError

__all__ = ["main", "build_parser", "os_error"]

# what to do about an OSError, by errno
OS_FIXES = {
    errno.ENOSPC: "the disk is full: free space, then continue with --resume (the last good checkpoint is kept)",
    errno.EDQUOT: "the disk quota is used up: free space, then continue with --resume",
    errno.EACCES: "no permission: choose a path you can write to (or read, for an input)",
    errno.EPERM: "no permission: choose a path you can write to (or read, for an input)",
    errno.EROFS: "the filesystem is read-only: choose a writable path",
    errno.ENOTDIR: "a part of the path is a file: choose another path",
    errno.EISDIR: "it is a folder: give a file",
    errno.EIO: "the disk reported an I/O error: check the disk, or copy the file again",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="normlab", description="normlab: classic CNNs and normalization layers, written from scratch.",
        epilog="Run `normlab COMMAND --help` for a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for command in (data, train, summary, experiment, inspect):
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ValueError, RankLostError) as e:  # the message says what to do
        print(f"normlab: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the system's words, with the path and what to do
        print(f"normlab: error: {os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("normlab: interrupted", file=sys.stderr)
        return 130


def os_error(e: OSError) -> str:
    """One line for an OSError: the path, the system's reason, what to do."""
    if e.strerror is None:  # raised with a message of our own (normlab.run.check_out)
        return str(e)
    where = f"{e.filename}: " if e.filename else ""
    fix = OS_FIXES.get(e.errno)
    return f"{where}{e.strerror}" + (f"; {fix}" if fix else "")
