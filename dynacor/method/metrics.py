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
