"""The reviewer's candidate labels: read early in training, never the given label, kept for every
original in O(N x slots) memory, and carried through run directories and dynamics files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dynacor import DynaCorConfig, FeatureSet, run
from dynacor.errors import InputError
from dynacor.method.knn import neighbours_of
from dynacor.method.pipeline import Dynamics, detect
from dynacor.method.suggest import CandidateSums, candidate_matrix, top_candidates, with_votes
from dynacor.record import load_dynamics, save_dynamics
from dynacor.runs import store as runstore
from tests.conftest import make_blobs

FAST = dict(epochs=8, encoder_epochs=2, lr=0.05)


def test_top_candidates_leave_out_the_given_class_and_rank_the_rest():
    probs = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    candidates, values = top_candidates(probs, np.array([0, 3, 1]))
    assert candidates.tolist() == [[1, 2, 3], [2, 1, 0], [0, 2, 3]]  # ties keep class order
    np.testing.assert_allclose(values, [[0.2, 0.1, 0.0], [0.3, 0.2, 0.1], [0.25, 0.25, 0.25]])
    two = top_candidates(np.array([[0.4, 0.6]]), np.array([1]))
    assert two[0].tolist() == [[0]]  # C = 2: one other class


@pytest.mark.parametrize("num_classes", [6, 100])
def test_candidate_sums_equal_the_dense_window_average(num_classes):
    """Dense up to SLOTS + 1 classes; above, the per-row slots give the dense top 3 on noisy softmax."""
    rng = np.random.default_rng(0)
    n, epochs = 400, 5
    given = rng.integers(0, num_classes, n)
    base = rng.dirichlet(np.full(num_classes, 0.1), size=n)
    sums = CandidateSums(torch.from_numpy(given), num_classes, torch.device("cpu"))
    dense = np.zeros((n, num_classes))
    for _ in range(epochs):
        probs = torch.softmax(torch.tensor(np.log(base + 1e-6) + rng.normal(0, 0.5, base.shape)), 1).float()
        dense += probs.numpy()
        order = torch.randperm(n + 40)  # 40 copies' rows, dropped
        for start in range(0, n + 40, 64):
            rows = order[start : start + 64]
            batch = torch.cat([probs, probs[:40]])[rows]
            sums.add(rows, batch)
    candidates, values = sums.candidates(epochs)
    expected, expected_values = top_candidates(dense / epochs, given)
    assert np.array_equal(candidates, expected)
    np.testing.assert_allclose(values, expected_values, atol=5e-3)
    if num_classes > 17:  # the sketch keeps a fixed number of slots, not the C columns
        assert sums.sums.shape == (n + 1, 16)


def featureset(data: dict) -> FeatureSet:
    return FeatureSet(features=data["features"], labels=data["labels"], features_aug=data["features_aug"],
                      clean_labels=data["clean_labels"], ids=data["ids"], class_names=list(data["class_names"]))  # fmt: skip


def test_a_run_suggests_another_class_for_every_sample_and_mostly_the_true_one(tmp_path):
    data = make_blobs(n=400, c=5, noise=0.3, seed=1)
    result = run(DynaCorConfig(**FAST), featureset(data))
    given, clean = result.given_labels, data["clean_labels"]
    assert result.candidates.shape == (400, 3)
    assert not (result.candidates == given[:, None]).any()  # no row ever offers its given label
    assert np.array_equal(result.suggested_labels, result.candidates[:, 0])
    # (0.07, 0.27) of 8 epochs; the flagged rows' candidates also weigh their neighbours' labels
    assert result.info["suggestion_source"] == "early softmax, epochs 2-2, with the votes of 20 unflagged neighbours"
    errors = given != clean
    # Blobs are easy: for the wrong labels the early softmax names the true class.
    assert (result.suggested_labels[errors] == clean[errors]).mean() > 0.8
    assert (result.candidates[errors] == clean[errors][:, None]).any(axis=1).mean() > 0.95
    # The contract: Parquet lists, CSV space-separated indices, both read back alike.
    run_dir = runstore.create_run(tmp_path / "run", result.config, result.source)
    runstore.write_result(run_dir, result)
    parquet = runstore.load_samples(run_dir)
    csv = pd.read_csv(run_dir / "samples.csv")
    assert list(parquet["candidates"].iloc[0]) == result.candidates[0].tolist()
    assert csv["candidates"].iloc[0] == " ".join(str(c) for c in result.candidates[0])
    for frame in (parquet, csv):
        candidates, probs = candidate_matrix(frame)
        assert np.array_equal(candidates, result.candidates)
        np.testing.assert_allclose(probs, result.candidate_probs, atol=1e-6)
    assert runstore.read_run(run_dir)["info"]["suggestion_source"] == result.info["suggestion_source"]


def test_neighbours_votes_reorder_the_candidates_and_never_offer_the_given_label():
    candidates = np.array([[1, 2, 3], [0, 2, -1]])
    probs = np.array([[0.30, 0.25, 0.05], [0.4, 0.1, np.nan]], dtype=np.float32)
    votes = np.array([[0.0, 0.1, 0.5, 0.0, 0.4], [0.0, 0.0, 0.0, 0.0, 1.0]])
    chosen, mixed = with_votes(candidates, probs, np.array([0, 3]), votes, weight=0.25)
    # row 0: 1 -> 0.325, 2 -> 0.375, 3 -> 0.05, 4 -> 0.1 (only the neighbours name it), over 1.25
    assert chosen[0].tolist() == [2, 1, 4] and mixed[0].tolist() == pytest.approx([0.3, 0.26, 0.08])
    # row 1: class 4 from the votes alone outranks 2; the given class 3 never appears
    assert chosen[1].tolist() == [0, 4, 2]


def test_neighbours_can_be_kept_to_a_subset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    among = np.zeros(50, dtype=bool)
    among[::3] = True
    near = neighbours_of(x, np.array([0, 1, 2]), 5, among=among)
    assert among[near].all() and (near[0] != 0).all()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn[1] @ xn.T
    sim[~among] = -np.inf
    assert near[1].tolist() == np.argsort(-sim)[:5].tolist()


def recorded_dynamics(**fields) -> Dynamics:
    data = make_blobs(n=60, c=4, seed=2)
    rng = np.random.default_rng(0)
    pair = np.arange(0, 60, 10)
    labels = (data["labels"][pair] + 1) % 4
    base = dict(margins_all=rng.normal(size=(66, 4)).astype(np.float32), copy_pair=pair, copy_labels=labels,
                given_labels=data["labels"])  # fmt: skip
    return Dynamics(**{**base, **fields})


def test_dynamics_without_any_softmax_suggest_nothing_and_say_so():
    result = detect(DynaCorConfig(encoder_epochs=1), recorded_dynamics())
    assert (result.suggested_labels == -1).all() and np.isnan(result.suggested_prob).all()
    assert result.info["suggestion_source"] == "none"
    frame = result.samples_frame()
    assert frame["candidates"].map(len).eq(0).all()


def test_a_dynamics_file_keeps_candidates_and_refuses_bad_ones(tmp_path):
    dynamics = recorded_dynamics()
    given = dynamics.given_labels
    candidates = np.stack([(given + 1) % 4, (given + 2) % 4], axis=1)
    probs = np.tile(np.array([[0.5, 0.2]], dtype=np.float32), (60, 1))
    good = recorded_dynamics(candidates=candidates, candidate_probs=probs, suggestion_source="mine")
    path = save_dynamics(tmp_path / "d.npz", good)
    loaded = load_dynamics(path)
    assert np.array_equal(loaded.candidates, candidates) and loaded.suggestion_source == "mine"
    result = detect(DynaCorConfig(encoder_epochs=1), loaded)
    assert np.array_equal(result.suggested_labels, candidates[:, 0]) and result.info["suggestion_source"] == "mine"
    own = candidates.copy()
    own[3, 1] = given[3]
    with pytest.raises(InputError, match="candidates.*other than each sample's given label"):
        detect(DynaCorConfig(encoder_epochs=1), recorded_dynamics(candidates=own, candidate_probs=probs))
    with pytest.raises(InputError, match="candidate_probs.*present with `candidates`"):
        detect(DynaCorConfig(encoder_epochs=1), recorded_dynamics(candidates=candidates))
    with pytest.raises(InputError, match="candidate_probs.*in \\[0, 1\\]"):
        detect(DynaCorConfig(encoder_epochs=1), recorded_dynamics(candidates=candidates, candidate_probs=probs * 3))


def test_a_config_saved_before_the_early_window_still_loads():
    config = DynaCorConfig.from_dict({**DynaCorConfig().to_dict(), "late_epochs": 5, "suggest_window": [0.1, 0.3]})
    assert config.suggest_window == (0.1, 0.3)
