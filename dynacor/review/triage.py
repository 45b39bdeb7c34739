"""Grid triage as plain DataFrame functions: the undecided flagged samples grouped by
(given class -> suggested class), a page of one group's cards, one decision for many cards.

A group holds samples that look alike to the detector (same given label, same suggested label),
so an annotator can scan a page of thumbnails and settle most of them with one action.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dynacor.errors import InputError
from dynacor.review.candidates import has_suggestion
from dynacor.review.decisions import decision_label

GRID_SIZES = (24, 36, 48, 60)
# Decisions a grid applies to many cards at once; relabelling to a third class and "unsure"
# stay one card at a time, on the Review page.
GRID_DECISIONS = ("keep", "accept", "remove")


def groups(pending: pd.DataFrame) -> pd.DataFrame:
    """The groups of ``pending`` (the queue from `queue`), in class order.

    Returns
    -------
    DataFrame with columns given_label, suggested_label (int), cards (how many), top_score (the
    highest noisy score in the group); one row per group, sorted by given then suggested class
    so the list does not reorder while the counts shrink.
    """
    if pending.empty:
        return pd.DataFrame({"given_label": pd.Series(dtype=int), "suggested_label": pd.Series(dtype=int),
                             "cards": pd.Series(dtype=int), "top_score": pd.Series(dtype=float)})  # fmt: skip
    out = (
        pending.groupby(["given_label", "suggested_label"], sort=True)
        .agg(cards=("key", "size"), top_score=("noisy_score", "max"))
        .reset_index()
    )
    return out.astype(
        {"given_label": int, "suggested_label": int, "cards": int, "top_score": float}
    )


def grid_cards(pending: pd.DataFrame, given: int, suggested: int, size: int) -> pd.DataFrame:
    """The first ``size`` cards of one group, most confidently noisy first (ties in sample order)."""
    if size < 1:
        raise InputError("grid", "size", "at least 1", size)
    part = pending[(pending["given_label"] == given) & (pending["suggested_label"] == suggested)]
    return part.sort_values(["noisy_score", "index"], ascending=[False, True], kind="stable").head(
        size
    )


def grid_decisions(cards: pd.DataFrame, keys: Sequence[str], decision: str) -> list[dict]:
    """Items for `ReviewStore.record_decisions`: ``decision`` on each of ``keys`` (cards shown on the
    grid), with the class it assigns (keep -> given, accept -> each card's own suggestion, remove
    -> none). An accept leaves out the cards with no suggestion other than their given label (a
    run without probabilities, or an older engine's suggestion of the given class): accepting
    would change nothing there."""
    if decision not in GRID_DECISIONS:
        raise InputError("grid", "decision", f"one of {GRID_DECISIONS}", repr(decision))
    by_key = cards.set_index("key")
    missing = [k for k in keys if k not in by_key.index]
    if missing:
        raise InputError("grid", "keys", "cards shown on the grid", f"{missing[:3]}")
    items = []
    for key in keys:
        row = by_key.loc[key]
        given, suggested = int(row["given_label"]), int(row["suggested_label"])
        if decision == "accept" and not has_suggestion(given, suggested):
            continue
        items.append(
            {
                "sample": key,
                "decision": decision,
                "label": decision_label(decision, given, suggested),
            }
        )
    return items
