"""The run as cleanlab describes label issues: ``is_label_issue, label_score, given_label,
predicted_label``, the columns (and dtypes) of ``Datalab.get_issues("label")``, so code written
for cleanlab's report reads dynacor's (``CleanLearning.fit(X, labels, label_issues=table)`` trains
on the samples that are not issues)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dynacor import atomic
from dynacor.errors import InputError
from dynacor.review.export import final_labels

CLEANLAB_COLUMNS = ["is_label_issue", "label_score", "given_label", "predicted_label"]
# Decisions that say the given label is wrong; keep says it is right; unsure says nothing.
ISSUE_DECISIONS = ("accept", "relabel", "remove")


def cleanlab_table(samples: pd.DataFrame, latest: pd.DataFrame) -> pd.DataFrame:
    """One row per sample, input order.

    Columns
    -------
    is_label_issue : bool, the review's verdict where there is one (keep -> False; accept,
        relabel, remove -> True), else the detector's flag
    label_score : float64 in [0, 1], as cleanlab means it: higher = the given label is more
        likely right; 1 - noisy_score
    given_label, predicted_label : int64, the given label and the detector's suggestion
    id, path (when the run has images), flagged (bool, the detector's flag before review),
    decision ("" when undecided), final_label (nullable Int64, the label after review; empty
    for a removed sample)
    """
    reviewed = final_labels(samples, latest)
    decision = reviewed["decision"].to_numpy(dtype=object)
    flagged = samples["flagged"].to_numpy().astype(bool)
    issue = np.where(
        np.isin(decision, ISSUE_DECISIONS), True, np.where(decision == "keep", False, flagged)
    )
    score = 1.0 - samples["noisy_score"].to_numpy(dtype=np.float64)
    table = pd.DataFrame(
        {
            "is_label_issue": issue.astype(bool),
            "label_score": np.clip(score, 0.0, 1.0),
            "given_label": samples["given_label"].to_numpy().astype(np.int64),
            "predicted_label": samples["suggested_label"].to_numpy().astype(np.int64),
            "id": samples["id"].to_numpy(),
        }
    )
    if "path" in samples:
        table["path"] = reviewed["path"].to_numpy()
    table["flagged"] = flagged
    table["decision"] = decision
    table["final_label"] = reviewed["final_label"].to_numpy()
    table["final_label"] = table["final_label"].astype("Int64")
    return table


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write ``table`` as CSV or Parquet, chosen by the file's extension (atomic)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return atomic.write_text(path, table.to_csv(index=False))
    if suffix == ".parquet":
        return atomic.write_with(path, lambda handle: table.to_parquet(handle, index=False))
    raise InputError(
        path,
        "--out",
        "a .csv or .parquet file for the cleanlab table",
        f"{suffix or 'no'} extension",
    )
