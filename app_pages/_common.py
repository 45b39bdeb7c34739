"""Shared pieces of the app's pages: the job runner, the review store, the current run, cached
reads of run files. Layout helpers only; the logic lives in ``dynacor``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dynacor import review, runstore, runview
from dynacor.errors import CorruptError, MissingError
from dynacor.jobs import JobRunner
from dynacor.review_store import ReviewStore, default_url

PAGES = {
    "run": "app_pages/run.py",
    "training": "app_pages/training.py",
    "clusters": "app_pages/clusters.py",
    "sample": "app_pages/sample.py",
    "review": "app_pages/review.py",
    "export": "app_pages/export.py",
}


@st.cache_resource
def job_runner() -> JobRunner:
    # One per server process, shared by every session: one detection at a time per app server.
    return JobRunner()


@st.cache_resource
def _store(url: str) -> ReviewStore:
    return ReviewStore(url)


def review_store() -> ReviewStore:
    return _store(default_url(runs_root()))


def runs_root() -> Path:
    return runview.runs_root()


def run_dir(name: str) -> Path:
    return runs_root() / name


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(max_entries=4, show_spinner=False)
def _samples(path: str, _mtime_key: int):
    return runstore.load_samples(path)


def samples(name: str):
    """The run's per-sample table (cached; re-read when the run is rewritten)."""
    d = run_dir(name)
    return _samples(str(d), _mtime(d / "samples.parquet"))


@st.cache_data(max_entries=8, show_spinner=False)
def _run_info(path: str, _mtime_key: int) -> dict:
    return runstore.read_run(path)


def run_info(name: str) -> dict:
    d = run_dir(name)
    return _run_info(str(d), _mtime(d / "run.json"))


@st.cache_data(max_entries=4, show_spinner=False)
def _array(path: str, which: str, _mtime_key: int):
    return runstore.load_array(path, which)


def array(name: str, which: str):
    d = run_dir(name)
    return _array(str(d), which, _mtime(d / f"{which}.npy"))


@st.cache_data(max_entries=4, show_spinner=False)
def _flagged(path: str, _mtime_key: int):
    return review.flagged_sorted(runstore.load_samples(path))


def flagged(name: str):
    """Flagged samples of the run, most confidently noisy first (cached per run)."""
    d = run_dir(name)
    return _flagged(str(d), _mtime(d / "samples.parquet"))


def class_names(name: str) -> list[str] | None:
    names = run_info(name).get("class_names")
    return list(names) if names else None


def label_name(names: list[str] | None, label: object) -> str:
    if label is None or pd.isna(label):
        return "-"
    label = int(label)
    return f"{names[label]} ({label})" if names and 0 <= label < len(names) else str(label)


def pick_finished_run(key: str, where=st) -> str | None:
    """A selector of finished runs; remembers the choice across pages in ``current_run``.

    Shows a hint and returns None when there is none yet."""
    try:
        names = runview.finished_runs(runs_root())
    except OSError:
        names = []
    wanted = st.query_params.get("run") or st.session_state.get("current_run")
    if not names:
        st.info("No finished run yet. Start one on the **Run** page.")
        if st.button("Go to the Run page", key=f"go_run_empty_{key}"):
            st.switch_page(PAGES["run"])
        return None
    index = names.index(wanted) if wanted in names else 0
    choice = where.selectbox("Run", names, index=index, key=f"pick_run_{key}")
    st.session_state["current_run"] = choice
    return choice


def safe(call, *args, **kwargs):
    """Run a reader; show a readable error (not a traceback) when a run's files are missing or bad."""
    try:
        return call(*args, **kwargs)
    except (MissingError, CorruptError) as exc:
        st.error(f"This run cannot be shown: {exc}")
        st.stop()
