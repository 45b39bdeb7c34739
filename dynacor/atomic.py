"""Atomic file writes: write a temporary file next to the target, then ``os.replace`` it.

A reader sees either the old file or the complete new one, never a half-written file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def write_with(path: str | Path, writer: Callable[[IO[bytes]], None]) -> Path:
    """Call ``writer`` on a temporary binary file, fsync it, and move it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda handle: handle.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=True) + "\n")


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    return write_with(path, lambda handle: np.save(handle, np.asarray(array), allow_pickle=False))


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    def writer(handle: IO[bytes]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
        handle.write(buffer.getvalue())

    return write_with(path, writer)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
