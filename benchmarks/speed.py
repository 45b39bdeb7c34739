"""Speed goal of issue 2: a full DynaCor run vs. plainly training the same MLP head once.

    python benchmarks/speed.py [--features ../shared/data/cifar10_effl0_dev.npz] [--repeats 3]

"Plain training" is the same head, optimiser, schedule, batch size and epochs on the same
N + M samples, with nothing recorded. Prints a Markdown table row per repeat and the medians.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn

from dynacor import DynaCorConfig, run
from dynacor.data.featurefile import load_features
from dynacor.method.corruption import make_copies
from dynacor.method.device import pick_device, set_threads
from dynacor.method.nets import make_sgd, mlp_head


def plain_training(features: np.ndarray, labels: np.ndarray, num_classes: int, config: DynaCorConfig,
                   device: torch.device) -> float:  # fmt: skip
    """Seconds to train the head once on ``device``, recording nothing."""
    x = torch.as_tensor(features, dtype=torch.float32).to(device)
    y = torch.as_tensor(labels, dtype=torch.int64).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    head = mlp_head(x.shape[1], num_classes, config.hidden, generator).to(device)
    optimiser, scheduler = make_sgd(head.parameters(), config.lr, config.momentum, config.weight_decay,
                                    config.schedule, config.epochs)  # fmt: skip
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=generator).to(device)
        for start in range(0, len(y), config.batch_size):
            idx = order[start : start + config.batch_size]
            loss = loss_fn(head(x[idx]), y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        scheduler.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default="../shared/data/cifar10_effl0_dev.npz")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    args = parser.parse_args()
    config = DynaCorConfig(device=args.device)
    threads = set_threads(config.num_threads)
    device = pick_device(config.device)
    data = load_features(args.features)
    copies = make_copies(data.labels, data.num_classes, config.gamma, np.random.default_rng(0))
    aug = data.features_aug if data.features_aug is not None else data.features
    features_all = np.concatenate([data.features, aug[copies.pair]]).astype(np.float32)
    labels_all = np.concatenate([data.labels, copies.labels])
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"machine: {platform.processor() or platform.machine()}, {threads} torch threads, torch {torch.__version__}, "
          f"device {device}{gpu}")  # fmt: skip
    print(f"data: {args.features} ({data.num_samples} samples + {copies.size} copies), "
          f"{config.epochs} classifier epochs, {config.encoder_epochs} encoder epochs")  # fmt: skip
    print("| repeat | plain training (s) | DynaCor total (s) | classifier (s) | encoder (s) | ratio |")
    print("|---|---|---|---|---|---|")
    plains, totals = [], []
    for repeat in range(args.repeats):
        plain = plain_training(features_all, labels_all, data.num_classes, config, device)
        result = run(config.replace(seed=repeat), data)
        t = result.timings
        plains.append(plain)
        totals.append(t["total"])
        print(f"| {repeat} | {plain:.1f} | {t['total']:.1f} | {t['classifier']:.1f} | {t['encoder']:.1f} | "
              f"{t['total'] / plain:.2f} |", flush=True)  # fmt: skip
    print(f"median: plain {statistics.median(plains):.1f} s, DynaCor {statistics.median(totals):.1f} s, "
          f"ratio {statistics.median(totals) / statistics.median(plains):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
