"""Detection metrics, noisy = positive (pure functions)."""

from __future__ import annotations

import numpy as np


def detection_metrics(flagged: np.ndarray, is_noisy: np.ndarray, score: np.ndarray | None = None) -> dict[str, float]:
    """Precision, recall and F1 of ``flagged`` against the truth, and AUROC of ``score``.

    Parameters
    ----------
    flagged : (N,) bool, predicted noisy
    is_noisy : (N,) bool, truly noisy (given label != clean label)
    score : (N,) float or None, higher means more likely noisy

    Returns
    -------
    dict with precision, recall, f1, auroc (NaN when undefined), noise_rate, flagged_rate.
    """
    flagged = np.asarray(flagged, dtype=bool)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    tp = int(np.sum(flagged & is_noisy))
    fp = int(np.sum(flagged & ~is_noisy))
    fn = int(np.sum(~flagged & is_noisy))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": float("nan"),
        "noise_rate": float(is_noisy.mean()) if is_noisy.size else float("nan"),
        "flagged_rate": float(flagged.mean()) if flagged.size else float("nan"),
    }
    if score is not None and 0 < is_noisy.sum() < is_noisy.size:
        from sklearn.metrics import roc_auc_score

        out["auroc"] = float(roc_auc_score(is_noisy, np.asarray(score, dtype=np.float64)))
    return out


def fnr_at_noise_rate(scores: np.ndarray, truly_noisy: np.ndarray) -> float:
    """False negative rate at a review budget equal to the true number of noisy samples.

    The fixed operating point of Pickler, Kamassury and Silva (arXiv 2510.16211, 2025): rank every
    sample by ``scores``, take the top k where k = the number of truly noisy samples, and count the
    noisy samples left out. Since k equals the number of positives, FNR@k = 1 - precision@k =
    1 - recall@k. It measures the order a review queue walks through, whatever a method's cut.

    Parameters
    ----------
    scores : (N,) float, higher = more likely noisy
    truly_noisy : (N,) bool, given label != clean label

    Returns
    -------
    float in [0, 1]; NaN when no sample is noisy (k = 0: nothing to miss, nothing to rank).
    NaN scores rank last. Ties are broken by index order: among equal scores the lower index ranks first (a stable
    sort), so the value is deterministic; a method that gives many samples one score (a hard
    0/1 flag) is measured on that arbitrary order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truly_noisy = np.asarray(truly_noisy, dtype=bool)
    k = int(truly_noisy.sum())
    if k == 0:
        return float("nan")
    # Descending by score, stable: sort -score ascending with a stable sort keeps index order on ties.
    order = np.argsort(-scores, kind="stable")
    found = int(truly_noisy[order[:k]].sum())
    return 1.0 - found / k
