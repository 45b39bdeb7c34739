"""Can the corrupted copies estimate the flags' precision, recall and the noise rate without
ground truth? A study (issue 10), not a feature: it compares candidate estimators with the truth
on runs written by benchmarks/estimates_data.py.

Usage: python benchmarks/estimates_study.py DIR [--prefix tune-]

Candidates for the noise rate eta (the originals' scores are a mixture eta * P_noisy +
(1 - eta) * P_clean, and the copies are known noisy):
- ``scott``: mixture proportion estimation (Scott 2015): the smallest ratio of the originals'
  to the copies' upper tails, each bounded one-sided at 97.5%; exact when the copies' scores
  are distributed like the truly noisy originals' and clean samples never reach the top tail;
- ``ratio@p``: the ratio of the tails above the copies' (1 - p) quantile;
- ``flagged``: the flagged fraction (assumes as many false alarms as misses).
Recall of the flags is estimated by the copies flagged (``copy_recall``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TAIL_Z = 1.96
MIN_TAIL_COPIES = 20


def tail_fractions(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of ``scores`` (N,) strictly above each threshold (T,). Returns (T,)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    return 1.0 - np.searchsorted(ordered, thresholds, side="right") / max(len(ordered), 1)


def scott_eta(q_originals: np.ndarray, q_copies: np.ndarray) -> float:
    """Mixture proportion of the copies' distribution in the originals' (see the module docstring)."""
    q_o = np.asarray(q_originals, dtype=np.float64)
    q_c = np.sort(np.asarray(q_copies, dtype=np.float64))
    n, m = len(q_o), len(q_c)
    counts = np.arange(min(MIN_TAIL_COPIES, m), m + 1)
    thresholds = np.nextafter(q_c[m - counts], -np.inf)
    p_o = tail_fractions(q_o, thresholds)
    p_c = counts / m
    upper_o = p_o + TAIL_Z * np.sqrt(np.maximum(p_o * (1 - p_o), 1.0 / n) / n)
    lower_c = p_c - TAIL_Z * np.sqrt(p_c * (1 - p_c) / m)
    ok = lower_c > 0
    return float(np.clip(np.min(upper_o[ok] / lower_c[ok]), 0.0, 1.0))


def study(path: Path) -> dict:
    with np.load(path) as f:
        q_all, n, truth = f["q_all"], int(f["n"]), f["is_noisy"].astype(bool)
    q_o, q_c = q_all[:n], q_all[n:]
    flagged = q_o > 0.5
    row = {"run": path.stem, "true_eta": truth.mean(), "true_precision": truth[flagged].mean(),
           "true_recall": flagged[truth].mean(), "copy_recall": (q_c > 0.5).mean(),
           "scott": scott_eta(q_o, q_c), "flagged": flagged.mean()}  # fmt: skip
    for p in (0.5, 0.8, 0.9):
        threshold = np.quantile(q_c, 1 - p) - 1e-9
        row[f"ratio@{p}"] = np.mean(q_o > threshold) / np.mean(q_c > threshold)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    rows = [study(p) for p in sorted(Path(args.dir).glob(f"{args.prefix}*.npz"))]
    keys = ["true_eta", "scott", "ratio@0.5", "ratio@0.8", "ratio@0.9", "flagged", "true_recall", "copy_recall",
            "true_precision"]  # fmt: skip
    print("| run | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['run']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
