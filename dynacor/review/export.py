"""The cleaned labels of a reviewed run and their summary per class (plain DataFrame functions)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from dynacor.review.decisions import DECISIONS
from dynacor.review.queue import sample_keys

EXPORT_COLUMNS = ["id", "path", "given_label", "final_label", "decision", "annotator", "time"]


def final_labels(
    samples: pd.DataFrame, latest: pd.DataFrame, class_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """The cleaned labels of every sample, input order.

    final_label: keep -> the given label, accept/relabel -> the decision's label, unsure or no
    decision -> the given label (nothing was shown to be wrong), remove -> empty (drop the sample).
    Columns: id, path, given_label, final_label, decision, annotator, time (ISO 8601 UTC), plus
    given_name and final_name when class names are known.
    """
    keys = sample_keys(samples)
    latest = latest.set_index("sample") if len(latest) else latest.set_index(pd.Index([], name="sample"))
    decision = keys.map(latest["decision"]).fillna("").to_numpy(dtype=object)
    label = keys.map(latest["label"]).astype("Int64")
    given = samples["given_label"].astype("Int64").reset_index(drop=True)
    label = label.reset_index(drop=True)
    final = given.copy()
    takes_label = np.isin(decision, ("accept", "relabel", "keep")) & label.notna().to_numpy()
    final[takes_label] = label[takes_label]
    final[decision == "remove"] = pd.NA
    when = keys.map(latest["time"]).to_numpy(dtype=float)
    out = pd.DataFrame(
        {
            "id": samples["id"].to_numpy(),
            "path": samples["path"].fillna("").astype(str).to_numpy() if "path" in samples else "",
            "given_label": given.to_numpy(),
            "final_label": final.to_numpy(),
            "decision": decision,
            "annotator": keys.map(latest["annotator"]).fillna("").to_numpy(dtype=object),
            "time": [_iso(t) for t in when],
        }
    )
    out["given_label"] = out["given_label"].astype("Int64")
    out["final_label"] = out["final_label"].astype("Int64")
    names = class_names if class_names is not None else class_names_of(samples)
    if names is not None:
        lookup = dict(enumerate(names))
        out["given_name"] = out["given_label"].map(lookup)
        out["final_name"] = out["final_label"].map(lookup)
    return out


def summary_per_class(export: pd.DataFrame) -> pd.DataFrame:
    """Per given class: how many samples, and how many of each decision (and undecided)."""
    by = "given_name" if "given_name" in export else "given_label"
    counts = pd.crosstab(export[by], export["decision"].replace("", "undecided"))
    for column in (*DECISIONS, "undecided"):
        if column not in counts:
            counts[column] = 0
    counts = counts[[*DECISIONS, "undecided"]]
    counts.insert(0, "samples", counts.sum(axis=1))
    counts.loc["all"] = counts.sum(axis=0)
    counts.index.name = "class"
    return counts


def class_names_of(samples: pd.DataFrame) -> list[str] | None:
    """Class names recovered from the given/suggested name columns (None when the run has none)."""
    if "given_name" not in samples:
        return None
    pairs = pd.concat(
        [
            samples[["given_label", "given_name"]].set_axis(["label", "name"], axis=1),
            samples[["suggested_label", "suggested_name"]].set_axis(["label", "name"], axis=1),
        ]
    )
    # No suggestion (-1) names no class; its name cell may hold anything (names[-1] is the last).
    pairs = pairs[pairs["label"] >= 0].drop_duplicates("label")
    top = int(pairs["label"].max())
    lookup = dict(zip(pairs["label"].astype(int), pairs["name"].astype(str), strict=False))
    return [lookup.get(i, str(i)) for i in range(top + 1)]


def _iso(seconds: float) -> str:
    if seconds != seconds:  # NaN: no decision
        return ""
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).isoformat(timespec="seconds")
