"""The corrupted copies appended to a user's own data set (METHOD.md, section 1).

`WithCopies` wraps any map-style data set (``dataset[i] -> (x, y, ...)``, ``len(dataset)``) and
serves S = N + M items: the N originals, then M copies of randomly drawn originals whose labels
are drawn from the C - 1 other classes. Each item is ``(x, y, index)`` so that the training loop
can hand the index to `dynacor.record.Recorder.update`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dynacor.errors import InputError
from dynacor.method.corruption import Copies, make_copies

WHERE = "WithCopies"


def copy_rng(seed: int) -> np.random.Generator:
    """The generator the engine's `dynacor.method.pipeline.run` draws its copies from for ``seed``,
    so that a recorded run and an engine run with the same seed corrupt the same samples."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[1])


def draw_copies(labels: np.ndarray, num_classes: int, gamma: float = 0.1, seed: int = 0) -> Copies:
    """Check the labels and draw the copies (pure: same arguments, same copies).

    Parameters
    ----------
    labels : (N,) int, the given labels of the originals
    num_classes : C, at least 2
    gamma : fraction of originals copied, in (0, 1]; M = round(gamma * N), at least 1
    seed : integer >= 0

    Returns
    -------
    Copies with ``pair`` (M,) sorted ascending and ``labels`` (M,), never the original's label.
    """
    given = check_labels(labels, num_classes)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 < gamma <= 1.0:
        raise InputError(WHERE, "gamma", "a number in (0, 1]", repr(gamma))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(WHERE, "seed", "an integer >= 0", repr(seed))
    return make_copies(given, num_classes, float(gamma), copy_rng(int(seed)))


def check_labels(labels: Any, num_classes: int, where: str = WHERE) -> np.ndarray:
    """(N,) class indices in [0, C) as int64, or `InputError` naming ``labels``/``num_classes``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise InputError(where, "num_classes", "an integer >= 2", repr(num_classes))
    if hasattr(labels, "detach"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise InputError(where, "labels", "a non-empty 1-D array of class indices", f"shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise InputError(where, "labels", "integer class indices", f"dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= num_classes:
        raise InputError(where, "labels", f"class indices in [0, {num_classes})", f"range [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


class WithCopies:
    """A map-style data set of the N originals followed by M corrupted copies.

    Parameters
    ----------
    dataset : map-style data set; ``dataset[i]`` returns ``(x, y, ...)`` (only ``x`` is used) or
        ``x`` alone; ``len(dataset) == N``
    labels : (N,) int, the given labels, the ones DynaCor judges (usually ``dataset.targets``)
    num_classes : C
    gamma : fraction of originals copied (default 0.1, the paper's)
    seed : draws the copies (the same copies `dynacor.run` draws for this seed)
    copy_transform : applied to a copy's input (what ``dataset`` returns for its original) on
        every access, e.g. a weak augmentation such as a horizontal flip or a random crop with
        padding 4 (METHOD.md). None: the copy's input is the original's, as returned.

    Items are ``(x, y, index)``: ``index < N`` is original ``index`` with its given label;
    ``N <= index < N + M`` is copy ``index - N`` of original ``copy_pair[index - N]`` with label
    ``copy_labels[index - N]``.

    Attributes
    ----------
    copy_pair : (M,) int64; copy_labels : (M,) int64; given_labels : (N,) int64
    labels_all : (S,) int64, the label each item is trained on
    num_originals : N; num_copies : M; num_classes : C
    """

    def __init__(
        self,
        dataset: Any,
        labels: Any,
        num_classes: int,
        gamma: float = 0.1,
        seed: int = 0,
        copy_transform: Callable[[Any], Any] | None = None,
    ):
        copies = draw_copies(labels, num_classes, gamma, seed)
        given = check_labels(labels, num_classes)
        if len(dataset) != given.shape[0]:
            raise InputError(WHERE, "labels", f"one label per item of the data set (length {len(dataset)})",
                             f"length {given.shape[0]}")  # fmt: skip
        self.dataset = dataset
        self.given_labels = given
        self.copy_pair = copies.pair
        self.copy_labels = copies.labels
        self.num_classes = int(num_classes)
        self.gamma = float(gamma)
        self.seed = int(seed)
        self.copy_transform = copy_transform

    @property
    def num_originals(self) -> int:
        return int(self.given_labels.shape[0])

    @property
    def num_copies(self) -> int:
        return int(self.copy_pair.shape[0])

    @property
    def labels_all(self) -> np.ndarray:
        return np.concatenate([self.given_labels, self.copy_labels])

    def __len__(self) -> int:
        return self.num_originals + self.num_copies

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        index = int(index)
        n = self.num_originals
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items ({n} originals + {self.num_copies} copies)")
        if index < n:
            return _input(self.dataset[index]), int(self.given_labels[index]), index
        j = index - n
        x = _input(self.dataset[int(self.copy_pair[j])])
        if self.copy_transform is not None:
            x = self.copy_transform(x)
        return x, int(self.copy_labels[j]), index


def _input(item: Any) -> Any:
    # Data sets return (x, y), (x, y, extra...) or x alone; the label comes from `labels` instead.
    if isinstance(item, (tuple, list)):
        return item[0]
    return item
