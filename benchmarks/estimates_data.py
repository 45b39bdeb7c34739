"""Scores of DynaCor runs (originals and copies) with ground truth, for studying the self-estimates.

Usage: python benchmarks/estimates_data.py --half tune|report --seeds 0 --out DIR

The dev file is split in two halves by a fixed permutation (seed 12345): ``tune`` is used to
design the estimator and choose its settings, ``report`` only to report how it does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dynacor.data.featurefile import load_features
from dynacor.method.config import DynaCorConfig
from dynacor.method.pipeline import run
from dynacor.runs.bench import DEFAULT_SETTINGS, load_setting_arrays, setting_labels

SPLIT_SEED = 12345


def halves(n: int) -> dict[str, np.ndarray]:
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return {"tune": np.sort(order[: n // 2]), "report": np.sort(order[n // 2 :])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", default="../shared/data/cifar10_effl0_dev.npz")
    parser.add_argument("--half", choices=("tune", "report", "all"), default="tune")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--out", default="benchmarks/dev/estimates")
    args = parser.parse_args()
    path = Path(args.features)
    data = load_features(path, "labels", needs_clean=True)
    settings = args.settings.split(",")
    extra = load_setting_arrays(path, settings, data)
    if args.half != "all":
        keep = halves(data.num_samples)[args.half]
        data = data.subset(keep) if hasattr(data, "subset") else _subset(data, keep)
        extra = {k: v[keep] for k, v in extra.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for setting in settings:
        for seed in (int(s) for s in args.seeds.split(",")):
            given = setting_labels(data, setting, seed, extra)
            result = run(DynaCorConfig(seed=seed), data.with_labels(given))
            name = f"{args.half}-{setting.replace(':', '_')}-{seed}.npz"
            np.savez(out / name, q_all=result.q_noisy_all, n=result.num_samples,
                     is_noisy=given != data.clean_labels, suggested=result.suggested_labels)  # fmt: skip
            print(name, result.summary(), flush=True)


def _subset(data, keep):
    import dataclasses

    def cut(a):
        return None if a is None else np.asarray(a)[keep]

    return dataclasses.replace(data, features=data.features[keep], labels=data.labels[keep],
                               features_aug=cut(data.features_aug), clean_labels=cut(data.clean_labels),
                               ids=cut(data.ids), paths=cut(data.paths))  # fmt: skip


if __name__ == "__main__":
    main()
