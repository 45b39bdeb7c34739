"""The combined detector (dynacor.method.combine) and its cross-fitted probe (dynacor.method.probe)."""

from __future__ import annotations

import numpy as np
import pytest

from dynacor.baselines.confident_learning import cross_val_probs
from dynacor.errors import InputError
from dynacor.method.combine import class_counts, combined_score, normalised_margin, scores_at_counts
from dynacor.method.config import DynaCorConfig
from dynacor.method.featureset import FeatureSet
from dynacor.method.pipeline import Dynamics, detect, run
from dynacor.method.probe import cross_fitted_probe
from dynacor.method.validate import check_config
from tests.conftest import make_blobs


def test_normalised_margin_is_best_other_minus_given():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    given = np.array([0, 0, 2])
    np.testing.assert_allclose(normalised_margin(probs, given), [0.2 - 0.7, 0.6 - 0.1, 0.5 - 0.3])


def test_scores_at_counts_flags_exactly_each_class_count_and_keeps_the_order():
    rng = np.random.default_rng(0)
    given = rng.integers(0, 4, 400)
    summed = rng.random(400)
    counts = np.array([0, 5, 37, (given == 3).sum()])
    score = scores_at_counts(summed, given, counts)
    assert score.min() >= 0 and score.max() <= 1
    for j, count in enumerate(counts):
        members = given == j
        assert (score[members] > 0.5).sum() == count
        # Monotone within a class: the same order as the summed ranks.
        order = np.argsort(summed[members])
        assert np.all(np.diff(score[members][order]) >= 0)


def test_class_counts_follow_the_flipped_labels():
    rng = np.random.default_rng(1)
    n, c = 3000, 3
    true = rng.integers(0, c, n)
    flip = (true == 0) & (rng.random(n) < 0.3)  # only class 0 loses samples, all to class 1
    given = np.where(flip, 1, true)
    probs = np.full((n, c), 0.05)
    probs[np.arange(n), true] = 0.9
    counts = class_counts(probs, given, c)
    assert counts[0] == 0 and counts[2] == 0
    assert abs(counts[1] - flip.sum()) <= 0.05 * flip.sum()


def f1(flagged: np.ndarray, truth: np.ndarray) -> float:
    return 2 * (flagged & truth).sum() / (flagged.sum() + truth.sum())


def test_combined_score_beats_each_of_its_noisy_parts():
    rng = np.random.default_rng(2)
    n, c = 4000, 4
    true = rng.integers(0, c, n)
    flip = rng.random(n) < 0.2
    given = np.where(flip, (true + 1) % c, true)

    def softmax_view() -> np.ndarray:  # the true class favoured, through independent noise
        logits = rng.normal(0, 1.0, (n, c))
        logits[np.arange(n), true] += 1.5
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    early, probe = softmax_view(), softmax_view()
    cluster = flip + rng.normal(0, 0.6, n)
    alone = {"cluster": f1(cluster > 0.5, flip),
             "early": f1(normalised_margin(early, given) > 0, flip),
             "probe": f1(normalised_margin(probe, given) > 0, flip)}  # fmt: skip
    without_probe = f1(combined_score(cluster, given, c, early) > 0.5, flip)
    with_probe = f1(combined_score(cluster, given, c, early, probe) > 0.5, flip)
    assert without_probe > max(alone["cluster"], alone["early"])
    assert with_probe > max(without_probe, *alone.values())

    # Capped, no class is flagged more often than the clusters flag it, and the order is kept.
    timid = cluster - 0.3  # clusters that flag fewer than cleanlab counts
    capped = combined_score(timid, given, c, early, probe, cap_at_clusters=True)
    free = combined_score(timid, given, c, early, probe)
    for j in range(c):
        members = given == j
        assert (capped[members] > 0.5).sum() == min((free[members] > 0.5).sum(), (timid[members] > 0.5).sum())
        assert np.array_equal(np.argsort(capped[members], kind="stable"), np.argsort(free[members], kind="stable"))
    assert (capped > 0.5).sum() < (free > 0.5).sum()


def test_probe_matches_scikit_learns_logistic_regression():
    blobs = make_blobs(n=600, d=12, c=3, noise=0.2, seed=3)
    x, y = blobs["features"], blobs["labels"]
    ours = cross_fitted_probe(x, y, 3, seed=4, c=0.01)
    reference = cross_val_probs(x, y, 3, seed=4, c=0.01)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(ours - reference).max() < 5e-3
    np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1))


def blob_set(seed: int = 0) -> FeatureSet:
    blobs = make_blobs(n=600, d=16, c=3, noise=0.25, seed=seed)
    return FeatureSet(features=blobs["features"], labels=blobs["labels"], clean_labels=blobs["clean_labels"])


def test_default_run_flags_with_the_combined_score(one_torch_thread):
    data = blob_set()
    result = run(DynaCorConfig(epochs=12, encoder_epochs=3), data)
    assert result.info["detector"].startswith("combined: ranks of DynaCor's cluster score, a cross-fitted")
    # 200 samples per class: the class counts are trusted, not capped at the clusters'
    assert "few samples per class" not in result.info["detector"]
    np.testing.assert_array_equal(result.flagged, result.q_noisy > 0.5)
    np.testing.assert_array_equal(result.q_noisy_all[: result.num_samples], result.q_noisy)
    assert result.cluster_score is not None and not np.array_equal(result.cluster_score, result.q_noisy)
    frame = result.samples_frame()
    assert "cluster_score" in frame
    assert "probe" in result.timings
    assert result.metrics["f1"] > 0.8
    # The score reads the early softmax, so the recall is estimated on a second view too.
    assert result.estimate_parts["off"].shape == (2, result.num_samples)
    assert result.estimates["views"] == 2 and "estimate_neighbours" in result.timings

    clusters = run(DynaCorConfig(epochs=12, encoder_epochs=3, combine="none"), data)
    assert clusters.info["detector"].startswith("dynacor: the noisy cluster's probability")
    assert clusters.cluster_score is None and "cluster_score" not in clusters.samples_frame()
    assert "probe" not in clusters.timings
    assert clusters.estimate_parts["off"].shape == (clusters.num_samples,) and clusters.estimates["views"] == 1
    np.testing.assert_array_equal(clusters.estimate_parts["off"], result.estimate_parts["off"][0])
    # The clusters are the same run: only the score the cut reads differs.
    np.testing.assert_array_equal(clusters.q_noisy, result.cluster_score)


def test_few_samples_per_class_cap_the_counts_at_the_clusters(one_torch_thread):
    blobs = make_blobs(n=150, d=16, c=3, noise=0.25, seed=5)  # 50 per class: estimates withheld
    data = FeatureSet(features=blobs["features"], labels=blobs["labels"], clean_labels=blobs["clean_labels"])
    result = run(DynaCorConfig(epochs=12, encoder_epochs=3), data)
    assert result.info["detector"].endswith("no class flagged more than DynaCor's clusters flag (few samples per class)")
    assert result.estimates is None
    for j in range(3):
        members = result.given_labels == j
        assert result.flagged[members].sum() <= (result.cluster_score[members] > 0.5).sum()


def test_dynamics_without_features_combine_without_the_probe(one_torch_thread):
    data = blob_set(seed=1)
    first = run(DynaCorConfig(epochs=12, encoder_epochs=3), data)
    dynamics = Dynamics(margins_all=first.margins_all, copy_pair=first.copy_pair, copy_labels=first.copy_labels,
                        given_labels=first.given_labels, clean_labels=data.clean_labels,
                        estimate_rows=first.estimate_parts["rows"],
                        window_probs=first.estimate_parts["window_probs"])  # fmt: skip
    again = detect(DynaCorConfig(encoder_epochs=3), dynamics)
    assert again.info["detector"].startswith("combined: ranks of DynaCor's cluster score and the early softmax")
    np.testing.assert_array_equal(again.flagged, again.q_noisy > 0.5)
    # Nothing early recorded: DynaCor's clusters alone.
    bare = Dynamics(margins_all=first.margins_all, copy_pair=first.copy_pair, copy_labels=first.copy_labels,
                    given_labels=first.given_labels)  # fmt: skip
    assert detect(DynaCorConfig(encoder_epochs=3), bare).info["detector"].startswith("dynacor:")


@pytest.mark.parametrize(("field", "value"), [("combine", "both"), ("probe_c", 0.0), ("probe_folds", 1),
                                             ("estimate_neighbours", -1), ("estimate_neighbour_rows", 1.5)])
def test_combine_settings_are_checked(field, value):
    with pytest.raises(InputError, match=f"field `{field}`"):
        check_config(DynaCorConfig(**{field: value}))
