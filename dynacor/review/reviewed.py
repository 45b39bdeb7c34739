"""A finished run with what its review decided, as the CLI and the app hand it to other tools
(`dynacor.review.exports`) or back to detection (`relabel_request`).

The run directory is read by the caller (`dynacor.runs.store`, a sibling layer this package does
not import): `ReviewedRun.of` takes its table, id and ``run.json`` and adds the latest decisions.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dynacor import atomic
from dynacor.errors import InputError
from dynacor.review import exports
from dynacor.review.export import final_labels
from dynacor.review.relabel import apply_review
from dynacor.review.store import ReviewStore


@dataclass
class ReviewedRun:
    """A finished run with what its review decided."""

    path: Path
    run_id: str
    samples: pd.DataFrame
    latest: pd.DataFrame
    class_names: list[str]
    store: ReviewStore
    source: dict

    @classmethod
    def of(cls, path: str | Path, run_id: str, samples: pd.DataFrame, info: Mapping, store: ReviewStore) -> ReviewedRun:
        """The run at ``path`` (its table ``samples``, ``run_id`` and ``run.json`` as ``info``)
        with its latest decisions in ``store``."""
        names = exports.class_list(samples, info.get("class_names"))
        latest = store.latest_decisions(run_id)
        return cls(Path(path), run_id, samples, latest, names, store, info.get("source") or {})


def image_files(run: ReviewedRun) -> list[str]:
    """Each sample's image as a file FiftyOne and Label Studio can open: absolute paths as they
    are, relative ones under the source's ``root``. Images inside a tar archive (the built-in
    sample) are extracted once into ``RUN_DIR/exports/images/``. Raises `InputError` when the
    run has no images."""
    paths = exports.images_of(run.samples, str(run.path / "samples.parquet"))
    root = run.source.get("root")
    archive = str(run.source.get("file") or "")
    archive = archive if archive.endswith(".tar") else None
    extracted = run.path / "exports" / "images"
    out, members = [], []
    for path in paths:
        if Path(path).is_absolute():
            out.append(path)
        elif root:
            out.append(str(Path(root) / path))
        elif archive:
            out.append(str((extracted / path).resolve()))
            members.append(path)
        else:
            out.append(path)
    if members:
        _extract(archive, members, extracted)
    return out


def _extract(archive: str, members: list[str], dest: Path) -> None:
    """Copy ``members`` of the tar ``archive`` to ``dest`` (same relative paths), those not there
    yet; each file written atomically. A member the archive lacks stays missing, as in the app."""
    base = dest.resolve()
    wanted = {m for m in members if not (dest / m).is_file()}
    for name in wanted:
        if not (base / name).resolve().is_relative_to(base):
            raise InputError(archive, "path", "a member name inside the archive", repr(name))
    if not wanted:
        return
    try:
        with tarfile.open(archive) as tar:
            for member in tar:  # one pass: looking each name up would rescan the archive
                if member.name not in wanted or not member.isfile():
                    continue
                handle = tar.extractfile(member)
                target = base / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_bytes(target, handle.read())
    except (OSError, tarfile.TarError) as exc:
        raise InputError(archive, None, "a readable tar archive (the run's images)", exc) from None


def relabel_request(request, run: ReviewedRun, read_now: bool = False) -> None:
    """Give ``request`` (a `dynacor.runs.request.Prepared`) the labels the review of ``run``
    decided (`dynacor.review.relabel.apply_review`: accepted and relabelled classes, removed
    samples left out). ``read_now``: the data is already read (a feature file), so ids that do
    not match raise here and nothing is written; image sources are relabelled when the worker has
    read them."""
    final = final_labels(run.samples, run.latest)
    where = str(run.path)
    inner = request.loader
    recorded = {"run": where, "run_id": run.run_id, "decisions": int(len(run.latest))}

    def loader(on_event, should_stop):  # noqa: ANN001, ANN202
        data, counts = apply_review(inner(on_event, should_stop), final, where)
        data.source["labels_from_review"] = {**recorded, **counts}
        return data

    if read_now:
        data = loader(lambda event: None, lambda: False)
        request.loader = lambda on_event, should_stop: data
    else:
        request.loader = loader
    request.source["labels_from_review"] = recorded
