"""The review queue, as plain DataFrame functions (no UI, no database).

Samples are keyed by ``str(id)`` everywhere decisions are involved, because a run's ids may be
integers (CIFAR indices) or strings (manifest ids) and the store keeps them as text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def sample_keys(samples: pd.DataFrame) -> pd.Series:
    return samples["id"].astype(str)


def flagged_sorted(samples: pd.DataFrame) -> pd.DataFrame:
    """Flagged samples, most confidently noisy first (ties in input order), with a ``key`` column.

    Computed once per run: the queue after each decision only filters this frame.
    """
    flagged = samples[samples["flagged"].astype(bool)].copy()
    flagged["key"] = sample_keys(flagged)
    return flagged.sort_values(["noisy_score", "index"], ascending=[False, True], kind="stable")


def queue(
    flagged: pd.DataFrame,
    latest: pd.DataFrame,
    classes: Sequence[int] | None = None,
    score_range: tuple[float, float] | None = None,
    undecided_only: bool = True,
) -> pd.DataFrame:
    """The cards to review, in order: ``flagged`` (from `flagged_sorted`) filtered by given class,
    noisy-score range and, by default, without the samples that already have a decision.
    Adds the current ``decision`` (empty string when undecided)."""
    mask = np.ones(len(flagged), dtype=bool)
    if classes:
        mask &= flagged["given_label"].isin(list(classes)).to_numpy()
    if score_range is not None:
        lo, hi = score_range
        scores = flagged["noisy_score"].to_numpy()
        mask &= (scores >= lo) & (scores <= hi)
    decided = dict(zip(latest["sample"], latest["decision"], strict=False)) if len(latest) else {}
    if undecided_only and decided:
        mask &= ~flagged["key"].isin(decided.keys()).to_numpy()
    out = flagged[mask].copy()
    out["decision"] = out["key"].map(decided).fillna("")
    return out
