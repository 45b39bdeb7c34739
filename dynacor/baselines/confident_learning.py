"""Confident learning (Northcutt et al., JAIR 2021) through cleanlab."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynacor.method.probe import C_DEFAULT, stratified_folds

# lbfgs iterations allowed per fold; see `cross_val_probs` for what convergence takes.
MAX_ITER = 1000


def cross_val_probs(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = 5, seed: int = 0,
    max_iter: int = MAX_ITER, c: float = C_DEFAULT,
) -> np.ndarray:  # fmt: skip
    """Out-of-sample predicted probabilities (N, C): K-fold logistic regression on standardised features.

    Each sample's probabilities come from the model fitted on the other folds (`stratified_folds`),
    which is the input cleanlab's theory assumes. lbfgs runs to convergence (scikit-learn's
    default ``tol=1e-4``); if it still has not converged after ``max_iter`` iterations,
    scikit-learn's ConvergenceWarning is shown, not hidden. Measured on one fold of the dev file
    (8,000 x 1,280 training rows, scikit-learn 1.9) at C = 1: lbfgs converges in 93 (aggre) to 263
    (worse) iterations, so `MAX_ITER` leaves about 4x headroom; the default ``c`` (`C_DEFAULT`)
    regularises far more and converges sooner.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    probs = np.zeros((y.shape[0], num_classes), dtype=np.float64)
    for train, test in stratified_folds(y, num_classes, folds, seed):
        scaler = StandardScaler().fit(x[train])
        model = LogisticRegression(C=c, max_iter=max_iter)
        model.fit(scaler.transform(x[train]), y[train])
        probs[np.ix_(test, model.classes_)] = model.predict_proba(scaler.transform(x[test]))
    return probs


def cross_val_probs_head(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = 5, seed: int = 0,
    head: dict[str, Any] | None = None, device: torch.device | str = "cpu",
) -> np.ndarray:  # fmt: skip
    """Out-of-sample predicted probabilities (N, C) of the MLP head DynaCor trains, cross-fitted.

    Each test fold's probabilities are the softmax, after the last epoch, of a head trained by
    `dynacor.method.classifier.train_head` (settings ``head``, default `head_settings()`) on the
    other folds only, so no sample's probabilities come from a head that saw it. The folds are
    those of `cross_val_probs` for the same ``seed``; each fold's head is seeded from ``seed``.

    Parameters
    ----------
    features : (N, D) float
    labels : (N,) int given labels in [0, C)
    num_classes : C
    head : `train_head` settings (epochs, lr, ...)

    Returns
    -------
    probs : (N, C) float64, each row sums to 1
    """
    from dynacor.baselines.common import head_settings, torch_generator
    from dynacor.method.classifier import train_head

    settings = {**head_settings(), **(head or {})}
    y = np.asarray(labels, dtype=np.int64)
    probs = np.zeros((y.shape[0], num_classes), dtype=np.float64)
    splits = stratified_folds(y, num_classes, folds, seed)
    fold_seeds = np.random.SeedSequence(seed).spawn(len(splits))
    for (train, test), fold_seed in zip(splits, fold_seeds, strict=True):
        dyn = train_head(features[train], y[train], num_classes, generator=torch_generator(fold_seed),
                         device=device, predict=features[test], **settings)  # fmt: skip
        probs[test] = dyn.predicted
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
