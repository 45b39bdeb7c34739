"""Which inverse regularisation ``C`` makes confident learning's logistic regression a fair
baseline? A study on the dev file's tuning half only (`dynacor.runs.bench.split_halves`, seed
12345), so the reported half stays unseen.

    python benchmarks/studies/cl_c_study.py [--cs 0.001,0.01,0.1,1] [--seeds 0]

For each C, noise setting and seed: 5-fold cross-validated probabilities
(`dynacor.baselines.confident_learning.cross_val_probs`), cleanlab's `find_label_issues`, F1 of the
noisy class against the truth, and the probabilities' held-out accuracy against the given labels.
Prints one JSON line per cell and a table of F1 (%) per setting and the average.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dynacor.baselines.confident_learning import confident_learning, cross_val_probs
from dynacor.method.metrics import detection_metrics
from dynacor.runs.bench import DEFAULT_SETTINGS, f1_by_setting, load_half, setting_labels

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--cs", default="0.001,0.01,0.1,1")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    path = Path(args.features)
    settings = DEFAULT_SETTINGS.split(",")
    data, extra = load_half(path, settings, "tune")
    table: dict[float, dict[str, list[float]]] = {}
    for c in (float(v) for v in args.cs.split(",")):
        for setting in settings:
            for seed in (int(s) for s in args.seeds.split(",")):
                given = setting_labels(data, setting, seed, extra)
                probs = cross_val_probs(data.features, given, data.num_classes, seed=seed, c=c)
                flagged, score = confident_learning(data.features, given, data.num_classes, pred_probs=probs)
                m = detection_metrics(flagged, given != data.clean_labels, score)
                table.setdefault(c, {}).setdefault(setting, []).append(100 * m["f1"])
                print(json.dumps({"C": c, "setting": setting, "seed": seed, "f1": round(100 * m["f1"], 2),
                                  "auroc": round(100 * m["auroc"], 2),
                                  "heldout_accuracy": round(100 * float(np.mean(probs.argmax(1) == given)), 2)}),
                      flush=True)  # fmt: skip
    print("\n" + f1_by_setting(table, settings, "C"))


if __name__ == "__main__":
    main()
