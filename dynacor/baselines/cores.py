"""CORES sample sieve (Cheng et al., ICLR 2021)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynacor.baselines.common import head_settings, torch_generator
from dynacor.method.nets import make_sgd, mlp_head


def cores_beta(epoch: int, epochs: int, beta_max: float = 2.0) -> float:
    """The confidence-regularisation weight at ``epoch`` (0-based).

    The authors' schedule over 100 epochs (0 for 10 epochs, then a linear ramp to 2 over 30, then 2)
    scaled to ``epochs``.
    """
    warm, ramp = round(0.1 * epochs), max(1, round(0.3 * epochs))
    if epoch < warm:
        return 0.0
    if epoch < warm + ramp:
        return beta_max * (epoch - warm) / max(1, ramp - 1)
    return beta_max


def cores_sieve_terms(logits: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor, beta: float):
    """CORES per-sample terms for a batch. logits (B, C), labels (B,), prior (C,).

    Returns ``(loss, sieve)``: the confidence-regularised loss ``CE(f(x), y) - beta * E_prior[CE(f(x), Y)]``
    (B,) and the sieve statistic ``CE(f(x), y) - mean_j CE(f(x), j)`` (B,). A sample passes the
    sieve (is kept as clean) when its statistic is <= 0: the regulariser cancels out of the
    paper's threshold alpha_{n,t}, as in the authors' code.
    """
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    # The authors' log(softmax + 1e-8) bounds CE against the other classes; without the bound the
    # regulariser is unbounded below and training diverges once beta > 0.
    ce_all = -torch.log(torch.softmax(logits, dim=1) + 1e-8)  # (B, C)
    loss = ce - beta * (ce_all * prior[None, :]).sum(dim=1)
    sieve = ce - ce_all.mean(dim=1)
    return loss, sieve


def cores(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    seed: int = 0,
    head: dict[str, Any] | None = None,
    sieve_from: float = 0.3,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """CORES sample sieve (Cheng et al., ICLR 2021, "a sample sieve approach"), on the MLP head.

    The head is trained with the confidence-regularised loss ``CE - beta * E_prior[CE]`` (prior:
    the given labels' class frequencies; beta from `cores_beta`). From ``sieve_from`` of the epochs
    on, only samples that pass the sieve (``CE(y) <= mean_j CE(j)``, measured on each mini-batch
    before its update as the authors' code does) contribute to the loss. The samples sieved out in
    the last epoch are flagged. Simplifications: the same MLP head and SGD settings as DynaCor
    instead of a ResNet, the schedule scaled from 100 epochs, no second (semi-supervised) phase.

    Parameters
    ----------
    features : (N, D) float
    labels : (N,) int given labels
    num_classes : C
    head : `train_head`-style settings (epochs, lr, momentum, weight_decay, batch_size, hidden, schedule)

    Returns
    -------
    flagged : (N,) bool
    score : (N,) float64, the sieve statistic in the last epoch (positive = sieved out)
    """
    s = {**head_settings(), **(head or {})}
    device = torch.device(device)
    generator = torch_generator(seed)
    x = torch.as_tensor(np.ascontiguousarray(features), dtype=torch.float32, device=device)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
    n = x.shape[0]
    prior = torch.bincount(y, minlength=num_classes).float() / n
    model = mlp_head(x.shape[1], num_classes, s["hidden"], generator).to(device)
    epochs = s["epochs"]
    optimiser, scheduler = make_sgd(model.parameters(), s["lr"], s["momentum"], s["weight_decay"], s["schedule"], epochs)
    first_sieve = round(sieve_from * epochs)
    last_sieve = torch.zeros(n, device=device)
    for epoch in range(epochs):
        beta = cores_beta(epoch, epochs)
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, s["batch_size"]):
            idx = order[start : start + s["batch_size"]]
            loss, sieve = cores_sieve_terms(model(x[idx]), y[idx], prior, beta)
            keep = (sieve.detach() <= 0).float() if epoch >= first_sieve else torch.ones_like(loss)
            # As in the authors' code: mean over the kept samples, a vanishing loss if none are kept.
            total = (loss * keep).sum() / keep.sum() if keep.sum() > 0 else loss.mean() * 1e-8
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
            if epoch == epochs - 1:
                last_sieve[idx] = sieve.detach()
        scheduler.step()
    score = last_sieve.cpu().numpy().astype(np.float64)
    return score > 0, score
