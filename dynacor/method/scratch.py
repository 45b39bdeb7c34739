"""The ``scratch`` backbone: a network trained from scratch on the pixels, recording dynamics.

Paper setting (Table 2): a CIFAR-style ResNet trained on originals and corrupted copies, the
copies' input being a random crop with padding 4 of the original (METHOD.md, section 1), the
logit margin of every sample for its own label recorded each epoch (section 2).

`train_scratch` is the whole stage as one function of arrays: images and labels in, margins out.
All randomness (initialisation, the copies' crops, shuffling, augmentation) comes from one seeded
``torch.Generator``; the global RNGs are neither read nor seeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dynacor.errors import Cancelled, InputError
from dynacor.method.dynamics import logit_margin
from dynacor.method.estimates import open_windows, window_means
from dynacor.method.nets import SCHEDULES, init_parameters, make_sgd
from dynacor.method.suggest import WIDE, CandidateSums

ARCHS = ("cnn", "resnet18", "resnet34")


@dataclass
class ScratchResult:
    """What training from scratch records.

    Attributes
    ----------
    margins : (N + M, E) float32, logit margin of each original then each copy for its own label
    prob_given : (N + M, E) float32, softmax probability of the own label (for the ``prob`` signal)
    candidates : (N, K) int64 or None, each original's most likely other classes over the
        ``suggest_window`` (`dynacor.method.suggest`); candidate_probs : (N, K) float32 or None
    log : one dict per epoch: ``epoch``, ``loss``, ``acc`` (agreement with the given labels),
        ``lr``, ``seconds``
    copy_images : (M, H, W, 3) uint8, the copies' inputs (crops of their originals)
    window_probs : (W, R, C) float32 or None, softmax of the ``estimate_rows`` originals averaged
        over each of the ``estimate_windows`` (the self-estimates read them)
    """

    margins: np.ndarray
    prob_given: np.ndarray
    candidates: np.ndarray | None
    candidate_probs: np.ndarray | None
    log: list[dict] = field(default_factory=list)
    copy_images: np.ndarray | None = None
    window_probs: np.ndarray | None = None


# --------------------------------------------------------------------------------------------
# Networks


def small_cnn(num_classes: int, width: int = 32) -> nn.Module:
    """Four conv-BN-ReLU-max-pool blocks and a linear layer: fast on CPU, for tests and quick demos."""

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    w = width
    return nn.Sequential(
        *block(3, w, True), *block(w, 2 * w, True), *block(2 * w, 4 * w, True), *block(4 * w, 8 * w, True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, num_classes),
    )


def cifar_resnet(depth: int, num_classes: int) -> nn.Module:
    """torchvision ResNet-18/34 with the CIFAR stem: a 3x3 stride-1 first conv and no max-pool."""
    from torchvision.models import resnet18, resnet34

    net = (resnet18 if depth == 18 else resnet34)(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def build_network(arch: str, num_classes: int, width: int = 32) -> nn.Module:
    """``cnn`` (`small_cnn` of ``width``), ``resnet18`` or ``resnet34`` (`cifar_resnet`)."""
    if arch == "cnn":
        return small_cnn(num_classes, width)
    if arch in ("resnet18", "resnet34"):
        return cifar_resnet(int(arch[6:]), num_classes)
    raise InputError(None, "arch", f"one of {ARCHS}", repr(arch))


# --------------------------------------------------------------------------------------------
# Augmentation (pure tensor functions)


def random_crop(images: torch.Tensor, pad: int, generator: torch.Generator, flip: bool = False) -> torch.Tensor:
    """Random crop with zero padding ``pad`` (and optional random horizontal flip), per image.

    Parameters
    ----------
    images : (B, C, H, W)
    pad : padding on each side
    generator : source of the offsets
    flip : also flip half of the images horizontally

    Returns
    -------
    (B, C, H, W), a shifted copy of each image.
    """
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h)[None, :]).to(images.device)  # (B, H)
    cols = (ox[:, None] + torch.arange(w)[None, :]).to(images.device)  # (B, W)
    if flip:
        mirror = (torch.rand(b, generator=generator) < 0.5).to(images.device)
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    bidx = torch.arange(b, device=images.device)[:, None, None]
    # (B, H, W, C) gather, then back to channels-first.
    out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def crop_copies(images: np.ndarray, pair: np.ndarray, generator: torch.Generator, pad: int = 4) -> np.ndarray:
    """The copies' inputs: one fixed random crop (padding ``pad``) of each paired original.

    (N, H, W, 3) uint8, (M,) int -> (M, H, W, 3) uint8.
    """
    src = torch.from_numpy(np.ascontiguousarray(images[np.asarray(pair, dtype=np.int64)])).permute(0, 3, 1, 2)
    return random_crop(src, pad, generator).permute(0, 2, 3, 1).contiguous().numpy()


# --------------------------------------------------------------------------------------------
# Training


def train_scratch(
    images: np.ndarray,
    labels_all: np.ndarray,
    copies_pair: np.ndarray,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    seed: int | torch.Generator = 0,
    arch: str = "resnet18",
    width: int = 32,
    augment: bool = True,
    schedule: str = "multistep",
    record: str = "train",
    suggest_window: tuple[int, int] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    device: str | torch.device = "cpu",
    estimate_rows: np.ndarray | None = None,
    estimate_windows: tuple[tuple[int, int], ...] = (),
) -> ScratchResult:
    """Train a network from scratch on originals and copies; record each sample's margin per epoch.

    Parameters
    ----------
    images : (N, H, W, 3) uint8, the originals
    labels_all : (N + M,) int, the originals' given labels then the copies' corrupted labels
    copies_pair : (M,) int, each copy's original (index into ``images``)
    num_classes : C
    epochs : E
    lr, batch_size, weight_decay, momentum : SGD settings (paper: 0.1, 128, 5e-4, 0.9)
    seed : an int or a ``torch.Generator``; drives init, the copies' crops, shuffling, augmentation
    arch : ``resnet18`` / ``resnet34`` (CIFAR stem) or ``cnn`` (small, fast on CPU)
    width : channels of the first ``cnn`` block (cost grows with its square; 16 is ~4x faster)
    augment : standard CIFAR training augmentation (random crop pad 4 + flip) for every sample
    schedule : one of `dynacor.method.nets.SCHEDULES` (see `make_sgd`)
    record : ``train``: margins of each mini-batch before its update (authors' code, free);
        ``eval``: one extra pass without augmentation after each epoch
    suggest_window : ``[first, stop)`` epochs whose softmax of every original gives its candidate
        labels (None: none)
    on_epoch : receives each epoch's log dict
    cancel : polled after each batch; True raises `dynacor.errors.Cancelled`
    device : where to train
    estimate_rows : (R,) int64 originals whose softmax is averaged over each of
        ``estimate_windows`` (``[first, stop)`` epochs) into ``window_probs``, as the MLP head does

    Returns
    -------
    ScratchResult (margins (N+M, E), prob_given (N+M, E), candidates (N, K), log, copy_images,
    window_probs)
    """
    images = np.asarray(images)
    labels_all = np.asarray(labels_all, dtype=np.int64)
    pair = np.asarray(copies_pair, dtype=np.int64)
    n, m = images.shape[0], pair.shape[0]
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise InputError(None, "images", "an (N, H, W, 3) uint8 array", f"{images.dtype} {images.shape}")
    if labels_all.shape != (n + m,):
        raise InputError(None, "labels_all", f"shape ({n + m},) (originals then copies)", labels_all.shape)
    if m and (pair.min() < 0 or pair.max() >= n):
        raise InputError(None, "copies_pair", f"indices in [0, {n})", f"[{pair.min()}, {pair.max()}]")
    if epochs < 1 or batch_size < 1:
        raise InputError(None, "epochs", "epochs >= 1 and batch_size >= 1", (epochs, batch_size))
    if record not in ("train", "eval") or schedule not in SCHEDULES:
        raise InputError(None, "record", f"record 'train'|'eval' and schedule one of {SCHEDULES}", (record, schedule))

    dev = torch.device(device)
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    copy_images = crop_copies(images, pair, gen) if m else images[:0]
    pixels = torch.from_numpy(np.concatenate([images, copy_images])).permute(0, 3, 1, 2).contiguous()  # uint8
    mean = pixels[:n].float().mean(dim=(0, 2, 3)).view(1, 3, 1, 1) / 255.0
    std = pixels[:n].float().std(dim=(0, 2, 3)).clamp_min(1.0).view(1, 3, 1, 1) / 255.0
    targets = torch.from_numpy(labels_all)

    # Module constructors draw their default initialisation from the global RNG; isolate that
    # draw (fork_rng restores the state) and re-initialise from our own generator.
    with torch.random.fork_rng(devices=[]):
        model = build_network(arch, num_classes, width)
    init_parameters(model, gen)
    model.to(dev)
    optimizer, scheduler = make_sgd(model.parameters(), lr, momentum, weight_decay, schedule, epochs)

    total = n + m
    margins = np.zeros((total, epochs), dtype=np.float32)
    prob_given = np.zeros((total, epochs), dtype=np.float32)
    suggest = None
    if suggest_window is not None:
        suggest = CandidateSums(targets[:n], num_classes, dev)
    log: list[dict] = []
    windows = [(a, b) for a, b in estimate_windows] if estimate_rows is not None else []
    # position of each training row among the estimate rows, -1 for the others (and the copies)
    estimate_pos = np.full(total, -1, dtype=np.int64)
    window_sums = None
    if windows:
        estimate_pos[np.asarray(estimate_rows, dtype=np.int64)] = np.arange(len(estimate_rows))
        window_sums = np.zeros((len(windows), len(estimate_rows), num_classes), dtype=np.float64)

    def prepare(idx: torch.Tensor, train: bool) -> torch.Tensor:
        x = pixels[idx].float().div_(255.0)
        if train and augment:
            x = random_crop(x, 4, gen, flip=True)
        return ((x - mean) / std).to(dev, non_blocking=True)

    def store(idx: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        logits = logits.detach().float()
        probs = logits.softmax(dim=1)
        i = idx.numpy()
        margins[i, epoch] = logit_margin(logits, y).cpu().numpy()
        prob_given[i, epoch] = probs.gather(1, y[:, None]).squeeze(1).cpu().numpy()
        if suggest is not None and suggest_window[0] <= epoch < suggest_window[1]:
            suggest.add(idx, probs)  # the copies' rows are dropped there
        in_windows = open_windows(windows, epoch)
        if in_windows:
            pos = estimate_pos[i]
            keep = pos >= 0
            kept = probs.cpu().numpy()[keep]
            for w in in_windows:
                window_sums[w, pos[keep]] += kept

    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(total, generator=gen)
        loss_sum, agree, seen = 0.0, 0, 0
        for start in range(0, total, batch_size):
            idx = order[start : start + batch_size]
            x = prepare(idx, train=True)
            y = targets[idx].to(dev)
            logits = model(x)
            if record == "train":
                store(idx, logits, y, epoch)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * idx.numel()
            agree += int((logits.detach().argmax(1) == y).sum())
            seen += idx.numel()
            if cancel is not None and cancel():
                raise Cancelled(f"training from scratch cancelled in epoch {epoch + 1}")
        lr_used = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if record == "eval":
            model.eval()
            with torch.inference_mode():
                for start in range(0, total, 4 * batch_size):
                    idx = torch.arange(start, min(total, start + 4 * batch_size))
                    store(idx, model(prepare(idx, train=False)), targets[idx].to(dev), epoch)
        entry = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "acc": agree / max(seen, 1),
                 "lr": lr_used, "seconds": time.perf_counter() - started}
        log.append(entry)
        if on_epoch is not None:
            on_epoch(dict(entry))

    candidates = candidate_probs = None
    if suggest is not None:
        candidates, candidate_probs = suggest.candidates(min(epochs, suggest_window[1]) - suggest_window[0], WIDE)
    return ScratchResult(
        margins=margins,
        prob_given=prob_given,
        candidates=candidates,
        candidate_probs=candidate_probs,
        log=log,
        copy_images=copy_images,
        window_probs=None if window_sums is None else window_means(window_sums, windows).astype(np.float32),
    )
