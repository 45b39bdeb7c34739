"""Image data sources: folder, manifest, CIFAR (+ CIFAR-N human labels), the built-in sample.

Every source returns an `ImageDataset`: the images (as files or as an in-memory uint8 array),
their given labels, class names, optional clean labels, and a ``source`` dict saying where the
data came from, so a run can record it and the app can show each sample's image later.

Bad input raises `dynacor.errors.InputError` (message ``FILE: field `x` must be ..., got ...``) or
`dynacor.errors.MissingError`. Unreadable images are not errors: they are skipped, listed in a
warning and recorded in ``ImageDataset.skipped``; a source with no readable image left is an error.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tarfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dynacor.errors import InputError, MissingError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

# CIFAR-N label files: our name for each label set -> the key in the file.
HUMAN_LABELS = {
    "aggre": "aggre_label",
    "worse": "worse_label",
    "random1": "random_label1",
    "random2": "random_label2",
    "random3": "random_label3",
    "noisy100": "noisy_label",
}

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"
SAMPLE_TAR = "cifar10_sample.tar"
SAMPLE_MANIFEST = "manifest.csv"
SAMPLE_NOISE = "sym:0.2"


@dataclass
class SkippedFile:
    """An input file that was left out, and why."""

    path: str
    reason: str


@dataclass
class ImageDataset:
    """N labelled images in C classes, from files or in memory.

    Attributes
    ----------
    labels : (N,) int64 in [0, C), the given (possibly noisy) labels
    class_names : (C,) str
    ids : (N,) int64 or str, stable identifiers (manifest ``id``, CIFAR index, or row index)
    paths : (N,) str. For file-backed data the absolute path of each image; for in-memory data a
        display name (e.g. ``cifar10/train/cat/0005.jpg``)
    images : (N, H, W, 3) uint8 or None. In-memory pixels (CIFAR, built-in sample); None when the
        images are read from ``paths``
    clean_labels : (N,) int64 or None, ground truth (for metrics only)
    source : where the data came from (``kind``, ``root``/``file``, ...), saved with the run
    skipped : files left out because they could not be read (never silently)
    """

    labels: np.ndarray
    class_names: list[str]
    ids: np.ndarray
    paths: np.ndarray
    images: np.ndarray | None = None
    clean_labels: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def image(self, index: int, draft: tuple[int, int] | None = None) -> Image.Image:
        """The ``index``-th image as an RGB PIL image (read from disk for file-backed data;
        ``draft``: see `open_rgb`)."""
        if self.images is not None:
            return Image.fromarray(self.images[index])
        return open_rgb(self.paths[index], draft=draft)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageDataset:
        """The samples at ``indices`` (same classes, same source, skipped list kept)."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            labels=self.labels[idx],
            ids=self.ids[idx],
            paths=self.paths[idx],
            images=None if self.images is None else self.images[idx],
            clean_labels=None if self.clean_labels is None else self.clean_labels[idx],
            source={**self.source, "subset": int(idx.size)},
            skipped=list(self.skipped),
        )


# --------------------------------------------------------------------------------------------
# Reading images


def open_rgb(path: str | os.PathLike[str], draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image file fully and convert it to RGB (any mode: L, P, RGBA, CMYK, I;16 ...).

    ``draft`` (W, H): a JPEG larger than this is decoded at the largest reduced scale (1/2, 1/4,
    1/8) that keeps it at least this size (`PIL.Image.Image.draft`); other formats decode fully.

    Raises OSError / ValueError / Image.DecompressionBombError for unreadable files.
    """
    with Image.open(path) as im:
        if draft is not None:
            im.draft(None, draft)
        im.load()
        return _to_rgb(im)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping (convert("RGB") would clip).
        arr = np.asarray(im, dtype=np.float64)
        top = max(float(arr.max()), 1.0)
        arr = np.clip(arr * (255.0 / (65535.0 if top > 255 else 255.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels over white, as viewers show them, rather than over black.
        rgba = im.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(back, rgba).convert("RGB")
    return im.convert("RGB")


def check_image(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it decodes completely.

    Decodes the whole file (a header check misses truncated files); JPEGs are decoded at reduced
    scale, which still reads every byte of the stream but is several times faster on large photos.
    """
    return _check(path, decode=True)


def check_header(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not an image as far as its header tells, or None.

    Reads only the first bytes: non-images, empty files and zero-size images are caught, a
    truncated or corrupt pixel stream is not (the decoder reports it when the image is used).
    """
    return _check(path, decode=False)


def _check(path: str | os.PathLike[str], decode: bool) -> str | None:
    try:
        with Image.open(path) as im:
            if decode:
                if im.format == "JPEG":
                    im.draft("RGB", (64, 64))
                im.load()
            if im.width < 1 or im.height < 1:
                return "empty image"
    except Image.DecompressionBombError as exc:
        return f"too large ({exc})"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # PIL raises UnidentifiedImageError (an OSError) for non-images, OSError for truncation.
        return f"not a readable image ({type(exc).__name__}: {exc})"
    return None


CHECKS = ("full", "header", "none")


def _checker(check: bool | str, where: str) -> Callable[[str | os.PathLike[str]], str | None] | None:
    """The per-file check of a ``check`` argument: `check_image`, `check_header` or None."""
    mode = {True: "full", False: "none"}.get(check, check) if isinstance(check, bool) else check
    if mode not in CHECKS:
        raise InputError(where, "check", f"True, False or one of {CHECKS}", repr(check))
    return {"full": check_image, "header": check_header, "none": None}[mode]


def _warn_skipped(where: str, skipped: list[SkippedFile]) -> None:
    if not skipped:
        return
    shown = "\n".join(f"  {s.path}: {s.reason}" for s in skipped[:20])
    more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    warnings.warn(f"{where}: skipped {len(skipped)} file(s) that could not be used:\n{shown}{more}", stacklevel=3)


def _list_dir(path: Path, where: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except PermissionError as exc:
        raise InputError(where, None, "a readable directory", f"permission denied ({exc.strerror})") from None
    except NotADirectoryError:
        raise InputError(where, None, "a directory", "a file") from None
    except FileNotFoundError:
        raise MissingError(f"{where}: no such directory") from None


# --------------------------------------------------------------------------------------------
# Image folder


def load_image_folder(root: str | os.PathLike[str], check: bool | str = True) -> ImageDataset:
    """Images laid out as ``root/<class_name>/<file>``; classes in sorted folder order.

    Parameters
    ----------
    root : the folder holding one sub-folder per class
    check : ``full`` (or True): decode every image now, so unreadable ones are skipped here rather
        than failing later; ``header``: read only each file's header (cheap; a truncated file is
        found when it is decoded); ``none`` (or False): list files by extension only. The last two
        are for extraction that reports broken images where it decodes them
        (`dynacor.data.extract`)

    Files whose names start with ``.`` (``.DS_Store``, editor files) are ignored. Non-image files
    and unreadable images are skipped with a warning and recorded in ``skipped``. A class folder
    with no usable image is dropped with a warning (its class does not exist in this data set).

    Raises
    ------
    MissingError : ``root`` does not exist
    InputError : ``root`` unreadable, no class sub-folders, fewer than 2 classes with images
    """
    root_path = Path(root).expanduser().resolve()
    where = str(root_path)
    checker = _checker(check, where)
    if not root_path.exists():
        raise MissingError(f"{where}: no such directory (expected one sub-folder per class)")
    entries = _list_dir(root_path, where)
    class_dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not class_dirs:
        got = f"{sum(1 for e in entries if e.is_file())} file(s) and no sub-folder"
        raise InputError(where, None, "a folder with one sub-folder per class (root/<class>/<image>)", got)

    skipped: list[SkippedFile] = []
    class_names: list[str] = []
    files: list[str] = []
    labels: list[int] = []
    for class_dir in class_dirs:
        members = _list_dir(Path(class_dir.path), class_dir.path)
        found: list[str] = []
        for entry in members:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                skipped.append(SkippedFile(entry.path, "nested folder (only root/<class>/<image> is read)"))
                continue
            reason = checker(entry.path) if checker is not None else None
            if reason is None and checker is None and not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                reason = "not an image file extension"
            if reason is not None:
                skipped.append(SkippedFile(entry.path, reason))
            else:
                found.append(entry.path)
        if not found:
            skipped.append(SkippedFile(class_dir.path + os.sep, "empty class folder: no usable image, class dropped"))
            continue
        class_names.append(class_dir.name)
        files.extend(found)
        labels.extend([len(class_names) - 1] * len(found))

    _warn_skipped(where, skipped)
    if not files:
        raise InputError(where, "images", "at least one readable image", f"none ({len(skipped)} skipped)")
    if len(class_names) < 2:
        raise InputError(where, "classes", "at least 2 class folders with readable images", class_names)
    paths = np.asarray(files, dtype=str)
    return ImageDataset(
        labels=np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        ids=np.arange(len(files), dtype=np.int64),
        paths=paths,
        source={"kind": "images", "root": where},
        skipped=skipped,
    )


# --------------------------------------------------------------------------------------------
# Manifest


def load_manifest(
    file: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    check: bool | str = True,
) -> ImageDataset:
    """A CSV or Parquet table with columns ``path,label[,id][,clean_label]``.

    Parameters
    ----------
    file : the manifest (``.csv``, ``.parquet`` or ``.pq``)
    root : folder the paths are relative to (default: the manifest's folder); no path may resolve
        outside it (symbolic links included)
    class_names : the class list; labels given as names must be in it, labels given as integers
        must lie in ``[0, len(class_names))``. Default: sorted distinct names of ``label`` and
        ``clean_label``, or ``0 .. max`` for integer labels
    check : ``full`` (or True): decode every image now (unreadable ones are skipped and
        recorded); ``header``: read only each file's header; ``none`` (or False): only check that
        the file exists (see `load_image_folder`)

    Rows whose file is missing or unreadable are skipped with a warning and recorded in
    ``skipped``; everything else that is wrong raises `InputError` naming the row.
    """
    file_path = Path(file).expanduser().resolve()
    where = str(file_path)
    checker = _checker(check, where)
    table = _read_table(file_path)
    base = Path(root).expanduser().resolve() if root is not None else file_path.parent
    if not base.is_dir():
        raise MissingError(f"{base}: manifest root is not a directory")

    columns = {str(c).strip().lower(): c for c in table.columns}
    for need in ("path", "label"):
        if need not in columns:
            raise InputError(where, need, "a column of the manifest (path,label[,id][,clean_label])", f"columns {list(table.columns)}")
    if len(table) == 0:
        raise InputError(where, "path", "at least one row", "an empty table")

    raw_paths = table[columns["path"]].tolist()
    raw_labels = table[columns["label"]].tolist()
    raw_clean = table[columns["clean_label"]].tolist() if "clean_label" in columns else None
    classes, labels = _encode_labels(raw_labels, class_names, where, "label", raw_clean)
    clean = None
    if raw_clean is not None:
        _, clean = _encode_labels(raw_clean, classes, where, "clean_label", None)

    if "id" in columns:
        ids = np.asarray(table[columns["id"]].tolist())
        if any(_is_missing(v) for v in ids.tolist()):
            raise InputError(where, "id", "a value on every row", "an empty cell")
        if np.unique(ids.astype(str)).size != ids.size:
            raise InputError(where, "id", "unique per row", "duplicates")
        if ids.dtype.kind == "f" and np.all(ids == np.round(ids)):
            ids = ids.astype(np.int64)
    else:
        ids = np.arange(len(table), dtype=np.int64)

    keep: list[int] = []
    full_paths: list[str] = []
    skipped: list[SkippedFile] = []
    for row, value in enumerate(raw_paths):
        if _is_missing(value) or not str(value).strip():
            raise InputError(where, "path", "a file path on every row", f"an empty cell on row {row + 2}")
        resolved = _inside(base, str(value).strip(), where, row)
        if not resolved.is_file():
            skipped.append(SkippedFile(str(resolved), f"row {row + 2}: file not found"))
            continue
        reason = checker(resolved) if checker is not None else None
        if reason is not None:
            skipped.append(SkippedFile(str(resolved), f"row {row + 2}: {reason}"))
            continue
        keep.append(row)
        full_paths.append(str(resolved))

    _warn_skipped(where, skipped)
    if not keep:
        raise InputError(where, "path", "at least one row with a readable image", f"none ({len(skipped)} skipped)")
    sel = np.asarray(keep, dtype=np.int64)
    return ImageDataset(
        labels=labels[sel],
        class_names=classes,
        ids=ids[sel],
        paths=np.asarray(full_paths, dtype=str),
        clean_labels=None if clean is None else clean[sel],
        source={"kind": "manifest", "file": where, "root": str(base)},
        skipped=skipped,
    )


def _read_table(path: Path):  # -> pandas.DataFrame
    import pandas as pd

    if not path.is_file():
        raise MissingError(f"{path}: no such manifest file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ""):
            # Strings stay strings: "007" must not become 7, and a label column of names stays names.
            return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except PermissionError as exc:
        raise InputError(str(path), None, "a readable file", f"permission denied ({exc.strerror})") from None
    except Exception as exc:  # pandas/pyarrow raise many types for malformed files
        raise InputError(str(path), None, "a valid CSV or Parquet table", f"{type(exc).__name__}: {exc}") from None
    raise InputError(str(path), None, "a .csv or .parquet manifest", f"suffix {suffix!r}")


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _as_int(value: object) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else None
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return None


def _encode_labels(
    raw: list[object],
    class_names: Sequence[str] | None,
    where: str,
    column: str,
    extra: list[object] | None,
) -> tuple[list[str], np.ndarray]:
    """Map label cells (names or integers) to class indices; returns (class_names, (N,) int64)."""
    for row, value in enumerate(raw):
        if _is_missing(value):
            raise InputError(where, column, "a label on every row", f"an empty cell on row {row + 2}")
    names = [str(v).strip() for v in raw]
    if class_names is not None:
        classes = [str(c) for c in class_names]
        lookup = {c: i for i, c in enumerate(classes)}
        if all(n in lookup for n in names):
            return classes, np.asarray([lookup[n] for n in names], dtype=np.int64)
        ints = [_as_int(v) for v in raw]
        if all(i is not None for i in ints):
            bad = [(r, i) for r, i in enumerate(ints) if not 0 <= i < len(classes)]
            if bad:
                r, i = bad[0]
                raise InputError(where, column, f"a class index in [0, {len(classes)}) or a class name", f"{i} on row {r + 2}")
            return classes, np.asarray(ints, dtype=np.int64)
        r, n = next((r, n) for r, n in enumerate(names) if n not in lookup)
        raise InputError(where, column, f"one of the classes {classes}", f"{n!r} on row {r + 2}")

    ints = [_as_int(v) for v in raw]
    extra_ints = [_as_int(v) for v in extra] if extra is not None else []
    if all(i is not None for i in ints) and all(i is not None for i in extra_ints):
        top = max(ints + extra_ints)
        low = min(ints + extra_ints)
        if low < 0:
            r = ints.index(low) if low in ints else 0
            raise InputError(where, column, "class indices >= 0", f"{low} on row {r + 2}")
        return [str(i) for i in range(top + 1)], np.asarray(ints, dtype=np.int64)
    extra_names = [str(v).strip() for v in extra] if extra is not None else []
    classes = sorted(set(names) | set(extra_names))
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, np.asarray([lookup[n] for n in names], dtype=np.int64)


def _inside(base: Path, value: str, where: str, row: int) -> Path:
    """``base / value`` resolved (links followed); InputError if it leaves ``base``."""
    candidate = Path(value).expanduser()
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not resolved.is_relative_to(base):
        raise InputError(where, "path", f"a path inside the manifest root {base}", f"{value!r} on row {row + 2}")
    return resolved


# --------------------------------------------------------------------------------------------
# CIFAR and CIFAR-N


def load_cifar(
    root: str | os.PathLike[str],
    dataset: str = "cifar10",
    train: bool = True,
    download: bool = False,
    human_file: str | os.PathLike[str] | None = None,
    human: str | None = None,
) -> ImageDataset:
    """CIFAR-10 / CIFAR-100 through torchvision, optionally with CIFAR-N human labels.

    Parameters
    ----------
    root : folder holding ``cifar-10-batches-py`` / ``cifar-100-python``
    dataset : ``cifar10`` or ``cifar100``
    train : the 50,000 training images (CIFAR-N labels exist only for these) or the 10,000 test ones
    download : fetch the data when it is not in ``root`` (needs the network)
    human_file : a CIFAR-10N / CIFAR-100N ``.pt`` label file (read with `load_cifar_n`)
    human : which label set: ``aggre``, ``worse``, ``random1..3`` (CIFAR-10N) or ``noisy100``
        (CIFAR-100N). Default ``worse`` for CIFAR-10, ``noisy100`` for CIFAR-100

    Returns
    -------
    In-memory dataset: images (N, 32, 32, 3) uint8, ``clean_labels`` the CIFAR ground truth,
    ``labels`` the human labels when a file is given (otherwise the ground truth), ids the index in
    torchvision order.
    """
    from torchvision import datasets as tvd

    if dataset not in ("cifar10", "cifar100"):
        raise InputError(None, "dataset", "'cifar10' or 'cifar100'", repr(dataset))
    root_path = Path(root).expanduser().resolve()
    cls = tvd.CIFAR10 if dataset == "cifar10" else tvd.CIFAR100
    try:
        data = cls(root=str(root_path), train=train, download=download)
    except RuntimeError as exc:
        # torchvision: "Dataset not found or corrupted. You can use download=True to download it"
        hint = "" if download else " (pass download=True / --download when online)"
        raise MissingError(f"{root_path}: no {dataset} data found{hint}: {exc}") from None
    except OSError as exc:  # URLError and socket errors when offline
        raise MissingError(f"{root_path}: {dataset} is not there and could not be downloaded ({exc})") from None

    images = np.asarray(data.data, dtype=np.uint8)
    clean = np.asarray(data.targets, dtype=np.int64)
    labels = clean
    split = "train" if train else "test"
    source: dict[str, Any] = {"kind": dataset, "root": str(root_path), "split": split}
    if human_file is not None:
        if not train:
            raise InputError(str(human_file), "human", "used with the training split (CIFAR-N labels the 50,000 training images)", "test split")
        human = human or ("worse" if dataset == "cifar10" else "noisy100")
        labels = load_cifar_n(human_file, human, clean_labels=clean)
        source.update({"human_file": str(Path(human_file).expanduser().resolve()), "human": human})
    elif human is not None:
        raise InputError(None, "human", "given together with a CIFAR-N label file (--cifar-n)", repr(human))
    n = images.shape[0]
    return ImageDataset(
        labels=labels,
        class_names=list(data.classes),
        ids=np.arange(n, dtype=np.int64),
        paths=np.asarray([f"{dataset}/{split}/{i}" for i in range(n)], dtype=str),
        images=images,
        clean_labels=clean,
        source=source,
    )


def _numpy_safe_globals() -> list[Any]:
    """The only globals a CIFAR-N file may name: numpy's array reconstruction, nothing else."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    safe: list[Any] = [np.ndarray, np.dtype]
    # The files were written by numpy 1.x, whose pickles name numpy.core.multiarray._reconstruct.
    safe += [(_reconstruct, "numpy.core.multiarray._reconstruct"), (_reconstruct, "numpy._core.multiarray._reconstruct")]
    # numpy >= 1.25 pickles dtypes through their numpy.dtypes classes.
    for code in "?bBhHiIlLqQefdgFDGSUV":
        safe.append(type(np.dtype(code)))
    return safe


def read_label_file(file: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a ``.pt`` label file without unpickling arbitrary objects.

    ``torch.load(weights_only=True)`` with only numpy's array reconstruction allowed: a file whose
    pickle names any other global (a class, a function such as ``os.system``) is refused with
    `InputError` before anything in it runs.
    """
    import torch

    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise MissingError(f"{path}: no such label file")
    try:
        # A context manager, so the allowance does not leak into other torch.load calls.
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        got = f"a reference to {found.group(1)}" if found else re.sub(r"\s+", " ", str(exc))[-200:]
        raise InputError(str(path), None, "a label file holding only arrays of labels (nothing else is unpickled)", got) from None
    except Exception as exc:  # not a zip/pickle at all, truncated, ...
        raise InputError(str(path), None, "a PyTorch .pt label file", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(str(path), None, "a dict of label arrays", type(obj).__name__)
    return obj


def load_cifar_n(
    file: str | os.PathLike[str], human: str, clean_labels: np.ndarray | None = None
) -> np.ndarray:
    """One label set of a CIFAR-10N / CIFAR-100N file. Returns (50000,) int64.

    Parameters
    ----------
    file : ``CIFAR-10_human.pt`` or ``CIFAR-100_human.pt``
    human : ``aggre``, ``worse``, ``random1``, ``random2``, ``random3`` or ``noisy100``
    clean_labels : (N,) the data set's ground truth; when given, the file's ``clean_label`` must
        match it (a file for the other data set, or for another order, is refused)
    """
    where = str(Path(file).expanduser().resolve())
    if human not in HUMAN_LABELS:
        raise InputError(where, "human", f"one of {sorted(HUMAN_LABELS)}", repr(human))
    data = read_label_file(file)
    key = HUMAN_LABELS[human]
    if key not in data:
        have = sorted(k for k, v in data.items() if v is not None)
        choices = sorted(h for h, k in HUMAN_LABELS.items() if k in data)
        raise InputError(where, "human", f"a label set in this file ({choices})", f"{human!r}; the file holds {have}")
    labels = np.asarray(data[key])
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(where, key, "a 1-D integer array", f"shape {labels.shape}, dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if clean_labels is not None:
        clean_labels = np.asarray(clean_labels)
        if labels.shape != clean_labels.shape:
            raise InputError(where, key, f"{clean_labels.shape[0]} labels (one per image)", labels.shape[0])
        file_clean = data.get("clean_label")
        if file_clean is not None and not np.array_equal(np.asarray(file_clean), clean_labels):
            raise InputError(where, "clean_label", "equal to the data set's ground truth (a label file for this data set)", "different labels")
        if labels.min() < 0 or labels.max() > clean_labels.max():
            raise InputError(where, key, f"class indices in [0, {int(clean_labels.max()) + 1})", f"[{labels.min()}, {labels.max()}]")
    return labels


# --------------------------------------------------------------------------------------------
# Built-in sample


def load_builtin_sample(
    noise: str | None = SAMPLE_NOISE,
    seed: int = 0,
    per_class: int | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> ImageDataset:
    """The shipped CIFAR-10 sample (200 images per class, 32x32 JPEG) with injected label noise.

    Parameters
    ----------
    noise : synthetic noise applied to the clean labels, ``sym:RATE`` or ``asym:RATE`` (default
        ``sym:0.2``); None keeps the clean labels as given labels. A run config's ``noise``, when
        set, replaces this (the engine applies it to ``clean_labels``)
    seed : seeds the noise (a ``np.random.Generator``; no global state)
    per_class : keep the first ``per_class`` images of each class (faster demo); None keeps all
    directory : where the sample lives (default: the repository's ``sample_data/``, or the
        ``DYNACOR_SAMPLE_DATA`` environment variable)

    Returns
    -------
    In-memory dataset with ``clean_labels`` (CIFAR-10 ground truth) and noisy ``labels``; ids are
    CIFAR-10 training indices, paths the member names in the sample's tar file.
    """
    from dynacor.method.noise import parse_noise, synthetic_labels

    folder = Path(directory or os.environ.get("DYNACOR_SAMPLE_DATA") or SAMPLE_DIR)
    tar_path = folder / SAMPLE_TAR
    manifest_path = folder / SAMPLE_MANIFEST
    for needed in (tar_path, manifest_path):
        if not needed.is_file():
            raise MissingError(f"{needed}: the built-in sample is missing (run sample_data/make_sample.py)")
    import pandas as pd

    table = pd.read_csv(manifest_path, dtype={"path": str, "label": str, "id": np.int64, "clean_label": str})
    class_names = _sample_classes(manifest_path)
    lookup = {c: i for i, c in enumerate(class_names)}
    clean = np.asarray([lookup[c] for c in table["clean_label"]], dtype=np.int64)
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
        raise InputError("built-in sample", "sample_per_class", "an integer >= 1", repr(per_class))
    if per_class is not None:
        rank = table.groupby("clean_label").cumcount().to_numpy()
        table = table[rank < per_class].reset_index(drop=True)
        clean = clean[rank < per_class]
    images = _read_tar_images(tar_path, table["path"].tolist())

    labels = clean.copy()
    source: dict[str, Any] = {"kind": "builtin", "file": str(tar_path.resolve()), "manifest": str(manifest_path.resolve())}
    if per_class is not None:
        source["per_class"] = int(per_class)
    if noise is not None:
        kind, _ = parse_noise(noise)
        if kind == "inst":
            raise InputError(None, "noise", "sym:RATE or asym:RATE here (instance noise needs features: set the run's noise)", repr(noise))
        labels = synthetic_labels(noise, clean, len(class_names), seed)
        source.update({"noise": noise, "noise_seed": int(seed)})
    return ImageDataset(
        labels=labels,
        class_names=class_names,
        ids=table["id"].to_numpy(dtype=np.int64),
        paths=np.asarray(table["path"].tolist(), dtype=str),
        images=images,
        clean_labels=clean,
        source=source,
    )


def _sample_classes(manifest_path: Path) -> list[str]:
    # The manifest's header comment would be fragile; the classes file is the single source.
    classes_file = manifest_path.parent / "classes.txt"
    return [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]


def _read_tar_images(tar_path: Path, members: list[str]) -> np.ndarray:
    """Decode the named members of an uncompressed tar of equal-size images. Returns (N, H, W, 3) uint8."""
    out: list[np.ndarray] = []
    with tarfile.open(tar_path, "r:") as tar:
        index = {m.name: m for m in tar.getmembers() if m.isfile()}
        for name in members:
            info = index.get(name)
            if info is None:
                raise MissingError(f"{tar_path}: member {name!r} named in the manifest is missing")
            handle = tar.extractfile(info)
            assert handle is not None
            with Image.open(io.BytesIO(handle.read())) as im:
                out.append(np.asarray(_to_rgb(im), dtype=np.uint8))
    return np.stack(out)


# --------------------------------------------------------------------------------------------
# Pixels for the from-scratch backbone


def images_array(dataset: ImageDataset, size: int = 32) -> np.ndarray:
    """All images as one (N, size, size, 3) uint8 array (resized with PIL bicubic when needed).

    In-memory images of the right size are returned as they are (no copy).
    """
    if dataset.images is not None and dataset.images.shape[1:3] == (size, size):
        return dataset.images
    out = np.empty((len(dataset), size, size, 3), dtype=np.uint8)
    for i in range(len(dataset)):
        im = dataset.image(i)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        out[i] = np.asarray(im, dtype=np.uint8)
    return out
