"""The one registry of detection methods: DynaCor, the baselines and the oracle ceiling.

`dynacor detect --method`, `dynacor bench --methods` and their ``--help`` read `METHODS`;
`run_method` is the one entry point for running a single detector on a `FeatureSet`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynacor.errors import InputError
from dynacor.method.config import DynaCorConfig
from dynacor.method.featureset import FeatureSet


@dataclass(frozen=True)
class Method:
    """One entry of the registry.

    name : what users type; summary : one line for ``--help``
    oracle : uses ground truth (a benchmark row, never a detector)
    """

    name: str
    summary: str
    oracle: bool = False


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dynacor", "DynaCor: corrupted copies, training dynamics, clustering, flagged with a cross-fitted "
               "linear probe and the early softmax, cut per class at class-pair counts (the default; --combine)"),
        Method("aum", "area under the margin with threshold samples (Pleiss et al., 2020)"),
        Method("cl", "confident learning (cleanlab), 5-fold logistic-regression probabilities (C tuned: 3e-4)"),
        Method("cl-mlp", "confident learning (cleanlab) on DynaCor's MLP head, 5-fold cross-fitted"),
        Method("avg-gmm", "two-component GMM on each sample's mean margin"),
        Method("margin", "in-sample margin of the softmax averaged over the head's epochs (Pickler et al., 2025); "
               "flags where another class is more probable"),
        Method("simifeat", "k-NN label voting in feature space (SimiFeat-V)"),
        Method("simifeat-r", "k-NN label voting, per-class ranking (SimiFeat-R)"),
        Method("cores", "CORES sample sieve on the MLP head"),
        Method("ceiling", "ORACLE: a supervised classifier of dynamics trained on ground truth", oracle=True),
    )
}
DETECTORS = tuple(name for name, m in METHODS.items() if not m.oracle)
ORACLES = tuple(name for name, m in METHODS.items() if m.oracle)


def methods_help(names: tuple[str, ...]) -> str:
    """``name: summary`` of each method, for ``--help``."""
    return "; ".join(f"{n}: {METHODS[n].summary}" for n in names)


def run_method(
    method: str, data: FeatureSet, config: DynaCorConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, float, dict[str, Any]]:
    """Run one detector on ``data`` (its ``labels`` are the given labels).

    Parameters
    ----------
    method : one of `DETECTORS` (the oracle ceiling is refused: it needs ground truth)
    data : features (N, D), labels (N,), optional features_aug, clean_labels (metrics only)
    config : DynaCor settings; the baselines that train the MLP head use its head settings
        (epochs, lr, batch size, ...). ``config.noise``, if set, is applied to ``clean_labels``
        first by `dynacor.method.noise.synthetic_labels` (as DynaCor's own run does), and every
        method then sees those labels.
    seed : replaces ``config.seed``

    Returns
    -------
    flagged : (N,) bool
    score : (N,) float, higher = more likely noisy
    seconds : wall time of the method (noise excluded)
    extra : method-specific: ``result`` (DynaCor's `Result`), ``given_labels``, AUM thresholds, ...
    """
    from dynacor.baselines import (
        aum,
        avg_gmm,
        confident_learning,
        cores,
        cross_val_probs_head,
        margin_detector,
        simifeat,
    )
    from dynacor.baselines.common import head_settings, torch_generator
    from dynacor.method.device import pick_device, set_threads
    from dynacor.method.noise import synthetic_labels
    from dynacor.method.validate import check_config

    if method in ORACLES:
        raise InputError("command line", "--method", f"a detector, one of {DETECTORS} "
                         "(the ceiling is an oracle that uses ground truth)", repr(method))  # fmt: skip
    if method not in DETECTORS:
        raise InputError("command line", "--method", f"one of {DETECTORS}", repr(method))
    config = check_config(config.replace(seed=seed))
    if config.noise is not None:
        if data.clean_labels is None:
            raise InputError(data.source.get("file", "<arrays>"), "clean_labels", "present to apply synthetic noise", "no such field")
        data = data.with_labels(synthetic_labels(config.noise, data.clean_labels, data.num_classes, seed, data.features))
        config = config.replace(noise=None)
    set_threads(config.num_threads)
    device = pick_device(config.device)
    n_classes = data.num_classes
    labels = data.labels
    extra: dict[str, Any] = {"given_labels": labels}
    started = time.perf_counter()
    if method == "dynacor":
        from dynacor.method.pipeline import run

        result = run(config, data)
        extra["result"] = result
        return result.flagged, result.q_noisy.astype(np.float64), result.timings["total"], extra
    if method == "avg-gmm":
        # Standalone: train the head on the originals alone (no corrupted copies).
        from dynacor.method.classifier import train_head

        dyn = train_head(data.features, labels, n_classes, generator=torch_generator(seed),
                         device=device, **head_settings(config))  # fmt: skip
        flagged, score = avg_gmm(dyn.margins, seed=seed)
        extra["margins"] = dyn.margins
    elif method == "aum":
        flagged, score, info = aum(data.features, labels, n_classes, seed=seed,
                                   head=head_settings(config), device=device)  # fmt: skip
        extra.update(info)
    elif method == "margin":
        # Standalone like avg-gmm: the head on the originals alone, one training.
        flagged, score, info = margin_detector(data.features, labels, n_classes, seed=seed,
                                               head=head_settings(config), device=device)  # fmt: skip
        extra.update(info)
    elif method == "cl":
        flagged, score = confident_learning(data.features, labels, n_classes, seed=seed)
    elif method == "cl-mlp":
        probs = cross_val_probs_head(data.features, labels, n_classes, seed=seed,
                                     head=head_settings(config), device=device)  # fmt: skip
        flagged, score = confident_learning(data.features, labels, n_classes, pred_probs=probs)
    elif method in ("simifeat", "simifeat-r"):
        flagged, score = simifeat(data.features, labels, n_classes, features_aug=data.features_aug,
                                  mode="vote" if method == "simifeat" else "rank")  # fmt: skip
    else:  # cores
        flagged, score = cores(data.features, labels, n_classes, seed=seed,
                               head=head_settings(config), device=device)  # fmt: skip
    return flagged, score, time.perf_counter() - started, extra
