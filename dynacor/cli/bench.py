"""``dynacor bench``: the options, and the grid of `dynacor.runs.bench` run on a feature file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dynacor.baselines.registry import methods_help
from dynacor.cli.options import settings_file, user_settings
from dynacor.data.spec import SourceSpec
from dynacor.errors import InputError
from dynacor.method.config import DEVICES, DynaCorConfig
from dynacor.runs.bench import (
    ABLATIONS,
    DEFAULT_METHODS,
    DEFAULT_SETTINGS,
    GAMMAS,
    HALF_SEED,
    HALVES,
    METHODS,
    check_setting_labels,
    load_half,
    machine_description,
    markdown_tables,
    parse_list,
    parse_seeds,
    run_grid,
    split_halves,
    summarise,
    take_rows,
    write_outputs,
)
from dynacor.runs.request import build_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``dynacor bench`` options (called by `dynacor.cli.main.build_parser`)."""
    defaults = DynaCorConfig()
    parser.add_argument("--features", required=True, metavar="FILE", help="feature file (.npz) with clean_labels")
    parser.add_argument("--methods", default=DEFAULT_METHODS, metavar="LIST",
                        help=f"comma-separated, from {','.join(METHODS)} (default {DEFAULT_METHODS}): "
                        + methods_help(METHODS))  # fmt: skip
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, metavar="LIST",
                        help="comma-separated noise settings: KIND:RATE applied to clean_labels (sym, asym, inst) "
                        f"or human:KEY for an npz label array (default {DEFAULT_SETTINGS})")  # fmt: skip
    parser.add_argument("--seeds", default="0,1,2", metavar="LIST", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--ablations", default="", metavar="LIST",
                        help=f"DynaCor ablations, comma-separated from {','.join(ABLATIONS)} "
                        f"(gamma: {', '.join(map(str, GAMMAS))}; selection: last, init and the oracle-best epoch)")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="write runs.csv, summary.csv and table.md here")
    parser.add_argument("--half", choices=HALVES,
                        help="run on one half of the file, split by a fixed permutation (seed "
                        f"{HALF_SEED}): tune (to choose settings) or report (only to report results); "
                        "the half is named in table.md and the CSVs (default: all samples)")  # fmt: skip
    parser.add_argument("--limit", type=int, metavar="N",
                        help="use only the first N samples, of the --half when one is given (quick checks)")  # fmt: skip
    group = parser.add_argument_group("DynaCor settings (defaults: DynaCorConfig)")
    group.add_argument("--config", metavar="FILE.json", help="read settings from a JSON file (flags below override it)")
    group.add_argument("--epochs", type=int, help=f"classifier epochs (default {defaults.epochs})")
    group.add_argument("--lr", type=float, help=f"classifier learning rate (default {defaults.lr})")
    group.add_argument("--encoder-epochs", type=int, help=f"encoder epochs (default {defaults.encoder_epochs})")
    group.add_argument("--device", choices=DEVICES, help="default auto")
    group.add_argument("--threads", type=int, dest="num_threads", help="CPU threads (default: one per core, at most 8)")


def main(args: argparse.Namespace) -> int:
    """Run the grid described by ``args``; print the table; write it under ``--out``. Returns the exit code."""
    import numpy as np

    methods = parse_list(args.methods, "--methods", METHODS)
    settings = parse_list(args.settings, "--settings")
    seeds = parse_seeds(args.seeds)
    ablations = parse_list(args.ablations, "--ablations", ABLATIONS) if args.ablations else []
    config = build_config(SourceSpec(kind="features", path=args.features), user_settings(args), settings_file(args))
    if config.noise is not None:
        raise InputError(args.config or "command line", "noise", "unset (bench applies --settings itself)", config.noise)
    path = Path(args.features)
    data, extra_labels = load_half(path, settings, None)
    file_samples = data.num_samples
    if args.half is not None:
        # The half first, so --limit picks rows of that half and a quick check never crosses over.
        data, extra_labels = take_rows(data, extra_labels, split_halves(file_samples)[args.half])
    if args.limit is not None:
        if args.limit < data.num_classes:
            raise InputError("command line", "--limit", f"at least the number of classes ({data.num_classes})", args.limit)
        data, extra_labels = take_rows(data, extra_labels, np.arange(min(args.limit, data.num_samples)))
    for key, arr in extra_labels.items():
        extra_labels[key] = check_setting_labels(path, key, arr, data.num_samples, data.num_classes)
    if args.out:
        _check_writable(Path(args.out))

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    log(f"bench: {data.num_samples} samples, {data.num_classes} classes; {len(methods)} methods x "
        f"{len(settings)} settings x {len(seeds)} seeds; {machine_description()}")  # fmt: skip
    rows = run_grid(data, methods, settings, seeds, config, extra_labels, ablations, log, half=args.half or "all")
    summary = summarise(rows)
    markdown = markdown_tables(summary, settings)
    command = bench_command(args)
    header = (f"# dynacor bench\n\n- data: `{path}` ({data.num_samples} samples)\n"
              f"- half: {_half_line(args, file_samples)}\n- command: `{command}`\n"
              f"- machine: {machine_description()}\n- seeds: {', '.join(map(str, seeds))}\n"
              f"- DynaCor config: `{config.to_dict()}`\n- F1 in %, mean ± std over seeds; the ceiling is an "
              "ORACLE trained on ground-truth flags (scored on a held-out half), not a detector.\n"
              "- FNR@k: false negative rate at a budget equal to the true noise rate (the top k samples by "
              "score, k = the number truly noisy, ties by index; = 1 - precision@k), lower is better.\n")  # fmt: skip
    print(markdown)
    if args.out:
        for p in write_outputs(Path(args.out), rows, summary, markdown, header):
            log(f"bench: wrote {p}")
    return 0


def _half_line(args: argparse.Namespace, file_samples: int) -> str:
    """Which rows of the file the table is about, for its header."""
    limit = f", first {args.limit} of them (--limit)" if args.limit is not None else ""
    if args.half is None:
        return f"all ({file_samples} samples{limit})"
    size = len(split_halves(file_samples)[args.half])
    return (f"{args.half} ({size} of {file_samples} samples, fixed permutation seed {HALF_SEED}; "
            f"`dynacor.runs.bench.split_halves`{limit})")  # fmt: skip


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, "--out", "a writable directory", str(exc)) from None
    if not os.access(out, os.W_OK):
        raise InputError(out, "--out", "a writable directory", "not writable")


def bench_command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (from the parsed options, not ``sys.argv``)."""
    import shlex

    parts = ["dynacor", "bench", "--features", str(args.features), "--methods", args.methods,
             "--settings", args.settings, "--seeds", args.seeds]  # fmt: skip
    if args.ablations:
        parts += ["--ablations", args.ablations]
    for flag, name in (("--half", "half"), ("--limit", "limit"), ("--config", "config"), ("--epochs", "epochs"), ("--lr", "lr"),
                       ("--encoder-epochs", "encoder_epochs"), ("--device", "device"),
                       ("--threads", "num_threads")):  # fmt: skip
        value = getattr(args, name, None)
        if value is not None:
            parts += [flag, str(value)]
    if args.out:
        parts += ["--out", str(args.out)]
    return " ".join(shlex.quote(p) for p in parts)
