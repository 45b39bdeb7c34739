"""On few samples per class, how many should the combined score flag per class? (issue 23)

    python benchmarks/studies/small_counts_study.py --sizes 400,1000 --seeds 0,1,2

Draws SIZE / 10 samples of each class from the dev file's tuning half, puts six kinds of noise on
them, runs DynaCor once per run and cuts the rank sum of `dynacor.method.combine` at four per-class
counts: cleanlab's (``uncapped``), the clusters' own (``q_cluster > 0.5``), the smaller of the two
(``capped``, what runs that withhold their self-estimates now use), and the clusters alone
(``none``). Prints one JSON line per run, then the mean F1 per size; docs/studies/combined.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from dynacor.method.combine import class_counts, normalised_margin, scores_at_counts
from dynacor.method.config import DynaCorConfig
from dynacor.method.metrics import detection_metrics
from dynacor.method.noise import synthetic_labels
from dynacor.method.pipeline import run
from dynacor.method.probe import cross_fitted_probe
from dynacor.runs.bench import load_half

ROOT = Path(__file__).resolve().parents[2]
KINDS = "sym:0.2,sym:0.4,asym:0.2,inst:0.3,human:worse_labels,human:aggre_labels"
RULES = ("uncapped", "capped", "cluster_counts", "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--sizes", default="400,1000")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    kinds = KINDS.split(",")
    data, extra = load_half(Path(args.features), [k for k in kinds if k.startswith("human:")], "tune")
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            rng = np.random.default_rng(1000 + seed)
            keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(data.clean_labels == c), n // 10, replace=False)
                                           for c in range(10)]))  # fmt: skip
            subset = data.subset(keep)
            for kind in kinds:
                given = (extra[kind.partition(":")[2]][keep] if kind.startswith("human:")
                         else synthetic_labels(kind, subset.clean_labels, 10, seed, subset.features))  # fmt: skip
                # estimates kept (not withheld) only to read the early softmax back
                result = run(DynaCorConfig(seed=seed, estimate_withhold=1.0), subset.with_labels(given))
                noisy = given != subset.clean_labels
                q_cluster = result.cluster_score
                early = result.estimate_parts["window_probs"][0].astype(np.float64)
                early /= early.sum(axis=1, keepdims=True)
                probe = cross_fitted_probe(subset.features, given, 10, folds=5, seed=seed, c=3e-4)
                summed = (rankdata(q_cluster) + rankdata(normalised_margin(early, given))
                          + rankdata(normalised_margin(probe, given))) / (3 * len(given))  # fmt: skip
                counted = class_counts(0.5 * (early + probe), given, 10)
                clusters = np.bincount(given[q_cluster > 0.5], minlength=10)
                flags = {"uncapped": scores_at_counts(summed, given, counted) > 0.5,
                         "capped": scores_at_counts(summed, given, np.minimum(counted, clusters)) > 0.5,
                         "cluster_counts": scores_at_counts(summed, given, clusters) > 0.5,
                         "none": q_cluster > 0.5}  # fmt: skip
                row = {"n": n, "seed": seed, "kind": kind, "noise": float(noisy.mean()),
                       "counted_share": float(counted.sum() / len(given))}  # fmt: skip
                row.update({rule: 100 * detection_metrics(flags[rule], noisy)["f1"] for rule in RULES})
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("| N | runs | " + " | ".join(RULES) + " | counted / true noise |\n|---" * 1 + "|---" * (len(RULES) + 2) + "|")
    for n in sorted({r["n"] for r in rows}):
        chosen = [r for r in rows if r["n"] == n]
        cells = " | ".join(f"{np.mean([r[rule] for r in chosen]):.1f}" for rule in RULES)
        print(f"| {n} | {len(chosen)} | {cells} | {np.mean([r['counted_share'] for r in chosen]):.2f} / "
              f"{np.mean([r['noise'] for r in chosen]):.2f} |")


if __name__ == "__main__":
    main()
