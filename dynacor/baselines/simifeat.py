"""SimiFeat (Zhu et al., ICML 2022): training-free k-NN label voting in the feature space."""

from __future__ import annotations

import numpy as np

from dynacor.method.knn import label_votes, nearest_neighbours


def knn_votes(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int) -> np.ndarray:
    """Fraction of the ``k`` nearest neighbours (cosine) carrying each label. (N, D) -> (N, C)."""
    neighbours, _ = nearest_neighbours(features, k, metric="cosine")
    return label_votes(neighbours, labels, num_classes)


def simifeat(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    k: int = 10,
    features_aug: np.ndarray | None = None,
    mode: str = "vote",
) -> tuple[np.ndarray, np.ndarray]:
    """SimiFeat (Zhu et al., ICML 2022): training-free k-NN label voting in the feature space.

    Each sample's k nearest neighbours (cosine similarity, itself excluded) vote with their given
    labels; with ``features_aug`` the votes of the two views are averaged (the paper averages over
    random augmentations of the images; with frozen features the flip is the one view we have).

    ``mode="vote"`` (SimiFeat-V): flagged when the given label gets fewer votes than the top label.
    ``mode="rank"`` (SimiFeat-R): within each given class, the samples with the fewest votes for
    their label are flagged, as many as SimiFeat-V flags in that class. The paper estimates the
    per-class noise rates with HOC instead; that estimator is not implemented here.

    Parameters
    ----------
    features : (N, D) float
    labels : (N,) int given labels
    num_classes : C
    k : neighbours (paper: 10)

    Returns
    -------
    flagged : (N,) bool
    score : (N,) float64, one minus the vote share of the given label
    """
    labels = np.asarray(labels, dtype=np.int64)
    votes = knn_votes(features, labels, num_classes, k)
    if features_aug is not None:
        votes = 0.5 * (votes + knn_votes(features_aug, labels, num_classes, k))
    own = votes[np.arange(labels.shape[0]), labels]
    score = 1.0 - own
    flagged = own < votes.max(axis=1)
    if mode == "vote":
        return flagged, score
    if mode != "rank":
        raise ValueError(f"mode must be 'vote' or 'rank', got {mode!r}")
    ranked = np.zeros_like(flagged)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        count = int(flagged[idx].sum())
        if count:
            # Stable sort so ties keep input order: deterministic.
            ranked[idx[np.argsort(-score[idx], kind="stable")[:count]]] = True
    return ranked, score
