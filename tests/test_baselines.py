"""Baselines and the oracle ceiling on hand-made data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacor import baselines
from dynacor.baselines import ceiling
from dynacor.baselines.registry import METHODS
from dynacor.method.knn import nearest_neighbours
from dynacor.method.metrics import detection_metrics
from tests.conftest import make_blobs

# Few epochs and a small head keep each training baseline to a second or two on 2 busy cores.
FAST_HEAD = {"epochs": 8, "hidden": 64, "batch_size": 64, "lr": 0.02}


@pytest.fixture(scope="module")
def blobs() -> dict:
    # Well separated classes, 20% flipped labels: every baseline should find nearly all flips.
    return make_blobs(n=300, d=16, c=3, noise=0.2, seed=3)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here trains small heads: one thread each (see conftest)."""


def _check_output(flagged: np.ndarray, score: np.ndarray, n: int) -> None:
    assert flagged.shape == (n,) and flagged.dtype == bool
    assert score.shape == (n,) and np.all(np.isfinite(score))


def _f1(blobs: dict, flagged, score) -> dict:
    return detection_metrics(flagged, blobs["labels"] != blobs["clean_labels"], score)


# Avg-GMM -----------------------------------------------------------------------------------


def test_avg_gmm_splits_hand_made_margins():
    # 6 samples with clearly positive mean margin, 3 clearly negative.
    margins = np.array([[3, 4, 5]] * 6 + [[-2, -3, -4]] * 3, dtype=np.float32)
    margins[:, 0] += np.arange(9) * 0.01  # a little spread so both components have variance
    flagged, score = baselines.avg_gmm(margins)
    assert flagged.tolist() == [False] * 6 + [True] * 3
    np.testing.assert_allclose(score, -margins.mean(axis=1), rtol=1e-6)


def test_avg_gmm_constant_margins_flag_nothing():
    flagged, score = baselines.avg_gmm(np.ones((5, 4)))
    assert not flagged.any()
    assert np.all(score == -1.0)


# AUM ---------------------------------------------------------------------------------------


def test_aum_threshold_is_the_99th_percentile_of_threshold_samples():
    # Threshold samples' AUM: 0, 1, ..., 99 (mean margins); others at -5 (flag) and 200 (keep).
    thr_aum = np.arange(100, dtype=np.float64)
    margins = np.concatenate([np.repeat(thr_aum[:, None], 4, axis=1), [[-5.0] * 4, [200.0] * 4, [98.5] * 4]])
    is_threshold = np.r_[np.ones(100, bool), np.zeros(3, bool)]
    values, flagged, threshold = baselines.aum_from_margins(margins, is_threshold)
    assert threshold == pytest.approx(np.percentile(thr_aum, 99))  # 98.01
    np.testing.assert_allclose(values, margins.mean(axis=1))
    # Threshold samples are never flagged: their own label was not trained on.
    assert flagged.tolist() == [False] * 100 + [True, False, False]


def test_threshold_sets_are_disjoint_and_sized_n_over_c_plus_one():
    sets = baselines.threshold_sets(110, 10, 2, np.random.default_rng(0))
    assert [len(s) for s in sets] == [10, 10]
    assert not set(sets[0]) & set(sets[1])


def test_aum_catches_flips(blobs):
    flagged, score, extra = baselines.aum(blobs["features"], blobs["labels"], 3, seed=0, head=FAST_HEAD)
    _check_output(flagged, score, 300)
    assert len(extra["thresholds"]) == 2
    m = _f1(blobs, flagged, score)
    assert m["f1"] > 0.85 and m["auroc"] > 0.95


# Confident learning ------------------------------------------------------------------------


def test_confident_learning_catches_flips(blobs):
    flagged, score = baselines.confident_learning(blobs["features"], blobs["labels"], 3, seed=0)
    _check_output(flagged, score, 300)
    m = _f1(blobs, flagged, score)
    assert m["f1"] > 0.85 and m["auroc"] > 0.95


def test_confident_learning_uses_given_probabilities():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    probs = np.array([[0.9, 0.1]] * 3 + [[0.1, 0.9]] * 3 + [[0.05, 0.95], [0.95, 0.05]])
    flagged, score = baselines.confident_learning(None, labels, 2, pred_probs=probs)
    assert flagged.tolist() == [False] * 6 + [True, True]
    np.testing.assert_allclose(score, 1 - probs[np.arange(8), labels])


def test_cross_val_probs_are_out_of_sample(blobs):
    probs = baselines.cross_val_probs(blobs["features"], blobs["labels"], 3, folds=3, seed=0)
    assert probs.shape == (300, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


# Mean-softmax margin (Pickler et al., 2025) ------------------------------------------------


def test_mean_prob_margin_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, 0.3, 0.6]])
    labels = np.array([0, 0, 1, 2])
    # given minus the best other class: 0.7-0.2, 0.2-0.5, 0.4-0.4 (a tie is not a disagreement), 0.6-0.3
    np.testing.assert_allclose(baselines.mean_prob_margin(probs, labels), [0.5, -0.3, 0.0, 0.3])


def test_margin_catches_flips_and_flags_negative_agreement(blobs):
    flagged, score, extra = baselines.margin_detector(blobs["features"], blobs["labels"], 3, seed=0, head=FAST_HEAD)
    _check_output(flagged, score, 300)
    mean_probs = extra["mean_probs"]
    assert mean_probs.shape == (300, 3) and extra["margins"].shape == (300, FAST_HEAD["epochs"])
    np.testing.assert_allclose(mean_probs.sum(axis=1), 1.0, atol=1e-5)  # an average of softmaxes
    np.testing.assert_allclose(score, -baselines.mean_prob_margin(mean_probs, blobs["labels"]))
    # The natural cut: flagged exactly where the averaged softmax prefers another class.
    others = np.where(np.eye(3, dtype=bool)[blobs["labels"]], -1.0, mean_probs).max(axis=1)
    assert np.array_equal(flagged, mean_probs[np.arange(300), blobs["labels"]] < others)
    m = _f1(blobs, flagged, score)
    assert m["f1"] > 0.7 and m["auroc"] > 0.9


def test_margin_is_deterministic_given_the_seed(blobs):
    runs = [baselines.margin_detector(blobs["features"], blobs["labels"], 3, seed=s, head=FAST_HEAD) for s in (4, 4, 5)]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert not np.array_equal(runs[0][1], runs[2][1])  # the seed reaches initialisation and shuffling


def test_margin_is_a_registered_detector():
    from dynacor.baselines.registry import DETECTORS

    assert "margin" in DETECTORS and not METHODS["margin"].oracle
    assert "another class" in METHODS["margin"].summary  # its cut, in --help


# FNR at the noise rate ---------------------------------------------------------------------


def test_fnr_at_noise_rate_by_hand():
    from dynacor.method.metrics import fnr_at_noise_rate

    noisy = np.array([1, 0, 1, 0, 0, 1], dtype=bool)  # k = 3
    # Top 3 by score: indices 0, 1, 2 -> two of the three noisy found.
    assert fnr_at_noise_rate([0.9, 0.8, 0.7, 0.1, 0.2, 0.3], noisy) == pytest.approx(1 / 3)
    assert fnr_at_noise_rate([0.9, 0.1, 0.8, 0.2, 0.3, 0.7], noisy) == 0.0
    assert fnr_at_noise_rate([0.1, 0.9, 0.2, 0.8, 0.7, 0.3], noisy) == 1.0
    assert np.isnan(fnr_at_noise_rate([0.1, 0.2], np.zeros(2, bool)))  # nothing to miss


def test_fnr_at_noise_rate_breaks_ties_by_index_and_is_one_minus_precision_at_k():
    from dynacor.method.metrics import fnr_at_noise_rate

    # All scores equal: the top k = 2 are indices 0 and 1, whichever the noisy ones are.
    assert fnr_at_noise_rate(np.zeros(4), np.array([1, 1, 0, 0], bool)) == 0.0
    assert fnr_at_noise_rate(np.zeros(4), np.array([0, 0, 1, 1], bool)) == 1.0
    rng = np.random.default_rng(0)
    noisy = rng.random(500) < 0.3
    score = noisy + rng.normal(0, 0.8, 500)
    k = int(noisy.sum())
    top = np.argsort(-score, kind="stable")[:k]
    assert fnr_at_noise_rate(score, noisy) == pytest.approx(1 - noisy[top].mean())
    # detection_metrics is unchanged: the FNR is its own function.
    assert "fnr_at_noise_rate" not in detection_metrics(score > 0.5, noisy, score)


# SimiFeat ----------------------------------------------------------------------------------


def test_simifeat_vote_on_hand_made_neighbours():
    # Two tight groups on the unit circle; one sample in group A carries B's label.
    features = np.array([[1, 0.01 * i] for i in range(5)] + [[0.01 * i, 1] for i in range(5)], dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    flagged, score = baselines.simifeat(features, labels, 2, k=3)
    assert flagged.tolist() == [False] * 4 + [True] + [False] * 5
    assert score[4] == pytest.approx(1.0)  # none of its 3 neighbours says 1


def test_simifeat_catches_flips(blobs):
    for mode in ("vote", "rank"):
        flagged, score = baselines.simifeat(blobs["features"], blobs["labels"], 3, features_aug=blobs["features_aug"], mode=mode)
        _check_output(flagged, score, 300)
        assert _f1(blobs, flagged, score)["f1"] > 0.9


def test_knn_excludes_self_for_both_metrics():
    x = np.eye(4, dtype=np.float32) + 0.1
    for metric in ("cosine", "euclidean"):
        idx, _ = nearest_neighbours(x, 2, metric=metric)
        assert all(i not in row for i, row in enumerate(idx))


def test_cosine_neighbours_rank_by_angle_not_length():
    x = np.array([[1.0, 0.0], [10.0, 0.5], [0.9, 0.9], [0.0, 1.0]], np.float32)
    idx, sim = nearest_neighbours(x, 1, metric="cosine")
    assert idx[0, 0] == 1 and sim[0, 0] > 0.99
    idx, _ = nearest_neighbours(x, 1, metric="euclidean")
    assert idx[0, 0] == 2


# CORES -------------------------------------------------------------------------------------


def test_cores_sieve_terms_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0])
    prior = torch.tensor([0.5, 0.5])
    loss, sieve = baselines.cores_sieve_terms(logits, labels, prior, beta=1.0)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    ce_all = -torch.log_softmax(logits, 1)
    torch.testing.assert_close(sieve, ce - ce_all.mean(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, ce - 0.5 * ce_all.sum(1), atol=1e-6, rtol=0)
    # The first agrees with its label (kept), the second does not (sieved out).
    assert sieve[0] < 0 < sieve[1]


def test_cores_beta_schedule():
    betas = [baselines.cores_beta(e, 100) for e in range(100)]
    assert betas[:10] == [0.0] * 10
    assert betas[39] == pytest.approx(2.0) and betas[99] == 2.0
    assert all(a <= b for a, b in zip(betas, betas[1:], strict=False))


def test_cores_catches_flips(blobs):
    flagged, score = baselines.cores(blobs["features"], blobs["labels"], 3, seed=0, head=FAST_HEAD)
    _check_output(flagged, score, 300)
    m = _f1(blobs, flagged, score)
    assert m["f1"] > 0.8 and m["auroc"] > 0.9


# Ceiling (oracle) --------------------------------------------------------------------------


def test_ceiling_is_an_oracle_and_learns_from_ground_truth():
    rng = np.random.default_rng(0)
    is_noisy = rng.random(400) < 0.3
    # Noisy samples: negative margins early, as the paper observes; clean: positive throughout.
    signs = np.where(is_noisy[:, None], -1.0, 1.0) * np.ones((400, 8), dtype=np.float32)
    signs[:, 6:] = 1.0  # everything is memorised in the end
    flip = rng.random(signs.shape) < 0.05
    signs[flip] *= -1
    out = ceiling.supervised_ceiling(signs, is_noisy, seed=0, epochs=15)
    assert METHODS["ceiling"].oracle and out.oracle is True
    assert out.test_index.size == 200 and out.flagged.shape == (200,)
    assert out.metrics["f1"] > 0.9


def test_ceiling_split_is_stratified_and_disjoint():
    is_noisy = np.r_[np.ones(40, bool), np.zeros(60, bool)]
    train, test = ceiling.split_indices(is_noisy, 0.5, np.random.default_rng(1))
    assert not set(train) & set(test) and len(train) + len(test) == 100
    assert is_noisy[train].sum() == 20 and is_noisy[test].sum() == 20


def test_neighbours_of_listed_rows_match_the_full_search():
    from dynacor.method.knn import neighbours_of

    x = np.random.default_rng(3).normal(size=(200, 6)).astype(np.float32)
    rows = np.array([5, 17, 199])
    full, _ = nearest_neighbours(x, 4, metric="cosine")
    np.testing.assert_array_equal(neighbours_of(x, rows, 4, block=2), full[rows])
