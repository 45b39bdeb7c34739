"""Clustering of dynamics representations (METHOD.md, sections 4-5): pure tensor functions.

``q`` is the soft assignment to the noisy cluster, ``1 - q`` to the clean one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cosine_distance(z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``1 - <z, mu> / (|z| |mu|)``. z (B, K), mu (K,) -> (B,)."""
    return 1.0 - F.cosine_similarity(z, mu[None, :], dim=1, eps=1e-12)


def squared_distance(z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``|z - mu|^2``. z (B, K), mu (K,) -> (B,)."""
    return ((z - mu[None, :]) ** 2).sum(dim=1)


def soft_assign(
    z: torch.Tensor, mu_noisy: torch.Tensor, mu_clean: torch.Tensor, distance: str = "cosine"
) -> torch.Tensor:
    """Student-t (one degree of freedom) assignment to the noisy cluster.

    Parameters
    ----------
    z : (B, K) representations
    mu_noisy, mu_clean : (K,) centroids
    distance : ``"cosine"`` (paper) or ``"euclidean"`` (squared; the authors' code at evaluation)

    Returns
    -------
    (B,) ``q_noisy``.
    """
    dist = cosine_distance if distance == "cosine" else squared_distance
    k_noisy = 1.0 / (1.0 + dist(z, mu_noisy))
    k_clean = 1.0 / (1.0 + dist(z, mu_clean))
    return k_noisy / (k_noisy + k_clean)


def target_distribution(q_noisy: torch.Tensor) -> torch.Tensor:
    """DEC target ``p_k = (q_k^2 / s_k) / sum_j (q_j^2 / s_j)``, ``s_k = sum_i q_ik`` over the batch.

    (B,) ``q_noisy`` -> (B,) ``p_noisy``; computed without gradient, as in the authors' code.
    """
    q = torch.stack([q_noisy, 1.0 - q_noisy], dim=1).detach()
    weight = q**2 / q.sum(dim=0).clamp_min(1e-12)
    return (weight[:, 0] / weight.sum(dim=1).clamp_min(1e-12)).detach()


def clustering_loss(q_noisy: torch.Tensor, p_noisy: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` over both clusters, averaged over the batch. (B,), (B,) -> scalar."""
    q = torch.stack([q_noisy, 1.0 - q_noisy], dim=1).clamp_min(1e-12)
    p = torch.stack([p_noisy, 1.0 - p_noisy], dim=1)
    return (torch.special.xlogy(p, p) - p * torch.log(q)).sum(dim=1).mean()


def alignment_loss(z: torch.Tensor, is_copy: torch.Tensor, pred_noisy: torch.Tensor) -> torch.Tensor:
    """Cosine distance between the mean representation of originals and of copies, per cluster.

    Averaged over the clusters where both groups are present; 0 when neither cluster has both.

    Parameters
    ----------
    z : (B, K)
    is_copy : (B,) bool
    pred_noisy : (B,) bool, the current prediction
    """
    terms = []
    for group in (pred_noisy, ~pred_noisy):
        originals = group & ~is_copy
        copies = group & is_copy
        if bool(originals.any()) and bool(copies.any()):
            mean_orig = z[originals].mean(dim=0)
            mean_copy = z[copies].mean(dim=0)
            terms.append(cosine_distance(mean_orig[None, :], mean_copy)[0])
    if not terms:
        return z.sum() * 0.0
    return torch.stack(terms).mean()


def validation_metric(q_noisy: np.ndarray, is_copy: np.ndarray, in_reference: np.ndarray | None = None) -> float:
    """``V = (mean q over copies predicted noisy - mean q over originals predicted clean)^2``.

    Parameters
    ----------
    q_noisy : (S,) scores of originals and copies
    is_copy : (S,) bool
    in_reference : (S,) bool or None, which originals count (the authors' code: those with a copy);
        None means all originals

    Returns
    -------
    V, or NaN when either set is empty or when most copies are called clean (such an epoch
    cannot be chosen). The last guard is ours, not the paper's: V only looks at the copies called
    noisy, so a state whose clusters swapped (most copies, which are at least 1 - 1/C noisy,
    called clean) can score high while its scores are inverted.
    """
    q_noisy = np.asarray(q_noisy, dtype=np.float64)
    is_copy = np.asarray(is_copy, dtype=bool)
    pred_noisy = q_noisy > 0.5
    if not is_copy.any() or pred_noisy[is_copy].mean() < 0.5:
        return float("nan")
    copies = is_copy & pred_noisy
    originals = ~is_copy & ~pred_noisy
    if in_reference is not None:
        originals &= np.asarray(in_reference, dtype=bool)
    if not copies.any() or not originals.any():
        return float("nan")
    return float((q_noisy[copies].mean() - q_noisy[originals].mean()) ** 2)


def orient_by_copies(q_noisy: np.ndarray, is_copy: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Scores whose noisy cluster holds most of the corrupted copies, and a warning when they had
    to be turned round.

    The copies are known to be noisy (at least 1 - 1/C of them), so a state that calls most of
    them clean has its two clusters the wrong way round; swapping the two centroids turns every
    score q into 1 - q.

    Parameters
    ----------
    q_noisy : (S,) scores of originals and copies
    is_copy : (S,) bool

    Returns
    -------
    (S,) scores, and None or the warning to show the user
    """
    is_copy = np.asarray(is_copy, dtype=bool)
    if not is_copy.any():
        return q_noisy, None
    share = float(np.mean(np.asarray(q_noisy)[is_copy] > 0.5))
    if share >= 0.5:
        return q_noisy, None
    return 1.0 - np.asarray(q_noisy), (
        f"the clusters were oriented by the copies: only {100 * share:.0f}% of the corrupted copies were in the "
        "noisy cluster, so the two clusters were swapped"
    )


def flagged_share_warning(flagged: np.ndarray, low: float = 0.01, high: float = 0.9) -> str | None:
    """A warning when (almost) nothing or (almost) everything is flagged: the two clusters have
    then most likely not separated the noisy samples from the clean ones. flagged (N,) bool."""
    share = float(np.mean(flagged)) if len(flagged) else 0.0
    if low <= share <= high:
        return None
    return (f"{100 * share:.1f}% of the samples are flagged: the clean and noisy clusters have most likely not "
            "separated (see the encoder curves on the Training page); treat the flags with care")
