"""``dynacor bench``: methods x noise settings x seeds on one feature file, as a table.

Every method in one (setting, seed) cell sees exactly the same given labels: synthetic noise is
applied here, once, to ``clean_labels`` with a generator seeded by (seed, setting), and DynaCor
gets those labels with ``noise=None``. Avg-GMM and the oracle ceiling read the margins of that
cell's DynaCor run (the same dynamics) when DynaCor is in the grid.

`run_method` is the one entry point for running a single detector on a `FeatureSet`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dynacor import baselines
from dynacor.config import DynaCorConfig
from dynacor.errors import InputError
from dynacor.featureset import FeatureSet
from dynacor.metrics import detection_metrics

DETECTORS = ("dynacor", "aum", "cl", "avg-gmm", "simifeat", "simifeat-r", "cores")
ORACLES = ("ceiling",)  # use ground truth: benchmark rows only, never detectors
METHODS = DETECTORS + ORACLES
DEFAULT_METHODS = "dynacor,aum,cl,avg-gmm,simifeat,cores,ceiling"
DEFAULT_SETTINGS = "sym:0.6,asym:0.3,inst:0.4,human:worse_labels,human:aggre_labels"
ABLATIONS = ("no-align", "no-cluster", "selection", "gamma", "signal", "paper")
GAMMAS = (0.05, 0.1, 0.2, 0.5)
SETTING_NAMES = {"human:worse_labels": "worse", "human:aggre_labels": "aggre"}
METRICS = ("f1", "precision", "recall", "auroc")


# --------------------------------------------------------------------------------------------
# One method on one data set
# --------------------------------------------------------------------------------------------


def run_method(
    method: str, data: FeatureSet, config: DynaCorConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, float, dict[str, Any]]:
    """Run one detector on ``data`` (its ``labels`` are the given labels).

    Parameters
    ----------
    method : one of `DETECTORS` (the oracle ceiling is refused: it needs ground truth)
    data : features (N, D), labels (N,), optional features_aug, clean_labels (metrics only)
    config : DynaCor settings; the baselines that train the MLP head use its head settings
        (epochs, lr, batch size, ...). ``config.noise``, if set, is applied to ``clean_labels``
        first (seeded by ``seed``), and every method then sees those labels.
    seed : replaces ``config.seed``

    Returns
    -------
    flagged : (N,) bool
    score : (N,) float, higher = more likely noisy
    seconds : wall time of the method (noise excluded)
    extra : method-specific: ``result`` (DynaCor's `Result`), ``given_labels``, AUM thresholds, ...
    """
    from dynacor.device import pick_device, set_threads
    from dynacor.validate import check_config

    if method in ORACLES:
        raise InputError("command line", "--method", f"a detector, one of {DETECTORS} "
                         "(the ceiling is an oracle that uses ground truth)", repr(method))  # fmt: skip
    if method not in DETECTORS:
        raise InputError("command line", "--method", f"one of {DETECTORS}", repr(method))
    config = check_config(config.replace(seed=seed))
    if config.noise is not None:
        if data.clean_labels is None:
            raise InputError(data.source.get("file", "<arrays>"), "clean_labels", "present to apply synthetic noise", "no such field")
        data = with_labels(data, synthetic_labels(data, config.noise, seed))
        config = config.replace(noise=None)
    set_threads(config.num_threads)
    device = pick_device(config.device)
    n_classes = data.num_classes
    labels = data.labels
    extra: dict[str, Any] = {"given_labels": labels}
    started = time.perf_counter()
    if method == "dynacor":
        from dynacor.pipeline import run

        result = run(config, data)
        extra["result"] = result
        return result.flagged, result.q_noisy.astype(np.float64), result.timings["total"], extra
    if method == "avg-gmm":
        # Standalone: train the head on the originals alone (no corrupted copies).
        from dynacor.classifier import train_head

        dyn = train_head(data.features, labels, n_classes, generator=baselines._torch_generator(seed),
                         device=device, **baselines.head_settings(config))  # fmt: skip
        flagged, score = baselines.avg_gmm(dyn.margins, seed=seed)
        extra["margins"] = dyn.margins
    elif method == "aum":
        flagged, score, info = baselines.aum(data.features, labels, n_classes, seed=seed,
                                             head=baselines.head_settings(config), device=device)  # fmt: skip
        extra.update(info)
    elif method == "cl":
        flagged, score = baselines.confident_learning(data.features, labels, n_classes, seed=seed)
    elif method in ("simifeat", "simifeat-r"):
        flagged, score = baselines.simifeat(data.features, labels, n_classes, features_aug=data.features_aug,
                                            mode="vote" if method == "simifeat" else "rank")  # fmt: skip
    else:  # cores
        flagged, score = baselines.cores(data.features, labels, n_classes, seed=seed,
                                         head=baselines.head_settings(config), device=device)  # fmt: skip
    return flagged, score, time.perf_counter() - started, extra


def synthetic_labels(data: FeatureSet, spec: str, seed: int) -> np.ndarray:
    """``spec`` noise on ``data.clean_labels``; the generator depends on (seed, spec) only. Returns (N,)."""
    from dynacor.noise import apply_noise

    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(spec.encode())]))
    return apply_noise(spec, data.clean_labels, data.num_classes, rng, features=data.features)


def with_labels(data: FeatureSet, labels: np.ndarray) -> FeatureSet:
    """A shallow copy of ``data`` with other given labels."""
    import dataclasses

    return dataclasses.replace(data, labels=np.asarray(labels, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


def parse_list(text: str, field: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise InputError("command line", field, "a comma-separated list", repr(text))
    if allowed is not None:
        for item in items:
            if item not in allowed:
                raise InputError("command line", field, f"items from {allowed}", repr(item))
    return items


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in parse_list(text, "--seeds")]
    except ValueError:
        raise InputError("command line", "--seeds", "comma-separated integers >= 0, e.g. 0,1,2", repr(text)) from None
    if any(s < 0 for s in seeds):
        raise InputError("command line", "--seeds", "integers >= 0", repr(text))
    return seeds


def setting_labels(data: FeatureSet, setting: str, seed: int, extra_labels: dict[str, np.ndarray]) -> np.ndarray:
    """Given labels (N,) of one setting: ``KIND:RATE`` synthetic noise or ``human:KEY``."""
    if setting.startswith("human:"):
        return extra_labels[setting.partition(":")[2]]
    return synthetic_labels(data, setting, seed)


def load_setting_arrays(path: Path, settings: list[str], data: FeatureSet) -> dict[str, np.ndarray]:
    """The label arrays named by ``human:KEY`` settings, checked against ``data``."""
    from dynacor.noise import parse_noise

    out: dict[str, np.ndarray] = {}
    for setting in settings:
        if not setting.startswith("human:"):
            try:
                parse_noise(setting)
            except ValueError as exc:
                raise InputError("command line", "--settings", "KIND:RATE (sym, asym, inst) or human:KEY", f"{setting!r} ({exc})") from None
            continue
        key = setting.partition(":")[2]
        if path.suffix.lower() != ".npz":
            raise InputError(path, key, "an .npz array (human:KEY settings read npz files)", path.suffix)
        with np.load(path, allow_pickle=False) as archive:
            if key not in archive.files:
                raise InputError(path, key, "present (named by --settings human:KEY)", f"keys {sorted(archive.files)}")
            arr = np.asarray(archive[key])
        out[key] = arr
    return out


def _check_labels(file: Path, key: str, labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise InputError(file, key, f"a 1-D array of length {n}", f"shape {labels.shape}")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_classes:
        raise InputError(file, key, f"integer class indices in [0, {num_classes})", f"dtype {labels.dtype}, range [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def ablation_variants(names: list[str], base: DynaCorConfig) -> list[tuple[str, DynaCorConfig | None]]:
    """(row name, config) of each ablation run; config None marks a row read off the default run."""
    out: list[tuple[str, DynaCorConfig | None]] = []
    for name in names:
        if name == "no-align":
            out.append(("dynacor[no-align]", base.replace(align_loss=False)))
        elif name == "no-cluster":
            out.append(("dynacor[no-cluster]", base.replace(cluster_loss=False)))
        elif name == "selection":
            for sel in ("last", "init"):
                if sel != base.selection:
                    out.append((f"dynacor[sel={sel}]", base.replace(selection=sel)))
            out.append(("dynacor[sel=oracle-best]", None))
        elif name == "gamma":
            out += [(f"dynacor[gamma={g}]", base.replace(gamma=g)) for g in GAMMAS if g != base.gamma]
        elif name == "paper":
            # The paper exactly: no centroid refinement, a single encoder initialisation.
            out.append(("dynacor[paper]", base.replace(refine_steps=0, restarts=1)))
            out.append(("dynacor[paper,lr=0.1]", base.replace(refine_steps=0, restarts=1, lr=0.1)))
        elif name == "signal":
            out += [(f"dynacor[signal={s}]", base.replace(signal=s)) for s in ("sign", "margin", "prob") if s != base.signal]
    return out


def run_grid(
    data: FeatureSet,
    methods: list[str],
    settings: list[str],
    seeds: list[int],
    config: DynaCorConfig,
    extra_labels: dict[str, np.ndarray],
    ablations: list[str] = (),
    log: Callable[[str], None] = lambda line: None,
) -> list[dict[str, Any]]:
    """Run every (setting, seed, method) cell; returns one row per cell (see `ROW_FIELDS`)."""
    from dynacor.ceiling import supervised_ceiling

    rows: list[dict[str, Any]] = []
    needs_dynacor = "dynacor" in methods or "ceiling" in methods or bool(ablations)
    order = [m for m in ("dynacor",) if needs_dynacor] + [m for m in methods if m != "dynacor"]
    variants = ablation_variants(list(ablations), config)
    for setting in settings:
        for seed in seeds:
            given = setting_labels(data, setting, seed, extra_labels)
            cell = with_labels(data, given)
            truth = given != data.clean_labels
            base = {"setting": setting, "seed": seed, "noise_rate": float(truth.mean())}

            cell_rows: list[dict[str, Any]] = []

            def add(method: str, flagged, score, seconds: float, note: str = "", metrics=None,
                    _rows=cell_rows, _truth=truth, _base=base) -> None:  # fmt: skip
                m = metrics if metrics is not None else detection_metrics(flagged, _truth, score)
                _rows.append({"method": method, **_base, **{k: m[k] for k in METRICS}, "seconds": seconds,
                              "oracle": method in ORACLES, "note": note})  # fmt: skip
                log(_progress_line(_rows[-1]))

            result = None
            for method in order:
                if method == "dynacor":
                    flagged, score, seconds, extra = run_method("dynacor", cell, config, seed)
                    result = extra["result"]
                    if "dynacor" in methods:
                        add("dynacor", flagged, score, seconds, f"encoder epoch {result.chosen_epoch}")
                elif method == "avg-gmm" and result is not None:
                    started = time.perf_counter()
                    flagged, score = baselines.avg_gmm(result.margins_all[: data.num_samples], seed=seed)
                    seconds = result.timings["prepare"] + result.timings["classifier"] + time.perf_counter() - started
                    add("avg-gmm", flagged, score, seconds, "margins of the DynaCor run")
                elif method == "ceiling":
                    started = time.perf_counter()
                    signs = result.signs_all[: data.num_samples]
                    ceil = supervised_ceiling(signs, truth, seed=seed)
                    # DynaCor on the same held-out samples, so the two F1s are comparable.
                    held = ceil.test_index
                    same = detection_metrics(result.flagged[held], truth[held], result.q_noisy[held])
                    add("ceiling", ceil.flagged, ceil.score, time.perf_counter() - started,
                        f"ORACLE (ground truth); DynaCor on the same held-out half: F1 {100 * same['f1']:.1f}",
                        metrics=ceil.metrics)  # fmt: skip
                else:
                    flagged, score, seconds, _ = run_method(method, cell, config, seed)
                    add(method, flagged, score, seconds)
            for name, variant in variants:
                if variant is None:  # oracle-best encoder epoch, read off the default run's log
                    f1s = [e.get("f1", float("nan")) for e in result.encoder_epochs]
                    best = int(np.nanargmax(f1s))
                    entry = result.encoder_epochs[best]
                    metrics = {"f1": entry["f1"], "auroc": entry.get("auroc", float("nan")),
                               "precision": float("nan"), "recall": float("nan")}  # fmt: skip
                    add(name, None, None, 0.0, f"ORACLE epoch choice: epoch {best}", metrics=metrics)
                    continue
                flagged, score, seconds, extra = run_method("dynacor", cell, variant, seed)
                add(name, flagged, score, seconds, f"encoder epoch {extra['result'].chosen_epoch}")
            rows += cell_rows
    return rows


def _progress_line(row: dict[str, Any]) -> str:
    return (f"{row['setting']:>20} seed {row['seed']} {row['method']:<24} F1 {100 * row['f1']:5.1f}  "
            f"AUROC {100 * row['auroc']:5.1f}  {row['seconds']:6.1f} s")  # fmt: skip


ROW_FIELDS = ("method", "setting", "seed", "noise_rate", *METRICS, "seconds", "oracle", "note")


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation (ddof 1; 0 for one seed) over seeds per (method, setting)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["setting"]), []).append(row)
    out = []
    for (method, setting), group in groups.items():
        entry: dict[str, Any] = {"method": method, "setting": setting, "seeds": len(group)}
        for key in (*METRICS, "seconds", "noise_rate"):
            values = np.array([g[key] for g in group], dtype=np.float64)
            ok = values[np.isfinite(values)]
            entry[key] = float(ok.mean()) if ok.size else float("nan")
            entry[f"{key}_std"] = float(ok.std(ddof=1)) if ok.size > 1 else 0.0
        entry["oracle"] = any(g["oracle"] for g in group) or "ORACLE" in group[0]["note"]
        out.append(entry)
    return out


def _pct(value: float, std: float | None = None) -> str:
    if not np.isfinite(value):
        return "-"
    return f"{100 * value:.1f}" if std is None else f"{100 * value:.1f} ± {100 * std:.1f}"


def setting_label(setting: str) -> str:
    return SETTING_NAMES.get(setting, setting)


def markdown_tables(summary: list[dict[str, Any]], settings: list[str]) -> str:
    """Two Markdown tables: F1 per method x setting with the average, then every metric per cell."""
    methods = list(dict.fromkeys(s["method"] for s in summary))
    by = {(s["method"], s["setting"]): s for s in summary}
    noise = {s["setting"]: s["noise_rate"] for s in summary}
    head = [f"{setting_label(st)} ({100 * noise.get(st, float('nan')):.0f}%)" for st in settings]
    lines = ["| method | " + " | ".join(head) + " | avg F1 | avg time (s) |",
             "|---|" + "---|" * (len(settings) + 2)]  # fmt: skip
    for method in methods:
        cells, f1s, secs = [], [], []
        for st in settings:
            s = by.get((method, st))
            if s is None:
                cells.append("-")
                continue
            cells.append(_pct(s["f1"], s["f1_std"]))
            f1s.append(s["f1"])
            secs.append(s["seconds"])
        name = f"{method} (ORACLE)" if by.get((method, settings[0]), {}).get("oracle") else method
        avg = _pct(float(np.mean(f1s))) if f1s else "-"
        sec = f"{np.mean(secs):.1f}" if secs else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg} | {sec} |")
    lines += ["", "| method | setting | seeds | F1 | precision | recall | AUROC | time (s) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for method in methods:
        for st in settings:
            s = by.get((method, st))
            if s is None:
                continue
            lines.append(f"| {method} | {setting_label(st)} | {s['seeds']} | {_pct(s['f1'], s['f1_std'])} | "
                         f"{_pct(s['precision'])} | {_pct(s['recall'])} | {_pct(s['auroc'])} | "
                         f"{s['seconds']:.1f} ± {s['seconds_std']:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def machine_description() -> str:
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {cores} cores available, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def write_outputs(out: Path, rows: list[dict], summary: list[dict], markdown: str, header: str) -> list[Path]:
    import pandas as pd

    from dynacor.atomic import write_text

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "runs.csv", out / "summary.csv", out / "table.md"]
    write_text(paths[0], pd.DataFrame(rows, columns=list(ROW_FIELDS)).to_csv(index=False))
    write_text(paths[1], pd.DataFrame(summary).to_csv(index=False))
    write_text(paths[2], header + "\n" + markdown)
    return paths


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``dynacor bench`` options (called by `dynacor.cli.build_parser`)."""
    defaults = DynaCorConfig()
    parser.add_argument("--features", required=True, metavar="FILE", help="feature file (.npz) with clean_labels")
    parser.add_argument("--methods", default=DEFAULT_METHODS, metavar="LIST",
                        help=f"comma-separated, from {','.join(METHODS)} (default {DEFAULT_METHODS}); "
                        "ceiling is an ORACLE trained on ground truth")  # fmt: skip
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, metavar="LIST",
                        help="comma-separated noise settings: KIND:RATE applied to clean_labels (sym, asym, inst) "
                        f"or human:KEY for an npz label array (default {DEFAULT_SETTINGS})")  # fmt: skip
    parser.add_argument("--seeds", default="0,1,2", metavar="LIST", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--ablations", default="", metavar="LIST",
                        help=f"DynaCor ablations, comma-separated from {','.join(ABLATIONS)} "
                        f"(gamma: {', '.join(map(str, GAMMAS))}; selection: last, init and the oracle-best epoch)")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="write runs.csv, summary.csv and table.md here")
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N samples (quick checks)")
    group = parser.add_argument_group("DynaCor settings (defaults: DynaCorConfig)")
    group.add_argument("--config", metavar="FILE.json", help="read settings from a JSON file (flags below override it)")
    group.add_argument("--epochs", type=int, help=f"classifier epochs (default {defaults.epochs})")
    group.add_argument("--lr", type=float, help=f"classifier learning rate (default {defaults.lr})")
    group.add_argument("--encoder-epochs", type=int, help=f"encoder epochs (default {defaults.encoder_epochs})")
    group.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="default auto")
    group.add_argument("--threads", type=int, dest="num_threads", help="CPU threads (default: one per core, at most 8)")


def main(args: argparse.Namespace) -> int:
    """Run the grid described by ``args``; print the table; write it under ``--out``. Returns the exit code."""
    from dynacor.cli import config_from_args
    from dynacor.featurefile import load_features

    methods = parse_list(args.methods, "--methods", METHODS)
    settings = parse_list(args.settings, "--settings")
    seeds = parse_seeds(args.seeds)
    ablations = parse_list(args.ablations, "--ablations", ABLATIONS) if args.ablations else []
    config = config_from_args(args)
    if config.noise is not None:
        raise InputError(args.config or "command line", "noise", "unset (bench applies --settings itself)", config.noise)
    path = Path(args.features)
    data = load_features(path, "labels", needs_clean=True)
    extra_labels = load_setting_arrays(path, settings, data)
    if args.limit is not None:
        if args.limit < data.num_classes:
            raise InputError("command line", "--limit", f"at least the number of classes ({data.num_classes})", args.limit)
        data = _head(data, args.limit)
        extra_labels = {k: v[: args.limit] for k, v in extra_labels.items()}
    for key, arr in extra_labels.items():
        extra_labels[key] = _check_labels(path, key, arr, data.num_samples, data.num_classes)
    if args.out:
        _check_writable(Path(args.out))

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    log(f"bench: {data.num_samples} samples, {data.num_classes} classes; {len(methods)} methods x "
        f"{len(settings)} settings x {len(seeds)} seeds; {machine_description()}")  # fmt: skip
    rows = run_grid(data, methods, settings, seeds, config, extra_labels, ablations, log)
    summary = summarise(rows)
    markdown = markdown_tables(summary, settings)
    command = bench_command(args)
    header = (f"# dynacor bench\n\n- data: `{path}` ({data.num_samples} samples)\n- command: `{command}`\n"
              f"- machine: {machine_description()}\n- seeds: {', '.join(map(str, seeds))}\n"
              f"- DynaCor config: `{config.to_dict()}`\n- F1 in %, mean ± std over seeds; the ceiling is an "
              "ORACLE trained on ground-truth flags (scored on a held-out half), not a detector.\n")  # fmt: skip
    print(markdown)
    if args.out:
        for p in write_outputs(Path(args.out), rows, summary, markdown, header):
            log(f"bench: wrote {p}")
    return 0


def _head(data: FeatureSet, n: int) -> FeatureSet:
    import dataclasses

    def cut(a):
        return None if a is None else a[:n]

    return dataclasses.replace(data, features=data.features[:n], labels=data.labels[:n], features_aug=cut(data.features_aug),
                               clean_labels=cut(data.clean_labels), ids=cut(data.ids), paths=cut(data.paths))  # fmt: skip


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
    for flag, name in (("--limit", "limit"), ("--config", "config"), ("--epochs", "epochs"), ("--lr", "lr"),
                       ("--encoder-epochs", "encoder_epochs"), ("--device", "device"),
                       ("--threads", "num_threads")):  # fmt: skip
        value = getattr(args, name, None)
        if value is not None:
            parts += [flag, str(value)]
    if args.out:
        parts += ["--out", str(args.out)]
    return " ".join(shlex.quote(p) for p in parts)
