"""Label corruption: the copies with deliberately wrong labels (METHOD.md, section 1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynacor.method.noise import other_class


@dataclass(frozen=True)
class Copies:
    """Which originals were copied and with which wrong labels.

    Attributes
    ----------
    pair : (M,) int64, the index of each copy's original
    labels : (M,) int64, each copy's label, never its original's given label
    """

    pair: np.ndarray
    labels: np.ndarray

    @property
    def size(self) -> int:
        return int(self.pair.shape[0])


def num_copies(num_samples: int, gamma: float) -> int:
    """``M = round(gamma * N)``, at least 1."""
    return max(1, int(round(gamma * num_samples)))


def make_copies(
    given_labels: np.ndarray, num_classes: int, gamma: float, rng: np.random.Generator
) -> Copies:
    """Draw ``round(gamma * N)`` originals without replacement and give each copy another label.

    Parameters
    ----------
    given_labels : (N,) int, the given (possibly noisy) labels
    num_classes : C
    gamma : fraction of originals copied, in (0, 1]
    rng : source of randomness

    Returns
    -------
    Copies with ``pair`` sorted ascending and ``labels`` uniform over the ``C - 1`` other classes.
    """
    given_labels = np.asarray(given_labels, dtype=np.int64)
    n = given_labels.shape[0]
    m = min(n, num_copies(n, gamma))
    pair = np.sort(rng.choice(n, size=m, replace=False))
    return Copies(pair=pair.astype(np.int64), labels=other_class(given_labels[pair], num_classes, rng))
