"""Avg-GMM (the paper's "Avg.Encoder" baseline): mean margin, two-component GMM."""

from __future__ import annotations

import numpy as np


def avg_gmm(margins: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Avg-GMM ("Avg.Encoder" in the paper): mean margin over epochs, 1-D two-component GMM.

    Parameters
    ----------
    margins : (N, E) float, logit margin of each sample's given label per epoch
    seed : initialisation of the mixture

    Returns
    -------
    flagged : (N,) bool, the sample's posterior of the lower-mean component exceeds 0.5
    score : (N,) float64, minus the mean margin (a monotone score; the GMM posterior is not
        monotone in the margin when the two variances differ)
    """
    from sklearn.mixture import GaussianMixture

    mean = np.asarray(margins, dtype=np.float64).mean(axis=1)
    score = -mean
    if np.ptp(mean) == 0:  # one value: nothing to split
        return np.zeros(mean.shape[0], dtype=bool), score
    gmm = GaussianMixture(n_components=2, covariance_type="full", random_state=seed, reg_covar=1e-6)
    gmm.fit(mean[:, None])
    noisy_component = int(np.argmin(gmm.means_.ravel()))
    posterior = gmm.predict_proba(mean[:, None])[:, noisy_component]
    return posterior > 0.5, score
