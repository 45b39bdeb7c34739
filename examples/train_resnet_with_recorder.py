"""Record DynaCor's training dynamics in your own training loop: a ResNet-18 trained from random
initialisation on the built-in CIFAR-10 sample (20% of its labels flipped), on the CPU.

    python examples/train_resnet_with_recorder.py --epochs 15 --per-class 40 --out dynacor_runs/resnet-recorder
    DYNACOR_RUNS=dynacor_runs streamlit run app.py

The three lines that matter are marked "DynaCor": wrap the training set with `WithCopies`, call
`recorder.update` on each batch and `recorder.end_epoch` after each epoch, then `detect` and
`save`. No weights are downloaded. A few epochs on a few hundred images only show the plumbing;
the flags become meaningful with a real training run (tens of epochs, thousands of images).
The summary's estimated precision, recall and noise rate read the softmax over early epochs
chosen for dynacor's own MLP head (docs/estimates.md); with another schedule, such as this one,
read them as rough.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.models import resnet18

from dynacor.data.sources import load_builtin_sample
from dynacor.errors import DynacorError
from dynacor.method.nets import init_parameters
from dynacor.record import Recorder, WithCopies


class Pixels(Dataset):
    """(N, H, W, 3) uint8 images as normalised (3, size, size) float tensors, with their labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        if size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
        self.x = (x - mean) / std
        self.y = torch.as_tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def horizontal_flip(x: torch.Tensor) -> torch.Tensor:
    """The copies' weak augmentation (METHOD.md, section 1)."""
    return torch.flip(x, dims=[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
    parser.add_argument("--per-class", type=int, default=40, help="built-in sample images per class, up to 200 (default 40)")
    parser.add_argument("--out", default="dynacor_runs/resnet-recorder", help="run directory to write")
    parser.add_argument("--size", type=int, default=32, help="input size in pixels (default 32, the sample's own)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder-epochs", type=int, default=10)
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sample = load_builtin_sample(per_class=args.per_class, seed=args.seed)
    num_classes = sample.num_classes
    generator = torch.Generator().manual_seed(args.seed)  # no global seeding: everything draws from it

    # DynaCor: the N originals, then M copies (flipped images) with deliberately wrong labels.
    data = WithCopies(Pixels(sample.images, sample.labels, args.size), sample.labels, num_classes,
                      gamma=0.1, seed=args.seed, copy_transform=horizontal_flip)  # fmt: skip
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, generator=generator)

    with torch.random.fork_rng(devices=[]):  # the constructor's own init draws from the global RNG
        model = resnet18(weights=None, num_classes=num_classes)
    init_parameters(model, generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)

    # DynaCor: one recorder for the S = N + M samples; ids, paths and source let the app show images.
    recorder = Recorder.for_dataset(data, num_epochs=args.epochs, class_names=sample.class_names, ids=sample.ids,
                                    paths=sample.paths, clean_labels=sample.clean_labels, source=sample.source)  # fmt: skip
    print(f"{data.num_originals} images + {data.num_copies} corrupted copies, {num_classes} classes, "
          f"{args.epochs} epochs of ResNet-18 at {args.size}x{args.size} on the CPU", file=sys.stderr)  # fmt: skip
    for _ in range(args.epochs):
        model.train()
        for x, y, index in loader:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            recorder.update(logits, y, index)  # DynaCor: train mode, before the optimiser's step
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        entry = recorder.end_epoch(lr=optimizer.param_groups[0]["lr"])
        scheduler.step()
        print(f"  epoch {entry['epoch']:>3}/{args.epochs}: loss {entry['loss']:.3f}, "
              f"train accuracy {100 * entry['accuracy']:.1f}%, {entry['seconds']:.1f} s", file=sys.stderr)  # fmt: skip

    # DynaCor: encoder and clustering on the recorded dynamics, then a run directory for the app.
    result = recorder.detect(encoder_epochs=args.encoder_epochs, seed=args.seed)
    try:
        run_dir = recorder.save(args.out, overwrite=args.overwrite)
    except DynacorError as exc:  # e.g. a finished run already in --out
        print(f"dynacor: error: {exc}", file=sys.stderr)
        return 2
    print(f"dynacor: {result.summary()} -> {run_dir}")
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    root = Path(run_dir).resolve().parent
    print(f"open it in the app:  DYNACOR_RUNS={root} streamlit run app.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
