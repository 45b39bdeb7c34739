"""The ``dynacor`` command: ``detect`` (one run) and ``bench`` (the benchmark grid).

The output files and columns of ``detect`` are a contract other tools rely on: see README.md.
Exit codes: 0 success, 2 bad input, 1 a failed run, 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys

from dynacor.cli import bench
from dynacor.cli.detect import EXIT_BAD_INPUT, cmd_detect
from dynacor.cli.options import add_config_arguments, add_source_arguments
from dynacor.errors import CorruptError, InputError, MissingError, RunExistsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynacor",
        description="Find wrongly labelled samples in an image classification data set (DynaCor, CVPR 2024).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    detect = sub.add_parser(
        "detect",
        help="run detection on one data set and write a run directory",
        description="Run DynaCor on one data set. Writes RUN_DIR/samples.csv (index,id,given_label,"
        "suggested_label,noisy_score,flagged,...), RUN_DIR/dynamics.npy, RUN_DIR/run.json and more; "
        "prints a table of epochs to stderr and a one-line summary to stdout.",
    )
    add_source_arguments(detect)
    detect.add_argument("--out", required=True, metavar="RUN_DIR", help="directory to write the run into")
    detect.add_argument("--overwrite", action="store_true",
                        help="replace a finished run already in RUN_DIR (the folder is emptied first)")
    add_config_arguments(detect)
    detect.add_argument("--quiet", action="store_true", help="print only the summary line")

    grid = sub.add_parser(
        "bench",
        help="run the benchmark grid (methods x noise settings x seeds) and write a table",
        description="Run methods x noise settings x seeds on a feature file and write Markdown and CSV tables.",
    )
    bench.add_arguments(grid)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "detect":
            return cmd_detect(args)
        return bench.main(args)
    except (InputError, MissingError, CorruptError, RunExistsError) as exc:
        print(f"dynacor: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
