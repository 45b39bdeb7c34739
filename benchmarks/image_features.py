"""Image path vs feature file: do features computed from the images equal the dev features?

Usage (from the repository root)::

    python benchmarks/image_features.py [--n 200] [--batch-size 32] [--threads 0] [--data ../shared/data]
        [--detect] [--cache DIR]

Extracts ``cifar10-jpg.tar`` to a temporary folder (never into the repository), builds a manifest
of the first ``n`` rows of ``cifar10n_train.csv`` (human ``worse`` labels, clean labels), computes
effnet-lite0 features of each image and its flip through `dynacor.data.images.featureset_from_images`
(cache disabled, so the timing is real), and compares them with ``features`` /
``features_aug`` of ``cifar10_effl0_dev.npz`` matched by path. Prints the largest absolute
difference and the throughput, and writes them as JSON with ``--out``. With ``--detect`` it also
runs DynaCor (default config, human ``worse`` labels) on both feature sets and reports both F1.
"""

from __future__ import annotations

import argparse
import json
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dynacor.data.images import featureset_from_images
from dynacor.data.sources import load_manifest
from dynacor.method.device import set_threads

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--detect", action="store_true", help="also compare DynaCor's F1 on both feature sets")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache (default: none, so timing is real)")
    args = parser.parse_args()

    threads = set_threads(args.threads)
    table = pd.read_csv(args.data / "cifar10n_train.csv").iloc[: args.n]
    with tempfile.TemporaryDirectory(prefix="dynacor-c10-") as tmp:
        with tarfile.open(args.data / "cifar10-jpg.tar") as tar:
            wanted = set(table["path"])
            tar.extractall(tmp, members=[m for m in tar.getmembers() if m.name in wanted], filter="data")
        manifest = Path(tmp) / "manifest.csv"
        pd.DataFrame({"path": table["path"], "label": table["worse_label"], "id": table["cifar_index"],
                      "clean_label": table["clean_label"]}).to_csv(manifest, index=False)
        with np.load(args.data / "cifar10_effl0_dev.npz") as dev:
            class_names = [str(c) for c in dev["class_names"]]
            row = {str(p): i for i, p in enumerate(dev["paths"])}
            dataset = load_manifest(manifest, class_names=class_names)
            idx = np.array([row[str(Path(p).relative_to(Path(tmp).resolve()))] for p in dataset.paths])
            ref = dev["features"][idx].astype(np.float32)
            ref_aug = dev["features_aug"][idx].astype(np.float32)
            ref16, ref16_aug = dev["features"][idx], dev["features_aug"][idx]
        started = time.perf_counter()
        data = featureset_from_images(dataset, "effnet-lite0", device=args.device, batch_size=args.batch_size, use_cache=args.cache is not None, cache_dir=args.cache)
        seconds = time.perf_counter() - started

    diff = np.abs(data.features.astype(np.float32) - ref)
    diff_aug = np.abs(data.features_aug.astype(np.float32) - ref_aug)
    report = {
        "images": len(dataset),
        "max_abs_diff_features": float(diff.max()),
        "max_abs_diff_features_aug": float(diff_aug.max()),
        "mean_abs_diff": float((diff.mean() + diff_aug.mean()) / 2),
        "max_abs_feature": float(np.abs(ref).max()),
        "seconds": seconds,
        "images_per_s": len(dataset) / seconds,
        "forward_passes_per_s": 2 * len(dataset) / seconds,
        "batch_size": args.batch_size,
        "threads": threads,
        "device": str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() and args.device != "cpu" else platform.processor() or "cpu",
        "torch": torch.__version__,
    }
    if args.detect:
        from dataclasses import replace

        from dynacor.method.config import DynaCorConfig
        from dynacor.method.pipeline import run

        config = DynaCorConfig(device="cpu")
        from_images = run(config, data)
        from_file = run(config, replace(data, features=ref16, features_aug=ref16_aug, source={"kind": "features"}))
        report["f1_from_images"] = from_images.metrics["f1"]
        report["f1_from_feature_file"] = from_file.metrics["f1"]
        report["noise_rate"] = from_images.metrics["noise_rate"]
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
