"""Mean-softmax margin: in-sample, averaged probabilities, the margin as label agreement.

Pickler, Kamassury and Silva, "Benchmarking noisy label detection methods" (arXiv 2510.16211,
2025) split a detector into a label-agreement function, an aggregation and in- or out-of-sample
information; in-sample information, the softmax averaged over training and the logit margin as
agreement is their best combination across vision and tabular data. Here: DynaCor's MLP head is
trained once on the given labels (no corrupted copies, the head settings of `common.head_settings`),
each sample's softmax is averaged over every epoch, and

    agreement = p̄_given - max_{c != given} p̄_c        (in [-1, 1])

on that average; the noisy score is ``-agreement``. The natural cut flags ``agreement < 0``: the
averaged prediction prefers another class than the given one. The paper's text was not at hand
when this was written: "logit margin" is taken on the averaged probabilities as above (its sign,
hence the cut, is the same as for the log-probability margin ``log p̄_given - max log p̄_c``; the
ranking within each side may differ). On the dev file's report half the cut is precise but flags
too little (recall 24-40%: the head memorises given labels in-sample), while the ranking is close
to tuned CL's at a budget equal to the noise rate (docs/benchmarks.md, issue 23).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynacor.baselines.common import head_settings, torch_generator
from dynacor.method.classifier import train_head


def mean_prob_margin(mean_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Margin of the given label in averaged probabilities.

    Parameters
    ----------
    mean_probs : (N, C) float, each sample's softmax averaged over epochs (rows sum to 1)
    labels : (N,) int, given labels in [0, C)

    Returns
    -------
    (N,) float64, ``p[given] - max over the other classes of p``, in [-1, 1]; negative where
    another class is more probable than the given one
    """
    probs = np.asarray(mean_probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(labels.shape[0])
    given = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -np.inf  # the given class never counts as its own competitor
    return given - others.max(axis=1)


def margin_detector(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    seed: int = 0,
    head: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train the MLP head on the given labels; score each sample by its mean-softmax margin.

    Parameters
    ----------
    features : (N, D) float
    labels : (N,) int, given labels in [0, C)
    num_classes : C
    seed : initialisation and shuffling of the head
    head : `train_head` settings (default `head_settings()`); ``record`` decides whether each
        epoch's softmax is the mini-batch's before its update (``train``) or an extra pass after
        the epoch (``eval``), as for every head-based method here

    Returns
    -------
    flagged : (N,) bool, ``agreement < 0`` (the averaged softmax prefers another class)
    score : (N,) float64, ``-agreement``, higher = more likely noisy
    extra : ``{"agreement": (N,), "mean_probs": (N, C) float32, "margins": (N, E) float32}``
        (``margins`` are the per-epoch logit margins the head recorded, for the run's curves)
    """
    settings = {**head_settings(), **(head or {})}
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    epochs = int(settings["epochs"])
    # One window over all epochs of all originals: train_head sums each epoch's softmax there, so
    # the average costs no extra pass and no (N, E, C) array.
    dyn = train_head(features, labels, num_classes, generator=torch_generator(seed), device=device,
                     estimate_rows=np.arange(n, dtype=np.int64), estimate_windows=((0, epochs),),
                     **settings)  # fmt: skip
    mean_probs = dyn.window_probs[0]
    agreement = mean_prob_margin(mean_probs, labels)
    return agreement < 0, -agreement, {"agreement": agreement, "mean_probs": mean_probs, "margins": dyn.margins}
