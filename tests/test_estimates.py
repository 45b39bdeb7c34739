"""Self-estimates of noise rate, precision and recall (dynacor.method.estimates) and the cut they choose."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynacor.cli.main import main
from dynacor.errors import InputError
from dynacor.method.config import DynaCorConfig
from dynacor.method.estimates import (
    confident_labels,
    estimated_curve,
    low_precision_warning,
    noise_rate_draws,
    noise_rate_from_probs,
    off_diagonal,
    quality_at_cut,
    systematic_margin,
    threshold_for_target,
    window_epochs,
)
from dynacor.method.featureset import FeatureSet
from dynacor.method.noise import synthetic_labels
from dynacor.method.pipeline import run
from dynacor.method.validate import check_config
from dynacor.runs.bench import load_half
from tests.conftest import make_blobs


def noisy_probs(n: int, c: int, eta: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Given labels with a fraction ``eta`` flipped, and softmax rows that favour the true class."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    flip = rng.random(n) < eta
    given = np.where(flip, (true + rng.integers(1, c, n)) % c, true)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), true] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return given, probs, flip


def test_noise_rate_matches_cleanlab_estimate_joint():
    from cleanlab.count import estimate_joint

    given, probs, _ = noisy_probs(3000, 5, 0.3, seed=1)
    expected = 1.0 - np.trace(estimate_joint(given, probs))
    assert noise_rate_from_probs(given, probs) == pytest.approx(expected, abs=2e-3)


def test_noise_rate_recovers_the_flipped_share_when_the_classifier_sees_the_true_class():
    for eta in (0.1, 0.4):
        given, probs, flip = noisy_probs(4000, 10, eta, seed=2)
        assert abs(noise_rate_from_probs(given, probs) - flip.mean()) < 0.05


def test_confident_labels_are_minus_one_where_no_class_reaches_its_threshold():
    given = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.5, 0.5]])
    # thresholds: class 0 mean p0 over given 0 = 0.7, class 1 mean p1 over given 1 = 0.65
    np.testing.assert_array_equal(confident_labels(given, probs), [0, -1, 1, -1])
    np.testing.assert_array_equal(off_diagonal(given, probs), [False, False, False, False])
    probs[3] = [0.95, 0.05]
    assert off_diagonal(given, probs)[3]


def test_window_epochs_are_fractions_of_training_and_never_empty():
    assert window_epochs((0.07, 0.27), 30) == (2, 8)
    assert window_epochs((0.0, 0.17), 30) == (0, 5)
    assert window_epochs((0.0, 0.01), 5) == (0, 1)
    assert window_epochs((0.99, 1.0), 3) == (2, 3)


def test_quality_at_cut_is_exact_for_a_detector_that_flags_exactly_the_off_diagonal_samples():
    rng = np.random.default_rng(0)
    off = rng.random(2000) < 0.3
    q = np.where(off, 0.9, 0.1)
    eta = float(off.mean())
    est = quality_at_cut(q, off, eta, np.full(100, eta), 0.5, rng=rng, margin=0.05)
    assert est["recall"]["value"] == pytest.approx(1.0)
    assert est["precision"]["value"] == pytest.approx(1.0)
    assert est["noise_rate"]["value"] == pytest.approx(eta)
    for name in ("noise_rate", "precision", "recall"):
        e = est[name]
        assert 0.0 <= e["low"] <= e["value"] <= e["high"] <= 1.0
        assert e["high"] - e["low"] >= 0.05 or e["high"] == 1.0  # the margin widens every interval
    half = quality_at_cut(q, off, eta, np.full(100, eta), 0.5, rng=rng)
    assert half["rows"] == 2000 and half["bootstrap"] == 100


def test_two_views_average_their_recalls_and_the_interval_holds_both():
    rng = np.random.default_rng(1)
    n = 3000
    noisy = rng.random(n) < 0.3
    q = np.where(noisy, rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 0.7, n))
    flagged = q > 0.5
    # one view the score favours (its rows are flagged more), one it does not read
    favoured = noisy & (q > 0.4)
    unread = noisy & (rng.random(n) < 0.6) | (~noisy & (rng.random(n) < 0.05))
    eta = float(noisy.mean())
    own = [flagged[v].mean() for v in (favoured, unread)]
    both = quality_at_cut(q, np.stack([favoured, unread]), eta, np.full(200, eta), 0.5, rng=rng, margin=0.0)
    assert both["views"] == 2
    assert both["recall"]["value"] == pytest.approx(np.mean(own))
    assert both["precision"]["value"] == pytest.approx(eta * np.mean(own) / flagged.mean())
    assert both["recall"]["low"] <= min(own) and both["recall"]["high"] >= max(own)
    one = quality_at_cut(q, favoured, eta, np.full(200, eta), 0.5, rng=rng, margin=0.0)
    assert one["views"] == 1 and one["recall"]["value"] == pytest.approx(own[0])
    # the curve agrees with the cut's estimate where it passes through the cut
    curve = estimated_curve(q, np.stack([favoured, unread]), eta, points=n)
    at = int(np.argmin(np.abs(np.asarray(curve["threshold"]) - 0.5)))
    assert curve["recall"][at] == pytest.approx(both["recall"]["value"], abs=2e-3)


def test_curve_and_targets_choose_the_cut():
    rng = np.random.default_rng(3)
    off = rng.random(1000) < 0.4
    q = np.where(off, rng.uniform(0.4, 1.0, 1000), rng.uniform(0.0, 0.6, 1000))
    curve = estimated_curve(q, off, float(off.mean()), points=50)
    assert len(curve["threshold"]) <= 50
    assert np.all(np.diff(curve["recall"]) >= 0) and np.all(np.diff(curve["threshold"]) <= 0)
    t, warning = threshold_for_target(curve, target_precision=0.9)
    assert warning is None
    flagged = q > t
    assert (off & flagged).sum() / flagged.sum() >= 0.9 - 1e-9
    t_r, warning = threshold_for_target(curve, target_recall=0.8)
    assert warning is None and (off & (q > t_r)).sum() / off.sum() >= 0.8
    assert t_r < t  # the high-recall cut flags more
    _, warning = threshold_for_target({**curve, "precision": [0.2] * len(curve["precision"])}, target_precision=0.9)
    assert "no cut reaches" in warning
    with pytest.raises(ValueError):
        threshold_for_target(curve, target_precision=0.9, target_recall=0.8)


def test_noise_rate_draws_are_seeded():
    given, probs, _ = noisy_probs(500, 4, 0.2, seed=4)
    a = noise_rate_draws(given, probs, np.random.default_rng(7), 20)
    b = noise_rate_draws(given, probs, np.random.default_rng(7), 20)
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and a[1].std() > 0


def small_set(blobs: dict) -> FeatureSet:
    return FeatureSet(features=blobs["features"], labels=blobs["labels"], features_aug=blobs["features_aug"],
                      clean_labels=blobs["clean_labels"], ids=blobs["ids"])  # fmt: skip


def test_run_reports_estimates_and_a_target_moves_the_cut(blobs):
    config = DynaCorConfig(seed=0, epochs=8, encoder_epochs=2, estimate_bootstrap=30, explain_neighbours=0)
    plain = run(config, small_set(blobs))
    assert plain.threshold == 0.5
    np.testing.assert_array_equal(plain.flagged, plain.q_noisy > 0.5)
    for name in ("noise_rate", "precision", "recall"):
        assert 0.0 <= plain.estimates[name]["low"] <= plain.estimates[name]["high"] <= 1.0
    assert "estimated precision" in plain.summary()
    again = run(config, small_set(blobs))
    assert again.estimates["precision"] == plain.estimates["precision"]  # seeded
    strict = run(config.replace(target_precision=0.95), small_set(blobs))
    np.testing.assert_array_equal(strict.q_noisy, plain.q_noisy)  # the cut moves, the scores do not
    np.testing.assert_array_equal(strict.flagged, strict.q_noisy > strict.threshold)
    assert strict.estimates["threshold"] == strict.threshold


def test_a_run_whose_estimated_precision_is_low_says_so(blobs):
    """Estimates near zero on flags that look fine are what repeated wrong labels produce
    (docs/benchmarks.md, "Scale"): the run must not present them without a word."""
    config = DynaCorConfig(seed=0, epochs=8, encoder_epochs=2, estimate_bootstrap=30, explain_neighbours=0)
    strict = run(config.replace(estimate_precision_floor=1.0), small_set(blobs))
    precision = strict.estimates["precision"]["value"]
    assert precision < 1.0
    assert [w for w in strict.warnings if f"precision at {100 * precision:.0f}%" in w and "near-duplicates" in w]
    relaxed = run(config.replace(estimate_precision_floor=0.0), small_set(blobs))
    assert not [w for w in relaxed.warnings if "self-estimates" in w]
    np.testing.assert_array_equal(relaxed.flagged, strict.flagged)  # a warning, never another cut


def test_low_precision_warning_reads_the_point_estimate():
    def estimates(precision: float, eta: float) -> dict:
        return {"precision": {"value": precision}, "noise_rate": {"value": eta}}

    assert "precision at 4% (noise rate 0%)" in low_precision_warning(estimates(0.04, 0.001), 0.25)
    assert low_precision_warning(estimates(0.25, 0.1), 0.25) is None
    assert low_precision_warning(estimates(float("nan"), 0.0), 0.25) is None  # nothing flagged: nothing to say
    with pytest.raises(InputError, match="estimate_precision_floor"):
        check_config(DynaCorConfig(estimate_precision_floor=1.5))


def test_targets_are_checked_at_the_boundary():
    with pytest.raises(InputError, match="target_precision"):
        check_config(DynaCorConfig(target_precision=1.5))
    with pytest.raises(InputError, match="target_recall"):
        check_config(DynaCorConfig(target_precision=0.9, target_recall=0.8))
    with pytest.raises(InputError, match="noise_window"):
        check_config(DynaCorConfig(noise_window=(0.5, 0.2)))
    with pytest.raises(InputError, match="estimate_rows"):
        check_config(DynaCorConfig(estimate_rows=0, target_recall=0.8))


def test_target_precision_on_the_dev_worse_labels_keeps_its_promise(shared_data: Path, tmp_path: Path):
    """`detect --target-precision 0.9` on CIFAR-10N worse labels: the flags' true precision is >= 0.85."""
    out = tmp_path / "run"
    code = main(["detect", "--features", str(shared_data / "cifar10_effl0_dev.npz"), "--labels-key", "worse_labels",
                 "--target-precision", "0.9", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    samples = pd.read_csv(out / "samples.csv")
    record = json.loads((out / "run.json").read_text())
    flagged = samples["flagged"].astype(bool)
    assert record["threshold"] > 0.5 and int(flagged.sum()) == record["num_flagged"] > 100
    np.testing.assert_array_equal(flagged, samples["noisy_score"] > record["threshold"] + 1e-6)
    truly_noisy = samples["is_noisy"].astype(bool)
    assert (flagged & truly_noisy).sum() / flagged.sum() >= 0.85
    assert record["estimates"]["precision"]["value"] >= 0.9 - 1e-9


def test_the_margin_grows_as_the_samples_per_class_shrink():
    assert systematic_margin(50_000, 10, 0.08, 1.9) == 0.08  # the allowance measured at 500 per class
    assert systematic_margin(2000, 10, 0.08, 1.9) == pytest.approx(1.9 / np.sqrt(200))
    assert systematic_margin(400, 10, 0.08, 1.9) > 0.2 > systematic_margin(2000, 10, 0.08, 1.9)
    assert systematic_margin(400, 10, 0.08, 0.0) == 0.08
    with pytest.raises(InputError, match="estimate_withhold"):
        check_config(DynaCorConfig(estimate_withhold=0.0))


def test_too_few_samples_per_class_withhold_the_estimates_and_say_why():
    """40 samples per class: the estimates could be off by 30 points; the run says so instead of
    showing them, and the flags stay what they are."""
    blobs = make_blobs(n=120, c=3, seed=1)
    config = DynaCorConfig(seed=0, epochs=8, encoder_epochs=2, estimate_bootstrap=30, explain_neighbours=0)
    withheld = run(config, small_set(blobs))
    assert withheld.estimates is None and withheld.estimate_parts is None
    assert [w for w in withheld.warnings if "no self-estimates" in w and "40 samples per class" in w]
    assert "estimated precision" not in withheld.summary()
    shown = run(config.replace(estimate_withhold=1.0), small_set(blobs))
    assert shown.estimates["margin"] == pytest.approx(1.9 / np.sqrt(40))
    np.testing.assert_array_equal(withheld.flagged, shown.flagged)
    targeted = run(config.replace(target_precision=0.9), small_set(blobs))
    assert targeted.threshold == 0.5 and [w for w in targeted.warnings if "was not applied" in w]
    np.testing.assert_array_equal(targeted.flagged, withheld.flagged)


def truth_at_cut(flagged: np.ndarray, given: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    noisy = given != clean
    hits = float((flagged & noisy).sum())
    return {"noise_rate": float(noisy.mean()), "precision": hits / max(int(flagged.sum()), 1),
            "recall": hits / max(int(noisy.sum()), 1)}  # fmt: skip


def held(estimates: dict, truth: dict[str, float]) -> list[bool]:
    return [estimates[k]["low"] <= truth[k] <= estimates[k]["high"] for k in ("noise_rate", "precision", "recall")]


def test_on_small_subsets_of_unseen_data_the_intervals_hold_the_truth_or_are_withheld(shared_data: Path):
    """The report half of the dev file (never used to choose the margin), 400 and 2,000 samples,
    four kinds of noise, two seeds: at 400 the estimates are withheld; at 2,000 the 95% intervals
    hold the truth at about their stated rate."""
    data, extra = load_half(shared_data / "cifar10_effl0_dev.npz", ["human:worse_labels"], "report")
    config = DynaCorConfig(estimate_bootstrap=100, explain_neighbours=0, suggest_neighbours=0)
    holds = []
    for n, seeds, kinds in ((400, (0,), ("sym:0.2", "worse")), (2000, (0, 1), ("sym:0.2", "asym:0.2", "inst:0.3", "worse"))):
        for seed in seeds:
            rng = np.random.default_rng(100 + seed)
            rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(data.clean_labels == c), n // 10, replace=False)
                                           for c in range(10)]))  # fmt: skip
            subset = data.subset(rows)
            for kind in kinds:
                given = (extra["worse_labels"][rows] if kind == "worse"
                         else synthetic_labels(kind, subset.clean_labels, 10, seed, subset.features))  # fmt: skip
                result = run(config.replace(seed=seed), subset.with_labels(given))
                if n == 400:
                    assert result.estimates is None and [w for w in result.warnings if "no self-estimates" in w]
                    continue
                holds += held(result.estimates, truth_at_cut(result.flagged, given, subset.clean_labels))
    assert np.mean(holds) >= 0.9, f"{sum(holds)} of {len(holds)} intervals hold the truth"


def test_the_built_in_sample_never_shows_estimates_that_miss_the_truth(shared_data: Path):
    """The newcomer's first run (40 images per class, sym:0.2) and the whole sample (200 per class):
    withheld, or every interval holds the truth. The sample's features are the dev file's rows of
    the same images (sample_data/README.md)."""
    from dynacor.data.sources import load_builtin_sample

    with np.load(shared_data / "cifar10_effl0_dev.npz") as dev:
        row_of = {int(i): k for k, i in enumerate(dev["ids"])}
        features, features_aug = dev["features"], dev["features_aug"]
    for per_class, seeds in ((40, (0, 1)), (200, (0,))):
        for seed in seeds:
            sample = load_builtin_sample(seed=seed, per_class=per_class)
            rows = np.array([row_of[int(i)] for i in sample.ids])
            data = FeatureSet(features=features[rows], features_aug=features_aug[rows], labels=sample.labels,
                              clean_labels=sample.clean_labels, ids=np.asarray(sample.ids))  # fmt: skip
            result = run(DynaCorConfig(seed=seed, estimate_bootstrap=100, explain_neighbours=0), data)
            if result.estimates is None:
                assert per_class == 40 and [w for w in result.warnings if "no self-estimates" in w]
                continue
            truth = truth_at_cut(result.flagged, sample.labels, sample.clean_labels)
            assert all(held(result.estimates, truth)), (per_class, seed, result.estimates, truth)
