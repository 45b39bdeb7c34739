"""Finding and preparing a sample's image for display. Never raises for a missing image: a run
reopened after its images moved shows placeholders.

Where the image is comes from the run's recorded source and the sample's ``path``: an image file
(folder, manifest), or a member of the built-in sample's tar file.
"""

from __future__ import annotations

import io
import tarfile
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw

DISPLAY_SIZE = 256


def load_image(source: dict | None, path: object) -> Image.Image | None:
    """The sample's image as RGB, or None when it cannot be found or read."""
    if path is None or (isinstance(path, float) and path != path) or str(path) == "":
        return None
    path = str(path)
    source = source or {}
    candidates = [Path(path)]
    root = source.get("root")
    if root and not Path(path).is_absolute():
        candidates.append(Path(root) / path)
    for candidate in candidates:
        try:
            if candidate.is_file():
                with Image.open(candidate) as im:
                    return im.convert("RGB")
        except (OSError, ValueError):
            return None
    tar_file = source.get("file")
    if tar_file and str(tar_file).endswith(".tar"):
        return _tar_member(str(tar_file), path)
    return None


def _tar_member(tar_file: str, member: str) -> Image.Image | None:
    try:
        index = _tar_index(tar_file, Path(tar_file).stat().st_mtime_ns)
        where = index.get(member)
        if where is None:
            return None
        offset, size = where
        with open(tar_file, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except (OSError, ValueError, tarfile.TarError):
        return None


@lru_cache(maxsize=4)
def _tar_index(tar_file: str, _mtime: int) -> dict[str, tuple[int, int]]:
    # Offsets once per tar (and per modification): each card then reads only its own bytes.
    with tarfile.open(tar_file, "r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}


def for_display(image: Image.Image | None, size: int = DISPLAY_SIZE, label: str = "image not found") -> Image.Image:
    """``image`` scaled so its longer side is ``size`` pixels; a grey placeholder when None.

    Tiny images (CIFAR's 32x32) are enlarged with nearest-neighbour: every original pixel stays a
    crisp block, which is what an annotator needs to judge; larger ones use bicubic.
    """
    if image is None:
        return placeholder(size, label)
    w, h = image.size
    scale = size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.NEAREST if max(w, h) <= 64 else Image.BICUBIC
    return image.resize(new, resample)


def placeholder(size: int = DISPLAY_SIZE, label: str = "image not found") -> Image.Image:
    im = Image.new("RGB", (size, size), (225, 225, 225))
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, 0, size - 1, size - 1], outline=(160, 160, 160), width=2)
    bbox = draw.textbbox((0, 0), label)
    draw.text(((size - (bbox[2] - bbox[0])) / 2, (size - (bbox[3] - bbox[1])) / 2), label, fill=(90, 90, 90))
    return im


def has_images(samples_columns, source: dict | None) -> bool:
    """Whether the run came from images at all (feature-only runs get a notice instead)."""
    return "path" in samples_columns
