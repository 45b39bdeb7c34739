"""The ``dynacor`` command: ``detect`` (one run), ``bench`` (the benchmark grid), ``export`` and
``import-review`` (a reviewed run to and from cleanlab, FiftyOne, Label Studio).

The output files and columns of ``detect`` are a contract other tools rely on: see docs/outputs.md.
Exit codes: 0 success, 2 bad input, 1 a failed run, 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys

from dynacor.cli import bench
from dynacor.cli.detect import EXIT_BAD_INPUT, cmd_detect
from dynacor.cli.export import (
    add_export_arguments,
    add_import_arguments,
    cmd_export,
    cmd_import_review,
)
from dynacor.cli.features import add_arguments as add_features_arguments
from dynacor.cli.features import cmd_features
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

    features = sub.add_parser(
        "features",
        help="extract image features into a feature directory (resumable; in-process or on Ray)",
        description="Run a frozen backbone over an image folder or manifest and write FEATURES_DIR "
        "(features.npy, features_aug.npy, samples.parquet, manifest.json) for `detect --features`. "
        "Works in shards: a killed extraction resumes where it stopped.",
    )
    add_features_arguments(features)

    export = sub.add_parser(
        "export",
        help="hand a (reviewed) run to cleanlab, FiftyOne or Label Studio",
        description="Write a finished run with its review decisions as a cleanlab-style table, a FiftyOne "
        "dataset folder or Label Studio tasks with a matching labelling config.",
    )
    add_export_arguments(export)
    imported = sub.add_parser(
        "import-review",
        help="record a Label Studio export as review decisions",
        description="Read Label Studio's JSON export of tasks made by `dynacor export --to labelstudio` and record "
        "each task's latest annotation as a decision: the given class -> keep, the suggested class -> "
        "accept, another class -> relabel.",
    )
    add_import_arguments(imported)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "detect":
            return cmd_detect(args)
        if args.command == "features":
            return cmd_features(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "import-review":
            return cmd_import_review(args)
        return bench.main(args)
    except (InputError, MissingError, CorruptError, RunExistsError) as exc:
        print(f"dynacor: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def entry() -> None:
    """The ``dynacor`` console command and ``python -m dynacor``: `main`, then exit without tearing
    the interpreter down.

    Tearing down what a run loaded (torch, its thread pools, OpenVINO, a few thousand modules)
    took 1.7-1.9 s after every ``dynacor detect`` on the 2-core VM, more than the detection itself on
    the built-in sample. Every file is written and closed by then (atomic writes), so the exit
    handlers run (Ray, multiprocessing, logging), the streams are flushed and the process ends.
    In-process callers (tests, scripts) call `main`, which returns the exit code.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)
