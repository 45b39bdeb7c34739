"""``dynacor bench``: methods x noise settings x seeds on one feature file, as a table.

Every method in one (setting, seed) cell sees exactly the same given labels: synthetic noise is
applied here, once, to ``clean_labels`` by `dynacor.method.noise.synthetic_labels` (the same
labels ``detect --noise`` draws), and DynaCor gets those labels with ``noise=None``. Avg-GMM and
the oracle ceiling read the margins of that cell's DynaCor run (the same dynamics) when DynaCor is
in the grid. Each method runs through `dynacor.baselines.registry.run_method`.

Every row carries F1, precision and recall of the method's own cut, AUROC of its score, and the
false negative rate at a budget equal to the true noise rate (`fnr_at_noise_rate`: the top k
samples by score, k = the number truly noisy; = 1 - precision@k), which measures the order a
review queue walks through whatever the cut (Pickler, Kamassury and Silva, arXiv 2510.16211).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dynacor import baselines
from dynacor.baselines.registry import METHODS as REGISTRY
from dynacor.baselines.registry import run_method
from dynacor.data.featurefile import load_features
from dynacor.errors import InputError
from dynacor.method.config import DynaCorConfig
from dynacor.method.featureset import FeatureSet
from dynacor.method.metrics import detection_metrics, fnr_at_noise_rate
from dynacor.method.noise import synthetic_labels

METHODS = tuple(REGISTRY)
DEFAULT_METHODS = "dynacor,aum,cl,avg-gmm,simifeat,cores,ceiling"
DEFAULT_SETTINGS = "sym:0.6,asym:0.3,inst:0.4,human:worse_labels,human:aggre_labels"
ABLATIONS = ("clusters", "early", "no-align", "no-cluster", "selection", "gamma", "signal", "paper")
GAMMAS = (0.05, 0.1, 0.2, 0.5)
SETTING_NAMES = {"human:worse_labels": "worse", "human:aggre_labels": "aggre"}
METRICS = ("f1", "precision", "recall", "auroc", "fnr_at_noise_rate")
HALVES = ("tune", "report")
HALF_SEED = 12345


def split_halves(n: int) -> dict[str, np.ndarray]:
    """The two fixed halves of N samples: ``tune`` to design and choose settings, ``report`` only
    to report results. A permutation seeded with `HALF_SEED` cuts at N // 2.

    Returns
    -------
    ``{"tune": (N // 2,) int64, "report": (N - N // 2,) int64}``, sorted row indices, disjoint,
    together every row
    """
    order = np.random.default_rng(HALF_SEED).permutation(n)
    return {"tune": np.sort(order[: n // 2]), "report": np.sort(order[n // 2 :])}


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
    return synthetic_labels(setting, data.clean_labels, data.num_classes, seed, data.features)


def load_setting_arrays(path: Path, settings: list[str], data: FeatureSet) -> dict[str, np.ndarray]:
    """The label arrays named by ``human:KEY`` settings, checked against ``data``."""
    from dynacor.method.noise import parse_noise

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


def take_rows(data: FeatureSet, extra_labels: dict[str, np.ndarray], keep: np.ndarray
              ) -> tuple[FeatureSet, dict[str, np.ndarray]]:  # fmt: skip
    """The rows ``keep`` of the data and of every ``human:KEY`` label array, together."""
    return data.subset(keep), {k: v[keep] for k, v in extra_labels.items()}


def load_half(path: Path, settings: list[str], half: str | None) -> tuple[FeatureSet, dict[str, np.ndarray]]:
    """A benchmark feature file (clean labels required), its ``human:KEY`` label arrays, and only
    the rows of ``half`` (`split_halves`; None: every row). The studies under benchmarks/ start here."""
    data = load_features(path, "labels", needs_clean=True)
    extra_labels = load_setting_arrays(path, settings, data)
    if half is None:
        return data, extra_labels
    return take_rows(data, extra_labels, split_halves(data.num_samples)[half])


def f1_by_setting(table: dict[Any, dict[str, list[float]]], settings: list[str], row_name: str) -> str:
    """Markdown table of a study: one row per key of ``table`` (a variant, a C, ...), the mean F1
    over seeds per setting, and their average. ``table[key][setting]`` holds one F1 (%) per seed."""
    lines = [f"| {row_name} | " + " | ".join(settings) + " | avg |", "|---|" + "---|" * (len(settings) + 1)]
    for key, cells in table.items():
        means = [float(np.mean(cells[s])) for s in settings]
        label = f"{key:g}" if isinstance(key, float) else str(key)
        lines.append(f"| {label} | " + " | ".join(f"{m:.1f}" for m in means) + f" | {np.mean(means):.1f} |")
    return "\n".join(lines)


def check_setting_labels(file: Path, key: str, labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise InputError(file, key, f"a 1-D array of length {n}", f"shape {labels.shape}")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_classes:
        raise InputError(file, key, f"integer class indices in [0, {num_classes})", f"dtype {labels.dtype}, range [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def ablation_variants(names: list[str], base: DynaCorConfig) -> list[tuple[str, DynaCorConfig | None]]:
    """(row name, config) of each ablation run; config None marks a row read off the default run."""
    out: list[tuple[str, DynaCorConfig | None]] = []
    for name in names:
        if name == "clusters":
            # DynaCor's clusters alone, the default before the combined score (issue 23).
            out.append(("dynacor[clusters]", base.replace(combine="none")))
        elif name == "early":
            # The combination without the probe: what runs without features get.
            out.append(("dynacor[early]", base.replace(combine="early")))
        elif name == "no-align":
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
            paper = base.replace(refine_steps=0, restarts=1, combine="none")
            out.append(("dynacor[paper]", paper))
            out.append(("dynacor[paper,lr=0.1]", paper.replace(lr=0.1)))
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
    half: str = "all",
) -> list[dict[str, Any]]:
    """Run every (setting, seed, method) cell; returns one row per cell (see `ROW_FIELDS`).

    ``half`` names the rows ``data`` holds (`HALVES` or ``all``); it is copied into every row.
    """
    from dynacor.baselines.ceiling import supervised_ceiling

    rows: list[dict[str, Any]] = []
    needs_dynacor = "dynacor" in methods or "ceiling" in methods or bool(ablations)
    order = [m for m in ("dynacor",) if needs_dynacor] + [m for m in methods if m != "dynacor"]
    variants = ablation_variants(list(ablations), config)
    for setting in settings:
        for seed in seeds:
            given = setting_labels(data, setting, seed, extra_labels)
            cell = data.with_labels(given)
            truth = given != data.clean_labels
            base = {"half": half, "setting": setting, "seed": seed, "noise_rate": float(truth.mean())}

            cell_rows: list[dict[str, Any]] = []

            def add(method: str, flagged, score, seconds: float, note: str = "", metrics=None, oracle: bool = False,
                    _rows=cell_rows, _truth=truth, _base=base) -> None:  # fmt: skip
                m = metrics if metrics is not None else detection_metrics(flagged, _truth, score)
                if "fnr_at_noise_rate" not in m:  # rows without a score (an oracle epoch choice) get NaN
                    m = {**m, "fnr_at_noise_rate": float("nan") if score is None else fnr_at_noise_rate(score, _truth)}
                _rows.append({"method": method, **_base, **{k: m[k] for k in METRICS}, "seconds": seconds,
                              "oracle": oracle or (method in REGISTRY and REGISTRY[method].oracle), "note": note})  # fmt: skip
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
                    # Its score covers the held-out half only: the budget is that half's noisy count.
                    ceil_metrics = {**ceil.metrics, "fnr_at_noise_rate": fnr_at_noise_rate(ceil.score, truth[held])}
                    add("ceiling", ceil.flagged, ceil.score, time.perf_counter() - started,
                        f"ORACLE (ground truth); DynaCor on the same held-out half: F1 {100 * same['f1']:.1f}",
                        metrics=ceil_metrics)  # fmt: skip
                else:
                    flagged, score, seconds, _ = run_method(method, cell, config, seed)
                    add(method, flagged, score, seconds)
            for name, variant in variants:
                if variant is None:  # oracle-best encoder epoch, read off the default run's log
                    f1s = [e.get("f1", float("nan")) for e in result.encoder_epochs]
                    best = int(np.nanargmax(f1s))
                    entry = result.encoder_epochs[best]
                    metrics = {"f1": entry["f1"], "auroc": entry.get("auroc", float("nan")),
                               "precision": float("nan"), "recall": float("nan"),
                               "fnr_at_noise_rate": float("nan")}  # fmt: skip
                    add(name, None, None, 0.0, f"ORACLE epoch choice: epoch {best}", metrics=metrics, oracle=True)
                    continue
                flagged, score, seconds, extra = run_method("dynacor", cell, variant, seed)
                add(name, flagged, score, seconds, f"encoder epoch {extra['result'].chosen_epoch}")
            rows += cell_rows
    return rows


def _progress_line(row: dict[str, Any]) -> str:
    return (f"{row['setting']:>20} seed {row['seed']} {row['method']:<24} F1 {100 * row['f1']:5.1f}  "
            f"AUROC {100 * row['auroc']:5.1f}  FNR@k {100 * row['fnr_at_noise_rate']:5.1f}  "
            f"{row['seconds']:6.1f} s")  # fmt: skip


ROW_FIELDS = ("method", "half", "setting", "seed", "noise_rate", *METRICS, "seconds", "oracle", "note")


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
        entry: dict[str, Any] = {"method": method, "half": group[0]["half"], "setting": setting, "seeds": len(group)}
        for key in (*METRICS, "seconds", "noise_rate"):
            values = np.array([g[key] for g in group], dtype=np.float64)
            ok = values[np.isfinite(values)]
            entry[key] = float(ok.mean()) if ok.size else float("nan")
            entry[f"{key}_std"] = float(ok.std(ddof=1)) if ok.size > 1 else 0.0
        entry["oracle"] = any(g["oracle"] for g in group)
        out.append(entry)
    return out


def _pct(value: float, std: float | None = None) -> str:
    if not np.isfinite(value):
        return "-"
    return f"{100 * value:.1f}" if std is None else f"{100 * value:.1f} ± {100 * std:.1f}"


def setting_label(setting: str) -> str:
    return SETTING_NAMES.get(setting, setting)


def _per_setting_table(summary_by: dict, methods: list[str], settings: list[str], head: list[str], key: str,
                       avg_name: str, with_time: bool) -> list[str]:  # fmt: skip
    """One row per method: ``key`` (mean ± std over seeds) per setting, its average (and time)."""
    lines = ["| method | " + " | ".join(head) + f" | {avg_name} |" + (" avg time (s) |" if with_time else ""),
             "|---|" + "---|" * (len(settings) + 1 + int(with_time))]  # fmt: skip
    for method in methods:
        cells, values, secs = [], [], []
        for st in settings:
            s = summary_by.get((method, st))
            if s is None:
                cells.append("-")
                continue
            cells.append(_pct(s[key], s[f"{key}_std"]))
            values.append(s[key])
            secs.append(s["seconds"])
        name = f"{method} (ORACLE)" if summary_by.get((method, settings[0]), {}).get("oracle") else method
        avg = _pct(float(np.mean(values))) if values else "-"  # a NaN cell makes the average "-"
        row = f"| {name} | " + " | ".join(cells) + f" | {avg} |"
        if with_time:
            row += f" {np.mean(secs):.1f} |" if secs else " - |"
        lines.append(row)
    return lines


def markdown_tables(summary: list[dict[str, Any]], settings: list[str]) -> str:
    """Three Markdown tables: F1 per method x setting with the average and time; the FNR at the
    noise rate (`fnr_at_noise_rate`, lower is better) per method x setting with the average; then
    every metric per cell."""
    methods = list(dict.fromkeys(s["method"] for s in summary))
    by = {(s["method"], s["setting"]): s for s in summary}
    noise = {s["setting"]: s["noise_rate"] for s in summary}
    head = [f"{setting_label(st)} ({100 * noise.get(st, float('nan')):.0f}%)" for st in settings]
    lines = _per_setting_table(by, methods, settings, head, "f1", "avg F1", with_time=True)
    lines += ["", "FNR at a budget equal to the true noise rate (%, lower is better: the share of truly noisy "
              "samples outside the top k by score, k = their number):", ""]  # fmt: skip
    lines += _per_setting_table(by, methods, settings, head, "fnr_at_noise_rate", "avg FNR@k", with_time=False)
    lines += ["", "| method | setting | seeds | F1 | precision | recall | AUROC | FNR@k | time (s) |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for method in methods:
        for st in settings:
            s = by.get((method, st))
            if s is None:
                continue
            lines.append(f"| {method} | {setting_label(st)} | {s['seeds']} | {_pct(s['f1'], s['f1_std'])} | "
                         f"{_pct(s['precision'])} | {_pct(s['recall'])} | {_pct(s['auroc'])} | "
                         f"{_pct(s['fnr_at_noise_rate'])} | {s['seconds']:.1f} ± {s['seconds_std']:.1f} |")  # fmt: skip
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
