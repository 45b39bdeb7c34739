"""How much annotators agree in double review: Cohen's kappa per pair, Fleiss' kappa over all.

Pure functions on the votes table (`dynacor.review.store.ReviewStore.votes`: one row per card and
annotator, columns sample, annotator, decision, label, time). Two votes agree when they have the
same outcome: the class they assign, or "unsure", or "remove" (as the store decides a card), so
"accept" of class 3 and "relabel as 3" agree.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

PAIR_COLUMNS = ["annotator_a", "annotator_b", "cards", "agreement", "kappa"]


def outcomes(votes: pd.DataFrame) -> pd.Series:
    """Each vote's outcome: its class as text ("3"), else its decision ("unsure", "remove")."""
    label = votes["label"].astype("Int64")
    return pd.Series(
        np.where(label.notna(), label.astype(str), votes["decision"].astype(str)),
        index=votes.index,
        name="outcome",
    )


def pairwise_kappa(votes: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa of every pair of annotators on the cards both voted on.

    Returns one row per pair with at least one common card (names in sorted order): cards,
    agreement (the fraction of those cards with the same outcome) and kappa (scikit-learn's
    ``cohen_kappa_score``; NaN when the pair used a single outcome between them, where chance
    agreement is certain and kappa undefined).
    """
    from sklearn.metrics import cohen_kappa_score

    table = _outcome_table(votes)
    rows = []
    for a, b in itertools.combinations(sorted(table.columns), 2):
        both = table[[a, b]].dropna()
        if both.empty:
            continue
        x, y = both[a].to_numpy(), both[b].to_numpy()
        kappa = float(cohen_kappa_score(x, y)) if len(set(x) | set(y)) > 1 else float("nan")
        rows.append((a, b, len(both), float(np.mean(x == y)), kappa))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def fleiss_kappa(votes: pd.DataFrame, raters: int = 2) -> float:
    """Fleiss' kappa over the cards with at least ``raters`` votes, each taken with its first
    ``raters`` votes by time (Fleiss' formula needs the same number per card). NaN when no card
    qualifies or every vote has the same outcome."""
    if raters < 2:
        raise ValueError(f"raters must be >= 2, got {raters}")
    frame = votes.assign(outcome=outcomes(votes)).sort_values(["sample", "time"], kind="stable")
    first = frame.groupby("sample", sort=False).head(raters)
    sizes = first.groupby("sample")["outcome"].transform("size")
    first = first[sizes == raters]
    if first.empty:
        return float("nan")
    counts = pd.crosstab(first["sample"], first["outcome"]).to_numpy()
    return fleiss_kappa_counts(counts)


def fleiss_kappa_counts(counts: np.ndarray) -> float:
    """Fleiss' kappa from a count table.

    Parameters
    ----------
    counts : (N, C) int array: how many of the n raters put card i in category j; every row sums
        to the same n >= 2

    Returns
    -------
    kappa = (P - Pe) / (1 - Pe), P the mean per-card agreement, Pe the chance agreement from the
    category shares; NaN when Pe == 1 (a single category).
    """
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(axis=1)
    if counts.ndim != 2 or len(counts) == 0 or not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("counts must be a non-empty (N, C) table whose rows all sum to n >= 2")
    raters = n[0]
    per_card = (np.square(counts).sum(axis=1) - raters) / (raters * (raters - 1))
    shares = counts.sum(axis=0) / counts.sum()
    chance = float(np.square(shares).sum())
    if np.isclose(chance, 1.0):
        return float("nan")
    return float((per_card.mean() - chance) / (1.0 - chance))


def _outcome_table(votes: pd.DataFrame) -> pd.DataFrame:
    """(card x annotator) outcomes, NaN where the annotator did not vote (one vote per pair)."""
    frame = votes.assign(outcome=outcomes(votes))
    return frame.pivot(index="sample", columns="annotator", values="outcome")
