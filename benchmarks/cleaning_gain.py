"""Cleaning gain (issue 12): does a model trained on DynaCor-cleaned labels beat one trained on
the noisy labels? What users want to know before they spend a review on it.

    python benchmarks/cleaning_gain.py [--features ../shared/data/cifar10_effl0_dev.npz] [--seeds 0]

The dev file is split once (fixed seed) into a training part (80%) and a held-out test part
(20%) that keeps its *true* labels. For each noise setting, DynaCor runs on the training part
(its default config, no review); then the same MLP head (DynaCor's classifier settings, no
copies) is trained on the training part with:

- ``noisy``: the given labels;
- ``accept``: flagged samples take the suggested label (an annotator accepting every suggestion);
- ``remove``: flagged samples are dropped;
- ``review``: the flagged samples as the simulated review leaves them (`benchmarks/review_sim.py`:
  an annotator who knows the truth fixes each flagged error and keeps each false alarm);
- ``true``: the true labels (the ceiling);

and its accuracy is measured on the held-out test part. Prints a Markdown table (mean over
seeds) and one JSON line per cell.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dynacor.baselines.common import head_settings, torch_generator
from dynacor.data.featurefile import load_features
from dynacor.method.classifier import test_accuracy
from dynacor.method.config import DynaCorConfig
from dynacor.method.device import set_threads
from dynacor.method.featureset import FeatureSet
from dynacor.method.nets import make_sgd, mlp_head
from dynacor.method.noise import synthetic_labels
from dynacor.method.pipeline import run
from dynacor.runs.bench import DEFAULT_SETTINGS, SETTING_NAMES

ROOT = Path(__file__).resolve().parents[1]
SPLIT_SEED = 2024
VARIANTS = ("noisy", "accept", "remove", "review", "true")


def train_and_test(features, labels, test_features, test_labels, num_classes, config, seed) -> float:
    """Accuracy on the test part of the head trained on (features, labels)."""
    settings = head_settings(config)
    generator = torch_generator(seed)
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(labels, dtype=torch.int64)
    head = mlp_head(x.shape[1], num_classes, settings["hidden"], generator)
    optimiser, scheduler = make_sgd(head.parameters(), settings["lr"], settings["momentum"],
                                    settings["weight_decay"], settings["schedule"], settings["epochs"])  # fmt: skip
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(settings["epochs"]):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), settings["batch_size"]):
            idx = order[start : start + settings["batch_size"]]
            loss = loss_fn(head(x[idx]), y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        scheduler.step()
    return test_accuracy(head, test_features, test_labels, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    args = parser.parse_args()
    set_threads(0)
    full = load_features(args.features)
    archive = np.load(args.features)
    n = full.num_samples
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    train, test = np.sort(order[: int(0.8 * n)]), np.sort(order[int(0.8 * n) :])
    clean = full.clean_labels
    c = full.num_classes
    features, test_features = np.asarray(full.features[train]), np.asarray(full.features[test], dtype=np.float32)
    config = DynaCorConfig()
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; "
          f"{len(train)} training / {len(test)} held-out test samples (split seed {SPLIT_SEED})")  # fmt: skip
    rows = {}
    for setting in args.settings.split(","):
        name = SETTING_NAMES.get(setting, setting)
        for seed in [int(s) for s in args.seeds.split(",")]:
            if setting.startswith("human:"):
                given = archive[setting.split(":", 1)[1]][train]
            else:
                given = synthetic_labels(setting, clean[train], c, seed, features=features)
            started = time.perf_counter()
            data = FeatureSet(features=features, labels=given, features_aug=np.asarray(full.features_aug[train]),
                              clean_labels=clean[train], class_names=full.class_names)  # fmt: skip
            result = run(config.replace(seed=seed), data)
            flagged = result.flagged
            labels = {
                "noisy": (np.arange(len(train)), given),
                "accept": (np.arange(len(train)), np.where(flagged, result.suggested_labels, given)),
                "remove": (np.flatnonzero(~flagged), given[~flagged]),
                "review": (np.arange(len(train)), np.where(flagged, clean[train], given)),
                "true": (np.arange(len(train)), clean[train]),
            }
            cell = {"setting": name, "seed": seed, "noise": float(np.mean(given != clean[train])),
                    "f1": result.metrics["f1"], "flagged": float(flagged.mean())}  # fmt: skip
            for variant, (rows_used, y) in labels.items():
                cell[variant] = train_and_test(features[rows_used], y, test_features, clean[test], c, config, seed)
            cell["seconds"] = time.perf_counter() - started
            print(json.dumps(cell), flush=True)
            rows.setdefault(name, []).append(cell)
    print("\n| setting | noise | DynaCor F1 | noisy | accept suggestions | remove flagged | reviewed | true labels |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cells in rows.items():
        mean = {k: 100 * np.mean([cell[k] for cell in cells]) for k in ("noise", "f1", *VARIANTS)}
        print(f"| {name} | {mean['noise']:.1f}% | {mean['f1']:.1f} | {mean['noisy']:.1f} | {mean['accept']:.1f} | "
              f"{mean['remove']:.1f} | {mean['review']:.1f} | {mean['true']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
