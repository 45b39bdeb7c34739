"""A disk cache of backbone features: computed once per (images, backbone, weights, view).

The key hashes
- the data set's content: for file-backed data each image's path, size and modification time
  (``content=True``: its bytes); for in-memory data the pixels;
- the backbone's identity (name, model, pretrained tag, recipe version);
- the weights file's bytes (memoised per path, size and mtime within a process);
- the view (``orig`` or ``flip``).
So a changed, added, removed or reordered image, or a replaced weights file, gives a new key.
Entries are ``.npy`` files (float16, no pickle) written atomically (temporary file + rename) with
a small JSON note beside them. A missing entry raises `CacheMiss`; an entry that exists but cannot
be read or has the wrong shape raises `CacheCorrupt`, which `cached_features` answers by
recomputing with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynacor.atomic import save_npy, write_json
from dynacor.errors import CorruptError, MissingError

CACHE_ENV = "DYNACOR_CACHE"
KEY_VERSION = 1


class CacheMiss(MissingError):
    """No cache entry for this key."""


class CacheCorrupt(CorruptError):
    """A cache entry exists but is unreadable or does not match what was asked for."""


def default_cache_dir() -> Path:
    """``$DYNACOR_CACHE`` or ``~/.cache/dynacor/features``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dynacor" / "features"


# --------------------------------------------------------------------------------------------
# Fingerprints


def dataset_fingerprint(dataset: Any, content: bool = False) -> str:
    """Hex digest of the images of ``dataset``, in order.

    Parameters
    ----------
    dataset : an `dynacor.data.sources.ImageDataset`
    content : hash file bytes instead of (size, mtime) for file-backed data; slower on large
        photos, but blind to timestamps (e.g. a copy with new mtimes still hits)
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(f"dynacor-images-v{KEY_VERSION}\n".encode())
    if dataset.images is not None:
        images = np.ascontiguousarray(dataset.images)
        h.update(f"memory {images.shape} {images.dtype}\n".encode())
        h.update(memoryview(images).cast("B"))
        return h.hexdigest()
    # Paths relative to the source's root, so a moved or re-extracted folder still hits.
    root = (getattr(dataset, "source", None) or {}).get("root")
    for path in dataset.paths:
        st = os.stat(path)
        name = os.path.relpath(path, root) if root else str(path)
        h.update(f"{name}\0{st.st_size}\0".encode())
        if content:
            h.update(_file_digest(str(path), st.st_size, st.st_mtime_ns).encode())
        else:
            h.update(f"{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    key = (path, size, mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def weights_digest(path: str | os.PathLike[str] | None) -> str | None:
    """SHA-256 of a weights file (memoised per path, size and mtime), or None without a file."""
    if path is None:
        return None
    real = os.path.realpath(path)
    st = os.stat(real)
    return _file_digest(real, st.st_size, st.st_mtime_ns)


def cache_key(dataset_fp: str, identity: dict[str, Any], weights_hash: str | None, view: str) -> str:
    """The entry name for one view of one data set through one backbone."""
    blob = json.dumps({"v": KEY_VERSION, "data": dataset_fp, "backbone": identity, "weights": weights_hash, "view": view}, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=20).hexdigest()


# --------------------------------------------------------------------------------------------
# Store


class FeatureCache:
    """Feature arrays on disk under ``directory`` (default `default_cache_dir`)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npy"

    def load(self, key: str, num_samples: int | None = None, dim: int | None = None) -> np.ndarray:
        """The cached (N, D) float16 array for ``key``.

        Raises
        ------
        CacheMiss : no entry
        CacheCorrupt : the entry cannot be read, or its shape is not (num_samples, dim)
        """
        path = self.path(key)
        if not path.is_file():
            raise CacheMiss(f"{path}: no cached features")
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # truncated or overwritten files raise ValueError/OSError/EOFError
            raise CacheCorrupt(f"{path}: unreadable cached features ({type(exc).__name__}: {exc})") from None
        if arr.ndim != 2 or arr.dtype != np.float16:
            raise CacheCorrupt(f"{path}: cached features must be a 2-D float16 array, got {arr.dtype} {arr.shape}")
        if (num_samples is not None and arr.shape[0] != num_samples) or (dim is not None and arr.shape[1] != dim):
            raise CacheCorrupt(f"{path}: cached features have shape {arr.shape}, expected ({num_samples}, {dim})")
        if not np.isfinite(arr).all():
            raise CacheCorrupt(f"{path}: cached features hold NaN or inf")
        return arr

    def save(self, key: str, features: np.ndarray, note: dict[str, Any] | None = None) -> Path:
        """Store ``features`` (cast to float16) atomically; ``note`` goes to a JSON file beside it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = save_npy(self.path(key), np.asarray(features, dtype=np.float16))
        if note is not None:
            write_json(self.directory / f"{key}.json", {**note, "shape": list(np.shape(features)), "written": time.time()})
        return path


def cached_features(
    dataset: Any,
    backbone: Any,
    views: Sequence[str] = ("orig", "flip"),
    cache: FeatureCache | None = None,
    compute: Callable[[Sequence[str]], dict[str, np.ndarray]] | None = None,
    content: bool = False,
    on_event: Callable[[dict], None] | None = None,
) -> dict[str, np.ndarray]:
    """Features of each view, from the cache where present, computing (and storing) the rest.

    Parameters
    ----------
    dataset : an `dynacor.data.sources.ImageDataset`
    backbone : a `dynacor.data.backbones.Backbone` (its ``identity``, ``weights_file`` and ``dim``)
    views : which views
    cache : where entries live; None disables caching (everything is computed)
    compute : ``views -> {view: (N, D)}`` for the missing views; default
        ``extract_features(dataset, backbone, views)``
    content : hash image bytes rather than (size, mtime) (see `dataset_fingerprint`)
    on_event : receives ``{"type": "cache", "view", "status": "hit" | "miss" | "corrupt", "path"}``

    Returns
    -------
    ``{view: (N, D) float16}``
    """
    if compute is None:
        from dynacor.data.backbones import extract_features

        def compute(todo: Sequence[str]) -> dict[str, np.ndarray]:
            return extract_features(dataset, backbone, views=todo)

    if cache is None:
        return {v: np.asarray(a, dtype=np.float16) for v, a in compute(list(views)).items()}

    fp = dataset_fingerprint(dataset, content=content)
    whash = weights_digest(backbone.weights_file)
    keys = {v: cache_key(fp, backbone.identity, whash, v) for v in views}
    found: dict[str, np.ndarray] = {}
    for view, key in keys.items():
        status = "hit"
        try:
            found[view] = cache.load(key, len(dataset), backbone.dim)
        except CacheMiss:
            status = "miss"
        except CacheCorrupt as exc:
            status = "corrupt"
            warnings.warn(f"{exc}; recomputing", stacklevel=2)
        if on_event is not None:
            on_event({"type": "cache", "view": view, "status": status, "path": str(cache.path(key))})
    todo = [v for v in views if v not in found]
    if todo:
        fresh = compute(todo)
        for view in todo:
            arr = np.asarray(fresh[view], dtype=np.float16)
            note = {"view": view, "backbone": backbone.identity, "weights_file": backbone.weights_file,
                    "weights_sha256": whash, "dataset": fp, "source": getattr(dataset, "source", {})}
            cache.save(keys[view], arr, note)
            found[view] = arr
    return {v: found[v] for v in views}
