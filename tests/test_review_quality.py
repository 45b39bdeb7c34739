"""Quality measured by the review: Wilson intervals, the audit queue, and a simulated review with
known truth whose measured figures must cover the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dynacor.review.quality import (
    audit_order,
    estimated_figures,
    estimates_line,
    quality_figures,
    quality_lines,
    queue_with_audit,
    review_quality,
    wilson_interval,
)


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 50)
    assert low == pytest.approx(0.0, abs=1e-12) and 0.05 < high < 0.09


def frame(n: int, flagged: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"index": np.arange(n), "id": np.arange(1000, 1000 + n), "given_label": 0,
                         "suggested_label": 1, "noisy_score": np.linspace(1, 0, n), "flagged": flagged.astype(int)})  # fmt: skip


def test_audit_is_unflagged_and_the_same_for_a_run():
    samples = frame(100, np.arange(100) < 30)
    a, b, c = audit_order(samples, "run-a"), audit_order(samples, "run-a"), audit_order(samples, "run-b")
    assert a["key"].tolist() == b["key"].tolist() != c["key"].tolist()
    assert not a["flagged"].astype(bool).any() and len(a) == 70


def test_one_card_in_k_is_an_audit_card():
    queue = pd.DataFrame({"key": [f"f{i}" for i in range(7)], "decision": ""})
    audit = pd.DataFrame({"key": [f"a{i}" for i in range(5)]})
    mixed = queue_with_audit(queue, audit, every=3)
    assert mixed["key"].tolist() == ["f0", "f1", "a0", "f2", "f3", "a1", "f4", "f5", "a2", "f6", "a3", "a4"]
    assert mixed["audit"].tolist() == [k.startswith("a") for k in mixed["key"]]
    # Two cards already seen: the next one is the audit card, then the rhythm goes on.
    later = queue_with_audit(queue.iloc[2:], audit, every=3, start=2)
    assert later["key"].tolist()[:4] == ["a0", "f2", "f3", "a1"]
    with pytest.raises(ValueError):
        queue_with_audit(queue, audit, every=1)


def simulate(seed: int, n: int = 3000, noise: float = 0.2, every: int = 5) -> tuple[dict, float, float]:
    """A review of every flagged card and of the audit cards met on the way, deciding from the truth."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(n) < noise
    # A detector with about 80% precision and 80% recall.
    flagged = np.where(wrong, rng.random(n) < 0.8, rng.random(n) < 0.05)
    samples = frame(n, flagged)
    keys = samples["id"].astype(str)
    flagged_queue = samples[flagged].assign(key=keys[flagged], decision="")
    audit = audit_order(samples, f"run-{seed}")
    cards = queue_with_audit(flagged_queue, audit, every)
    cards = cards.iloc[: len(flagged_queue) * every // (every - 1)]  # the reviewer stops after the flags
    truth = dict(zip(keys, wrong, strict=True))
    latest = pd.DataFrame({"sample": cards["key"], "decision": ["accept" if truth[k] else "keep" for k in cards["key"]]})
    quality = review_quality(samples, latest, audit["key"])
    true_precision = wrong[flagged].mean()
    # Decided errors are fixed; what is left wrong: errors among the unflagged samples not audited.
    audited = set(cards.loc[cards["audit"], "key"])
    left = sum(1 for k, w, f in zip(keys, wrong, flagged, strict=True) if w and not f and k not in audited)
    return quality, true_precision, left / n


def test_simulated_review_covers_the_truth():
    covered_p = covered_left = 0
    for seed in range(10):
        quality, true_precision, true_left = simulate(seed)
        p, r = quality["precision"], quality["remaining_errors"]
        assert p["decided"] == quality["flagged"] and quality["audited"] > 50
        covered_p += p["low"] <= true_precision <= p["high"]
        covered_left += r["low"] <= true_left <= r["high"]
        assert abs(r["value"] - true_left) < 0.03
    assert covered_p >= 8 and covered_left >= 8, (covered_p, covered_left)
    assert any("still wrong" in line for line in quality_lines(quality))


def test_unsure_counts_for_neither_and_no_audit_means_no_remaining_estimate():
    samples = frame(10, np.arange(10) < 4)
    latest = pd.DataFrame({"sample": ["1000", "1001", "1002"], "decision": ["accept", "keep", "unsure"]})
    quality = review_quality(samples, latest)
    assert quality["precision"]["decided"] == 2 and quality["precision"]["value"] == 0.5
    assert quality["remaining_errors"] is None
    assert any("audit" in line for line in quality_lines(quality))


def test_removed_samples_leave_the_denominator():
    samples = frame(10, np.arange(10) < 4)  # ids 1000-1003 flagged
    latest = pd.DataFrame({"sample": ["1000", "1001", "1005"], "decision": ["remove", "keep", "accept"]})
    r = review_quality(samples, latest, audit_keys=["1005", "1006"])["remaining_errors"]
    # Flagged: 1 error in 2 decided, 2 undecided -> 1 error left; unflagged: 1 of 1 audited wrong,
    # 5 not audited -> 5 left; 9 samples kept after the removal.
    assert r["of"] == 9 and r["count"] == pytest.approx(6) and r["value"] == pytest.approx(6 / 9)


ESTIMATES = {"noise_rate": {"value": 0.21, "low": 0.18, "high": 0.24}, "precision": {"value": 0.8, "low": 0.75, "high": 0.85},
             "recall": {"value": 0.7, "low": 0.6, "high": 0.78}, "threshold": 0.5}  # fmt: skip


def test_the_runs_own_estimates_as_one_line():
    assert estimates_line(ESTIMATES) == (
        "Estimated before review: precision 80% (75-85%), recall 70% (60-78%), noise rate 21% (18-24%)"
    )
    assert list(estimated_figures(ESTIMATES)) == ["precision", "recall", "noise_rate"]
    # Runs without estimates, and figures a writer left incomplete, show nothing rather than fail.
    assert estimates_line(None) is None and estimates_line({}) is None
    assert estimates_line([1]) is None
    partial = {"precision": {"value": 0.8}, "recall": {"value": None, "low": 0, "high": 1},
               "noise_rate": {"value": 0.2, "low": 0.1, "high": 0.3}}  # fmt: skip
    assert estimates_line(partial) == "Estimated before review: noise rate 20% (10-30%)"
    # a cut that flags nothing has no precision
    assert estimates_line({"precision": {"value": float("nan"), "low": 0, "high": 1}}) is None


def test_the_quality_file_carries_the_estimates_as_strict_json():
    import json

    n = 10
    latest = pd.DataFrame({"sample": ["1000"], "decision": ["accept"]})
    quality = review_quality(frame(n, np.arange(n) < 4), latest)
    nothing_flagged = {**ESTIMATES, "precision": {"value": float("nan"), "low": 0.0, "high": 1.0}}
    figures = quality_figures("run-a", quality, nothing_flagged)
    assert figures["run"] == "run-a" and figures["precision"] == quality["precision"]
    assert figures["estimated_before_review"]["recall"] == ESTIMATES["recall"]
    assert figures["estimated_before_review"]["precision"]["value"] is None
    json.dumps(figures, allow_nan=False)  # no NaN token: every JSON reader takes the file
    assert quality_figures("run-a", quality, None)["estimated_before_review"] is None
