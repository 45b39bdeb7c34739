"""Area under the margin with threshold samples (Pleiss et al., NeurIPS 2020)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynacor.baselines.common import head_settings, torch_generator
from dynacor.method.classifier import train_head


def threshold_sets(n: int, num_classes: int, runs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint random index sets of ``n // (C + 1)`` threshold samples, one per run. Returns (T,) each."""
    size = n // (num_classes + 1)
    order = rng.permutation(n)
    return [np.sort(order[r * size : (r + 1) * size]) for r in range(runs)]


def aum_from_margins(
    margins: np.ndarray, is_threshold: np.ndarray, percentile: float = 99.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """AUM and its threshold from one run's margins.

    Parameters
    ----------
    margins : (N, E) margins of each sample's assigned label (the fake class C for threshold samples)
    is_threshold : (N,) bool, samples that were relabelled to the fake class
    percentile : of the threshold samples' AUM (Pleiss et al.: 99)

    Returns
    -------
    aum : (N,) float64, mean margin over epochs (the paper sums; the mean ranks the same)
    flagged : (N,) bool, AUM below the threshold; never a threshold sample (its given label was
        not trained on in this run)
    threshold : float
    """
    aum_values = np.asarray(margins, dtype=np.float64).mean(axis=1)
    is_threshold = np.asarray(is_threshold, dtype=bool)
    threshold = float(np.percentile(aum_values[is_threshold], percentile))
    return aum_values, (aum_values < threshold) & ~is_threshold, threshold


def aum(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    seed: int = 0,
    runs: int = 2,
    percentile: float = 99.0,
    head: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Area under the margin with threshold samples (Pleiss et al., NeurIPS 2020).

    In each run, ``N // (C + 1)`` random samples get the fake label C, the MLP head is trained with
    C + 1 outputs, and a sample's AUM is its mean margin over epochs; samples whose AUM is below
    the 99th percentile of the threshold samples' AUM are flagged. As in Pleiss et al., ``runs=2``
    uses two disjoint threshold sets so every sample is judged in a run where it kept its label;
    a sample judged in both runs is flagged when its mean AUM-minus-threshold is negative.
    ``runs=1`` costs one training but cannot judge its threshold samples (never flagged).

    Parameters
    ----------
    features : (N, D) float
    labels : (N,) int, given labels in [0, C)
    num_classes : C
    seed : threshold sets, initialisation, shuffling
    head : `train_head` settings (default `head_settings()`)

    Returns
    -------
    flagged : (N,) bool
    score : (N,) float64, threshold minus AUM (positive = below the threshold)
    extra : ``{"thresholds": [...], "runs": runs}``
    """
    settings = {**head_settings(), **(head or {})}
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    seq = np.random.SeedSequence(seed)
    set_seq, *run_seqs = seq.spawn(runs + 1)
    sets = threshold_sets(n, num_classes, runs, np.random.default_rng(set_seq))
    delta_sum = np.zeros(n)
    judged = np.zeros(n)
    thresholds = []
    for r in range(runs):
        is_threshold = np.zeros(n, dtype=bool)
        is_threshold[sets[r]] = True
        assigned = np.where(is_threshold, num_classes, labels)
        dyn = train_head(
            features, assigned, num_classes + 1, generator=torch_generator(run_seqs[r]), device=device, **settings
        )
        values, _, threshold = aum_from_margins(dyn.margins, is_threshold, percentile)
        thresholds.append(threshold)
        delta_sum[~is_threshold] += threshold - values[~is_threshold]
        judged[~is_threshold] += 1
    score = np.where(judged > 0, delta_sum / np.maximum(judged, 1), -np.inf)
    flagged = score > 0
    if not np.all(judged > 0):  # unjudged samples rank lowest but AUROC needs finite values
        score = np.where(judged > 0, score, np.min(score[judged > 0]) - 1.0)
    return flagged, score, {"thresholds": thresholds, "runs": runs}
