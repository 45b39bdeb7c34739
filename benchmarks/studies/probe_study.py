"""DynaCor combined with CL's cross-fitted probe and class-pair counting (issue 23, item 3; tuning half only)

    python benchmarks/studies/probe_study.py [--half tune] [--seeds 0,1,2] [--out FILE.jsonl]

One DynaCor run (defaults) and one cross-fitted logistic regression (`cross_val_probs`, the tuned
C of `--method cl`) per setting and seed give every compared flag set:

- ``dynacor``, ``cl`` (cleanlab `find_label_issues` on the probe), ``cl-early`` (the same on
  DynaCor's early softmax, the noise window: no extra training);
- unions and majority votes of those flag sets;
- rank sums of DynaCor's score with the probe's normalised margin (best other class's probability
  minus the given one's) and the early softmax's, cut per given class at cleanlab's calibrated
  counts (of the probe, or of the early softmax), or globally at a flag set's size.

Prints one JSON line per run and the mean F1 (%) per setting.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues
from scipy.stats import rankdata

from dynacor.baselines.confident_learning import cross_val_probs
from dynacor.method.combine import class_counts, normalised_margin
from dynacor.method.config import DynaCorConfig
from dynacor.method.device import set_threads
from dynacor.method.metrics import detection_metrics
from dynacor.method.pipeline import run
from dynacor.runs.bench import (
    DEFAULT_SETTINGS,
    SETTING_NAMES,
    f1_by_setting,
    load_half,
    parse_seeds,
    setting_labels,
)

ROOT = Path(__file__).resolve().parents[2]


def top_per_class(score: np.ndarray, given: np.ndarray, counts: np.ndarray) -> np.ndarray:
    flagged = np.zeros(len(given), dtype=bool)
    for j, count in enumerate(counts):
        members = np.flatnonzero(given == j)
        flagged[members[np.argsort(-score[members], kind="stable")[: int(count)]]] = True
    return flagged


def top(score: np.ndarray, count: int) -> np.ndarray:
    flagged = np.zeros(len(score), dtype=bool)
    flagged[np.argsort(-score, kind="stable")[:count]] = True
    return flagged


def variants(dyn: np.ndarray, q_noisy: np.ndarray, given: np.ndarray, probe: np.ndarray, early: np.ndarray) -> dict[str, np.ndarray]:
    early = early / early.sum(axis=1, keepdims=True)
    cl = np.asarray(find_label_issues(given, probe), dtype=bool)
    cl_early = np.asarray(find_label_issues(given, early), dtype=bool)
    r_dyn, r_probe, r_early = (rankdata(v) for v in (q_noisy, normalised_margin(probe, given), normalised_margin(early, given)))
    c = probe.shape[1]
    counts, counts_early = class_counts(probe, given, c), class_counts(early, given, c)
    counts_mixed = class_counts(0.5 * (probe + early), given, c)
    out = {"dynacor": dyn, "cl": cl, "cl-early": cl_early,
           "dynacor | cl-early": dyn | cl_early, "dynacor | cl": dyn | cl,
           "vote 2 of 3 (dynacor, cl, cl-early)": (dyn.astype(int) + cl + cl_early) >= 2,
           "dynacor | (cl & cl-early)": dyn | (cl & cl_early)}  # fmt: skip
    sums = {"rs(dyn, probe)": r_dyn + r_probe, "rs(2 dyn, probe)": 2 * r_dyn + r_probe,
            "rs(dyn, 2 probe)": r_dyn + 2 * r_probe, "rs(dyn, probe, early)": r_dyn + r_probe + r_early,
            "rs(dyn, early)": r_dyn + r_early}  # fmt: skip
    for name, summed in sums.items():
        out[f"{name} @ cl counts"] = top_per_class(summed, given, counts)
        out[f"{name} @ early counts"] = top_per_class(summed, given, counts_early)
        out[f"{name} @ mixed counts"] = top_per_class(summed, given, counts_mixed)
        out[f"{name} @ |dyn|"] = top(summed, int(dyn.sum()))
        out[f"{name} @ |dyn or cl|"] = top(summed, int((dyn | cl).sum()))
    out["rs(dyn, probe) @ cl counts | cl-early"] = out["rs(dyn, probe) @ cl counts"] | cl_early
    out["rs(dyn, probe) @ cl counts | dyn"] = out["rs(dyn, probe) @ cl counts"] | dyn
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--half", default="tune", choices=("tune", "report"))
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=None, help="also write one JSON line per run here")
    args = parser.parse_args()
    set_threads(0)
    settings = args.settings.split(",")
    data, extra = load_half(Path(args.features), settings, args.half)
    table: dict[str, dict[str, list[float]]] = {}
    names = [SETTING_NAMES.get(s, s) for s in settings]
    for setting, name in zip(settings, names, strict=True):
        for seed in parse_seeds(args.seeds):
            given = setting_labels(data, setting, seed, extra)
            noisy = given != data.clean_labels
            started = time.perf_counter()
            result = run(DynaCorConfig(seed=seed, combine="none"), data.with_labels(given))
            dyn_seconds = time.perf_counter() - started
            started = time.perf_counter()
            probe = cross_val_probs(data.features, given, data.num_classes, seed=seed)
            probe_seconds = time.perf_counter() - started
            early = np.asarray(result.estimate_parts["window_probs"][0], dtype=np.float64)
            assert early.shape[0] == len(given), "estimate_rows must cover every original"
            row = {"setting": name, "seed": seed, "seconds": [round(dyn_seconds, 1), round(probe_seconds, 1)]}
            for variant, flags in variants(result.flagged, result.q_noisy, given, probe, early).items():
                row[variant] = round(100.0 * detection_metrics(flags, noisy)["f1"], 2)
                table.setdefault(variant, {}).setdefault(name, []).append(row[variant])
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as out:
                    out.write(json.dumps(row) + "\n")
    print(f1_by_setting(table, names, "variant"))


if __name__ == "__main__":
    main()
