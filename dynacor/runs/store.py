"""The run store: one directory per run. Pure I/O.

Layout of ``RUN_DIR``::

    status.json            running | finished | failed | cancelled (+ run_id, pid, times, error); written
                           first as "running" and last as "finished", so a crash never leaves a
                           run that looks finished
    config.json            the engine config and the data source, written at start
    events.jsonl           every event, one JSON object a line, appended as it happens
    run.json               config, chosen epoch, timings, metrics, summary, info, the cut
                           (``threshold``) and the self-estimates (``estimates``) (at the end)
    samples.parquet/.csv   the per-sample table (originals, input order)
    dynamics.npy           (N+M, E) int8 margin signs; margins.npy (N+M, E) float16 raw margins
    representations.npy    (N+M, K) float16 at the chosen encoder epoch
    scores.npy             (N+M,) float32 q_noisy of originals and copies
    copies.npz             pair (M,) original of each copy, labels (M,) its corrupted label
    neighbours.npz         rows (F,) the flagged originals, index (F, k) their nearest originals
    estimates.npz          rows (R,), off (R,) bool, eta_draws (B,): what another cut's estimates need;
                           window_probs (2, R, C) float16, the early softmax they read (kept up to
                           `WINDOW_PROBS_LIMIT` elements) for ``dynacor detect --dynamics RUN_DIR``
    classifier_epochs.csv, encoder_epochs.csv   per-epoch curves
    error.txt              traceback of a failed run
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynacor import atomic
from dynacor.errors import CorruptError, InputError, MissingError, RunExistsError
from dynacor.method.suggest import cells_of

STATUS_FILE = "status.json"
# The early softmax of the self-estimates is kept in a run up to 2**24 elements (32 MiB in float16:
# CIFAR-100's 50,000 rows x 100 classes x 2 windows); beyond that a run would mostly be softmax.
WINDOW_PROBS_LIMIT = 2**24
RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED = "running", "finished", "failed", "cancelled", "interrupted"


@dataclass
class RunSummary:
    """One line of the run list."""

    path: Path
    status: str
    created: float | None
    source: dict
    metrics: dict | None
    summary: str | None
    error: str | None


def create_run(run_dir: str | Path, config: dict, source: dict, overwrite: bool = False) -> Path:
    """Prepare ``run_dir`` for a new run and mark it running.

    Refuses a directory holding a finished or live run unless ``overwrite``; a failed, cancelled or
    interrupted run is replaced. Raises `InputError` when the directory cannot be written.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(run_dir, "--out", "a directory", "an existing file")
    if (run_dir / STATUS_FILE).exists():
        try:
            state = read_status(run_dir)["status"]
        except CorruptError:
            state = FAILED
        if state in (FINISHED, RUNNING) and not overwrite:
            raise RunExistsError(
                f"{run_dir}: field `status` must be absent (a new run directory) or pass --overwrite, got {state!r} run"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(run_dir, "--out", "a writable directory", f"{exc.strerror or exc}") from None
    if (run_dir / STATUS_FILE).exists():
        # Replacing a run: nothing of the old one (map cache, arrays, events) may survive into the new.
        _clear(run_dir)
    run_id = uuid.uuid4().hex
    _write_status(run_dir, RUNNING, created=time.time(), run_id=run_id)
    atomic.write_json(run_dir / "config.json", {"run_id": run_id, "config": config, "source": source})
    return run_dir


def run_id(run_dir: str | Path) -> str:
    """The run's identity, drawn when it was created: caches and review decisions are keyed by it,
    so a run written again into the same folder never inherits the old run's state. Runs made
    before run ids existed are known by their folder name."""
    run_dir = Path(run_dir)
    for name in (STATUS_FILE, "config.json"):
        try:
            value = _read_json(run_dir / name).get("run_id")
        except (MissingError, CorruptError):
            continue
        if value:
            return str(value)
    return run_dir.name


def _clear(run_dir: Path) -> None:
    """Remove everything inside a run folder (only called on folders that hold a status.json)."""
    import shutil

    for child in run_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink(missing_ok=True)


def append_event(run_dir: str | Path, event: dict) -> None:
    """Append one event line; a reader may see a partial last line and must skip it."""
    with open(Path(run_dir) / "events.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(event, default=json_default) + "\n")


def write_result(run_dir: str | Path, result: Any) -> None:
    """Write every artifact of a finished `dynacor.method.pipeline.Result`, then mark the run finished."""
    import pandas as pd

    run_dir = Path(run_dir)
    _write_samples(run_dir, result.samples_frame())
    atomic.save_npy(run_dir / "dynamics.npy", result.signs_all)
    atomic.save_npy(run_dir / "margins.npy", result.margins_all.astype(np.float16))
    atomic.save_npy(run_dir / "representations.npy", np.asarray(result.representations_all, dtype=np.float16))
    atomic.save_npy(run_dir / "scores.npy", result.q_noisy_all.astype(np.float32))
    atomic.save_npz(run_dir / "copies.npz", pair=result.copy_pair, labels=result.copy_labels)
    if result.neighbours is not None:
        atomic.save_npz(run_dir / "neighbours.npz", rows=result.neighbour_rows, index=result.neighbours)
    if result.estimate_parts is not None:
        parts = dict(result.estimate_parts)
        window = parts.pop("window_probs", None)
        if window is not None and window.size <= WINDOW_PROBS_LIMIT:
            parts["window_probs"] = np.asarray(window, dtype=np.float16)
        atomic.save_npz(run_dir / "estimates.npz", **parts)
    atomic.write_text(run_dir / "classifier_epochs.csv", pd.DataFrame(result.classifier_epochs).to_csv(index=False))
    atomic.write_text(run_dir / "encoder_epochs.csv", pd.DataFrame(result.encoder_epochs).to_csv(index=False))
    atomic.write_json(
        run_dir / "run.json",
        {
            "run_id": run_id(run_dir),
            "config": result.config,
            "source": result.source,
            "class_names": result.class_names,
            "chosen_epoch": result.chosen_epoch,
            "timings": result.timings,
            "metrics": result.metrics,
            "warnings": result.warnings,
            "summary": result.summary(),
            "info": result.info,
            "num_samples": result.num_samples,
            "num_flagged": int(result.flagged.sum()),
            "threshold": result.threshold,
            "estimates": result.estimates,
        },
    )
    _mark_finished(run_dir)


def set_cut(run_dir: str | Path, threshold: float) -> dict:
    """Move a finished DynaCor run's cut: ``flagged`` becomes ``noisy_score > threshold`` in the
    per-sample table, and run.json records the cut and the estimates at it. Returns the new run.json.

    The table is written before run.json, each atomically: a crash between them leaves the new
    flags with the old record, which the next call (or a re-run of this one) repairs.
    """
    from dynacor.method.config import DynaCorConfig
    from dynacor.method.estimates import quality_at_cut
    from dynacor.method.pipeline import _seed_streams, cut_warnings, summary_text

    run_dir = Path(run_dir)
    info = read_run(run_dir)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise InputError("cut", "threshold", "a finite number", repr(threshold))
    frame = load_samples(run_dir)
    if "noisy_score" not in frame:
        raise InputError(run_dir / "samples.parquet", "noisy_score", "present (a DynaCor run)", "absent")
    try:
        # The curve's cuts are between the scores as the run computed them: scores.npy keeps them
        # whole, while the table rounds them to 6 decimals, where a cut can land inside a tie.
        scores = load_array(run_dir, "scores")[: len(frame)].astype(np.float64)
    except MissingError:
        scores = frame["noisy_score"].to_numpy(dtype=np.float64)
    flagged = scores > threshold
    floor = float(info.get("config", {}).get("estimate_precision_floor", DynaCorConfig.estimate_precision_floor))
    # The old cut's own warnings go; the target's and the clustering's stay.
    stale = cut_warnings(frame["flagged"].to_numpy(dtype=bool), info.get("estimates"), floor)
    frame["flagged"] = flagged.astype(np.int8)
    if "cluster" in frame:
        frame["cluster"] = np.where(flagged, "noisy", "clean")
    estimates = info.get("estimates")
    if estimates is not None:
        parts = _read_npz(run_dir / "estimates.npz", ("rows", "off", "eta_draws"))
        config = info.get("config", {})
        rng = np.random.default_rng(_seed_streams(int(config.get("seed", 0)))[4])
        curve = estimates.get("curve")
        estimates = quality_at_cut(scores[parts["rows"]], parts["off"], float(estimates["noise_rate"]["value"]),
                                   parts["eta_draws"], float(threshold), rng=rng,
                                   confidence=float(estimates.get("confidence", 0.95)),
                                   margin=float(estimates.get("margin", 0.0)))  # fmt: skip
        estimates["curve"] = curve
    metrics = info.get("metrics")
    if metrics is not None and "is_noisy" in frame:  # a benchmark run: its true figures at the new cut
        from dynacor.method.metrics import detection_metrics

        metrics = detection_metrics(flagged, frame["is_noisy"].to_numpy(dtype=bool), scores)
    _write_samples(run_dir, frame)
    warnings = [w for w in info.get("warnings") or [] if w not in stale] + cut_warnings(flagged, estimates, floor)
    info = {**info, "threshold": float(threshold), "estimates": estimates, "num_flagged": int(flagged.sum()),
            "metrics": metrics, "warnings": warnings}  # fmt: skip
    encoder_epochs = len(load_epochs(run_dir, "encoder")) if (run_dir / "encoder_epochs.csv").exists() else 1
    info["summary"] = summary_text(len(frame), int(flagged.sum()), float(threshold), int(info.get("chosen_epoch", 0)),
                                   encoder_epochs, estimates, metrics, float(info.get("timings", {}).get("total", 0.0)))  # fmt: skip
    atomic.write_json(run_dir / "run.json", info)
    return info


def _read_npz(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.exists():
        raise MissingError(f"{path}: no such file")
    try:
        with np.load(path) as data:
            return {name: np.asarray(data[name]) for name in names}
    except (KeyError, ValueError, OSError) as exc:
        raise CorruptError(f"{path}: fields {list(names)} must be readable arrays, got {exc}") from None


def write_table_result(run_dir: str | Path, frame, run_info: dict, signs: np.ndarray | None = None) -> None:
    """Write a run that has a per-sample table but no DynaCor result (a baseline), then mark it finished."""
    run_dir = Path(run_dir)
    _write_samples(run_dir, frame)
    if signs is not None:
        atomic.save_npy(run_dir / "dynamics.npy", signs.astype(np.int8))
    atomic.write_json(run_dir / "run.json", {"run_id": run_id(run_dir), **run_info})
    _mark_finished(run_dir)


def _write_samples(run_dir: Path, frame) -> None:
    atomic.write_with(run_dir / "samples.parquet", lambda h: frame.to_parquet(h, index=False))
    atomic.write_text(run_dir / "samples.csv", csv_frame(frame).to_csv(index=False))


# The per-sample table's list columns: Parquet keeps them as lists, CSV as space-separated text.
LIST_COLUMNS = ("candidates", "candidate_probs")


def csv_frame(frame):
    """``frame`` with each list column (`LIST_COLUMNS`) as text for CSV: ``[3, 5, 1]`` -> ``"3 5 1"``."""
    present = [name for name in LIST_COLUMNS if name in frame.columns]
    if not present:
        return frame
    frame = frame.copy()
    for name in present:
        fmt = (lambda v: f"{float(v):.6g}") if name == "candidate_probs" else (lambda v: str(int(v)))
        frame[name] = [" ".join(fmt(v) for v in cells_of(cell)) for cell in frame[name]]
    return frame


def _mark_finished(run_dir: Path) -> None:
    previous = _read_json(run_dir / STATUS_FILE)
    _write_status(run_dir, FINISHED, created=previous.get("created"), run_id=previous.get("run_id"), finished=time.time())


def mark_failed(run_dir: str | Path, error: str, details: str = "") -> None:
    run_dir = Path(run_dir)
    atomic.write_text(run_dir / "error.txt", details or error)
    previous = _safe_status(run_dir)
    _write_status(run_dir, FAILED, created=previous.get("created"), run_id=previous.get("run_id"), finished=time.time(),
                  error=error)  # fmt: skip


def mark_cancelled(run_dir: str | Path) -> None:
    run_dir = Path(run_dir)
    previous = _safe_status(run_dir)
    _write_status(run_dir, CANCELLED, created=previous.get("created"), run_id=previous.get("run_id"), finished=time.time())


def read_status(run_dir: str | Path) -> dict:
    """The status dict. A "running" run whose process on this host is gone reads as interrupted."""
    status = _read_json(Path(run_dir) / STATUS_FILE)
    if "status" not in status:
        raise CorruptError(f"{Path(run_dir) / STATUS_FILE}: field `status` must be present, got {sorted(status)}")
    if status["status"] == RUNNING and status.get("host") == socket.gethostname() and not _alive(status.get("pid")):
        status = {**status, "status": INTERRUPTED}
    return status


def read_run(run_dir: str | Path) -> dict:
    """run.json of a finished run (MissingError when the run has not finished)."""
    return _read_json(Path(run_dir) / "run.json")


def read_finished(run_dir: str | Path) -> tuple[Any, str, dict]:
    """A finished run's table, id and run.json, for exports and re-runs. Raises `InputError`
    when ``run_dir`` is not a run directory or its run has not finished."""
    run_dir = Path(run_dir)
    if not (run_dir / STATUS_FILE).is_file():
        raise InputError(run_dir, "RUN_DIR", "a run directory (made by dynacor detect or the app)",
                         f"no {STATUS_FILE} there")  # fmt: skip
    state = read_status(run_dir)["status"]
    if state != FINISHED:
        raise InputError(run_dir / STATUS_FILE, "status", "finished (export a run once it has finished)", repr(state))
    return load_samples(run_dir), run_id(run_dir), read_run(run_dir)


def read_config(run_dir: str | Path) -> dict:
    return _read_json(Path(run_dir) / "config.json")


def read_events(run_dir: str | Path) -> list[dict]:
    """All complete event lines so far (a partial last line, still being written, is skipped)."""
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def load_samples(run_dir: str | Path):
    """The per-sample table as a pandas DataFrame."""
    import pandas as pd

    path = Path(run_dir) / "samples.parquet"
    if not path.exists():
        raise MissingError(f"{path}: no such file (the run has not finished)")
    try:
        return pd.read_parquet(path)
    except Exception as exc:
        raise CorruptError(f"{path}: must be a readable Parquet file, got {exc}") from None


def load_array(run_dir: str | Path, name: str) -> np.ndarray:
    """One of the saved arrays: ``dynamics``, ``margins``, ``representations``, ``scores``."""
    path = Path(run_dir) / f"{name}.npy"
    if not path.exists():
        raise MissingError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptError(f"{path}: must be a readable .npy array, got {exc}") from None


def load_copies(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(run_dir) / "copies.npz"
    if not path.exists():
        raise MissingError(f"{path}: no such file")
    with np.load(path, allow_pickle=False) as archive:
        return archive["pair"], archive["labels"]


def load_neighbours(run_dir: str | Path) -> dict[int, np.ndarray]:
    """Each flagged original's nearest originals in feature space, ``{row: (k,) rows}``; empty
    when the run has none (older runs, dynamics recorded elsewhere)."""
    path = Path(run_dir) / "neighbours.npz"
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            return dict(zip(archive["rows"].tolist(), archive["index"], strict=True))
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise CorruptError(f"{path}: must hold arrays `rows` and `index`, got {exc}") from None


def load_epochs(run_dir: str | Path, stage: str):
    """Per-epoch curves of ``classifier`` or ``encoder`` as a DataFrame."""
    import pandas as pd

    path = Path(run_dir) / f"{stage}_epochs.csv"
    if not path.exists():
        raise MissingError(f"{path}: no such file")
    return pd.read_csv(path)


def list_runs(root: str | Path) -> list[RunSummary]:
    """Every run directory directly under ``root``, newest first."""
    root = Path(root)
    runs = []
    if not root.is_dir():
        return runs
    for child in root.iterdir():
        if not (child / STATUS_FILE).exists():
            continue
        try:
            status = read_status(child)
        except (CorruptError, MissingError):
            runs.append(RunSummary(child, FAILED, None, {}, None, None, "unreadable status.json"))
            continue
        source, metrics, summary = {}, None, None
        try:
            source = read_config(child).get("source", {})
        except (CorruptError, MissingError):
            pass
        if status["status"] == FINISHED:
            try:
                info = read_run(child)
                metrics, summary = info.get("metrics"), info.get("summary")
            except (CorruptError, MissingError):
                pass
        runs.append(RunSummary(child, status["status"], status.get("created"), source, metrics, summary, status.get("error")))
    runs.sort(key=lambda r: r.created or 0.0, reverse=True)
    return runs


def _write_status(run_dir: Path, status: str, **fields: Any) -> None:
    atomic.write_json(run_dir / STATUS_FILE, {"status": status, "pid": os.getpid(), "host": socket.gethostname(), **fields})


def _safe_status(run_dir: Path) -> dict:
    try:
        return _read_json(run_dir / STATUS_FILE)
    except (MissingError, CorruptError):
        return {}


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise MissingError(f"{path}: no such file")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptError(f"{path}: must be valid JSON, got {exc}") from None
    if not isinstance(value, dict):
        raise CorruptError(f"{path}: must hold a JSON object, got {type(value).__name__}")
    return value


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for what runs hold: numpy scalars and arrays, else the text."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
