"""Agreement between annotators: Cohen's kappa per pair, Fleiss' kappa, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dynacor.review import agreement


def votes(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["sample", "annotator", "decision", "label", "time"])
    frame["label"] = frame["label"].astype("Int64")
    return frame


def test_outcomes_put_accept_and_relabel_of_one_class_together():
    frame = votes([("a", "x", "accept", 3, 1.0), ("a", "y", "relabel", 3, 2.0), ("b", "x", "remove", None, 3.0),
                   ("b", "y", "unsure", None, 4.0)])  # fmt: skip
    assert agreement.outcomes(frame).tolist() == ["3", "3", "remove", "unsure"]


def test_cohen_kappa_per_pair_by_hand():
    # ann: 1 1 remove 1; bob: 1 remove remove 1. Observed 3/4; chance 3/4*2/4 + 1/4*2/4 = 1/2;
    # kappa = (3/4 - 1/2) / (1 - 1/2) = 0.5. cy votes on one card only, with ann.
    rows = []
    for card, a, b in [("c0", 1, 1), ("c1", 1, None), ("c2", None, None), ("c3", 1, 1)]:
        rows.append((card, "ann", "accept" if a is not None else "remove", a, 0.0))
        rows.append((card, "bob", "keep" if b is not None else "remove", b, 1.0))
    rows.append(("c0", "cy", "accept", 1, 2.0))
    pairs = agreement.pairwise_kappa(votes(rows))
    assert pairs[["annotator_a", "annotator_b", "cards"]].values.tolist() == [
        ["ann", "bob", 4],
        ["ann", "cy", 1],
        ["bob", "cy", 1],
    ]
    ann_bob = pairs.iloc[0]
    assert ann_bob["agreement"] == 0.75 and ann_bob["kappa"] == pytest.approx(0.5)
    assert math.isnan(pairs.iloc[1]["kappa"])  # one outcome between them: kappa undefined


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories, kappa 0.210.
    counts = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                       [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])  # fmt: skip
    assert agreement.fleiss_kappa_counts(counts) == pytest.approx(0.2099, abs=1e-4)
    assert math.isnan(agreement.fleiss_kappa_counts(np.array([[3, 0], [3, 0]])))
    with pytest.raises(ValueError):
        agreement.fleiss_kappa_counts(np.array([[2, 0], [1, 0]]))


def test_fleiss_kappa_from_votes_takes_the_first_raters_of_each_card():
    rows = [
        ("c0", "x", "accept", 1, 1.0), ("c0", "y", "accept", 1, 2.0), ("c0", "z", "remove", None, 3.0),
        ("c1", "x", "remove", None, 1.0), ("c1", "y", "keep", 0, 2.0),
        ("c2", "x", "keep", 0, 1.0), ("c2", "z", "keep", 0, 2.0),
        ("c3", "x", "keep", 0, 1.0),  # one vote: left out
    ]  # fmt: skip
    # c0 (first two: 1, 1), c1 (remove, 0), c2 (0, 0): categories 1, remove, 0.
    expected = agreement.fleiss_kappa_counts(np.array([[2, 0, 0], [0, 1, 1], [0, 2, 0]]))
    assert agreement.fleiss_kappa(votes(rows), raters=2) == pytest.approx(expected)
    assert math.isnan(agreement.fleiss_kappa(votes(rows[-1:]), raters=2))
