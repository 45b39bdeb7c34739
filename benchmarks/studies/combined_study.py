"""Which combination of DynaCor's flags with class-pair counting on its own early softmax leads?
(issue 23, item 3; tuning half only)

    python benchmarks/studies/combined_study.py [--half tune] [--seeds 0,1] [--out FILE.jsonl]

One DynaCor run (defaults) per setting and seed gives everything compared, with no extra training:
its flags (q > 0.5), its scores, and the softmax of every original averaged over the self-estimates'
two early windows (``noise``: epochs 2-7 of 30; ``recall``: 0-4), where the head has not yet
memorised the wrong labels. On each window's softmax, cleanlab's `find_label_issues` with three
filters (``prune_by_noise_rate``, its default; ``both``; ``confident_learning``) gives "CL on the
early softmax"; then the union and the intersection with DynaCor's flags, and a rank sum of
DynaCor's score with the early self-confidence (1 - p_given) cut at DynaCor's count, CL's count
and the union's count. Prints one JSON line per run and the mean F1 (%) per setting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues

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
FILTERS = ("prune_by_noise_rate", "both", "confident_learning")


def ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values, kind="stable"), kind="stable")


def top(score: np.ndarray, count: int) -> np.ndarray:
    flagged = np.zeros(len(score), dtype=bool)
    flagged[np.argsort(-score, kind="stable")[:count]] = True
    return flagged


def variants(flagged: np.ndarray, q_noisy: np.ndarray, given: np.ndarray, window_probs: np.ndarray) -> dict[str, np.ndarray]:
    """Every compared flag set, by name. window_probs (2, N, C): the noise and recall windows."""
    out = {"dynacor": flagged}
    for probs, window in zip(window_probs, ("noise", "recall"), strict=True):
        probs = probs / probs.sum(axis=1, keepdims=True)
        for name in FILTERS:
            cl = find_label_issues(given, probs, filter_by=name)
            out[f"cl on {window} window ({name})"] = cl
            out[f"dynacor or cl ({window}, {name})"] = cl | flagged
            out[f"dynacor and cl ({window}, {name})"] = cl & flagged
        summed = ranks(q_noisy) + ranks(1.0 - probs[np.arange(len(given)), given])
        default_cl = out[f"cl on {window} window (prune_by_noise_rate)"]
        for at, count in (("dynacor's", flagged.sum()), ("cl's", default_cl.sum()), ("the union's", (default_cl | flagged).sum())):
            out[f"rank sum ({window}) at {at} count"] = top(summed.astype(np.float64), int(count))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--half", default="tune", choices=("tune", "report"))
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--seeds", default="0,1")
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
            result = run(DynaCorConfig(seed=seed, combine="none"), data.with_labels(given))
            window_probs = np.asarray(result.estimate_parts["window_probs"], dtype=np.float64)
            assert window_probs.shape[1] == len(given), "estimate_rows must cover every original"
            row = {"setting": name, "seed": seed}
            for variant, flags in variants(result.flagged, result.q_noisy, given, window_probs).items():
                row[variant] = 100.0 * detection_metrics(flags, noisy)["f1"]
                table.setdefault(variant, {}).setdefault(name, []).append(row[variant])
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as out:
                    out.write(json.dumps(row) + "\n")
    print(f1_by_setting(table, names, "variant"))


if __name__ == "__main__":
    main()
