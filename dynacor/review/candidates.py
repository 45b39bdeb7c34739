"""The classes a review card offers: ranked candidates, the search order of every class, and what a
choice among them records.

A run's samples table carries, per sample, up to three candidate classes other than the given one
(``candidates``, most likely first; ``candidates[0]`` is ``suggested_label``) with their
probabilities. ``dynacor.method.suggest.candidate_matrix`` reads them as fixed-width arrays; the pages
pass those arrays in here (the review package does not read run files). Runs written before the
candidates existed have only ``suggested_label``: it is then the only candidate, unless it is the
given label (older engines could suggest the given class) or -1 (no probabilities recorded).

Pure functions on NumPy arrays and DataFrames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

WIDTH = 3
NONE = -1  # no candidate / no suggestion
SEARCHED = 0  # the rank recorded for a class outside the card's candidates


def candidate_table(samples: pd.DataFrame, candidates: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's candidates as the card shows them.

    Parameters
    ----------
    samples : the run's per-sample table (``given_label``; ``suggested_label`` and
        ``suggested_prob`` when present), N rows
    candidates, probs : (N, W) from ``candidate_matrix`` (-1 / NaN padding)

    Returns
    -------
    (candidates, probs), (N, W): the given label and repeats removed, the rest moved left; a row
    with none takes ``suggested_label`` alone when it is a class other than the given one.
    """
    cands = np.array(candidates, dtype=np.int64, copy=True)
    probs = np.array(probs, dtype=np.float64, copy=True)
    n, width = cands.shape
    given = samples["given_label"].to_numpy().astype(np.int64)
    drop = (cands < 0) | (cands == given[:, None])
    for j in range(1, width):  # a class twice in a row: keep its first place
        drop[:, j] |= (cands[:, :j] == cands[:, j : j + 1]).any(axis=1)
    cands[drop], probs[drop] = NONE, np.nan
    order = np.argsort(drop, axis=1, kind="stable")  # kept entries first, in their order
    cands = np.take_along_axis(cands, order, axis=1)
    probs = np.take_along_axis(probs, order, axis=1)
    if "suggested_label" in samples:
        suggested = pd.to_numeric(samples["suggested_label"], errors="coerce").fillna(NONE).to_numpy().astype(np.int64)
        chance = (
            pd.to_numeric(samples["suggested_prob"], errors="coerce").to_numpy(dtype=np.float64)
            if "suggested_prob" in samples
            else np.full(n, np.nan)
        )
        fallback = (cands[:, 0] < 0) & (suggested >= 0) & (suggested != given)
        cands[fallback, 0] = suggested[fallback]
        probs[fallback, 0] = chance[fallback]
    return cands, probs


def row_candidates(candidates: np.ndarray, probs: np.ndarray) -> list[tuple[int, float]]:
    """One row of `candidate_table` as ``[(class, probability), ...]``, most likely first."""
    return [(int(c), float(p)) for c, p in zip(candidates, probs, strict=True) if c >= 0]


def suggestion_order(samples: pd.DataFrame) -> dict[int, list[int]]:
    """Per given class, the classes suggested for its samples, most often first (ties by index).

    What the search list puts after a card's candidates: the confusions this run sees for the
    card's given class. Computed once per run. Samples without a suggestion (-1) or whose
    suggestion is their given label count for nothing.
    """
    if "suggested_label" not in samples or samples.empty:
        return {}
    given = samples["given_label"].to_numpy().astype(np.int64)
    suggested = pd.to_numeric(samples["suggested_label"], errors="coerce").fillna(NONE).to_numpy().astype(np.int64)
    keep = (suggested >= 0) & (suggested != given)
    pairs = pd.DataFrame({"given": given[keep], "suggested": suggested[keep]})
    counts = pairs.value_counts().reset_index(name="n")
    counts = counts.sort_values(["given", "n", "suggested"], ascending=[True, False, True], kind="stable")
    return {int(g): part["suggested"].astype(int).tolist() for g, part in counts.groupby("given", sort=True)}


def search_order(given: int, candidates: Sequence[int], confusions: Sequence[int], num_classes: int) -> list[int]:
    """Every class but ``given``, in the order the search list offers them: the card's candidates,
    then the classes this run suggests most often for ``given`` (`suggestion_order`), then the
    rest by index."""
    seen = {int(given)}
    order = []
    for c in [*candidates, *confusions, *range(num_classes)]:
        c = int(c)
        if 0 <= c < num_classes and c not in seen:
            seen.add(c)
            order.append(c)
    return order


def choice(given: int, label: int, candidates: Sequence[int]) -> dict:
    """What choosing ``label`` for a card records: ``decision`` (``accept`` when it is the
    suggestion, the first candidate; else ``relabel``), ``label`` and ``candidate_rank`` (1-3: its
    place among the card's candidates; 0: a class outside them, found by search). Choosing the
    given label is a keep (rank None): it changes nothing."""
    label = int(label)
    if label == int(given):
        return {"decision": "keep", "label": label, "candidate_rank": None}
    ranked = [int(c) for c in candidates if int(c) >= 0]
    rank = ranked.index(label) + 1 if label in ranked else SEARCHED
    return {"decision": "accept" if rank == 1 else "relabel", "label": label, "candidate_rank": rank}


def has_suggestion(given: int, suggested: object) -> bool:
    """Whether a card has a suggestion to accept: a class other than the given one."""
    if suggested is None or pd.isna(suggested):
        return False
    return int(suggested) >= 0 and int(suggested) != int(given)


def bulk_items(rows: pd.DataFrame, decision: str, label: int | None, candidates: np.ndarray | None = None) -> tuple[list[dict], int]:
    """Items for `ReviewStore.record_decisions`: one ``decision`` on each of ``rows`` (queue rows
    with ``key``, ``given_label``, ``suggested_label``), as each card would record it.

    ``accept`` takes each row's own suggestion (rows without one are left out); ``relabel`` to
    ``label`` becomes an accept where ``label`` is the row's suggestion and a keep where it is
    the row's given label, with the rank it has among the row's ``candidates`` ((len(rows), W),
    from `candidate_table`; without them the suggestion is the only candidate). Returns the items
    and how many rows were left out.
    """
    from dynacor.review.decisions import DECISIONS, decision_label

    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
    items, left_out = [], 0
    given = rows["given_label"].to_numpy().astype(np.int64)
    suggested = pd.to_numeric(rows["suggested_label"], errors="coerce").fillna(NONE).to_numpy().astype(np.int64)
    for i, key in enumerate(rows["key"]):
        ranked = list(candidates[i]) if candidates is not None else [suggested[i]]
        if decision == "accept":
            if not has_suggestion(given[i], suggested[i]):
                left_out += 1
                continue
            items.append({"sample": key, "decision": "accept", "label": int(suggested[i]), "candidate_rank": 1})
        elif decision == "relabel":
            if label is None:
                raise ValueError("a relabel decision needs a label")
            items.append({"sample": key, **choice(given[i], label, ranked)})
        else:
            items.append({"sample": key, "decision": decision, "label": decision_label(decision, given[i], suggested[i])})
    return items, left_out
