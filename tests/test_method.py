"""Faithfulness: the method's formulas against answers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynacor.method.clustering import (
    alignment_loss,
    clustering_loss,
    cosine_distance,
    soft_assign,
    target_distribution,
    validation_metric,
)
from dynacor.method.corruption import make_copies, num_copies
from dynacor.method.dynamics import logit_margin, margin_signs, unique_trajectories
from dynacor.method.noise import apply_noise, asymmetric, noise_rate, parse_noise, symmetric

T = torch.tensor


def test_cosine_distance_by_hand():
    z = T([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    got = cosine_distance(z, T([1.0, 0.0]))
    assert got.tolist() == pytest.approx([0.0, 1 - 1 / math.sqrt(2), 2.0], abs=1e-6)


def test_soft_assign_student_t_by_hand():
    # d(z, mu_noisy) = 0, d(z, mu_clean) = 1: q = 1 / (1 + 1/2) = 2/3
    q = soft_assign(T([[1.0, 0.0]]), T([1.0, 0.0]), T([0.0, 1.0]))
    assert q.item() == pytest.approx(2 / 3, abs=1e-6)
    # equidistant: q = 1/2
    q = soft_assign(T([[1.0, 1.0]]), T([1.0, 0.0]), T([0.0, 1.0]))
    assert q.item() == pytest.approx(0.5, abs=1e-6)


def test_target_distribution_by_hand():
    # s_noisy = 1.2, s_clean = 0.8; row 1: (.64/1.2) / (.64/1.2 + .04/.8) = 0.914286
    p = target_distribution(T([0.8, 0.4], dtype=torch.float64))
    assert p.tolist() == pytest.approx([0.914286, 0.228571], abs=1e-6)


def test_clustering_loss_is_kl_p_q_by_hand():
    q = T([0.8, 0.4], dtype=torch.float64)
    p = T([0.914286, 0.228571], dtype=torch.float64)
    # row 1: .914286 ln(.914286/.8) + .085714 ln(.085714/.2) = 0.049460
    # row 2: .228571 ln(.228571/.4) + .771429 ln(.771429/.6) = 0.065959
    assert clustering_loss(q, p).item() == pytest.approx((0.049460 + 0.065959) / 2, abs=1e-5)


def test_alignment_loss_by_hand():
    z = T([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0]])
    is_copy = T([False, True, False, True])
    pred_noisy = T([True, True, False, False])
    # noisy group: d([1,0], [0,1]) = 1; clean group: d([1,0], [2,0]) = 0; mean 0.5
    assert alignment_loss(z, is_copy, pred_noisy).item() == pytest.approx(0.5, abs=1e-6)
    # a group without copies is skipped
    only = alignment_loss(z[:3], is_copy[:3], pred_noisy[:3])
    assert only.item() == pytest.approx(1.0, abs=1e-6)


def test_validation_metric_by_hand():
    q = np.array([0.2, 0.4, 0.8, 0.9, 0.7])
    is_copy = np.array([False, False, False, True, True])
    # copies called noisy: mean(.9, .7) = .8; originals called clean: mean(.2, .4) = .3
    assert validation_metric(q, is_copy) == pytest.approx(0.25)
    reference = np.array([True, False, False, False, False])
    assert validation_metric(q, is_copy, reference) == pytest.approx((0.8 - 0.2) ** 2)


def test_validation_metric_refuses_swapped_clusters():
    q = np.array([0.2, 0.4, 0.6, 0.3, 0.1])
    is_copy = np.array([False, False, True, True, True])
    assert math.isnan(validation_metric(q, is_copy))


def test_logit_margin_by_hand():
    logits = T([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    assert logit_margin(logits, T([0, 2])).tolist() == [1.0, -2.0]
    assert margin_signs(np.array([[0.0, -0.1, 3.0]])).tolist() == [[1, -1, 1]]


def test_unique_trajectories_round_trip():
    signals = np.array([[1, 1], [-1, 1], [1, 1], [1, 1]], dtype=np.float32)
    unique, inverse, counts = unique_trajectories(signals)
    assert len(unique) == 2 and counts.sum() == 4
    np.testing.assert_array_equal(unique[inverse], signals)


@pytest.mark.parametrize("eta", [0.2, 0.6])
def test_symmetric_noise_rate_and_never_same_class(eta):
    clean = np.random.default_rng(0).integers(0, 10, 20000)
    noisy = symmetric(clean, 10, eta, np.random.default_rng(1))
    assert noise_rate(noisy, clean) == pytest.approx(eta, abs=0.02)
    assert noisy.min() >= 0 and noisy.max() < 10


def test_asymmetric_noise_is_pair_flip():
    clean = np.random.default_rng(0).integers(0, 10, 20000)
    noisy = asymmetric(clean, 10, 0.3, np.random.default_rng(1))
    changed = noisy != clean
    assert changed.mean() == pytest.approx(0.3, abs=0.02)
    np.testing.assert_array_equal(noisy[changed], (clean[changed] + 1) % 10)


def test_instance_noise_rate_within_tolerance():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5000, 32))
    clean = rng.integers(0, 10, 5000)
    noisy = apply_noise("inst:0.4", clean, 10, np.random.default_rng(2), features=features)
    assert noise_rate(noisy, clean) == pytest.approx(0.4, abs=0.05)
    # seeded: the same generator state gives the same labels
    again = apply_noise("inst:0.4", clean, 10, np.random.default_rng(2), features=features)
    np.testing.assert_array_equal(noisy, again)


def test_parse_noise_rejects_bad_specs():
    assert parse_noise("asym:0.3") == ("asym", 0.3)
    for bad in ("sym", "gauss:0.2", "sym:1.5", "sym:abc"):
        with pytest.raises(ValueError):
            parse_noise(bad)


def test_copies_never_keep_the_given_label():
    given = np.random.default_rng(0).integers(0, 5, 1000)
    copies = make_copies(given, 5, 0.3, np.random.default_rng(1))
    assert copies.size == num_copies(1000, 0.3) == 300
    assert len(np.unique(copies.pair)) == 300
    assert not np.any(copies.labels == given[copies.pair])
    # uniform over the other classes: every other class is used
    assert set(np.unique((copies.labels - given[copies.pair]) % 5)) == {1, 2, 3, 4}


def test_clusters_are_oriented_by_the_copies_with_a_warning():
    from dynacor.method.clustering import orient_by_copies

    is_copy = np.r_[np.zeros(8, bool), np.ones(4, bool)]
    swapped = np.r_[np.full(6, 0.8), np.full(2, 0.3), np.full(3, 0.2), 0.9]  # 1 of 4 copies "noisy"
    q, warning = orient_by_copies(swapped, is_copy)
    np.testing.assert_allclose(q, 1.0 - swapped)
    assert warning is not None and "25%" in warning
    kept, none = orient_by_copies(q, is_copy)
    assert none is None and np.array_equal(kept, q)


def test_a_flag_list_of_almost_nothing_or_everything_is_called_out():
    from dynacor.method.clustering import flagged_share_warning

    assert flagged_share_warning(np.r_[np.ones(3, bool), np.zeros(997, bool)]) is not None
    assert flagged_share_warning(np.ones(100, bool)) is not None
    assert flagged_share_warning(np.r_[np.ones(300, bool), np.zeros(700, bool)]) is None


def test_encoder_says_so_when_no_state_is_valid():
    """Constructed so that the validation metric is NaN in every state (no original in its
    reference set): the run must not keep epoch 0 silently."""
    from dynacor.method.encoder import fit_encoder

    rng = np.random.default_rng(0)
    signals = np.where(rng.random((300, 8)) < 0.8, 1.0, -1.0).astype(np.float32)
    signals[250:] = -1.0  # the copies: never learned
    is_copy = np.r_[np.zeros(250, bool), np.ones(50, bool)]
    fit = fit_encoder(signals, is_copy, epochs=2, lr=1e-5, weight_decay=0.0, batch_size=128, rep_dim=16, alpha=0.5,
                      generator=torch.Generator().manual_seed(0), in_reference=np.zeros(300, bool))  # fmt: skip
    assert all(math.isnan(e["val_metric"]) for e in fit.epochs)
    assert any("invalid for the validation metric" in w for w in fit.warnings)
    assert np.mean(fit.q_noisy[is_copy] > 0.5) >= 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("two_views", [True, False])
def test_training_rows_are_each_original_then_each_copy_in_its_view(dtype, two_views):
    from dynacor.method.classifier import RowSource

    rng = np.random.default_rng(0)
    features = rng.standard_normal((50, 6)).astype(dtype)
    flipped = rng.standard_normal((50, 6)).astype(dtype) if two_views else None
    pair = rng.integers(0, 50, 9)
    rows = RowSource(features, flipped, pair, torch.device("cpu"))
    expected = np.concatenate([features, (flipped if two_views else features)[pair]]).astype(np.float32)
    idx = torch.from_numpy(rng.permutation(59)[:40])
    buffer = torch.full((64, 6), float("nan"))
    np.testing.assert_array_equal(rows.gather(idx).numpy(), expected[idx.numpy()])
    np.testing.assert_array_equal(rows.gather(idx, buffer).numpy(), expected[idx.numpy()])


def test_gathering_rows_in_chunks_leaves_training_unchanged(monkeypatch):
    # The head reads its mini-batches out of chunks of rows gathered at once; how many rows a chunk
    # holds must not change a single recorded number.
    from dynacor.method import classifier

    rng = np.random.default_rng(1)
    features = rng.standard_normal((300, 8)).astype(np.float32)
    flipped = features + 0.1 * rng.standard_normal((300, 8)).astype(np.float32)
    pair = rng.integers(0, 300, 40)
    labels = np.concatenate([rng.integers(0, 3, 300), rng.integers(0, 3, 40)])

    def train():
        return classifier.train_head(features, labels, 3, epochs=4, lr=0.1, momentum=0.9, weight_decay=5e-4,
                                     batch_size=32, hidden=16, generator=torch.Generator().manual_seed(0),
                                     features_aug=flipped, copy_pair=pair, suggest_window=(0, 2),
                                     estimate_rows=np.arange(300), estimate_windows=((1, 3),))  # fmt: skip

    whole = train()
    monkeypatch.setattr(classifier, "CHUNK_ROWS", 64)  # 2 batches a chunk, the last chunk short
    chunked = train()
    for name in ("margins", "prob_given", "candidates", "candidate_probs", "window_probs"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    assert [e["loss"] for e in chunked.epochs] == [e["loss"] for e in whole.epochs]
