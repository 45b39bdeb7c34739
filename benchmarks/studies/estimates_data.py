"""Scores of DynaCor runs (originals and copies) with ground truth, for studying the self-estimates.

Usage: python benchmarks/studies/estimates_data.py --half tune|report --seeds 0 --out DIR

The dev file is split in two halves by `dynacor.runs.bench.split_halves` (a fixed permutation,
seed 12345; ``dynacor bench --half`` uses the same): ``tune`` is used to design the estimator and
choose its settings, ``report`` only to report how it does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dynacor.method.config import DynaCorConfig
from dynacor.method.pipeline import run
from dynacor.runs.bench import DEFAULT_SETTINGS, load_half, setting_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", default="../shared/data/cifar10_effl0_dev.npz")
    parser.add_argument("--half", choices=("tune", "report", "all"), default="tune")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--out", default="benchmarks/dev/estimates")
    args = parser.parse_args()
    path = Path(args.features)
    settings = args.settings.split(",")
    data, extra = load_half(path, settings, None if args.half == "all" else args.half)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for setting in settings:
        for seed in (int(s) for s in args.seeds.split(",")):
            given = setting_labels(data, setting, seed, extra)
            result = run(DynaCorConfig(seed=seed), data.with_labels(given))
            name = f"{args.half}-{setting.replace(':', '_')}-{seed}.npz"
            np.savez(out / name, q_all=result.q_noisy_all, n=result.num_samples,
                     is_noisy=given != data.clean_labels, suggested=result.suggested_labels,
                     suggested_prob=result.suggested_prob, given=given, copy_pair=result.copy_pair,
                     copy_labels=result.copy_labels, margins_all=result.margins_all,
                     representations_all=result.representations_all, q_noisy=result.q_noisy,
                     cluster_score=np.asarray([] if result.cluster_score is None else result.cluster_score),
                     flagged=result.flagged, clean=data.clean_labels,
                     rows=result.estimate_parts["rows"], off=result.estimate_parts["off"],
                     window_probs=result.estimate_parts["window_probs"],
                     eta_draws=result.estimate_parts["eta_draws"],
                     estimates=np.asarray([result.estimates[q]["value"] for q in ("noise_rate", "precision", "recall")]))  # fmt: skip
            print(name, result.summary(), flush=True)


if __name__ == "__main__":
    main()
