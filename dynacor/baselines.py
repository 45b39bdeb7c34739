"""The paper's baselines (METHOD.md, "Baselines"): pure functions on arrays.

Every detector returns ``(flagged, score)``: ``flagged`` (N,) bool, predicted noisy, and ``score``
(N,) float64, higher = more likely noisy (for AUROC). Shapes: N samples, D feature dimensions,
C classes, E classifier epochs. Randomness comes only from the ``seed`` argument.

Methods that train the MLP head (AUM, CORES) use the same head and SGD settings as DynaCor
(`head_settings` takes them from a `DynaCorConfig`), so differences come from the method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynacor.classifier import mlp_head, train_head
from dynacor.config import DynaCorConfig


def head_settings(config: DynaCorConfig | None = None) -> dict[str, Any]:
    """The `train_head` keyword arguments of ``config`` (default: `DynaCorConfig()`)."""
    c = config if config is not None else DynaCorConfig()
    return {
        "epochs": c.epochs, "lr": c.lr, "momentum": c.momentum, "weight_decay": c.weight_decay,
        "batch_size": c.batch_size, "hidden": c.hidden, "schedule": c.schedule, "record": c.record,
        "late_epochs": c.late_epochs,
    }  # fmt: skip


def _torch_generator(seed: int | np.random.SeedSequence) -> torch.Generator:
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return torch.Generator().manual_seed(int(seq.generate_state(1)[0]))


# --------------------------------------------------------------------------------------------
# Avg-GMM
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# AUM
# --------------------------------------------------------------------------------------------


def threshold_sets(n: int, num_classes: int, runs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint random index sets of ``n // (C + 1)`` threshold samples, one per run. Returns (T,) each."""
    size = n // (num_classes + 1)
    order = rng.permutation(n)
    return [np.sort(order[r * size : (r + 1) * size]) for r in range(runs)]


def aum_from_margins(
    margins: np.ndarray, is_threshold: np.ndarray, percentile: float = 99.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """AUM and its threshold from one run's margins.

    Parameters
    ----------
    margins : (N, E) margins of each sample's assigned label (the fake class C for threshold samples)
    is_threshold : (N,) bool, samples that were relabelled to the fake class
    percentile : of the threshold samples' AUM (Pleiss et al.: 99)

    Returns
    -------
    aum : (N,) float64, mean margin over epochs (the paper sums; the mean ranks the same)
    flagged : (N,) bool, AUM below the threshold; never a threshold sample (its given label was
        not trained on in this run)
    threshold : float
    """
    aum_values = np.asarray(margins, dtype=np.float64).mean(axis=1)
    is_threshold = np.asarray(is_threshold, dtype=bool)
    threshold = float(np.percentile(aum_values[is_threshold], percentile))
    return aum_values, (aum_values < threshold) & ~is_threshold, threshold


def aum(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    seed: int = 0,
    runs: int = 2,
    percentile: float = 99.0,
    head: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Area under the margin with threshold samples (Pleiss et al., NeurIPS 2020).

    In each run, ``N // (C + 1)`` random samples get the fake label C, the MLP head is trained with
    C + 1 outputs, and a sample's AUM is its mean margin over epochs; samples whose AUM is below
    the 99th percentile of the threshold samples' AUM are flagged. As in Pleiss et al., ``runs=2``
    uses two disjoint threshold sets so every sample is judged in a run where it kept its label;
    a sample judged in both runs is flagged when its mean AUM-minus-threshold is negative.
    ``runs=1`` costs one training but cannot judge its threshold samples (never flagged).

    Parameters
    ----------
    features : (N, D) float
    labels : (N,) int, given labels in [0, C)
    num_classes : C
    seed : threshold sets, initialisation, shuffling
    head : `train_head` settings (default `head_settings()`)

    Returns
    -------
    flagged : (N,) bool
    score : (N,) float64, threshold minus AUM (positive = below the threshold)
    extra : ``{"thresholds": [...], "runs": runs}``
    """
    settings = {**head_settings(), **(head or {})}
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    seq = np.random.SeedSequence(seed)
    set_seq, *run_seqs = seq.spawn(runs + 1)
    sets = threshold_sets(n, num_classes, runs, np.random.default_rng(set_seq))
    delta_sum = np.zeros(n)
    judged = np.zeros(n)
    thresholds = []
    for r in range(runs):
        is_threshold = np.zeros(n, dtype=bool)
        is_threshold[sets[r]] = True
        assigned = np.where(is_threshold, num_classes, labels)
        dyn = train_head(
            features, assigned, num_classes + 1, generator=_torch_generator(run_seqs[r]), device=device, **settings
        )
        values, _, threshold = aum_from_margins(dyn.margins, is_threshold, percentile)
        thresholds.append(threshold)
        delta_sum[~is_threshold] += threshold - values[~is_threshold]
        judged[~is_threshold] += 1
    score = np.where(judged > 0, delta_sum / np.maximum(judged, 1), -np.inf)
    flagged = score > 0
    if not np.all(judged > 0):  # unjudged samples rank lowest but AUROC needs finite values
        score = np.where(judged > 0, score, np.min(score[judged > 0]) - 1.0)
    return flagged, score, {"thresholds": thresholds, "runs": runs}


# --------------------------------------------------------------------------------------------
# Confident learning
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# SimiFeat
# --------------------------------------------------------------------------------------------


def knn_indices(features: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Indices (N, k) of each sample's ``k`` nearest neighbours by cosine similarity, itself excluded."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    x = torch.nn.functional.normalize(x, dim=1)
    n = x.shape[0]
    k = min(k, n - 1)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        sim = x[start : start + chunk] @ x.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = -float("inf")
        out[start : start + chunk] = sim.topk(k, dim=1).indices.numpy()
    return out


def knn_votes(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int) -> np.ndarray:
    """Fraction of the ``k`` nearest neighbours carrying each label. (N, D) -> (N, C)."""
    labels = np.asarray(labels, dtype=np.int64)
    neighbours = labels[knn_indices(features, k)]
    votes = np.zeros((labels.shape[0], num_classes))
    np.add.at(votes, (np.repeat(np.arange(labels.shape[0]), neighbours.shape[1]), neighbours.ravel()), 1.0)
    return votes / neighbours.shape[1]


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


# --------------------------------------------------------------------------------------------
# CORES
# --------------------------------------------------------------------------------------------


def cores_beta(epoch: int, epochs: int, beta_max: float = 2.0) -> float:
    """The confidence-regularisation weight at ``epoch`` (0-based).

    The authors' schedule over 100 epochs (0 for 10 epochs, then a linear ramp to 2 over 30, then 2)
    scaled to ``epochs``.
    """
    warm, ramp = round(0.1 * epochs), max(1, round(0.3 * epochs))
    if epoch < warm:
        return 0.0
    if epoch < warm + ramp:
        return beta_max * (epoch - warm) / max(1, ramp - 1)
    return beta_max


def cores_sieve_terms(logits: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor, beta: float):
    """CORES per-sample terms for a batch. logits (B, C), labels (B,), prior (C,).

    Returns ``(loss, sieve)``: the confidence-regularised loss ``CE(f(x), y) - beta * E_prior[CE(f(x), Y)]``
    (B,) and the sieve statistic ``CE(f(x), y) - mean_j CE(f(x), j)`` (B,). A sample passes the
    sieve (is kept as clean) when its statistic is <= 0: the regulariser cancels out of the
    paper's threshold alpha_{n,t}, as in the authors' code.
    """
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    # The authors' log(softmax + 1e-8) bounds CE against the other classes; without the bound the
    # regulariser is unbounded below and training diverges once beta > 0.
    ce_all = -torch.log(torch.softmax(logits, dim=1) + 1e-8)  # (B, C)
    loss = ce - beta * (ce_all * prior[None, :]).sum(dim=1)
    sieve = ce - ce_all.mean(dim=1)
    return loss, sieve


def cores(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    seed: int = 0,
    head: dict[str, Any] | None = None,
    sieve_from: float = 0.3,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """CORES sample sieve (Cheng et al., ICLR 2021, "a sample sieve approach"), on the MLP head.

    The head is trained with the confidence-regularised loss ``CE - beta * E_prior[CE]`` (prior:
    the given labels' class frequencies; beta from `cores_beta`). From ``sieve_from`` of the epochs
    on, only samples that pass the sieve (``CE(y) <= mean_j CE(j)``, measured on each mini-batch
    before its update as the authors' code does) contribute to the loss. The samples sieved out in
    the last epoch are flagged. Simplifications: the same MLP head and SGD settings as DynaCor
    instead of a ResNet, the schedule scaled from 100 epochs, no second (semi-supervised) phase.

    Parameters
    ----------
    features : (N, D) float
    labels : (N,) int given labels
    num_classes : C
    head : `train_head`-style settings (epochs, lr, momentum, weight_decay, batch_size, hidden, schedule)

    Returns
    -------
    flagged : (N,) bool
    score : (N,) float64, the sieve statistic in the last epoch (positive = sieved out)
    """
    s = {**head_settings(), **(head or {})}
    device = torch.device(device)
    generator = _torch_generator(seed)
    x = torch.as_tensor(np.ascontiguousarray(features), dtype=torch.float32, device=device)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
    n = x.shape[0]
    prior = torch.bincount(y, minlength=num_classes).float() / n
    model = mlp_head(x.shape[1], num_classes, s["hidden"], generator).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])
    epochs = s["epochs"]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs) if s["schedule"] == "cosine" else None
    first_sieve = round(sieve_from * epochs)
    last_sieve = torch.zeros(n, device=device)
    for epoch in range(epochs):
        beta = cores_beta(epoch, epochs)
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, s["batch_size"]):
            idx = order[start : start + s["batch_size"]]
            loss, sieve = cores_sieve_terms(model(x[idx]), y[idx], prior, beta)
            keep = (sieve.detach() <= 0).float() if epoch >= first_sieve else torch.ones_like(loss)
            # As in the authors' code: mean over the kept samples, a vanishing loss if none are kept.
            total = (loss * keep).sum() / keep.sum() if keep.sum() > 0 else loss.mean() * 1e-8
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
            if epoch == epochs - 1:
                last_sieve[idx] = sieve.detach()
        if scheduler is not None:
            scheduler.step()
    score = last_sieve.cpu().numpy().astype(np.float64)
    return score > 0, score
