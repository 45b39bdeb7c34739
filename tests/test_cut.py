"""Moving a finished run's cut (`dynacor.runs.store.set_cut`) and what the Training page reads to
move it (`dynacor.runs.cut`), on a small real run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynacor.errors import InputError, MissingError
from dynacor.method.config import DynaCorConfig
from dynacor.method.estimates import quality_at_cut
from dynacor.method.metrics import detection_metrics
from dynacor.method.pipeline import _seed_streams, run
from dynacor.runs import cut as runcut
from dynacor.runs import store as runstore
from tests.conftest import make_blobs
from tests.test_pipeline import featureset

SEED = 0


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A DynaCor run on overlapping blobs (2-d: scores spread over many values, so the curve has
    many points), written by the store; and the flags the run chose."""
    data = make_blobs(n=400, d=2, noise=0.3, seed=1)
    config = DynaCorConfig(
        seed=SEED, epochs=8, encoder_epochs=2, estimate_bootstrap=30, explain_neighbours=0
    )
    result = run(config, featureset(data))
    assert result.estimates is not None and len(result.estimates["curve"]["threshold"]) > 5
    run_dir = tmp_path_factory.mktemp("made") / "run"
    runstore.create_run(run_dir, result.config, {"kind": "test"})
    runstore.write_result(run_dir, result)
    return run_dir, result.flagged


@pytest.fixture
def run_dir(made, tmp_path) -> Path:
    shutil.copytree(made[0], tmp_path / "run")
    return tmp_path / "run"


def scores_of(run_dir: Path) -> np.ndarray:
    n = len(runstore.load_samples(run_dir))
    return runstore.load_array(run_dir, "scores")[:n].astype(np.float64)


def test_moving_the_cut_up_flags_fewer_and_the_run_records_it(run_dir):
    before = runstore.read_run(run_dir)
    curve = before["estimates"]["curve"]
    shares = np.asarray(curve["flagged_share"])
    k = int(np.flatnonzero(shares < before["num_flagged"] / before["num_samples"])[-1])
    threshold = curve["threshold"][k]
    assert threshold > before["threshold"]

    info = runstore.set_cut(run_dir, threshold)

    assert info == runstore.read_run(run_dir)
    table = runstore.load_samples(run_dir)
    flagged = table["flagged"].astype(bool).to_numpy()
    scores = scores_of(run_dir)
    np.testing.assert_array_equal(flagged, scores > threshold)
    assert (
        info["threshold"] == threshold
        and info["num_flagged"] == int(flagged.sum()) < before["num_flagged"]
    )
    assert info["num_flagged"] == round(shares[k] * len(table))  # the curve's point, exactly
    assert f"{info['num_flagged']} flagged" in info["summary"] and f"at q > {threshold:.4f}" in info["summary"]
    assert (table["cluster"] == np.where(flagged, "noisy", "clean")).all()
    csv = pd.read_csv(run_dir / "samples.csv")
    np.testing.assert_array_equal(csv["flagged"].astype(bool), flagged)
    # the true figures move with the cut (a benchmark run knows its clean labels)
    assert info["metrics"] == detection_metrics(
        flagged, table["is_noisy"].astype(bool).to_numpy(), scores
    )
    # the estimates at the new cut: quality_at_cut on what estimates.npz kept, the run's stream
    with np.load(run_dir / "estimates.npz") as parts:
        rows, off, draws = parts["rows"], parts["off"], parts["eta_draws"]
    expected = quality_at_cut(scores[rows], off, before["estimates"]["noise_rate"]["value"], draws, threshold,
                              rng=np.random.default_rng(_seed_streams(SEED)[4]),
                              confidence=before["estimates"]["confidence"], margin=before["estimates"]["margin"])  # fmt: skip
    assert {k: v for k, v in info["estimates"].items() if k != "curve"} == json.loads(
        json.dumps(expected)
    )
    assert info["estimates"]["curve"] == curve  # the curve is the run's, whatever the cut
    assert info["estimates"]["recall"]["value"] == pytest.approx(curve["recall"][k])
    assert info["estimates"]["precision"]["value"] == pytest.approx(curve["precision"][k])


def test_moving_the_cut_back_gives_the_runs_own_flags(run_dir, made):
    before = runstore.read_run(run_dir)
    runstore.set_cut(run_dir, before["estimates"]["curve"]["threshold"][-1])  # everything flagged
    assert runstore.read_run(run_dir)["num_flagged"] == before["num_samples"]
    info = runstore.set_cut(run_dir, before["threshold"])
    np.testing.assert_array_equal(runstore.load_samples(run_dir)["flagged"].astype(bool), made[1])
    for name in ("noise_rate", "precision", "recall"):
        assert info["estimates"][name]["value"] == pytest.approx(before["estimates"][name]["value"])
    assert info["metrics"] == pytest.approx(before["metrics"], nan_ok=True)
    assert info["summary"].split(", ")[:3] == before["summary"].split(", ")[:3]  # the run's own line again


def test_the_cuts_own_warnings_follow_it_and_the_others_stay(run_dir):
    before = runstore.read_run(run_dir)
    (run_dir / "run.json").write_text(json.dumps({**before, "warnings": ["from the clustering"]}))
    info = runstore.set_cut(run_dir, before["estimates"]["curve"]["threshold"][-1])  # everything flagged
    assert info["warnings"][0] == "from the clustering"
    assert len(info["warnings"]) == 2 and "100.0% of the samples are flagged" in info["warnings"][1]
    info = runstore.set_cut(run_dir, before["threshold"])
    assert info["warnings"] == ["from the clustering"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.7", None, True])
def test_a_bad_threshold_is_refused_and_nothing_changes(run_dir, bad):
    table = (run_dir / "samples.parquet").read_bytes()
    record = (run_dir / "run.json").read_bytes()
    with pytest.raises(InputError, match="threshold"):
        runstore.set_cut(run_dir, bad)
    assert (run_dir / "samples.parquet").read_bytes() == table and (
        run_dir / "run.json"
    ).read_bytes() == record


def test_missing_estimates_npz_is_a_missing_file_and_nothing_changes(run_dir):
    (run_dir / "estimates.npz").unlink()
    table = (run_dir / "samples.parquet").read_bytes()
    with pytest.raises(MissingError, match="estimates.npz"):
        runstore.set_cut(run_dir, 0.9)
    assert (run_dir / "samples.parquet").read_bytes() == table


def test_a_run_without_estimates_moves_its_flags_only(run_dir):
    record = runstore.read_run(run_dir)
    (run_dir / "run.json").write_text(json.dumps({**record, "estimates": None}))
    (run_dir / "estimates.npz").unlink()  # not read: there is nothing to re-estimate
    info = runstore.set_cut(run_dir, 0.9)
    assert info["estimates"] is None and info["num_flagged"] == int(
        (scores_of(run_dir) > 0.9).sum()
    )


def test_each_point_of_the_curve_is_found_from_its_own_cut(run_dir):
    record = runstore.read_run(run_dir)
    curve = record["estimates"]["curve"]
    scores = scores_of(run_dir)
    thresholds = np.asarray(curve["threshold"])
    counts = runcut.flagged_counts(scores, thresholds)
    np.testing.assert_array_equal(counts, [(scores > t).sum() for t in thresholds])
    np.testing.assert_array_equal(
        counts, np.round(np.asarray(curve["flagged_share"]) * len(scores))
    )
    assert [runcut.point_of_cut(curve, t) for t in thresholds] == list(range(len(thresholds)))
    # the run's own cut falls on the point that flags what it flags
    now = runcut.point_of_cut(curve, record["threshold"])
    assert counts[now] == record["num_flagged"]
    # above every point: the first; below every point: the last
    assert (
        runcut.point_of_cut(curve, 2.0) == 0
        and runcut.point_of_cut(curve, -1.0) == len(thresholds) - 1
    )
    with pytest.raises(ValueError):
        runcut.point_of_cut({"threshold": []}, 0.5)


def test_the_true_curve_is_the_true_precision_and_recall_of_each_cut(run_dir):
    table = runstore.load_samples(run_dir)
    scores, noisy = scores_of(run_dir), table["is_noisy"].astype(bool).to_numpy()
    thresholds = np.r_[runstore.read_run(run_dir)["estimates"]["curve"]["threshold"], 2.0]
    true = runcut.true_curve(scores, noisy, thresholds)
    for t, p, r in zip(thresholds[:-1], true["precision"], true["recall"], strict=False):
        m = detection_metrics(scores > t, noisy)
        assert p == pytest.approx(m["precision"]) and r == pytest.approx(m["recall"])
    assert np.isnan(true["precision"][-1]) and true["recall"][-1] == 0.0  # a cut that flags nothing
    assert np.isnan(runcut.true_curve(scores, np.zeros_like(noisy), thresholds)["recall"]).all()
