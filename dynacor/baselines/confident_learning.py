"""Confident learning (Northcutt et al., JAIR 2021) through cleanlab."""

from __future__ import annotations

import numpy as np


def cross_val_probs(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = 5, seed: int = 0,
    max_iter: int = 100, c: float = 1.0,
) -> np.ndarray:  # fmt: skip
    """Out-of-sample predicted probabilities (N, C): K-fold logistic regression on standardised features.

    Each sample's probabilities come from the model fitted on the other folds (stratified,
    shuffled with ``seed``), which is the input cleanlab's theory assumes. lbfgs stops after
    ``max_iter`` iterations (it has not converged by then on 10k x 1280 features): one such fold
    took about a minute on a busy 2-core CPU, and convergence costs several times that.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    probs = np.zeros((y.shape[0], num_classes), dtype=np.float64)
    # The smallest class bounds the number of folds StratifiedKFold accepts.
    k = int(min(folds, np.bincount(y, minlength=num_classes)[np.unique(y)].min()))
    splitter = StratifiedKFold(n_splits=max(2, k), shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y):
        scaler = StandardScaler().fit(x[train])
        model = LogisticRegression(C=c, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(scaler.transform(x[train]), y[train])
        probs[np.ix_(test, model.classes_)] = model.predict_proba(scaler.transform(x[test]))
    return probs


def confident_learning(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = 5, seed: int = 0,
    pred_probs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Confident learning (Northcutt et al., JAIR 2021) through cleanlab.

    cleanlab's ``find_label_issues`` (default filter, ``prune_by_noise_rate``) gets out-of-sample
    probabilities: 5-fold cross-validated predictions of a scikit-learn logistic regression on the
    same (standardised) features (`cross_val_probs`), unless ``pred_probs`` (N, C) are given.

    Parameters
    ----------
    features : (N, D) float
    labels : (N,) int given labels
    num_classes : C

    Returns
    -------
    flagged : (N,) bool, cleanlab's label issues
    score : (N,) float64, one minus cleanlab's self-confidence label quality
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    if pred_probs is None:
        pred_probs = cross_val_probs(features, labels, num_classes, folds=folds, seed=seed)
    flagged = find_label_issues(labels, pred_probs)
    quality = get_label_quality_scores(labels, pred_probs, method="self_confidence")
    return np.asarray(flagged, dtype=bool), 1.0 - np.asarray(quality, dtype=np.float64)
