"""What every export needs from a run's table: the class names and the image of each sample."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dynacor.errors import InputError
from dynacor.review.export import class_names_of


def class_list(samples: pd.DataFrame, class_names: Sequence[str] | None = None) -> list[str]:
    """One name per class index, 0 .. C-1: the run's class names, else those recovered from the
    table's name columns, else the indices as text. C covers every given and suggested label.

    Raises `InputError` when two classes share a name (a tool could not tell them apart)."""
    names = list(class_names) if class_names is not None else class_names_of(samples)
    top = int(max(samples["given_label"].max(), samples["suggested_label"].max())) + 1
    names = [str(n) for n in (names or [])]
    names += [str(i) for i in range(len(names), top)]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise InputError("run.json", "class_names", "distinct names",
                             f"{name!r} for classes {seen[name]} and {index}")  # fmt: skip
        seen[name] = index
    return names


def images_of(samples: pd.DataFrame, where: str) -> list[str]:
    """The image path of every sample. Raises `InputError` naming ``where`` when the run has no
    images (a feature file without paths): image tools cannot show such samples."""
    if "path" not in samples:
        raise InputError(where, "path", "image paths (the export shows images; this run was made "
                         "from features without paths)", "no path column")  # fmt: skip
    paths = samples["path"].fillna("").astype(str)
    empty = int((paths == "").sum())
    if empty:
        raise InputError(
            where, "path", "an image path for every sample", f"{empty} of {len(paths)} empty"
        )
    return paths.tolist()
