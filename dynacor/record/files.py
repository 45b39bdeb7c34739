"""The dynamics file: recorded training dynamics in one .npz, and reading them back (also from a
finished run directory), so ``dynacor detect --dynamics`` can judge a training run done elsewhere.

Fields of the .npz (S = N + M rows: the N originals, then the M copies; E epochs; C classes)::

    margins        (S, E) float32   logit margin of each row for its own label, per epoch  [required]
    pair           (M,)   int64     the original of each copy                                [required]
    labels         (M,)   int64     each copy's corrupted label                              [required]
    given_labels   (N,)   int64     the labels judged                                        [required]
    prob_given     (S, E) float32   softmax probability of the own label (signal "prob")
    candidates     (N, K) int64     each original's candidate labels, most likely first, never its
                                    given label (-1 pads); with candidate_probs (N, K) float32,
                                    both or neither (`dynacor.method.suggest`)
    suggestion_source  text         what the candidates were read from ("early softmax, epochs 3-8")
    late_probs     (N, C) float32   a softmax of the originals to take candidates from when a
                                    recording has none (its early window was not known)
    clean_labels   (N,)   int64     ground truth, for metrics only
    estimate_rows  (R,)   int64     distinct originals whose early softmax was kept
    window_probs   (2, R, C) float32  their softmax averaged over the noise and the recall window
                                    (docs/estimates.md): the self-estimates read them; both or neither
    ids            (N,)             sample ids; paths (N,) str; class_names (C,) str
    classifier_epochs, source       JSON text: the classifier's per-epoch log, where the data came from
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dynacor.errors import CorruptError, InputError, MissingError
from dynacor.method.pipeline import Dynamics
from dynacor.method.validate import check_dynamics
from dynacor.runs.store import json_default

REQUIRED = ("margins", "pair", "labels", "given_labels")
OPTIONAL_ARRAYS = ("prob_given", "late_probs", "clean_labels", "ids", "paths", "class_names", "estimate_rows",
                   "window_probs", "candidates", "candidate_probs", "suggestion_source")  # fmt: skip
JSON_FIELDS = ("classifier_epochs", "source")


def save_dynamics(path: str | Path, dynamics: Dynamics) -> Path:
    """Write ``dynamics`` (checked first) as a .npz file readable by `load_dynamics`; returns the path."""
    from dynacor import atomic

    path = Path(path)
    dynamics = check_dynamics(dynamics, str(path))
    arrays: dict[str, np.ndarray] = {
        "margins": np.asarray(dynamics.margins_all, dtype=np.float32),
        "pair": dynamics.copy_pair.astype(np.int64),
        "labels": dynamics.copy_labels.astype(np.int64),
        "given_labels": dynamics.given_labels.astype(np.int64),
    }
    optional = {"prob_given": dynamics.prob_given_all, "late_probs": dynamics.late_probs,
                "clean_labels": dynamics.clean_labels, "ids": dynamics.ids, "paths": dynamics.paths,
                "class_names": dynamics.class_names, "estimate_rows": dynamics.estimate_rows,
                "window_probs": dynamics.window_probs, "candidates": dynamics.candidates,
                "candidate_probs": dynamics.candidate_probs, "suggestion_source": dynamics.suggestion_source}  # fmt: skip
    for name, value in optional.items():
        if value is not None:
            arr = np.asarray(value)
            if arr.dtype == object:  # np.load refuses pickled arrays; text is stored as unicode
                arr = arr.astype(str)
            floats = ("prob_given", "late_probs", "window_probs", "candidate_probs")
            arrays[name] = arr.astype(np.float32) if name in floats else arr
    arrays["classifier_epochs"] = np.array(json.dumps(dynamics.classifier_epochs, default=json_default))
    source = {k: v for k, v in dynamics.source.items() if k != "dynamics"}
    arrays["source"] = np.array(json.dumps(source, default=json_default))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.save_npz(path, **arrays)
    return path


def load_dynamics(path: str | Path) -> Dynamics:
    """Read recorded dynamics from a .npz dynamics file or a finished run directory, checked.

    Parameters
    ----------
    path : a file written by `save_dynamics` (or any .npz with the fields above), or a run
        directory (its margins.npy, copies.npz and samples table; the suggested labels and
        probabilities of that run are kept)

    Returns
    -------
    Dynamics whose ``source`` records ``dynamics`` (the path read) besides the original source.

    Raises
    ------
    MissingError when nothing is at ``path``; InputError naming the file and field otherwise.
    """
    path = Path(path)
    if path.is_dir():
        return _from_run_dir(path)
    if not path.exists():
        raise MissingError(f"{path}: no such file or run directory")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(path, None, "a .npz archive of named arrays (margins, pair, labels, given_labels)",
                             f"a single {type(archive).__name__}")  # fmt: skip
        with archive:
            fields = {name: archive[name] for name in archive.files}
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(path, None, "a readable .npz dynamics file (see dynacor.record.files)", str(exc)) from None
    for name in REQUIRED:
        if name not in fields:
            raise InputError(path, name, "present (a dynamics file holds margins, pair, labels, given_labels)",
                             f"no such field (fields: {', '.join(sorted(fields)) or 'none'})")  # fmt: skip
    texts = {name: _json(fields, name, path) for name in JSON_FIELDS}
    source = texts["source"] if isinstance(texts["source"], dict) else {}
    epochs = texts["classifier_epochs"] if isinstance(texts["classifier_epochs"], list) else []
    class_names = fields.get("class_names")
    dynamics = Dynamics(
        margins_all=fields["margins"], copy_pair=fields["pair"], copy_labels=fields["labels"],
        given_labels=fields["given_labels"], prob_given_all=fields.get("prob_given"),
        late_probs=fields.get("late_probs"), clean_labels=fields.get("clean_labels"), ids=fields.get("ids"),
        class_names=None if class_names is None else [str(c) for c in np.asarray(class_names).reshape(-1)],
        paths=fields.get("paths"), source={**source, "dynamics": str(path)}, classifier_epochs=epochs,
        estimate_rows=fields.get("estimate_rows"), window_probs=fields.get("window_probs"),
        candidates=fields.get("candidates"), candidate_probs=fields.get("candidate_probs"),
        suggestion_source=str(fields["suggestion_source"]) if "suggestion_source" in fields else None,
    )  # fmt: skip
    return _checked(dynamics, path)


def _from_run_dir(run_dir: Path) -> Dynamics:
    """Dynamics of a finished run: margins.npy (float16; signs corrected from dynamics.npy),
    copies.npz, the samples table (given labels, ids, clean labels, paths, suggestions), and the
    early softmax of the self-estimates when estimates.npz kept it (float16, `runstore.write_result`)."""
    from dynacor.runs import store as runstore

    try:
        margins = runstore.load_array(run_dir, "margins").astype(np.float32)
        pair, labels = _copies(run_dir)
        frame = _samples(run_dir)
    except (MissingError, CorruptError) as exc:
        raise InputError(run_dir, None, "a finished run directory (margins.npy, copies.npz, samples.parquet "
                         "or samples.csv) or a .npz dynamics file", str(exc)) from None  # fmt: skip
    try:
        signs = runstore.load_array(run_dir, "dynamics")
    except (MissingError, CorruptError):
        signs = None
    if signs is not None and signs.shape == margins.shape:
        # float16 rounds margins within 6e-8 of zero to (signed) zero, and -0.0 counts as >= 0: the
        # exact signs the run's encoder read are in dynamics.npy.
        flipped = (signs < 0) & (margins >= 0)
        margins[flipped] = -float(np.finfo(np.float16).smallest_subnormal)
    try:
        info = runstore.read_run(run_dir)
    except (MissingError, CorruptError):
        info = {}
    try:
        epochs = runstore.load_epochs(run_dir, "classifier").to_dict("records")
    except (MissingError, CorruptError, ValueError):
        epochs = []
    if "given_label" not in frame.columns:
        raise InputError(run_dir / "samples.csv", "given_label", "a column of the samples table",
                         f"columns {list(frame.columns)}")  # fmt: skip
    class_names = info.get("class_names")
    given = frame["given_label"].to_numpy()

    def column(name: str) -> np.ndarray | None:
        return frame[name].to_numpy() if name in frame.columns else None

    dynamics = Dynamics(
        margins_all=margins, copy_pair=pair, copy_labels=labels, given_labels=given,
        **_saved_candidates(frame, given, (info.get("info") or {}).get("suggestion_source")),
        clean_labels=column("clean_label"), ids=column("id"), paths=column("path"),
        class_names=None if class_names is None else [str(c) for c in class_names],
        source={**(info.get("source") or {}), "dynamics": str(run_dir)}, classifier_epochs=epochs,
        **_early_softmax(run_dir),
    )  # fmt: skip
    return _checked(dynamics, run_dir)


def _early_softmax(run_dir: Path) -> dict[str, np.ndarray]:
    """``estimate_rows`` and ``window_probs`` from a run's estimates.npz; none when the run kept
    no early softmax (no estimates, a run from before they were kept, or too many rows x classes)."""
    path = run_dir / "estimates.npz"
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as parts:
            if "window_probs" not in parts.files or "rows" not in parts.files:
                return {}
            return {"estimate_rows": parts["rows"], "window_probs": parts["window_probs"]}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptError(f"{path}: must be a readable .npz archive, got {exc}") from None


def _saved_candidates(frame, given: np.ndarray, source: str | None) -> dict[str, Any]:
    """The run's candidate labels from its samples table, so a re-run offers the same ones: the
    candidate columns, or (a run from before they existed) its suggestion where it is not the
    given label. None when the table has neither."""
    from dynacor.method.suggest import SOURCE_SAVED, candidate_matrix, saved_candidates

    if "candidates" in frame.columns:
        candidates, probs = candidate_matrix(frame)
        keep = max(1, int((candidates >= 0).sum(axis=0).astype(bool).sum()))  # widest row
        return {"candidates": candidates[:, :keep], "candidate_probs": probs[:, :keep].astype(np.float32),
                "suggestion_source": source or SOURCE_SAVED}  # fmt: skip
    if "suggested_label" in frame.columns:
        prob = frame["suggested_prob"].to_numpy() if "suggested_prob" in frame.columns else None
        candidates, probs = saved_candidates(frame["suggested_label"].to_numpy(), prob, given)
        return {"candidates": candidates, "candidate_probs": probs, "suggestion_source": SOURCE_SAVED}
    return {}


def _copies(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from dynacor.runs import store as runstore

    try:
        return runstore.load_copies(run_dir)
    except KeyError as exc:
        raise InputError(run_dir / "copies.npz", str(exc).strip("'\""), "present (pair and labels)", "no such field") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptError(f"{run_dir / 'copies.npz'}: must be a readable .npz archive, got {exc}") from None


def _samples(run_dir: Path):
    import pandas as pd

    from dynacor.runs import store as runstore

    if (run_dir / "samples.parquet").exists():
        return runstore.load_samples(run_dir)
    csv = run_dir / "samples.csv"
    if not csv.exists():
        raise MissingError(f"{csv}: no such file (nor samples.parquet)")
    try:
        return pd.read_csv(csv)
    except (ValueError, OSError) as exc:
        raise CorruptError(f"{csv}: must be a readable CSV table, got {exc}") from None


def _checked(dynamics: Dynamics, where: Path) -> Dynamics:
    checked = check_dynamics(dynamics, str(where))
    if checked.class_names is not None:
        c = len(checked.class_names)
        top = int(max(checked.given_labels.max(), checked.copy_labels.max()))
        if top >= c:
            raise InputError(where, "labels", f"class indices in [0, {c}) (one per class name)", f"max {top}")
        if checked.candidates is not None and checked.candidates.max() >= c:
            raise InputError(where, "candidates", f"class indices in [0, {c}) (one per class name)",
                             f"max {checked.candidates.max()}")  # fmt: skip
        if checked.late_probs is not None and checked.late_probs.shape[1] != c:
            raise InputError(where, "late_probs", f"{c} columns (one per class name)", checked.late_probs.shape)
        if checked.window_probs is not None and checked.window_probs.shape[2] != c:
            raise InputError(where, "window_probs", f"shape (2, R, {c}): one column per class name",
                             checked.window_probs.shape)  # fmt: skip
    return checked


def _json(fields: dict[str, np.ndarray], name: str, path: Path) -> Any:
    if name not in fields:
        return None
    try:
        return json.loads(str(fields[name]))
    except json.JSONDecodeError as exc:
        raise InputError(path, name, "JSON text", str(exc)) from None
