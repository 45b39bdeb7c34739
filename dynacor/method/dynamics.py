"""Training dynamics: margins, their signs, and the unique trajectories (pure functions)."""

from __future__ import annotations

import numpy as np
import torch


def logit_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``m = f_y(x) - max_{c != y} f_c(x)`` for each row's own label.

    Parameters
    ----------
    logits : (B, C)
    labels : (B,) int64

    Returns
    -------
    (B,) margins.
    """
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return own - others.max(dim=1).values


def margin_signs(margins: np.ndarray) -> np.ndarray:
    """Quantised margins: +1 where ``m >= 0``, else -1. (S, E) float -> (S, E) int8."""
    return np.where(np.asarray(margins) >= 0, 1, -1).astype(np.int8)


def encoder_input(margins: np.ndarray, prob_given: np.ndarray | None, signal: str) -> np.ndarray:
    """What the encoder reads, per sample and epoch. (S, E) -> (S, E) float32.

    ``sign`` is the paper's quantised margin; ``margin`` the raw margin; ``prob`` the softmax
    probability of the sample's own label (both ablations, METHOD.md section 2).
    """
    if signal == "sign":
        return margin_signs(margins).astype(np.float32)
    if signal == "margin":
        return np.asarray(margins, dtype=np.float32)
    if prob_given is None:
        raise ValueError("signal 'prob' needs the recorded probabilities")
    return np.asarray(prob_given, dtype=np.float32)


def unique_trajectories(signals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows of ``signals`` with, for each sample, the index of its row.

    Most clean samples share the all-positive sign trajectory, so the encoder runs over a few
    hundred distinct rows instead of every sample; the result is the same.

    Parameters
    ----------
    signals : (S, E)

    Returns
    -------
    unique : (U, E) distinct rows
    inverse : (S,) int64, ``signals[i] == unique[inverse[i]]``
    counts : (U,) int64
    """
    signals = np.ascontiguousarray(signals)
    unique, inverse, counts = np.unique(signals, axis=0, return_inverse=True, return_counts=True)
    return unique, inverse.reshape(-1).astype(np.int64), counts.astype(np.int64)
