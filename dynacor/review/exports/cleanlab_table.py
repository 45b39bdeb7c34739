"""The run as cleanlab describes label issues: ``is_label_issue, label_score, given_label,
predicted_label``, the columns (and dtypes) of ``Datalab.get_issues("label")``, so code written
for cleanlab's report reads dynacor's (``CleanLearning.fit(X, labels, label_issues=table)`` trains
on the samples that are not issues).

``predicted_label`` is dynacor's suggestion: the most likely class other than the given one. A
sample without one (a run that recorded no probabilities) has it empty (NA, the column then a
nullable Int64), never -1, which code indexing a class array would silently read as the last class.

The top three other classes ride along as flat columns, ``candidate_1, candidate_1_prob, ...
candidate_3, candidate_3_prob`` (most likely first; candidate_1 is predicted_label): cleanlab's
report is a flat table, and flat columns read back the same from CSV, Parquet and a spreadsheet,
where a list column would be text in one and a list in the other. A sample with fewer candidates
has the rest empty (Int64 NA, probability NaN); a run from before candidates were recorded has
its suggestion as candidate_1 (unless it is the given label), as the review cards show it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dynacor import atomic
from dynacor.errors import InputError
from dynacor.review.export import final_labels
from dynacor.review.exports.common import CANDIDATES, suggestions_of

CLEANLAB_COLUMNS = ["is_label_issue", "label_score", "given_label", "predicted_label"]
CANDIDATE_COLUMNS = [
    name
    for rank in range(1, CANDIDATES + 1)
    for name in (f"candidate_{rank}", f"candidate_{rank}_prob")
]
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
    given_label : int64, the given label
    predicted_label : int64, the detector's suggestion (nullable Int64, NA where there is none)
    id, path (when the run has images), flagged (bool, the detector's flag before review),
    decision ("" when undecided), final_label (nullable Int64, the label after review; empty
    for a removed sample)
    candidate_1 .. candidate_3 : nullable Int64, the top other classes, most likely first, and
    candidate_1_prob .. candidate_3_prob : float64, their probabilities (NA / NaN when fewer)
    """
    suggested = suggestions_of(samples)
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
            "predicted_label": _labels(suggested.label),
            "id": samples["id"].to_numpy(),
        }
    )
    if "path" in samples:
        table["path"] = reviewed["path"].to_numpy()
    table["flagged"] = flagged
    table["decision"] = decision
    table["final_label"] = reviewed["final_label"].to_numpy()
    table["final_label"] = table["final_label"].astype("Int64")
    for rank in range(CANDIDATES):
        table[f"candidate_{rank + 1}"] = _labels(suggested.candidates[:, rank], nullable=True)
        table[f"candidate_{rank + 1}_prob"] = suggested.candidate_probs[:, rank]
    return table


def _labels(
    values: np.ndarray, nullable: bool = False
) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """Class indices with -1 (none) as NA: int64, as cleanlab has them, when every sample has one
    (and not ``nullable``), else nullable Int64."""
    missing = values < 0
    if not nullable and not missing.any():
        return values.astype(np.int64)
    return pd.arrays.IntegerArray(values.astype(np.int64), missing)


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
