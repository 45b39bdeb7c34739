"""What the app shows about runs, computed without any UI: the run list, allowed data paths,
live progress with time left, per-epoch curves, and mean dynamics curves per cluster.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dynacor.errors import InputError
from dynacor.runs import store as runstore

REPO_DIR = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO_DIR / "sample_data"
LIVE_STAGES = ("features", "classifier", "encoder")


# ---- configuration from the environment


def runs_root() -> Path:
    return Path(os.environ.get("DYNACOR_RUNS") or "dynacor_runs").expanduser().resolve()


def data_roots() -> list[Path]:
    """Folders the app may read data from: ``DYNACOR_DATA_ROOTS`` (``os.pathsep``-separated), else
    the working directory and the built-in sample's folder."""
    configured = os.environ.get("DYNACOR_DATA_ROOTS")
    if configured:
        roots = [Path(p).expanduser() for p in configured.split(os.pathsep) if p.strip()]
    else:
        roots = [Path.cwd(), SAMPLE_DIR]
    return [r.resolve() for r in roots]


def resolve_data_path(text: str, roots: Sequence[Path], want: str = "file") -> Path:
    """The path typed into the Run page, checked: it exists, is a ``want`` (file or dir), and lies
    inside one of ``roots`` (after resolving links), so a shared server reads nothing else.
    Relative paths are taken from the first root. Raises `InputError` with a message for people."""
    text = (text or "").strip().strip('"').strip("'")
    if not text:
        raise InputError("Run page", "path", f"a {want} path", "nothing")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = (roots[0] if roots else Path.cwd()) / path
    path = path.resolve()
    if not any(path == root or root in path.parents for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise InputError("Run page", "path", f"inside a configured data root ({allowed}; set DYNACOR_DATA_ROOTS to change)", text)
    if not path.exists():
        raise InputError("Run page", "path", f"an existing {want}", f"{text} (no such {want})")
    if want == "file" and not path.is_file():
        raise InputError("Run page", "path", "a file", f"{text} (a directory)")
    if want == "dir" and not path.is_dir():
        raise InputError("Run page", "path", "a directory", f"{text} (a file)")
    return path


# ---- runs


def new_run_name(root: Path, label: str) -> str:
    """A fresh, sortable run directory name: ``YYYYmmdd-HHMMSS-label``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in label)[:40] or "run"
    name = f"{stamp}-{safe}"
    k = 2
    while (root / name).exists():
        name = f"{stamp}-{safe}-{k}"
        k += 1
    return name


def describe_source(source: dict) -> str:
    kind = source.get("kind", "?")
    where = source.get("path") or source.get("file") or source.get("root")
    if kind == "builtin":
        return "built-in sample"
    return f"{kind}: {Path(where).name}" if where else str(kind)


def runs_table(root: Path) -> pd.DataFrame:
    """One row per run, newest first: run, status, data, date, F1 (when known), summary, error."""
    rows = []
    for r in runstore.list_runs(root):
        f1 = (r.metrics or {}).get("f1")
        rows.append(
            {
                "run": r.path.name,
                "status": r.status,
                "data": describe_source(r.source),
                "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)) if r.created else "",
                "F1": None if f1 is None or (isinstance(f1, float) and math.isnan(f1)) else round(100 * f1, 1),
                "summary": r.summary or "",
                "error": r.error or "",
            }
        )
    return pd.DataFrame(rows, columns=["run", "status", "data", "date", "F1", "summary", "error"])


def finished_runs(root: Path) -> list[str]:
    return [r.path.name for r in runstore.list_runs(root) if r.status == runstore.FINISHED]


# ---- live progress


def stage_progress(events: Sequence[dict], now: float | None = None) -> list[dict]:
    """For each live stage: done, total, fraction, elapsed and estimated seconds left.

    Time left extrapolates the stage's own pace (seconds per finished step so far); None until one
    step is done. A finished stage reports fraction 1 and 0 s left.
    """
    now = time.time() if now is None else now
    info = {s: {"stage": s, "done": 0, "total": None, "started": None, "seconds": None} for s in LIVE_STAGES}
    for e in events:
        stage = e.get("stage")
        kind = e.get("type")
        if kind == "stage_start" and stage in info:
            info[stage]["started"] = e.get("time")
            if "total" in e:
                info[stage]["total"] = int(e["total"])
        elif kind == "stage_end" and stage in info:
            info[stage]["seconds"] = float(e.get("seconds", 0.0))
        elif kind in ("classifier_epoch", "encoder_epoch"):
            s = kind.split("_")[0]
            info[s]["done"] = int(e["epoch"])
            info[s]["total"] = int(e.get("of", info[s]["total"] or e["epoch"]))
        elif kind == "progress":
            s = e.get("stage", "features")
            if s in info:
                info[s]["done"], info[s]["total"] = int(e["done"]), int(e["total"])
    out = []
    for s in LIVE_STAGES:
        row = info[s]
        total, done = row["total"], row["done"]
        if row["seconds"] is not None:
            out.append({**row, "fraction": 1.0, "elapsed": row["seconds"], "left": 0.0, "state": "done"})
            continue
        if row["started"] is None:
            out.append({**row, "fraction": 0.0, "elapsed": 0.0, "left": None, "state": "waiting"})
            continue
        elapsed = max(0.0, now - float(row["started"]))
        fraction = min(1.0, done / total) if total else 0.0
        left = elapsed / done * (total - done) if total and done else None
        out.append({**row, "fraction": fraction, "elapsed": elapsed, "left": left, "state": "working"})
    return out


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def epoch_frames(events: Sequence[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-epoch classifier and encoder rows from the event log (live or finished)."""
    drop = {"type", "time", "of"}
    cls = [{k: v for k, v in e.items() if k not in drop} for e in events if e.get("type") == "classifier_epoch"]
    enc = [{k: v for k, v in e.items() if k not in drop} for e in events if e.get("type") == "encoder_epoch"]
    # A restarted run appends to a fresh log, but keep the last row per epoch to be safe.
    cls_frame = pd.DataFrame(cls)
    enc_frame = pd.DataFrame(enc)
    for frame in (cls_frame, enc_frame):
        if len(frame):
            frame.drop_duplicates("epoch", keep="last", inplace=True)
            frame.reset_index(drop=True, inplace=True)
    return cls_frame, enc_frame


# ---- dynamics curves


def class_exemplars(samples: pd.DataFrame, per_class: int = 3) -> dict[int, pd.DataFrame]:
    """The most confidently clean samples of each given class (lowest noisy score, unflagged):
    what the class looks like, shown beside a card. Returns ``{class: rows}``."""
    clean = samples[~samples["flagged"].astype(bool)].sort_values(["noisy_score", "index"], kind="stable")
    return {int(c): part.head(per_class) for c, part in clean.groupby("given_label", sort=True)}


def cluster_mean_curves(signs: np.ndarray, margins: np.ndarray, flagged: np.ndarray) -> pd.DataFrame:
    """Mean sign and mean raw margin per epoch over the originals of each predicted cluster.

    signs, margins : (N+M, E), originals first; flagged : (N,) bool
    Returns long format: epoch, cluster (clean/noisy), sign, margin.
    """
    n = flagged.shape[0]
    rows = []
    epochs = np.arange(1, signs.shape[1] + 1)
    for name, mask in (("clean", ~flagged), ("noisy", flagged)):
        if not mask.any():
            continue
        s = signs[:n][mask].astype(np.float32).mean(axis=0)
        m = margins[:n][mask].astype(np.float32).mean(axis=0)
        rows.append(pd.DataFrame({"epoch": epochs, "cluster": f"mean of {name} cluster", "sign": s, "margin": m}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["epoch", "cluster", "sign", "margin"])
