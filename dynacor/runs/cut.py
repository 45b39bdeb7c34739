"""Moving a finished run's cut along its estimated precision-recall curve (run.json
``estimates.curve``, `dynacor.method.estimates.estimated_curve`): which point of the curve a cut
is, how many samples a cut flags, and for a benchmark run the true curve at the same cuts.

Pure functions; the move itself is `dynacor.runs.store.set_cut`.
"""

from __future__ import annotations

import numpy as np


def point_of_cut(curve: dict, threshold: float) -> int:
    """Index of the first point of the curve that flags every sample the cut ``q > threshold``
    flags.

    Point ``i`` flags ``q > t_i`` where ``t_i`` is the next lower score after its group, so a cut
    in ``[t_i, t_{i-1})`` flags exactly point ``i``'s samples (on a curve thinned to fewer points,
    at most as many). A cut above every point gives the first point, below every point the last.

    Parameters
    ----------
    curve : ``{"threshold": [...] decreasing, ...}``; threshold : the cut

    Returns
    -------
    int in ``[0, len(curve["threshold"]))``
    """
    thresholds = np.asarray(curve["threshold"], dtype=np.float64)
    if len(thresholds) == 0:
        raise ValueError("the curve has no point")
    at_or_below = np.flatnonzero(thresholds <= threshold)
    return int(at_or_below[0]) if len(at_or_below) else len(thresholds) - 1


def flagged_counts(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``scores`` each cut ``q > t`` flags.

    Parameters
    ----------
    scores : (N,) float noisy scores; thresholds : (P,) float cuts

    Returns
    -------
    (P,) int64
    """
    ascending = np.sort(np.asarray(scores, dtype=np.float64))
    return len(ascending) - np.searchsorted(
        ascending, np.asarray(thresholds, dtype=np.float64), side="right"
    )


def true_curve(scores: np.ndarray, is_noisy: np.ndarray, thresholds: np.ndarray) -> dict:
    """True precision and recall of each cut ``q > t``, for a run whose clean labels are known.

    Parameters
    ----------
    scores : (N,) float noisy scores; is_noisy : (N,) bool, given label != clean label
    thresholds : (P,) float cuts (e.g. the estimated curve's)

    Returns
    -------
    ``{"precision": (P,), "recall": (P,)}`` float64; precision NaN where a cut flags nothing,
    recall NaN when no label is wrong
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    hits = np.r_[0, np.cumsum(is_noisy[order])]
    count = flagged_counts(scores, thresholds)
    found = hits[count].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(count > 0, found / np.maximum(count, 1), np.nan)
    total = int(is_noisy.sum())
    recall = found / total if total > 0 else np.full(len(count), np.nan)
    return {"precision": precision, "recall": recall}
