"""The loop the flag-combination studies share (combined_study.py, probe_study.py): one run of
DynaCor's clusters alone (``combine="none"``) per setting and seed on one half of the dev file,
the study's flag sets from it, their F1, one JSON line per run and the mean table."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dynacor.method.config import DynaCorConfig
from dynacor.method.device import set_threads
from dynacor.method.featureset import FeatureSet
from dynacor.method.metrics import detection_metrics
from dynacor.method.pipeline import Result, run
from dynacor.runs.bench import (
    DEFAULT_SETTINGS,
    SETTING_NAMES,
    f1_by_setting,
    load_half,
    parse_seeds,
    setting_labels,
)

ROOT = Path(__file__).resolve().parents[2]
# (data, given labels, DynaCor's run, seed) -> (flag sets by name, extra fields of the JSON line)
Variants = Callable[[FeatureSet, np.ndarray, Result, int], tuple[dict[str, np.ndarray], dict[str, Any]]]


def top(score: np.ndarray, count: int) -> np.ndarray:
    """(N,) bool: the ``count`` highest of ``score`` (ties by index order)."""
    flagged = np.zeros(len(score), dtype=bool)
    flagged[np.argsort(-score, kind="stable")[:count]] = True
    return flagged


def early_softmax(result: Result, window: int = 0) -> np.ndarray:
    """(N, C) the run's early softmax (window 0: noise, 1: recall); every original must be covered."""
    probs = np.asarray(result.estimate_parts["window_probs"][window], dtype=np.float64)
    assert probs.shape[0] == result.num_samples, "estimate_rows must cover every original"
    return probs


def main(description: str, variants: Variants, seeds: str) -> None:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--half", default="tune", choices=("tune", "report"))
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--seeds", default=seeds)
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
            row: dict[str, Any] = {"setting": name, "seed": seed, "dynacor_seconds": round(time.perf_counter() - started, 1)}
            flag_sets, fields = variants(data, given, result, seed)
            row.update(fields)
            for variant, flags in flag_sets.items():
                row[variant] = round(100.0 * detection_metrics(flags, noisy)["f1"], 2)
                table.setdefault(variant, {}).setdefault(name, []).append(row[variant])
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as out:
                    out.write(json.dumps(row) + "\n")
    print(f1_by_setting(table, names, "variant"))
