"""The classifier on frozen features and the recording of its training dynamics (METHOD.md, section 2)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dynacor.errors import Cancelled
from dynacor.method.dynamics import logit_margin
from dynacor.method.nets import make_sgd, mlp_head


@dataclass
class HeadDynamics:
    """What training the head recorded.

    Attributes
    ----------
    margins : (S, E) float32, logit margin of each sample (originals then copies) for its own label
    prob_given : (S, E) float32, softmax probability of its own label
    late_probs : (S, C) float32, softmax averaged over the last ``late_epochs`` epochs
    epochs : one dict per epoch: loss, accuracy, test accuracy when a test split exists, seconds
    """

    margins: np.ndarray
    prob_given: np.ndarray
    late_probs: np.ndarray
    epochs: list[dict] = field(default_factory=list)


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    hidden: int,
    schedule: str = "cosine",
    record: str = "train",
    late_epochs: int = 5,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    test: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> HeadDynamics:
    """Train the MLP head with SGD and record each sample's margin every epoch.

    Parameters
    ----------
    features : (S, D) float, originals then copies
    labels : (S,) int64, the label each sample is trained on (given or corrupted)
    num_classes : C
    record : ``"train"`` records each mini-batch's logits before its update, as the authors'
        code does (no extra cost); ``"eval"`` runs a separate no-grad pass after each epoch
    generator : seeds initialisation and shuffling (CPU generator)
    test : optional (features (T, D), labels (T,)) for test accuracy per epoch
    on_epoch : called with each epoch's dict
    should_stop : polled every few batches; when it returns True, `Cancelled` is raised

    Returns
    -------
    HeadDynamics with margins and probabilities of shape (S, E).
    """
    device = torch.device(device)
    x = torch.as_tensor(np.ascontiguousarray(features), dtype=torch.float32).to(device)
    y = torch.as_tensor(labels, dtype=torch.int64).to(device)
    s = x.shape[0]
    head = mlp_head(x.shape[1], num_classes, hidden, generator).to(device)
    optimiser, scheduler = make_sgd(head.parameters(), lr, momentum, weight_decay, schedule, epochs)
    loss_fn = nn.CrossEntropyLoss()
    margins = torch.empty((s, epochs), dtype=torch.float32, device=device)
    prob_given = torch.empty((s, epochs), dtype=torch.float32, device=device)
    late_probs = torch.zeros((s, num_classes), dtype=torch.float32, device=device)
    first_late = max(0, epochs - late_epochs)
    log: list[dict] = []

    def store(idx: torch.Tensor, logits: torch.Tensor, epoch: int) -> None:
        logits = logits.detach()
        target = y[idx]
        margins[idx, epoch] = logit_margin(logits, target)
        probs = torch.softmax(logits, dim=1)
        prob_given[idx, epoch] = probs.gather(1, target[:, None]).squeeze(1)
        if epoch >= first_late:
            late_probs[idx] += probs

    for epoch in range(epochs):
        started = time.perf_counter()
        head.train()
        order = torch.randperm(s, generator=generator).to(device)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for b, start in enumerate(range(0, s, batch_size)):
            if should_stop is not None and b % 16 == 0 and should_stop():
                raise Cancelled("cancelled during classifier training")
            idx = order[start : start + batch_size]
            logits = head(x[idx])
            loss = loss_fn(logits, y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if record == "train":
                store(idx, logits, epoch)
            total_loss += loss.detach() * idx.shape[0]
            correct += (logits.detach().argmax(1) == y[idx]).sum()
        scheduler.step()
        if record == "eval":
            with torch.no_grad():
                head.eval()
                for start in range(0, s, 8192):
                    idx = torch.arange(start, min(s, start + 8192), device=device)
                    store(idx, head(x[idx]), epoch)
        entry = {
            "epoch": epoch + 1,
            "loss": float(total_loss) / s,
            "accuracy": float(correct) / s,
            "lr": optimiser.param_groups[0]["lr"],
        }
        if test is not None:
            entry["test_accuracy"] = test_accuracy(head, test[0], test[1], device)
        entry["seconds"] = time.perf_counter() - started
        log.append(entry)
        if on_epoch is not None:
            on_epoch(entry)

    late_probs /= float(epochs - first_late)
    return HeadDynamics(
        margins=margins.cpu().numpy(),
        prob_given=prob_given.cpu().numpy(),
        late_probs=late_probs.cpu().numpy(),
        epochs=log,
    )


def test_accuracy(head: nn.Module, features: np.ndarray, labels: np.ndarray, device: torch.device) -> float:
    """Accuracy of ``head`` on a held-out split. features (T, D), labels (T,)."""
    was_training = head.training
    head.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), 8192):
            xb = torch.as_tensor(np.asarray(features[start : start + 8192]), dtype=torch.float32, device=device)
            yb = torch.as_tensor(np.asarray(labels[start : start + 8192]), dtype=torch.int64, device=device)
            correct += int((head(xb).argmax(1) == yb).sum())
    head.train(was_training)
    return correct / max(1, len(labels))
