"""The combined score's rank sum recomputed from saved runs: the probe's C, the parts' weights, the
class counts (docs/studies/combined.md, "The probe's C in the rank sum").

    python benchmarks/studies/estimates_data.py --half tune --seeds 0,1,2 --out DIR
    python benchmarks/studies/rank_sum_study.py --runs DIR [--cs 3e-5,5e-5,1e-4,1.5e-4,2e-4,3e-4,1e-3]

Every variant reads the same runs (DynaCor's cluster score and the early softmax do not depend on
any of these choices), so the table isolates the choice. The default row reproduces what
`dynacor.method.combine.combined_score` flags (the same functions). Run on the tuning half only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from dynacor.method.combine import class_counts, normalised_margin, scores_at_counts
from dynacor.method.metrics import detection_metrics
from dynacor.method.probe import cross_fitted_probe
from dynacor.runs.bench import load_half


def f1_of(summed: np.ndarray, given: np.ndarray, counts: np.ndarray, noisy: np.ndarray) -> float:
    flagged = scores_at_counts(summed / summed.max(), given, counts) > 0.5
    return 100 * detection_metrics(flagged, noisy)["f1"]


def variants(cs: list[float]) -> dict:
    """name -> f(run, probe) returning F1; ``probe(c)`` gives the cross-fitted probe at C = c."""
    out = {}

    def rank_sum(run, early, probe, weights=(1, 1, 1)):
        parts = (run["cluster_score"], normalised_margin(early, run["given"]), normalised_margin(probe, run["given"]))
        return sum(w * rankdata(p) for w, p in zip(weights, parts, strict=True))

    for c in cs:
        out[f"probe C = {c:g}"] = lambda r, e, P, c=c: f1_of(
            rank_sum(r, e, P(c)), r["given"], class_counts(0.5 * (e + P(c)), r["given"], 10), r["is_noisy"])
    for weights in ((1, 1, 2), (2, 1, 1), (1, 2, 1)):
        out[f"C = 3e-4, weights {weights}"] = lambda r, e, P, w=weights: f1_of(
            rank_sum(r, e, P(3e-4), w), r["given"], class_counts(0.5 * (e + P(3e-4)), r["given"], 10), r["is_noisy"])
    for factor in (0.9, 1.1):
        out[f"C = 3e-4, counts x {factor}"] = lambda r, e, P, f=factor: f1_of(
            rank_sum(r, e, P(3e-4)), r["given"],
            np.rint(f * class_counts(0.5 * (e + P(3e-4)), r["given"], 10)).astype(np.int64), r["is_noisy"])
    return out


def probe_of(features: np.ndarray, given: np.ndarray, seed: int):
    """``probe(c)``: the cross-fitted probe's probabilities at C = c, each C fitted once."""
    fitted: dict[float, np.ndarray] = {}

    def probe(c: float) -> np.ndarray:
        if c not in fitted:
            fitted[c] = cross_fitted_probe(features, given, 10, folds=5, seed=seed, c=c)
        return fitted[c]

    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="the directory estimates_data.py wrote (tune-*.npz)")
    parser.add_argument("--features", default="../shared/data/cifar10_effl0_dev.npz")
    parser.add_argument("--cs", default="3e-5,5e-5,1e-4,1.5e-4,2e-4,3e-4,1e-3")
    args = parser.parse_args()
    data, _ = load_half(Path(args.features), [], "tune")
    table = variants([float(c) for c in args.cs.split(",")])
    scores: dict[str, dict[str, list[float]]] = {name: {} for name in table}
    for path in sorted(Path(args.runs).glob("tune-*.npz")):
        run = dict(np.load(path))
        setting, seed = path.stem[len("tune-"):].rsplit("-", 1)
        early = run["window_probs"][0].astype(np.float64)  # the noise window, as the pipeline reads it
        early /= early.sum(axis=1, keepdims=True)
        probe = probe_of(data.features, run["given"], int(seed))
        for name, f1 in table.items():
            scores[name].setdefault(setting, []).append(f1(run, early, probe))
        print(path.name, flush=True)
    settings = list(next(iter(scores.values())))
    print("| variant | " + " | ".join(settings) + " | avg | avg per seed |")
    print("|---" * (len(settings) + 3) + "|")
    for name, by_setting in scores.items():
        means = [np.mean(by_setting[s]) for s in settings]
        per_seed = np.mean([by_setting[s] for s in settings], axis=0)
        print(f"| {name} | " + " | ".join(f"{m:.1f}" for m in means) + f" | {np.mean(means):.2f} | "
              + " / ".join(f"{x:.2f}" for x in per_seed) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
