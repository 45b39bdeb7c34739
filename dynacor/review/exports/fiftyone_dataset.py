"""A FiftyOne dataset of a reviewed run (the ``fiftyone`` extra), written as a FiftyOne dataset
folder (``fo.types.FiftyOneDataset``, media left where they are).

Per sample: ``ground_truth`` (the given label), ``final`` (the label after review; absent for a
removed sample), ``dynacor`` (the suggested label, confidence = the classifier's probability of
it; absent when the run has no suggestion), ``dynacor_candidates`` (``fo.Classifications``: the
top other classes, most likely first, each with its probability as confidence; the first is the
suggestion; absent when there is none), ``noisy_score``, ``flagged``, ``dynacor_id``,
``decision``, ``annotator``, and tags: ``flagged`` and ``review:<decision>``. The run's 2-D map,
when given, is a visualization under the brain key ``dynacor_map``
(``compute_visualization(method="manual")``).

Open it with ``fiftyone datasets create --name NAME --dataset-dir DIR --type
fiftyone.types.FiftyOneDataset`` and ``fiftyone app launch NAME``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dynacor.errors import InputError, MissingError
from dynacor.review.export import final_labels
from dynacor.review.exports.common import name_of, suggestions_of

BRAIN_KEY = "dynacor_map"
INSTALL = "pip install 'dynacor[fiftyone]'"
# What a FiftyOneDataset folder holds at its top: an earlier export may be replaced, nothing else.
EXPORT_MARKERS = ("metadata.json", "samples.json")


def fiftyone_rows(
    samples: pd.DataFrame, latest: pd.DataFrame, class_names: Sequence[str], images: Sequence[str]
) -> list[dict]:
    """What each FiftyOne sample holds, input order: ``filepath``, ``ground_truth``, ``final``
    (None when removed), ``suggested``, ``confidence`` (None when the run has no probability),
    ``noisy_score``, ``flagged``, ``dynacor_id``, ``decision``, ``annotator``, ``tags``, and
    ``candidates`` (a list of ``(name, confidence or None)``, most likely first). ``suggested`` is
    None when the sample has no suggestion (a run that recorded no probabilities)."""
    reviewed = final_labels(samples, latest)
    suggestion = suggestions_of(samples)
    rows = []
    columns = zip(images, reviewed["id"].astype(str), samples["given_label"].astype(int),
                  suggestion.label, reviewed["final_label"], suggestion.prob,
                  suggestion.candidates, suggestion.candidate_probs,
                  samples["noisy_score"].astype(float), samples["flagged"].astype(bool), reviewed["decision"],
                  reviewed["annotator"], strict=True)  # fmt: skip
    for (path, key, given, suggested, final, prob, candidates, candidate_probs, score, flagged,
         decision, annotator) in columns:  # fmt: skip
        tags = (["flagged"] if flagged else []) + ([f"review:{decision}"] if decision else [])
        ranked = [
            (class_names[int(c)], None if np.isnan(p) else float(p))
            for c, p in zip(candidates, candidate_probs, strict=True)
            if c >= 0
        ]
        rows.append(
            {
                "filepath": str(path),
                "dynacor_id": key,
                "ground_truth": class_names[given],
                "final": None if pd.isna(final) else class_names[int(final)],
                "suggested": name_of(class_names, int(suggested)),
                "confidence": None if np.isnan(prob) else float(prob),
                "candidates": ranked,
                "noisy_score": None if np.isnan(score) else float(score),
                "flagged": bool(flagged),
                "decision": str(decision),
                "annotator": str(annotator),
                "tags": tags,
            }
        )
    return rows


def fiftyone_unavailable() -> str | None:
    """Why a FiftyOne dataset cannot be written here (not installed, or its database does not
    start), or None when it can. Starts FiftyOne's database when it is not running."""
    try:
        import fiftyone.core.odm as foo
    except ImportError as exc:
        return f"FiftyOne is not installed ({exc}): {INSTALL}"
    try:
        foo.get_db_conn()
    except Exception as exc:  # noqa: BLE001 - any reason its MongoDB cannot start is the answer
        return f"FiftyOne's database (MongoDB) cannot start: {type(exc).__name__}: {exc}"
    return None


def write_dataset(
    rows: list[dict], out_dir: str | os.PathLike[str], points: np.ndarray | None = None
) -> Path:
    """Build the dataset from `fiftyone_rows` (and the (N, 2) map ``points``, one per row) and
    write it as a FiftyOne dataset folder at ``out_dir``, replacing an earlier export there.

    The folder appears complete or not at all: the export is written next to it and renamed into
    place. The dataset built on the way is temporary (deleted from FiftyOne's database).
    Raises `MissingError` when FiftyOne cannot run, `InputError` for a bad ``out_dir`` or map.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir)
    if points is not None:
        points = np.asarray(points, dtype=np.float64)
        if points.shape != (len(rows), 2):
            raise InputError(
                out_dir,
                "points",
                f"a ({len(rows)}, 2) map, one point per sample",
                f"shape {points.shape}",
            )
    reason = fiftyone_unavailable()
    if reason is not None:
        raise MissingError(reason)
    import fiftyone as fo
    import fiftyone.brain as fob

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    dataset = fo.Dataset(f"dynacor-{uuid.uuid4().hex}")
    try:
        # Declared up front: a field whose every value is None would otherwise not exist.
        for field, kind in (("final", fo.Classification), ("dynacor", fo.Classification),
                            ("dynacor_candidates", fo.Classifications)):  # fmt: skip
            dataset.add_sample_field(field, fo.EmbeddedDocumentField, embedded_doc_type=kind)
        dataset.add_samples([_sample(fo, row) for row in rows], progress=False)
        if points is not None:
            fob.compute_visualization(
                dataset, method="manual", points=points, brain_key=BRAIN_KEY, progress=False
            )
        staging = Path(
            tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent)
        )
        try:
            dataset.export(export_dir=str(staging), dataset_type=fo.types.FiftyOneDataset, export_media=False,
                           overwrite=True, progress=False)  # fmt: skip
            _swap_in(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        dataset.delete()
    return out_dir


def _sample(fo, row: dict):  # noqa: ANN001
    fields = {
        "ground_truth": fo.Classification(label=row["ground_truth"]),
        "noisy_score": row["noisy_score"],
        "flagged": row["flagged"],
        "dynacor_id": row["dynacor_id"],
        "decision": row["decision"],
        "annotator": row["annotator"],
    }
    if row["final"] is not None:
        fields["final"] = fo.Classification(label=row["final"])
    # No suggestion is no prediction: an absent field, not a made-up class.
    if row["suggested"] is not None:
        fields["dynacor"] = fo.Classification(label=row["suggested"], confidence=row["confidence"])
    if row.get("candidates"):
        fields["dynacor_candidates"] = fo.Classifications(classifications=[
            fo.Classification(label=name, confidence=confidence) for name, confidence in row["candidates"]
        ])  # fmt: skip
    return fo.Sample(filepath=row["filepath"], tags=list(row["tags"]), **fields)


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "--out", "a folder for the FiftyOne dataset", "an existing file")
    if (
        out_dir.is_dir()
        and any(out_dir.iterdir())
        and not all((out_dir / m).exists() for m in EXPORT_MARKERS)
    ):
        raise InputError(out_dir, "--out", "a new or empty folder, or an earlier FiftyOne export to replace",
                         "a folder holding other files")  # fmt: skip


def _swap_in(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)
