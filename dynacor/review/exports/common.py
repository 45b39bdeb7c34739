"""What every export needs from a run's table: the class names, the suggestion and its candidates,
and the image of each sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dynacor.errors import InputError
from dynacor.method.suggest import candidate_matrix
from dynacor.review.candidates import candidate_table
from dynacor.review.export import class_names_of

# How many candidate classes the exports carry (the run records up to three).
CANDIDATES = 3


@dataclass(frozen=True)
class Suggestions:
    """The run's suggestion per sample, as arrays (N = samples, input order).

    label : (N,) int64, the suggested class; -1 where there is none (a run that recorded no
        probabilities). Never index class names with it unchecked: names[-1] is the last class.
    prob : (N,) float64, its probability; NaN where none
    candidates : (N, 3) int64, the top other classes, most likely first (candidates[:, 0] is the
        suggestion); -1 padding. A run from before candidates were recorded has its suggestion as
        the only one, unless that is the given label (older engines could suggest it), as the
        review cards show it
    candidate_probs : (N, 3) float64, their probabilities; NaN padding
    """

    label: np.ndarray
    prob: np.ndarray
    candidates: np.ndarray
    candidate_probs: np.ndarray


def suggestions_of(samples: pd.DataFrame) -> Suggestions:
    """The suggestion, its probability and the candidates of every sample of a run's table (see
    `Suggestions`; a table without ``suggested_prob`` gives NaN)."""
    # A missing cell (a nullable column) is no suggestion, as -1 is.
    label = (
        pd.to_numeric(samples["suggested_label"], errors="coerce")
        .fillna(-1)
        .to_numpy()
        .astype(np.int64)
    )
    if "suggested_prob" in samples:
        prob = samples["suggested_prob"].to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        prob = np.full(len(samples), np.nan)
    # A negative label is "no suggestion" whatever it holds, so one test (>= 0) covers every case.
    label = np.where(label >= 0, label, -1)
    prob = np.where(label >= 0, prob, np.nan)
    # The candidates exactly as the review card offers them (old runs: the suggestion alone).
    candidates, candidate_probs = candidate_table(samples, *candidate_matrix(samples, CANDIDATES))
    return Suggestions(label, prob, candidates, candidate_probs)


def name_of(class_names: Sequence[str], label: int) -> str | None:
    """The class name of ``label``, None for no class (-1): ``class_names[-1]`` would silently
    name the last class."""
    return None if label < 0 else class_names[label]


def class_list(samples: pd.DataFrame, class_names: Sequence[str] | None = None) -> list[str]:
    """One name per class index, 0 .. C-1: the run's class names, else those recovered from the
    table's name columns, else the indices as text. C covers every given, suggested and candidate
    label (-1, no suggestion, is no class).

    Raises `InputError` when two classes share a name (a tool could not tell them apart)."""
    names = list(class_names) if class_names is not None else class_names_of(samples)
    suggested = suggestions_of(samples)
    # -1 never raises the count: the given labels are >= 0, so the max is theirs at least.
    top = int(max(samples["given_label"].max(), suggested.label.max(initial=-1),
                  suggested.candidates.max(initial=-1))) + 1  # fmt: skip
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
