"""A data set relabelled by a review: the loop from review back to detection (or training).

`export.final_labels` says what the review decided for every sample (accept / relabel: the new
class; keep, unsure, undecided: the given label; remove: no label). `apply_review` applies that
to the `FeatureSet` of the same samples, matched by id, dropping the removed ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynacor.errors import InputError
from dynacor.method.featureset import FeatureSet


def apply_review(data: FeatureSet, final: pd.DataFrame, where: str) -> tuple[FeatureSet, dict]:
    """``data`` with the review's labels, without the removed samples.

    Parameters
    ----------
    data : the data set the reviewed run was made from (same ids)
    final : `dynacor.review.export.final_labels` of the reviewed run: ``id``, ``given_label``,
        ``final_label`` (NA: removed)
    where : the reviewed run, for messages

    Returns
    -------
    (relabelled data, counts: ``relabelled``, ``removed``, ``kept``)
    """
    ids = data.sample_ids().astype(str)
    table = final.assign(id=final["id"].astype(str)).drop_duplicates("id").set_index("id")
    unknown = ~np.isin(ids, table.index)
    if unknown.any():
        raise InputError(where, "id", "the same samples as the data set of this run (ids match)",
                         f"{int(unknown.sum())} of {len(ids)} ids not in the reviewed run, e.g. {ids[unknown][0]!r}")  # fmt: skip
    labels = table.loc[ids, "final_label"].astype("Int64").to_numpy()
    present = ~pd.isna(labels)
    if not present.any():
        raise InputError(where, "decisions", "a review that keeps at least one sample", "every sample removed")
    rows = np.flatnonzero(present)
    new_labels = labels[present].astype(np.int64)
    given = np.asarray(data.labels, dtype=np.int64)[rows]
    counts = {"relabelled": int((new_labels != given).sum()), "removed": int((~present).sum()), "kept": len(rows)}
    relabelled = data.subset(rows).with_labels(new_labels)
    relabelled.source = {**data.source, "labels_from_review": {"run": where, **counts}}
    return relabelled, counts
