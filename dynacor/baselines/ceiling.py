"""ORACLE: the supervised ceiling of the paper's Appendix B. It uses GROUND TRUTH and is NOT a detector.

A binary classifier learns clean-vs-noisy from the dynamics of a training split with the true
flags, and is scored on a held-out split. It says how much of the noisy/clean separation the
dynamics carry at all, so DynaCor (which never sees the truth) can be compared with it. It is
deliberately absent from `dynacor.baselines.registry.run_method` and from ``dynacor detect``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dynacor.method.encoder import DynamicsEncoder
from dynacor.method.metrics import detection_metrics
from dynacor.method.nets import init_parameters


@dataclass
class CeilingResult:
    """The oracle's output on the held-out split.

    Attributes
    ----------
    test_index : (T,) int64, held-out samples (indices into the N inputs)
    flagged : (T,) bool, predicted noisy
    score : (T,) float64, predicted probability of noisy
    metrics : precision, recall, F1, AUROC on the held-out split
    oracle : always True: trained with ground-truth flags
    """

    test_index: np.ndarray
    flagged: np.ndarray
    score: np.ndarray
    metrics: dict[str, float]
    oracle: bool = True


def split_indices(is_noisy: np.ndarray, train_fraction: float, rng: np.random.Generator):
    """Stratified split of range(N) by the truth: (train (A,), test (T,)) int64, each sorted."""
    is_noisy = np.asarray(is_noisy, dtype=bool)
    train = []
    for group in (np.flatnonzero(is_noisy), np.flatnonzero(~is_noisy)):
        group = rng.permutation(group)
        train.append(group[: int(round(train_fraction * group.size))])
    train_idx = np.sort(np.concatenate(train))
    test_idx = np.setdiff1d(np.arange(is_noisy.size), train_idx)
    return train_idx.astype(np.int64), test_idx.astype(np.int64)


def supervised_ceiling(
    signals: np.ndarray,
    is_noisy: np.ndarray,
    *,
    seed: int = 0,
    train_fraction: float = 0.5,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 256,
    rep_dim: int = 64,
) -> CeilingResult:
    """Train the 1-D CNN of the encoder plus a linear output on GROUND-TRUTH flags (ORACLE).

    Parameters
    ----------
    signals : (N, E) float, dynamics of the originals (the paper: signs of the margins)
    is_noisy : (N,) bool, GROUND TRUTH (given label != clean label)
    seed : split, initialisation, shuffling
    train_fraction : share of samples (per truth class) the oracle is trained on

    Returns
    -------
    CeilingResult on the held-out samples.
    """
    seq = np.random.SeedSequence(seed)
    split_seq, torch_seq = seq.spawn(2)
    train_idx, test_idx = split_indices(is_noisy, train_fraction, np.random.default_rng(split_seq))
    generator = torch.Generator().manual_seed(int(torch_seq.generate_state(1)[0]))
    x = torch.as_tensor(np.asarray(signals, dtype=np.float32))
    y = torch.as_tensor(np.asarray(is_noisy, dtype=np.float32))
    model = nn.Sequential(DynamicsEncoder(x.shape[1], rep_dim), nn.ReLU(), nn.Linear(rep_dim, 1))
    init_parameters(model, generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    train_t = torch.as_tensor(train_idx)
    for _ in range(epochs):
        model.train()
        order = train_t[torch.randperm(train_t.numel(), generator=generator)]
        for start in range(0, order.numel(), batch_size):
            idx = order[start : start + batch_size]
            loss = loss_fn(model(x[idx]).squeeze(1), y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        score = torch.sigmoid(model(x[torch.as_tensor(test_idx)]).squeeze(1)).numpy().astype(np.float64)
    flagged = score > 0.5
    metrics = detection_metrics(flagged, np.asarray(is_noisy, dtype=bool)[test_idx], score)
    return CeilingResult(test_index=test_idx, flagged=flagged, score=score, metrics=metrics)
