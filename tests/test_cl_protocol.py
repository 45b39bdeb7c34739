"""The honest benchmark protocol (issue 10, item 6): CL's logistic regression converges, cl-mlp
uses out-of-sample probabilities of DynaCor's own head, and ``bench --half`` keeps to one half."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from dynacor import baselines
from dynacor.baselines.common import head_settings, torch_generator
from dynacor.baselines.registry import run_method
from dynacor.cli.main import main
from dynacor.method.classifier import train_head
from dynacor.method.config import DynaCorConfig
from dynacor.method.featureset import FeatureSet
from dynacor.method.metrics import detection_metrics
from dynacor.runs.bench import split_halves
from tests.conftest import make_blobs

# A small head that still learns the blobs in a second or two on 2 busy cores.
SMALL = DynaCorConfig(epochs=8, hidden=64, batch_size=64, lr=0.02, num_threads=1, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here trains small heads: one thread each (see conftest)."""


# CL's logistic regression ------------------------------------------------------------------


def test_cl_logistic_regression_converges_where_100_iterations_did_not():
    # 300 dimensions for 320 training rows and 60% flipped labels at C = 1: lbfgs needs 116-141
    # iterations per fold here, more than the 100 the regression used to stop at.
    data = make_blobs(n=400, d=300, c=4, noise=0.6, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        probs = baselines.cross_val_probs(data["features"], data["labels"], 4, seed=0, c=1.0)
        # The warning is no longer hidden: a budget too small says so.
        with pytest.raises(ConvergenceWarning):
            baselines.cross_val_probs(data["features"], data["labels"], 4, seed=0, max_iter=100, c=1.0)
        baselines.cross_val_probs(data["features"], data["labels"], 4, seed=0)  # the default C converges too
    assert probs.shape == (400, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


# cl-mlp ------------------------------------------------------------------------------------


def test_cl_mlp_flags_flipped_labels():
    blobs = make_blobs(n=300, d=16, c=3, noise=0.2, seed=3)
    data = FeatureSet(
        features=blobs["features"], labels=blobs["labels"], clean_labels=blobs["clean_labels"]
    )
    flagged, score, seconds, extra = run_method("cl-mlp", data, SMALL, seed=0)
    assert flagged.shape == score.shape == (300,) and flagged.dtype == bool and seconds >= 0
    m = detection_metrics(flagged, blobs["labels"] != blobs["clean_labels"], score)
    assert m["f1"] > 0.85 and m["auroc"] > 0.95


def test_cl_mlp_probabilities_never_come_from_a_head_that_saw_the_sample():
    blobs = make_blobs(n=150, d=8, c=3, noise=0.2, seed=1)
    x, y = blobs["features"], blobs["labels"]
    head = head_settings(SMALL)
    probs = baselines.cross_val_probs_head(x, y, 3, seed=0, head=head)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Move sample i far away. The folds depend on the labels only, so they stay the same: the
    # other samples of i's test fold come from a head that never saw i and must not move; every
    # other fold's head trained on i and changes.
    i = 7
    test_fold = next(test for _, test in baselines.stratified_folds(y, 3, 5, 0) if i in test)
    moved = x.copy()
    moved[i] += 50.0
    again = baselines.cross_val_probs_head(moved, y, 3, seed=0, head=head)
    same = np.setdiff1d(test_fold, [i])
    others = np.setdiff1d(np.arange(150), test_fold)
    np.testing.assert_array_equal(again[same], probs[same])
    assert not np.allclose(again[others], probs[others])


def test_cl_mlp_probabilities_do_not_show_memorised_labels():
    # Pure noise with random labels: a head memorises its training rows (its own softmax on them
    # puts most mass on their labels), while on held-out rows it is at chance.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 64)).astype(np.float32)
    y = np.repeat(np.arange(4), 30)
    head = {**head_settings(SMALL), "epochs": 30, "lr": 0.1, "batch_size": 16, "hidden": 128}
    seen = train_head(x, y, 4, generator=torch_generator(0), predict=x, **head).predicted
    assert seen[np.arange(120), y].mean() > 0.9
    held_out = baselines.cross_val_probs_head(x, y, 4, seed=0, head=head)
    assert held_out[np.arange(120), y].mean() < 0.45  # chance is 0.25


# bench --half ------------------------------------------------------------------------------


def test_split_halves_are_disjoint_cover_the_file_and_did_not_move():
    halves = split_halves(10_000)
    tune, report = halves["tune"], halves["report"]
    assert len(tune) == len(report) == 5000
    assert np.all(np.diff(tune) > 0) and np.all(np.diff(report) > 0)
    assert not np.intersect1d(tune, report).size
    assert np.array_equal(np.union1d(tune, report), np.arange(10_000))
    # The halves benchmarks/estimates_data.py drew before the move (the tune-half studies used them).
    assert tune[:8].tolist() == [0, 4, 5, 6, 7, 8, 9, 11]
    assert tune[-4:].tolist() == [9992, 9993, 9994, 9996]
    assert int(tune.sum()) == 24_907_094
    assert int((tune.astype(np.int64) ** 2).sum()) == 165_423_497_922
    odd = split_halves(11)
    assert (len(odd["tune"]), len(odd["report"])) == (5, 6)


@pytest.fixture
def halves_npz(tmp_path):
    # The human labels are wrong on 10% of the tune half and 30% of the report half, so the noise
    # rate in runs.csv tells which rows a table was computed on.
    data = make_blobs(n=200, d=8, c=3, noise=0.0, seed=5)
    halves = split_halves(200)
    worse = data["clean_labels"].copy()
    for name, rate in (("tune", 0.1), ("report", 0.3)):
        rows = halves[name][: round(rate * len(halves[name]))]
        worse[rows] = (worse[rows] + 1) % 3
    data["worse_labels"] = worse
    path = tmp_path / "halves.npz"
    np.savez(path, **data)
    return path, worse != data["clean_labels"]


@pytest.mark.parametrize("half,limit", [("tune", None), ("report", None), ("report", 60)])
def test_bench_half_runs_on_that_half_and_says_so(halves_npz, tmp_path, half, limit, capsys):
    path, wrong = halves_npz
    out = tmp_path / "bench"
    args = ["bench", "--features", str(path), "--methods", "simifeat", "--settings", "human:worse_labels",
            "--seeds", "0", "--half", half, "--threads", "1", "--out", str(out)]  # fmt: skip
    if limit is not None:
        args += ["--limit", str(limit)]
    assert main(args) == 0
    rows = split_halves(200)[half][:limit]
    runs = pd.read_csv(out / "runs.csv")
    assert runs["half"].tolist() == [half]
    assert runs["noise_rate"].iloc[0] == pytest.approx(wrong[rows].mean())
    assert pd.read_csv(out / "summary.csv")["half"].tolist() == [half]
    table = (out / "table.md").read_text()
    assert f"- half: {half} (100 of 200 samples" in table and f"--half {half}" in table
    assert f"({len(rows)} samples)" in table
