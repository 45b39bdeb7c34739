"""The boundary: every check of user-supplied data and settings, in one place.

Each check raises `InputError`, whose message names the file, the field, what was expected and
what was found. Engine functions behind this boundary assume valid input.
"""

from __future__ import annotations

import numpy as np

from dynacor.errors import InputError
from dynacor.method.combine import COMBINE_CHOICES
from dynacor.method.config import (
    CLASSIFIERS,
    DEVICES,
    RECORD_MODES,
    SELECTIONS,
    SIGNALS,
    VAL_ORIGINALS,
    DynaCorConfig,
)
from dynacor.method.featureset import FeatureSet
from dynacor.method.nets import SCHEDULES
from dynacor.method.noise import parse_noise


def check_config(config: DynaCorConfig, file: str = "config") -> DynaCorConfig:
    """Check every field of ``config``; returns it unchanged."""

    def need(ok: bool, name: str, expected: str) -> None:
        if not ok:
            raise InputError(file, name, expected, repr(getattr(config, name)))

    def positive_int(name: str) -> None:
        value = getattr(config, name)
        need(isinstance(value, int) and not isinstance(value, bool) and value > 0, name, "a positive integer")

    def non_negative(name: str) -> None:
        value = getattr(config, name)
        need(isinstance(value, (int, float)) and np.isfinite(value) and value >= 0, name, "a number >= 0")

    need(isinstance(config.gamma, (int, float)) and 0.0 < config.gamma <= 1.0, "gamma", "a number in (0, 1]")
    for name in ("epochs", "batch_size", "hidden", "encoder_epochs", "encoder_batch_size", "rep_dim"):
        positive_int(name)
    need(config.epochs >= 2, "epochs", "at least 2 (dynamics need more than one epoch)")
    for name in ("lr", "encoder_lr"):
        value = getattr(config, name)
        need(isinstance(value, (int, float)) and np.isfinite(value) and value > 0, name, "a number > 0")
    need(isinstance(config.refine_steps, int) and config.refine_steps >= 0, "refine_steps", "an integer >= 0")
    need(isinstance(config.explain_neighbours, int) and not isinstance(config.explain_neighbours, bool)
         and config.explain_neighbours >= 0, "explain_neighbours", "an integer >= 0")  # fmt: skip
    positive_int("restarts")
    need(isinstance(config.suggest_neighbours, int) and not isinstance(config.suggest_neighbours, bool)
         and config.suggest_neighbours >= 0, "suggest_neighbours", "an integer >= 0")  # fmt: skip
    non_negative("suggest_vote_weight")
    for name in ("momentum", "weight_decay", "encoder_weight_decay", "alpha"):
        non_negative(name)
    need(isinstance(config.seed, int) and not isinstance(config.seed, bool) and config.seed >= 0, "seed", "an integer >= 0")
    need(isinstance(config.num_threads, int) and config.num_threads >= 0, "num_threads", "an integer >= 0")
    need(config.device in DEVICES, "device", f"one of {DEVICES}")
    need(config.classifier in CLASSIFIERS, "classifier", f"one of {CLASSIFIERS}")
    need(config.signal in SIGNALS, "signal", f"one of {SIGNALS}")
    need(config.record in RECORD_MODES, "record", f"one of {RECORD_MODES}")
    need(config.selection in SELECTIONS, "selection", f"one of {SELECTIONS}")
    need(config.val_originals in VAL_ORIGINALS, "val_originals", f"one of {VAL_ORIGINALS}")
    need(config.eval_distance in ("cosine", "euclidean"), "eval_distance", "'cosine' or 'euclidean'")
    need(config.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}")
    need(config.combine in COMBINE_CHOICES, "combine", f"one of {COMBINE_CHOICES}")
    need(isinstance(config.probe_c, (int, float)) and not isinstance(config.probe_c, bool)
         and np.isfinite(config.probe_c) and config.probe_c > 0, "probe_c", "a number > 0")  # fmt: skip
    need(isinstance(config.probe_folds, int) and not isinstance(config.probe_folds, bool) and config.probe_folds >= 2,
         "probe_folds", "an integer >= 2")  # fmt: skip
    need(isinstance(config.estimate_rows, int) and not isinstance(config.estimate_rows, bool)
         and config.estimate_rows >= 0, "estimate_rows", "an integer >= 0")  # fmt: skip
    for name in ("estimate_bootstrap", "estimate_neighbours", "estimate_neighbour_rows"):
        value = getattr(config, name)
        need(isinstance(value, int) and not isinstance(value, bool) and value >= 0, name, "an integer >= 0")
    non_negative("estimate_margin")
    non_negative("estimate_margin_scale")
    need(isinstance(config.estimate_withhold, (int, float)) and 0.0 < config.estimate_withhold <= 1.0,
         "estimate_withhold", "a fraction in (0, 1]")  # fmt: skip
    need(isinstance(config.estimate_precision_floor, (int, float)) and 0.0 <= config.estimate_precision_floor <= 1.0,
         "estimate_precision_floor", "a fraction in [0, 1]")  # fmt: skip
    for name in ("noise_window", "recall_window", "suggest_window"):
        window = getattr(config, name)
        need(isinstance(window, (tuple, list)) and len(window) == 2
             and all(isinstance(v, (int, float)) for v in window) and 0.0 <= window[0] < window[1] <= 1.0,
             name, "two fractions of the epochs [first, stop) with 0 <= first < stop <= 1")  # fmt: skip
    for name in ("target_precision", "target_recall"):
        value = getattr(config, name)
        need(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < value <= 1.0),
             name, "a fraction in (0, 1] or unset")  # fmt: skip
    need(config.target_precision is None or config.target_recall is None, "target_recall",
         "unset when target_precision is set (one cut, one target)")  # fmt: skip
    if config.target_precision is not None or config.target_recall is not None:
        need(config.estimate_rows > 0, "estimate_rows", "> 0 with a target (the cut is chosen from the estimates)")
    if config.noise is not None:
        try:
            parse_noise(config.noise)
        except ValueError:
            need(False, "noise", "KIND:RATE with KIND sym, asym or inst and RATE in [0, 1], e.g. sym:0.6")
    return config


def check_featureset(data: FeatureSet, file: str = "<arrays>", needs_clean: bool = False) -> FeatureSet:
    """Check shapes, types and ranges of ``data``; returns a copy with normalised dtypes.

    Parameters
    ----------
    data : the arrays as loaded
    file : name used in error messages
    needs_clean : whether ``clean_labels`` are required (synthetic noise is applied to them)
    """
    features = _matrix(data.features, file, "features")
    n, d = features.shape
    labels = _labels(data.labels, file, "labels", n)
    features_aug = None
    if data.features_aug is not None:
        features_aug = _matrix(data.features_aug, file, "features_aug")
        if features_aug.shape != features.shape:
            raise InputError(file, "features_aug", f"the same shape as `features` {features.shape}", features_aug.shape)
    clean = None if data.clean_labels is None else _labels(data.clean_labels, file, "clean_labels", n)
    if needs_clean and clean is None:
        raise InputError(file, "clean_labels", "present to apply synthetic noise (--noise)", "no such field")

    class_names = None
    if data.class_names is not None:
        class_names = [str(c) for c in np.asarray(data.class_names).reshape(-1).tolist()]
        if len(set(class_names)) != len(class_names):
            raise InputError(file, "class_names", "distinct names", class_names)
    num_classes = len(class_names) if class_names is not None else int(max(labels.max(), -1 if clean is None else clean.max())) + 1
    for name, arr in (("labels", labels), ("clean_labels", clean)):
        if arr is not None and arr.max() >= num_classes:
            raise InputError(file, name, f"class indices in [0, {num_classes})", f"max {int(arr.max())}")
    if num_classes < 2 or np.unique(labels).size < 2:
        raise InputError(file, "labels", "at least 2 distinct classes", f"{np.unique(labels).size} class(es)")
    if n < num_classes:
        raise InputError(file, "features", f"at least as many samples as classes ({num_classes})", f"{n} samples")

    ids = None
    if data.ids is not None:
        ids = np.asarray(data.ids).reshape(-1)
        if ids.shape[0] != n:
            raise InputError(file, "ids", f"length {n} (one per sample)", f"length {ids.shape[0]}")
        if np.unique(ids).size != n:
            raise InputError(file, "ids", "unique per sample", "duplicates")
    paths = None
    if data.paths is not None:
        paths = np.asarray(data.paths).astype(str).reshape(-1)
        if paths.shape[0] != n:
            raise InputError(file, "paths", f"length {n} (one per sample)", f"length {paths.shape[0]}")

    test_features = test_labels = None
    if data.test_features is not None or data.test_labels is not None:
        if data.test_features is None or data.test_labels is None:
            raise InputError(file, "test_features", "given together with `test_labels`", "only one of them")
        test_features = _matrix(data.test_features, file, "test_features")
        if test_features.shape[1] != d:
            raise InputError(file, "test_features", f"{d} columns like `features`", test_features.shape[1])
        test_labels = _labels(data.test_labels, file, "test_labels", test_features.shape[0])
        if test_labels.max() >= num_classes:
            raise InputError(file, "test_labels", f"class indices in [0, {num_classes})", int(test_labels.max()))

    return FeatureSet(
        features=features,
        labels=labels,
        features_aug=features_aug,
        clean_labels=clean,
        ids=ids,
        class_names=class_names,
        paths=paths,
        test_features=test_features,
        test_labels=test_labels,
        source=dict(data.source),
    )


def check_dynamics(dynamics, file: str = "<arrays>", needs_prob: bool = False):
    """Check recorded dynamics (`dynacor.method.pipeline.Dynamics`); returns a copy with normalised dtypes.

    Rows of ``margins_all`` are the N originals then the M copies; ``copy_pair`` indexes originals.
    """
    import dataclasses

    margins = _matrix(dynamics.margins_all, file, "margins")
    s, e = margins.shape
    if e < 2:
        raise InputError(file, "margins", "at least 2 epochs (columns)", f"shape {margins.shape}")
    pair = np.asarray(dynamics.copy_pair).reshape(-1)
    m = pair.shape[0]
    n = s - m
    if m == 0 or n <= 0:
        raise InputError(file, "pair", f"between 1 and {s - 1} corrupted copies (rows of margins after the originals)",
                         f"{m} copies for {s} rows")  # fmt: skip
    if pair.dtype.kind not in "iu" or pair.min() < 0 or pair.max() >= n:
        raise InputError(file, "pair", f"integer indices of originals in [0, {n})", f"dtype {pair.dtype}, range "
                         f"[{pair.min()}, {pair.max()}]")  # fmt: skip
    given = _labels(dynamics.given_labels, file, "given_labels", n)
    copy_labels = _labels(dynamics.copy_labels, file, "labels", m)
    if np.any(copy_labels == given[pair]):
        raise InputError(file, "labels", "each copy's label different from its original's given label",
                         f"{int(np.sum(copy_labels == given[pair]))} copies with their original's label")  # fmt: skip
    clean = None if dynamics.clean_labels is None else _labels(dynamics.clean_labels, file, "clean_labels", n)
    prob = None
    if dynamics.prob_given_all is not None:
        prob = _matrix(dynamics.prob_given_all, file, "prob_given")
        if prob.shape != margins.shape:
            raise InputError(file, "prob_given", f"the shape of margins {margins.shape}", prob.shape)
    if needs_prob and prob is None:
        raise InputError(file, "prob_given", "present for signal 'prob'", "no such field")
    late = None
    if dynamics.late_probs is not None:
        late = _matrix(dynamics.late_probs, file, "late_probs")
        if late.shape[0] != n:
            raise InputError(file, "late_probs", f"{n} rows (one per original)", late.shape)
    ids = None if dynamics.ids is None else np.asarray(dynamics.ids).reshape(-1)
    if ids is not None and ids.shape[0] != n:
        raise InputError(file, "ids", f"length {n} (one per original)", f"length {ids.shape[0]}")
    num_classes = int(max(given.max(), copy_labels.max())) + 1
    candidates, candidate_probs = _candidates(dynamics.candidates, dynamics.candidate_probs, file, given)
    rows, window = _estimate_windows(dynamics.estimate_rows, dynamics.window_probs, file, n, num_classes,
                                     None if late is None else late.shape[1])  # fmt: skip
    return dataclasses.replace(dynamics, margins_all=margins.astype(np.float32), copy_pair=pair.astype(np.int64),
                               copy_labels=copy_labels, given_labels=given, clean_labels=clean, prob_given_all=prob,
                               late_probs=late, ids=ids, estimate_rows=rows, window_probs=window,
                               candidates=candidates, candidate_probs=candidate_probs)  # fmt: skip


def _candidates(candidates: object, probs: object, file: str, given: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Each original's candidate labels (N, K) int64 (-1 pads, never its given label) and their
    probabilities (N, K) float32 (finite in [0, 1], NaN where unknown), both or neither."""
    if candidates is None and probs is None:
        return None, None
    if candidates is None or probs is None:
        missing, other = ("candidates", "candidate_probs") if candidates is None else ("candidate_probs", "candidates")
        raise InputError(file, missing, f"present with `{other}` (a candidate has a probability)", "no such field")
    n = given.shape[0]
    candidates, probs = np.asarray(candidates), np.asarray(probs)
    if candidates.ndim != 2 or candidates.shape[0] != n or candidates.shape[1] < 1 or candidates.dtype.kind not in "iu":
        raise InputError(file, "candidates", f"an (N = {n}, K >= 1) integer array of class indices",
                         f"{candidates.dtype} of shape {candidates.shape}")  # fmt: skip
    if probs.shape != candidates.shape or probs.dtype.kind != "f":
        raise InputError(file, "candidate_probs", f"a float array of the shape of candidates {candidates.shape}",
                         f"{probs.dtype} of shape {probs.shape}")  # fmt: skip
    if candidates.min() < -1:
        raise InputError(file, "candidates", "class indices >= 0, or -1 for none", f"min {candidates.min()}")
    own = candidates == given[:, None]
    if own.any():
        raise InputError(file, "candidates", "classes other than each sample's given label",
                         f"{int(own.any(axis=1).sum())} rows offering their given label")  # fmt: skip
    known = probs[~np.isnan(probs)]
    if known.size and (not np.isfinite(known).all() or known.min() < 0 or known.max() > 1.0 + 1e-4):
        raise InputError(file, "candidate_probs", "probabilities in [0, 1] (NaN where unknown)",
                         f"range [{known.min()}, {known.max()}]")  # fmt: skip
    return candidates.astype(np.int64), probs.astype(np.float32)


def _estimate_windows(rows: object, window: object, file: str, n: int, num_classes: int,
                      late_columns: int | None) -> tuple[np.ndarray | None, np.ndarray | None]:  # fmt: skip
    """The early softmax the self-estimates read: (R,) int64 distinct originals and (2, R, C)
    float32 (noise window, recall window), both or neither."""
    if rows is None and window is None:
        return None, None
    if rows is None or window is None:
        missing, other = ("estimate_rows", "window_probs") if rows is None else ("window_probs", "estimate_rows")
        raise InputError(file, missing, f"present with `{other}` (the self-estimates read both)", "no such field")
    rows = np.asarray(rows)
    if rows.ndim != 1 or rows.shape[0] == 0 or rows.dtype.kind not in "iu":
        raise InputError(file, "estimate_rows", "a non-empty 1-D array of integer indices of originals",
                         f"{rows.dtype} of shape {rows.shape}")  # fmt: skip
    if rows.min() < 0 or rows.max() >= n:
        raise InputError(file, "estimate_rows", f"indices of originals in [0, {n})",
                         f"range [{rows.min()}, {rows.max()}]")  # fmt: skip
    if np.unique(rows).size != rows.shape[0]:
        raise InputError(file, "estimate_rows", "distinct indices", f"{rows.shape[0] - np.unique(rows).size} repeated")
    window = np.asarray(window)
    r = rows.shape[0]
    columns = f"{late_columns} (as late_probs)" if late_columns is not None else f">= {num_classes} (every label)"
    ok = window.ndim == 3 and window.shape[:2] == (2, r)
    if ok:
        ok = window.shape[2] == late_columns if late_columns is not None else window.shape[2] >= num_classes
    if not ok:
        raise InputError(file, "window_probs", f"shape (2, {r}, C): the noise and the recall window, one row per "
                         f"estimate row, C = {columns} classes", f"shape {window.shape}")  # fmt: skip
    _matrix(window.reshape(2 * r, -1), file, "window_probs")  # real and finite
    return rows.astype(np.int64), np.asarray(window, dtype=np.float32)


def _matrix(values: object, file: str, field: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(file, field, "a non-empty 2-D array (N samples, D dimensions)", f"shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(file, field, "real numbers", f"dtype {arr.dtype}")
    # In blocks: a memory-mapped million-row matrix must not be checked through an N x D mask.
    bad = 0
    for start in range(0, arr.shape[0], 65536):
        bad += int((~np.isfinite(arr[start : start + 65536])).any(axis=1).sum())
    if bad:
        raise InputError(file, field, "finite numbers (no NaN or inf)", f"{bad} row(s) with NaN or inf")
    return arr


def _labels(values: object, file: str, field: str, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(file, field, "a 1-D array of class indices", f"shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(file, field, f"length {n} (one per row of `features`)", f"length {arr.shape[0]}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(file, field, "integer class indices", "non-integer values")
    elif arr.dtype.kind not in "iub":
        raise InputError(file, field, "integer class indices", f"dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise InputError(file, field, "class indices >= 0", f"min {int(arr.min())}")
    return arr
