"""Synthetic label noise for benchmarking (METHOD.md, "Synthetic noise").

Pure functions: clean labels in, noisy labels out, seeded through a ``np.random.Generator``.
"""

from __future__ import annotations

import zlib

import numpy as np

NOISE_KINDS = ("sym", "asym", "inst")


def parse_noise(spec: str) -> tuple[str, float]:
    """Split ``"sym:0.6"`` into ``("sym", 0.6)``; raises ``ValueError`` on anything else."""
    kind, sep, rate = spec.partition(":")
    if not sep or kind not in NOISE_KINDS:
        raise ValueError(f"noise must be KIND:RATE with KIND in {NOISE_KINDS}, got {spec!r}")
    try:
        eta = float(rate)
    except ValueError:
        raise ValueError(f"noise rate must be a number in [0, 1], got {rate!r}") from None
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"noise rate must be a number in [0, 1], got {rate!r}")
    return kind, eta


def symmetric(clean_labels: np.ndarray, num_classes: int, eta: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``eta`` replace each label by one of the other ``C - 1`` classes, uniformly.

    Parameters
    ----------
    clean_labels : (N,) int
    num_classes : C
    eta : flip probability
    rng : source of randomness

    Returns
    -------
    (N,) int64 noisy labels.
    """
    clean_labels = np.asarray(clean_labels, dtype=np.int64)
    flip = rng.random(clean_labels.shape[0]) < eta
    return np.where(flip, other_class(clean_labels, num_classes, rng), clean_labels)


def asymmetric(clean_labels: np.ndarray, num_classes: int, eta: float, rng: np.random.Generator) -> np.ndarray:
    """Pair flip: with probability ``eta`` class ``i`` becomes ``(i + 1) mod C``. Shapes as in `symmetric`."""
    clean_labels = np.asarray(clean_labels, dtype=np.int64)
    flip = rng.random(clean_labels.shape[0]) < eta
    return np.where(flip, (clean_labels + 1) % num_classes, clean_labels)


def instance_dependent(
    features: np.ndarray,
    clean_labels: np.ndarray,
    num_classes: int,
    eta: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Instance-dependent noise of Xia et al. (2020), the paper's Algorithm 1.

    Parameters
    ----------
    features : (N, D) float
    clean_labels : (N,) int
    num_classes : C
    eta : mean flip rate; per-sample rates are drawn from N(eta, 0.1^2) truncated to [0, 1]
    rng : source of randomness

    Returns
    -------
    (N,) int64 noisy labels.
    """
    from scipy.stats import truncnorm

    y = np.asarray(clean_labels, dtype=np.int64)
    n, d = features.shape
    sd = 0.1
    q = truncnorm.rvs((0.0 - eta) / sd, (1.0 - eta) / sd, loc=eta, scale=sd, size=n, random_state=rng)
    w = rng.standard_normal((num_classes, d, num_classes))
    noisy = np.empty(n, dtype=np.int64)
    # Grouped by class so each W_c is used in one matrix product.
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if idx.size == 0:
            continue
        # Rows gathered in float64 a block at a time (not one float64 copy of all the features).
        logits = np.concatenate([np.asarray(features[idx[i : i + 65536]], dtype=np.float64) @ w[c]
                                 for i in range(0, idx.size, 65536)])  # fmt: skip
        logits[:, c] = -np.inf
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p *= q[idx, None]
        p[:, c] = 1.0 - q[idx]
        cum = np.cumsum(p, axis=1)
        u = rng.random(idx.size)[:, None] * cum[:, -1:]
        noisy[idx] = np.minimum((u > cum).sum(axis=1), num_classes - 1)
    return noisy


def other_class(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A class drawn uniformly from the ``C - 1`` classes other than each label. (N,) -> (N,)."""
    labels = np.asarray(labels, dtype=np.int64)
    shift = rng.integers(1, num_classes, size=labels.shape[0])
    return (labels + shift) % num_classes


def apply_noise(
    spec: str,
    clean_labels: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """Apply the noise named by ``spec`` (see `parse_noise`) to ``clean_labels``. Returns (N,) int64."""
    kind, eta = parse_noise(spec)
    if kind == "sym":
        return symmetric(clean_labels, num_classes, eta, rng)
    if kind == "asym":
        return asymmetric(clean_labels, num_classes, eta, rng)
    if features is None:
        raise ValueError("instance-dependent noise needs the features")
    return instance_dependent(features, clean_labels, num_classes, eta, rng)


def synthetic_labels(
    spec: str, clean_labels: np.ndarray, num_classes: int, seed: int, features: np.ndarray | None = None
) -> np.ndarray:
    """The one way synthetic noise is drawn: ``spec`` noise on ``clean_labels``, from a generator
    that depends on (seed, spec) only.

    ``detect`` (every method), ``bench``, the app and the built-in sample all call this, so the
    same (seed, spec) gives the same given labels whichever method then judges them.

    Parameters
    ----------
    spec : ``KIND:RATE`` (see `parse_noise`)
    clean_labels : (N,) int
    num_classes : C
    seed : int >= 0
    features : (N, D), needed by ``inst`` noise

    Returns
    -------
    (N,) int64 noisy labels.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(spec.encode())]))
    return apply_noise(spec, clean_labels, num_classes, rng, features=features)


def noise_rate(labels: np.ndarray, clean_labels: np.ndarray) -> float:
    """Fraction of labels that differ from the clean ones."""
    return float(np.mean(np.asarray(labels) != np.asarray(clean_labels)))
