"""Reading feature files (.npz, .parquet) into a `FeatureSet`. Pure I/O plus the boundary check."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from dynacor.data.feature_cache import default_cache_dir
from dynacor.data.feature_dir import is_feature_dir, load_feature_dir, npz_to_feature_dir
from dynacor.errors import InputError, MissingError
from dynacor.method.featureset import FeatureSet
from dynacor.method.validate import check_featureset

OPTIONAL_KEYS = ("features_aug", "clean_labels", "ids", "class_names", "paths")
# An .npz larger than this is streamed once into a memory-mapped feature directory in the cache
# instead of being read whole (DYNACOR_STREAM_BYTES overrides; 0 streams every file).
STREAM_BYTES = int(os.environ.get("DYNACOR_STREAM_BYTES", 2**30))


def streamed_copy(npz: Path) -> Path:
    """The feature directory streamed from ``npz`` (made on first use, then reused while the file
    keeps its size and modification time), under the feature cache."""
    stat = npz.stat()
    key = hashlib.sha256(f"{npz.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    target = default_cache_dir() / "feature_dirs" / key
    if not is_feature_dir(target):
        npz_to_feature_dir(npz, target)
    return target


def load_features(path: str | Path, labels_key: str = "labels", needs_clean: bool = False) -> FeatureSet:
    """Load and check a feature file.

    Parameters
    ----------
    path : ``.npz`` with ``features`` (N, D), a labels array (N,), and optionally ``features_aug``,
        ``clean_labels``, ``ids``, ``class_names``, ``paths``; or ``.parquet`` with a ``features``
        column of equal-length lists, a ``label`` (or ``labels``) column and optional
        ``clean_label``, ``id``, ``path`` columns
    labels_key : which array (npz) or column (parquet) holds the given labels, e.g. ``worse_labels``
    needs_clean : require ``clean_labels`` (to apply synthetic noise)
    """
    path = Path(path)
    if not path.exists():
        raise MissingError(f"{path}: no such file")
    if path.is_dir():
        if not is_feature_dir(path):
            raise InputError(path, None, "a feature file (.npz or .parquet) or a feature directory (with manifest.json)",
                             "a directory without manifest.json")  # fmt: skip
        return load_feature_dir(path, labels_key, needs_clean=needs_clean)
    if path.stat().st_size == 0:
        raise InputError(path, None, "a non-empty .npz or .parquet file", "an empty file")
    suffix = path.suffix.lower()
    if suffix == ".npz" and path.stat().st_size > STREAM_BYTES:
        return load_feature_dir(streamed_copy(path), labels_key, needs_clean=needs_clean)
    if suffix == ".npz":
        data = _load_npz(path, labels_key)
    elif suffix in (".parquet", ".pq"):
        data = _load_parquet(path, labels_key)
    else:
        raise InputError(path, None, "a .npz or .parquet feature file", f"suffix {suffix or 'none'!r}")
    data.source = {"kind": "features", "file": str(path.resolve()), "labels_key": labels_key}
    return check_featureset(data, str(path), needs_clean=needs_clean)


def _load_npz(path: Path, labels_key: str) -> FeatureSet:
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(path, None, "a valid .npz archive", f"unreadable file ({exc})") from None
    with archive:
        keys = set(archive.files)

        def get(key: str) -> np.ndarray | None:
            if key not in keys:
                return None
            try:
                return archive[key]
            except ValueError as exc:  # object arrays need pickle, which we refuse
                raise InputError(path, key, "a plain numeric or string array (no pickled objects)", str(exc)) from None

        for key in ("features", labels_key):
            if key not in keys:
                raise InputError(path, key, "present", f"keys {sorted(keys)}")
        # float16 stays float16: the engine converts only the rows of each mini-batch.
        return FeatureSet(
            features=get("features"),
            labels=get(labels_key),
            features_aug=get("features_aug"),
            clean_labels=get("clean_labels"),
            ids=get("ids"),
            class_names=None if "class_names" not in keys else list(get("class_names").tolist()),
            paths=get("paths"),
        )


def _load_parquet(path: Path, labels_key: str) -> FeatureSet:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise InputError(path, None, "a valid Parquet file", f"unreadable file ({exc})") from None
    label_col = labels_key if labels_key in frame.columns else ("label" if labels_key == "labels" else labels_key)
    for col in ("features", label_col):
        if col not in frame.columns:
            raise InputError(path, col, "a column", f"columns {list(frame.columns)}")

    def matrix(col: str) -> np.ndarray:
        try:
            return np.stack([np.asarray(v, dtype=np.float32) for v in frame[col]])
        except ValueError:
            raise InputError(path, col, "lists of numbers of equal length", "ragged or non-numeric rows") from None

    def optional(col: str) -> np.ndarray | None:
        return frame[col].to_numpy() if col in frame.columns else None

    return FeatureSet(
        features=matrix("features"),
        labels=frame[label_col].to_numpy(),
        features_aug=matrix("features_aug") if "features_aug" in frame.columns else None,
        clean_labels=optional("clean_label"),
        ids=optional("id"),
        paths=optional("path"),
    )
