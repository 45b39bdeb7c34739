"""Feature directories: the on-disk form of a large feature set, read memory-mapped.

A feature file small enough for memory is read whole (`dynacor.data.featurefile`); a data set of a
million images is not. Its features live in a directory the engine memory-maps, so only the rows a
mini-batch gathers are ever paged in::

    FEATURES_DIR/manifest.json     written last: its presence means the directory is complete
    FEATURES_DIR/features.npy      (N, D) float16
    FEATURES_DIR/features_aug.npy  (N, D) float16, the flip view the copies are trained on (optional)
    FEATURES_DIR/samples.parquet   id (str), label (int), optional clean_label (int), path (str)

``dynacor features`` writes one from images; `npz_to_feature_dir` streams an ``.npz`` into one
without loading it (the ``.npy`` members of an uncompressed archive are copied in blocks).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynacor import atomic
from dynacor.errors import CorruptError, InputError, MissingError
from dynacor.method.featureset import FeatureSet
from dynacor.method.validate import check_featureset

FORMAT = "dynacor-features"
VERSION = 1
MANIFEST = "manifest.json"
VIEW_FILES = {"plain": "features.npy", "flip": "features_aug.npy"}
SAMPLES = "samples.parquet"
# Rows copied per block when streaming: bounds memory to a few MiB whatever N is.
BLOCK_ROWS = 65536


def is_feature_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a directory holding a complete feature directory."""
    return (Path(path) / MANIFEST).is_file()


class FeatureDirBuilder:
    """Writes a feature directory: fill the views' memory-mapped arrays, then `commit`.

    Until `commit` returns, the arrays live under temporary names and no manifest exists, so a
    crash never leaves a directory that reads as complete.

    Parameters
    ----------
    path : the directory (created; an existing feature directory in it is replaced on commit)
    num_samples, dim : N and D
    views : which of ``"plain"`` and ``"flip"`` to write
    """

    def __init__(
        self, path: str | os.PathLike[str], num_samples: int, dim: int, views: Sequence[str] = ("plain", "flip")
    ):
        self.path = Path(path)
        self.num_samples = int(num_samples)
        self.dim = int(dim)
        self.views = tuple(views)
        unknown = [v for v in self.views if v not in VIEW_FILES]
        if "plain" not in self.views or unknown:
            raise InputError(str(path), "views", f"'plain' and optionally 'flip', from {sorted(VIEW_FILES)}", list(views))
        self.path.mkdir(parents=True, exist_ok=True)
        self._arrays: dict[str, np.memmap] = {}

    def _temp(self, view: str) -> Path:
        return self.path / f".{VIEW_FILES[view]}.{os.getpid()}.tmp"

    def array(self, view: str = "plain") -> np.memmap:
        """The writable (N, D) float16 array of one view."""
        if view not in self.views:
            raise InputError(str(self.path), "views", f"one of {self.views}", repr(view))
        if view not in self._arrays:
            self._arrays[view] = np.lib.format.open_memmap(
                self._temp(view), mode="w+", dtype=np.float16, shape=(self.num_samples, self.dim)
            )
        return self._arrays[view]

    def commit(self, samples, source: dict[str, Any] | None = None, class_names: Sequence[str] | None = None) -> Path:
        """Flush the arrays, move them into place, write the samples table and, last, the manifest.

        samples : pandas DataFrame of N rows with ``label`` and optionally ``id``, ``path``,
        ``clean_label``.
        """
        if len(samples) != self.num_samples:
            raise InputError(str(self.path), "samples", f"{self.num_samples} rows", len(samples))
        missing = [v for v in self.views if v not in self._arrays]
        if missing:
            raise InputError(str(self.path), "views", "every declared view filled before commit", f"{missing} unfilled")
        manifest_path = self.path / MANIFEST
        manifest_path.unlink(missing_ok=True)  # the directory stops reading as complete first
        for view, array in self._arrays.items():
            array.flush()
            del array
            os.replace(self._temp(view), self.path / VIEW_FILES[view])
        self._arrays.clear()
        for view, name in VIEW_FILES.items():
            if view not in self.views:
                (self.path / name).unlink(missing_ok=True)
        table = samples.copy()
        if "id" in table:
            table["id"] = table["id"].astype(str)
        if "path" in table:
            table["path"] = table["path"].fillna("").astype(str)
        tmp = self.path / f".{SAMPLES}.{os.getpid()}.tmp"
        table.to_parquet(tmp, index=False)
        os.replace(tmp, self.path / SAMPLES)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "num_samples": self.num_samples,
            "dim": self.dim,
            "dtype": "float16",
            "views": list(self.views),
            "source": dict(source or {}),
            "class_names": None if class_names is None else [str(c) for c in class_names],
        }
        atomic.write_text(manifest_path, json.dumps(manifest, indent=2, default=str))
        return self.path


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a complete feature directory (MissingError / CorruptError otherwise)."""
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        raise MissingError(f"{path}: not a complete feature directory (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptError(f"{file}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptError(f"{file}: field `format` must be {FORMAT!r}, got {manifest.get('format') if isinstance(manifest, dict) else manifest!r}")
    if manifest.get("version") != VERSION:
        raise CorruptError(f"{file}: field `version` must be {VERSION}, got {manifest.get('version')!r}")
    return manifest


def load_feature_dir(path: str | os.PathLike[str], labels_key: str = "label", needs_clean: bool = False) -> FeatureSet:
    """A `FeatureSet` whose features are read-only memory maps of the directory's arrays.

    labels_key : the samples table's column of given labels (``label``, or e.g. ``worse_label``);
    an ``.npz`` key works too (``labels`` -> ``label``, ``worse_labels`` -> ``worse_label``) so that
    ``--labels-key`` means the same for a file and for the directory streamed from it.
    """
    import pandas as pd

    path = Path(path)
    manifest = read_manifest(path)
    n, d = int(manifest["num_samples"]), int(manifest["dim"])
    arrays: dict[str, np.ndarray] = {}
    for view in manifest.get("views", ["plain"]):
        file = path / VIEW_FILES[view]
        try:
            arrays[view] = np.load(file, mmap_mode="r")
        except FileNotFoundError:
            raise CorruptError(f"{file}: listed in the manifest but missing") from None
        except (OSError, ValueError) as exc:
            raise CorruptError(f"{file}: unreadable array ({exc})") from None
        if arrays[view].shape != (n, d):
            raise CorruptError(f"{file}: shape must be {(n, d)} as the manifest says, got {arrays[view].shape}")
    try:
        samples = pd.read_parquet(path / SAMPLES)
    except FileNotFoundError:
        raise CorruptError(f"{path / SAMPLES}: missing") from None
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise CorruptError(f"{path / SAMPLES}: unreadable ({exc})") from None
    column = labels_key if labels_key in samples else _column_name(labels_key)
    if column not in samples:
        raise InputError(path / SAMPLES, column, "a column of given labels", f"columns {list(samples.columns)}")

    def optional(name: str) -> np.ndarray | None:
        return samples[name].to_numpy() if name in samples else None

    data = FeatureSet(
        features=arrays["plain"],
        labels=samples[column].to_numpy(),
        features_aug=arrays.get("flip"),
        clean_labels=optional("clean_label"),
        ids=optional("id"),
        class_names=manifest.get("class_names"),
        paths=optional("path"),
        source={"kind": "feature_dir", "file": str(path.resolve()), "labels_key": labels_key,
                **{k: v for k, v in manifest.get("source", {}).items() if k not in ("kind", "file")}},
    )  # fmt: skip
    return check_featureset(data, str(path), needs_clean=needs_clean)


def npz_to_feature_dir(npz: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Stream an ``.npz`` feature file into a feature directory, ``BLOCK_ROWS`` rows at a time.

    ``features`` (and ``features_aug``) are copied as float16 without loading them whole; every
    other 1-D array of the archive (labels, clean_labels, worse_labels, ids, paths, ...) becomes a
    column of the samples table (``labels`` -> ``label``, ``clean_labels`` -> ``clean_label``,
    ``ids`` -> ``id``, ``paths`` -> ``path``, ``*_labels`` -> ``*_label``).
    """
    import pandas as pd

    npz = Path(npz)
    try:
        archive = zipfile.ZipFile(npz)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(npz, None, "a valid .npz archive", f"unreadable file ({exc})") from None
    with archive:
        members = {Path(name).stem: name for name in archive.namelist() if name.endswith(".npy")}
        if "features" not in members:
            raise InputError(npz, "features", "present", f"keys {sorted(members)}")
        with archive.open(members["features"]) as stream:
            n, d = _npy_header(stream, npz, "features")[0]
        views = ("plain", "flip") if "features_aug" in members else ("plain",)
        builder = FeatureDirBuilder(out, n, d, views)
        for view, key in (("plain", "features"), ("flip", "features_aug")):
            if view in views:
                _copy_rows(archive, members[key], builder.array(view), npz, key)
        columns: dict[str, np.ndarray] = {}
        class_names = None
        for key, name in members.items():
            if key in ("features", "features_aug"):
                continue
            with archive.open(name) as stream:
                try:
                    values = np.lib.format.read_array(stream, allow_pickle=False)
                except ValueError as exc:
                    raise InputError(npz, key, "a plain numeric or string array (no pickled objects)", str(exc)) from None
            if key == "class_names":
                class_names = [str(c) for c in values.reshape(-1).tolist()]
            elif values.ndim == 1 and len(values) == n:
                columns[_column_name(key)] = values
    if "label" not in columns and not any(c.endswith("_label") for c in columns):
        shutil.rmtree(out, ignore_errors=True)
        raise InputError(npz, "labels", "present (one label per row)", f"keys {sorted(members)}")
    samples = pd.DataFrame(columns)
    if "id" not in samples:
        samples.insert(0, "id", np.arange(n).astype(str))
    return builder.commit(samples, source={"converted_from": str(npz.resolve())}, class_names=class_names)


def _column_name(key: str) -> str:
    renamed = {"labels": "label", "clean_labels": "clean_label", "ids": "id", "paths": "path"}
    if key in renamed:
        return renamed[key]
    return key[: -len("s")] if key.endswith("_labels") else key


def _npy_header(stream, file: Path, key: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(stream)
        if version not in readers:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = readers[version](stream)
    except ValueError as exc:
        raise InputError(file, key, "a .npy array", f"unreadable header ({exc})") from None
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise InputError(file, key, "a non-empty 2-D array (N samples, D dimensions)", f"shape {shape}")
    if fortran or not np.issubdtype(dtype, np.number):
        raise InputError(file, key, "a C-ordered numeric array", f"dtype {dtype}, fortran order {fortran}")
    return shape, dtype, fortran


def _copy_rows(archive: zipfile.ZipFile, member: str, target: np.ndarray, file: Path, key: str) -> None:
    with archive.open(member) as stream:
        shape, dtype, _ = _npy_header(stream, file, key)
        if tuple(shape) != target.shape:
            raise InputError(file, key, f"shape {target.shape} like `features`", f"shape {tuple(shape)}")
        row_bytes = dtype.itemsize * shape[1]
        for start in range(0, shape[0], BLOCK_ROWS):
            rows = min(BLOCK_ROWS, shape[0] - start)
            block = np.frombuffer(_read_exact(stream, rows * row_bytes, file, key), dtype=dtype).reshape(rows, shape[1])
            if not np.isfinite(block).all():
                raise InputError(file, key, "finite numbers (no NaN or inf)", f"a non-finite value in rows {start}-{start + rows - 1}")
            target[start : start + rows] = block


def _read_exact(stream, size: int, file: Path, key: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise InputError(file, key, "as many bytes as its header says", f"a truncated array ({len(data)} of {size} bytes)")
    return data
