"""How far off are the self-estimates on small data, and how wide must the intervals be? (issue 23)

    python benchmarks/studies/small_data_study.py --half tune [--sizes 400,1000,2000,4000]
        [--seeds 0,1,2,3,4] [--kinds sym:0.2,sym:0.4,asym:0.2,inst:0.3,human:worse_labels,human:aggre_labels]
        [--out FILE.jsonl]

For each size N and seed, draws N / 10 samples of each class from one half of the dev file, puts
each kind of noise on them and runs DynaCor with its defaults, except that the intervals get the
fixed margin ``estimate_margin`` alone (``estimate_margin_scale`` = 0, nothing withheld). Then,
per size, the margin each interval would have needed beyond its bootstrap part to hold the truth,
and that need times the square root of the samples per class: if it is about constant, the
margin ``scale / sqrt(N / C)`` (`dynacor.method.estimates.systematic_margin`) fits, and the 95th
percentile of it over runs and quantities is the scale. Prints one line per run and the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dynacor.method.config import DynaCorConfig
from dynacor.method.device import set_threads
from dynacor.method.noise import synthetic_labels
from dynacor.method.pipeline import run
from dynacor.runs.bench import load_half

ROOT = Path(__file__).resolve().parents[2]
QUANTITIES = ("noise_rate", "precision", "recall")
NUM_CLASSES = 10


def truth_at_cut(flagged: np.ndarray, given: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    noisy = given != clean
    hits = float((flagged & noisy).sum())
    return {"noise_rate": float(noisy.mean()), "precision": hits / max(int(flagged.sum()), 1),
            "recall": hits / max(int(noisy.sum()), 1)}  # fmt: skip


def needed_margin(estimate: dict, true: float, margin: float) -> float:
    """How much wider than its bootstrap part an interval must be to hold ``true``."""
    low = min(estimate["low"] + margin, estimate["value"])
    high = max(estimate["high"] - margin, estimate["value"])
    return max(0.0, low - true, true - high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--half", default="tune", choices=("tune", "report"))
    parser.add_argument("--sizes", default="400,1000,2000,4000")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--kinds", default="sym:0.2,sym:0.4,asym:0.2,inst:0.3,human:worse_labels,human:aggre_labels")
    parser.add_argument("--out", default=None, help="also write one JSON line per run here")
    args = parser.parse_args()
    set_threads(0)
    kinds = args.kinds.split(",")
    data, extra = load_half(Path(args.features), [k for k in kinds if k.startswith("human:")], args.half)
    config = DynaCorConfig(estimate_margin_scale=0.0, estimate_withhold=1.0)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            rng = np.random.default_rng(1000 + seed)
            keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(data.clean_labels == c), n // NUM_CLASSES,
                                                      replace=False) for c in range(NUM_CLASSES)]))  # fmt: skip
            subset = data.subset(keep)
            for kind in kinds:
                given = (extra[kind.partition(":")[2]][keep] if kind.startswith("human:")
                         else synthetic_labels(kind, subset.clean_labels, NUM_CLASSES, seed, subset.features))  # fmt: skip
                result = run(config.replace(seed=seed), subset.with_labels(given))
                true = truth_at_cut(result.flagged, given, subset.clean_labels)
                row = {"n": n, "seed": seed, "kind": kind, "f1": result.metrics["f1"]}
                for q in QUANTITIES:
                    e = result.estimates[q]
                    row[q] = {"true": true[q], "value": e["value"], "low": e["low"], "high": e["high"],
                              "need": needed_margin(e, true[q], config.estimate_margin)}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as out:
                        out.write(json.dumps(row) + "\n")
    print("| N | per class | runs | mean error: noise rate / precision / recall (points) | need, 95th pct | "
          "x sqrt(N / C) |\n|---|---|---|---|---|---|")  # fmt: skip
    for n in sorted({r["n"] for r in rows}):
        sel = [r for r in rows if r["n"] == n]
        need = np.array([r[q]["need"] for r in sel for q in QUANTITIES])
        bias = " / ".join(f"{100 * np.mean([r[q]['value'] - r[q]['true'] for r in sel]):+.1f}" for q in QUANTITIES)
        p95 = float(np.quantile(need, 0.95))
        print(f"| {n} | {n // NUM_CLASSES} | {len(sel)} | {bias} | {p95:.3f} | {p95 * np.sqrt(n / NUM_CLASSES):.2f} |")


if __name__ == "__main__":
    main()
