"""Shared pieces of the app's pages: the router guard, the job runner, the review store, the
current run, cached reads of run files. Layout helpers only; the logic lives in ``dynacor``."""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

from dynacor import review
from dynacor.errors import CorruptError, DynacorError, MissingError
from dynacor.method.suggest import candidate_matrix
from dynacor.review import candidates as card_classes
from dynacor.review.store import ReviewStore, default_url
from dynacor.runs import store as runstore
from dynacor.runs import view as runview
from dynacor.runs.jobs import JobBusy, JobRunner
from pages._text import plain

PAGES = {
    "run": "pages/run.py",
    "training": "pages/training.py",
    "clusters": "pages/clusters.py",
    "sample": "pages/sample.py",
    "review": "pages/review.py",
    "grid": "pages/grid.py",
    "team": "pages/team.py",
    "export": "pages/export.py",
}

# Set while app.py's router runs the current page (same script thread, same run).
_ROUTED: ContextVar[bool] = ContextVar("dynacor_routed", default=False)
_HANDING_OVER: ContextVar[bool] = ContextVar("dynacor_handing_over", default=False)


@contextmanager
def routed() -> Iterator[None]:
    """app.py runs the page chosen by st.navigation inside this."""
    token = _ROUTED.set(True)
    try:
        yield
    finally:
        _ROUTED.reset(token)


def require_router() -> None:
    """First call of every page: make sure the page runs through app.py's st.navigation.

    With a ``pages/`` folder next to app.py, a fresh streamlit server starts in its legacy
    "pages directory" mode (``PagesManager.uses_pages_directory``) until some session runs
    st.navigation: a first request to e.g. /review then runs pages/review.py directly, without
    app.py's page config, job runner and navigation. Here the page notices it was not started by
    app.py, switches streamlit out of that mode, runs app.py in its place in this same script run
    (its st.navigation resolves the same requested page, query string and widget events
    included) and stops. When app.py routed the page (every run after the first, and every run
    of a server that has seen one), this returns at once.
    """
    if _ROUTED.get() or _HANDING_OVER.get():
        return
    ctx = get_script_run_ctx()
    if ctx is None:  # plain `python pages/x.py`: nothing to route
        return
    PagesManager.uses_pages_directory = False  # what st.navigation sets; later runs start at app.py
    main = ctx.pages_manager.main_script_path
    code = ctx.pages_manager.get_page_script_byte_code(main)
    module = types.ModuleType("__main__")
    module.__dict__["__file__"] = main
    token = _HANDING_OVER.set(True)
    try:
        exec(code, module.__dict__)  # noqa: S102 - app.py, as streamlit's script runner runs it
    finally:
        _HANDING_OVER.reset(token)
    st.stop()  # the page already ran, through app.py; do not run it a second time


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


def review_key(name: str) -> str:
    """What the review store knows the run by: its run id, so decisions made on an earlier run
    written into the same folder stay in the store but never show on this one."""
    return runstore.run_id(run_dir(name))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


# The cached readers below take the file's mtime as ``mtime_key`` so that a rewritten file (a
# moved cut rewrites samples.parquet and run.json) is read again. No leading underscore:
# st.cache_data leaves such arguments out of its key.
def _table(path: str):
    """The samples table as the pages use it: without the candidate list columns, which
    `candidates` serves as arrays. cache_data copies its value on every read, and 50,000 rows of
    Python lists would double the cost of each card's rerun."""
    frame = runstore.load_samples(path)
    return frame.drop(columns=[c for c in ("candidates", "candidate_probs") if c in frame.columns])


@st.cache_data(max_entries=4, show_spinner=False)
def _samples(path: str, mtime_key: int):
    return _table(path)


def samples(name: str):
    """The run's per-sample table (cached; re-read when the run is rewritten)."""
    d = run_dir(name)
    return _samples(str(d), _mtime(d / "samples.parquet"))


@st.cache_data(max_entries=8, show_spinner=False)
def _run_info(path: str, mtime_key: int) -> dict:
    return runstore.read_run(path)


def run_info(name: str) -> dict:
    d = run_dir(name)
    return _run_info(str(d), _mtime(d / "run.json"))


@st.cache_data(max_entries=4, show_spinner=False)
def _array(path: str, which: str, mtime_key: int):
    return runstore.load_array(path, which)


def array(name: str, which: str):
    d = run_dir(name)
    return _array(str(d), which, _mtime(d / f"{which}.npy"))


@st.cache_data(max_entries=4, show_spinner=False)
def _flagged(path: str, mtime_key: int):
    return review.flagged_sorted(_table(path))


def flagged(name: str):
    """Flagged samples of the run, most confidently noisy first (cached per run)."""
    d = run_dir(name)
    return _flagged(str(d), _mtime(d / "samples.parquet"))


def start_run(make_request, label: str) -> None:
    """Start the run that ``make_request()`` prepares (a `dynacor.runs.request.Prepared`) in a new
    run folder named after ``label``, then follow it on the Training page; what stops it (bad
    input, a run already working) is said on the page."""
    try:
        request = make_request()
        name = runview.new_run_name(runs_root(), label)
        job_runner().start(runs_root() / name, request.config, request.loader, request.source)
    except JobBusy as exc:
        st.warning(f"A run is already working: {plain(exc)}. One run at a time per app server.")
    except (DynacorError, ValueError, OSError) as exc:
        st.error(plain(exc))  # may quote a typed path or the data's own text
    else:
        st.session_state["current_run"] = name
        st.switch_page(PAGES["training"])


def shared_queue(name: str) -> str:
    """The run's review key, after making sure the store holds the run's queue (its flagged
    samples, most confidently noisy first) that leases split between annotators. Once per session,
    run and cut (`ReviewStore.set_queue` hashes every key to see whether the queue changed): moving
    the cut rewrites samples.parquet, so every session sets the new queue on its next page."""
    run_key = review_key(name)
    marker = f"queue_set::{run_key}::{_mtime(run_dir(name) / 'samples.parquet')}"
    if not st.session_state.get(marker):
        review_store().set_queue(run_key, flagged(name)["key"].tolist())
        st.session_state[marker] = True
    return run_key


# At most this many unflagged samples form a run's audit sample (drawn once per run).
AUDIT_SIZE = 2000


@st.cache_data(max_entries=4, show_spinner=False)
def _audit(path: str, run_key: str, mtime_key: int):
    return review.audit_order(_table(path), run_key).head(AUDIT_SIZE)


def audit_cards(name: str):
    """The run's audit sample: unflagged samples in a random order fixed by the run's id (cached)."""
    d = run_dir(name)
    return _audit(str(d), review_key(name), _mtime(d / "samples.parquet"))


@st.cache_data(max_entries=4, show_spinner=False)
def _explain(path: str, mtime_key: int):
    frame = _table(path)
    means = signs = None
    try:  # baselines run through `detect --method` may have no dynamics: the card goes without the curve
        signs, margins = runstore.load_array(path, "dynamics"), runstore.load_array(path, "margins")
        means = runview.cluster_mean_curves(signs, margins, frame["flagged"].to_numpy().astype(bool))
        signs = signs[: len(frame)]
    except MissingError:
        pass
    return runstore.load_neighbours(path), runview.class_exemplars(frame), means, signs


def explain(name: str):
    """What the Review card shows under "why was this flagged?" (cached per run): neighbours of the
    flagged samples, clean exemplars per class, the clusters' mean dynamics, the originals' signs."""
    d = run_dir(name)
    return _explain(str(d), _mtime(d / "samples.parquet"))


# A resource, not data: every rerun of a card reads it, and cache_data would copy (N, 3) arrays
# each time (tens of MB on a 1M-sample run); nothing writes to them.
@st.cache_resource(max_entries=4, show_spinner=False)
def _candidates(path: str, mtime_key: int):
    frame = runstore.load_samples(path)
    cands, probs = card_classes.candidate_table(frame, *candidate_matrix(frame, card_classes.WIDTH))
    return cands, probs, card_classes.suggestion_order(frame)


def candidates(name: str):
    """The review card's classes, per run (cached): each sample's candidates and their
    probabilities ((N, 3) arrays in the samples table's row order, -1 / NaN padding), and per
    given class the classes this run suggests most often (the search list's order after them)."""
    d = run_dir(name)
    return _candidates(str(d), _mtime(d / "samples.parquet"))


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
        st.error(f"This run cannot be shown: {plain(exc)}")  # may quote a path
        st.stop()


if __name__ == "__main__":  # opened as a page (legacy mode lists every pages/*.py): go to app.py
    require_router()
