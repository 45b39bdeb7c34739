"""How close are a run's self-estimates (noise rate, precision, recall; docs/estimates.md) to the
truth? Runs DynaCor with its defaults on one half of the dev file for each noise setting and seed
and compares.

Usage: python benchmarks/studies/estimates_study.py --half tune|report|all [--seeds 0,1,2] [--out FILE.md]
       [--config FILE.json]

The windows and the margin were chosen on the ``tune`` half; the ``report`` half is only reported.
``all`` reads every row: for label sets no choice was ever made on (`annotator_labels.py`).
Besides the default cut (score > 0.5) it checks the cut ``--target-precision 0.9`` chooses, and
reports each run's F1 and FNR at a budget equal to the noise rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dynacor.method.config import DynaCorConfig
from dynacor.method.estimates import threshold_for_target
from dynacor.method.metrics import detection_metrics, fnr_at_noise_rate
from dynacor.method.pipeline import run
from dynacor.runs.bench import (
    DEFAULT_SETTINGS,
    SETTING_NAMES,
    load_half,
    setting_labels,
)

QUANTITIES = ("noise_rate", "precision", "recall")
GOALS = {"noise_rate": 5.0, "precision": 7.0, "recall": 7.0}  # points, on sym, inst and the human settings


def truth(flagged: np.ndarray, noisy: np.ndarray) -> dict[str, float]:
    hits = float((flagged & noisy).sum())
    return {"noise_rate": float(noisy.mean()), "precision": hits / max(int(flagged.sum()), 1),
            "recall": hits / max(int(noisy.sum()), 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default="../shared/data/cifar10_effl0_dev.npz")
    parser.add_argument("--half", choices=("tune", "report", "all"), required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--out", help="also write the Markdown table here")
    parser.add_argument("--config", help="a JSON file of DynaCorConfig fields to run with instead of the defaults")
    args = parser.parse_args()
    config = DynaCorConfig.from_dict(json.loads(Path(args.config).read_text())) if args.config else DynaCorConfig()
    path = Path(args.features)
    settings = args.settings.split(",")
    data, extra = load_half(path, settings, None if args.half == "all" else args.half)
    lines = ["| setting | seed | noise rate: est (interval) / true | precision | recall | in interval | "
             "P@target 0.9: true (flagged) | F1 | FNR@k |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    quality: dict[str, list[list[float]]] = {}
    errors: dict[str, list[list[float]]] = {}
    for setting in settings:
        name = SETTING_NAMES.get(setting, setting)
        for seed in (int(s) for s in args.seeds.split(",")):
            given = setting_labels(data, setting, seed, extra)
            result = run(config.replace(seed=seed), data.with_labels(given))
            noisy = given != data.clean_labels
            true = truth(result.flagged, noisy)
            est = result.estimates
            cells, inside = [], 0
            for q in QUANTITIES:
                e = est[q]
                cells.append(f"{100 * e['value']:.1f} ({100 * e['low']:.0f}-{100 * e['high']:.0f}) / {100 * true[q]:.1f}")
                inside += e["low"] <= true[q] <= e["high"]
            errors.setdefault(name, []).append([100 * (est[q]["value"] - true[q]) for q in QUANTITIES])
            cut, _ = threshold_for_target(est["curve"], target_precision=0.9)
            at_target = truth(result.q_noisy > cut, noisy)
            f1 = 100 * detection_metrics(result.flagged, noisy)["f1"]
            fnr = 100 * fnr_at_noise_rate(result.q_noisy, noisy)
            quality.setdefault(name, []).append([f1, fnr])
            lines.append(f"| {name} | {seed} | " + " | ".join(cells) + f" | {inside}/3 | "
                         f"{100 * at_target['precision']:.1f} ({100 * float((result.q_noisy > cut).mean()):.1f}%) | "
                         f"{f1:.1f} | {fnr:.1f} |")  # fmt: skip
            print(lines[-1], flush=True)
    lines += ["", "| setting | mean error noise / P / R (points) | largest |error| noise / P / R |", "|---|---|---|"]
    for name, rows in errors.items():
        a = np.asarray(rows)
        lines.append(f"| {name} | " + " / ".join(f"{v:+.1f}" for v in a.mean(0)) + " | "
                     + " / ".join(f"{v:.1f}" for v in np.abs(a).max(0)) + " |")  # fmt: skip
    lines += ["", "| setting | F1 (mean over seeds) | FNR@k |", "|---|---|---|"]
    for name, rows in quality.items():
        lines.append(f"| {name} | {np.mean([r[0] for r in rows]):.1f} | {np.mean([r[1] for r in rows]):.1f} |")
    lines.append(f"| avg | {np.mean([np.mean([r[0] for r in rows]) for rows in quality.values()]):.1f} | "
                 f"{np.mean([np.mean([r[1] for r in rows]) for rows in quality.values()]):.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
