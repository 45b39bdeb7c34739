"""Review decisions, one row per decision, in SQLite (WAL) or any SQLAlchemy database.

Every call that records a decision commits before it returns, so whatever the app has
acknowledged survives the app being killed. Rows are only ever inserted: the latest row of a
sample is its decision, the earlier ones are its history. Inserts never read-modify-write, so
concurrent writers (threads, processes, two annotators in two tabs) cannot overwrite each other.

Default location: ``RUNS_ROOT/reviews.sqlite``; ``DYNACOR_REVIEW_DB`` (an SQLAlchemy URL, e.g.
``postgresql+psycopg://host/db``) replaces it for a team.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dynacor.errors import InputError
from dynacor.review.decisions import DECISIONS, LABELLED

DB_FILE = "reviews.sqlite"
ENV_URL = "DYNACOR_REVIEW_DB"

metadata = sa.MetaData()
decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run", sa.String(255), nullable=False),
    sa.Column("sample", sa.String(255), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("label", sa.Integer, nullable=True),
    sa.Column("annotator", sa.String(255), nullable=False, default=""),
    sa.Column("time", sa.Float, nullable=False),
    sa.Index("ix_decisions_run_sample", "run", "sample", "id"),
)

COLUMNS = ["sample", "decision", "label", "annotator", "time"]


def default_url(runs_root: str | os.PathLike[str]) -> str:
    """``DYNACOR_REVIEW_DB`` when set, else an SQLite file next to the runs."""
    configured = os.environ.get(ENV_URL)
    if configured:
        return configured
    return f"sqlite:///{Path(runs_root).resolve() / DB_FILE}"


_engines: dict[tuple[int, str], sa.Engine] = {}
_engines_lock = threading.Lock()


def _engine(url: str) -> sa.Engine:
    # One engine per URL and process: a forked child must not reuse its parent's connections.
    key = (os.getpid(), url)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _make_engine(url)
            _engines[key] = engine
        return engine


def _make_engine(url: str) -> sa.Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = sa.create_engine(url, pool_pre_ping=True)
        metadata.create_all(engine)
        return engine
    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # timeout: how long a writer waits for another's lock instead of failing with "locked".
    engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):  # noqa: ANN001
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer (annotators in other tabs keep browsing);
        # synchronous=FULL: a commit is on disk when it returns, even across a power cut.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    # Two processes creating the table at once: the loser sees "already exists"; both are fine.
    try:
        metadata.create_all(engine)
    except sa.exc.OperationalError as exc:
        if "already exists" not in str(exc):
            raise
    return engine


class ReviewStore:
    """Decisions of every run, in one database.

    Parameters
    ----------
    url : an SQLAlchemy URL; None takes `default_url(runs_root)`
    runs_root : where the runs live (the default SQLite file goes there)
    """

    def __init__(self, url: str | None = None, runs_root: str | os.PathLike[str] = "dynacor_runs"):
        self.url = url or default_url(runs_root)
        self.engine = _engine(self.url)

    # ---- writing

    def record_decision(
        self,
        run: str,
        sample: object,
        decision: str,
        label: int | None = None,
        annotator: str = "",
        when: float | None = None,
    ) -> int:
        """Store one decision and commit. Returns its row id."""
        row = _row(run, sample, decision, label, annotator, when)
        with self.engine.begin() as conn:
            result = conn.execute(decisions.insert().values(**row))
            return int(result.inserted_primary_key[0])

    def record_decisions(self, run: str, items: Iterable[dict[str, Any]], annotator: str = "") -> int:
        """Store many decisions in one transaction (bulk actions). Each item has ``sample``,
        ``decision`` and optionally ``label``, ``annotator``, ``time``. Returns how many."""
        now = time.time()
        rows = [
            _row(run, item["sample"], item["decision"], item.get("label"),
                 item.get("annotator", annotator), item.get("time", now))
            for item in items
        ]  # fmt: skip
        if not rows:
            return 0
        with self.engine.begin() as conn:
            conn.execute(decisions.insert(), rows)
        return len(rows)

    # ---- reading

    def latest_decisions(self, run: str):
        """The decision that counts for each decided sample of ``run``: a DataFrame with columns
        sample (str), decision, label (nullable Int64), annotator, time; one row per sample."""
        import pandas as pd

        latest = (
            sa.select(sa.func.max(decisions.c.id).label("id"))
            .where(decisions.c.run == run)
            .group_by(decisions.c.sample)
            .subquery()
        )
        query = sa.select(*[decisions.c[c] for c in COLUMNS]).join(latest, decisions.c.id == latest.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return _frame(pd, rows)

    def history(self, run: str, sample: object):
        """Every decision on one sample, oldest first (the last one counts)."""
        import pandas as pd

        query = (
            sa.select(*[decisions.c[c] for c in COLUMNS])
            .where(decisions.c.run == run, decisions.c.sample == str(sample))
            .order_by(decisions.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return _frame(pd, rows)

    def progress(self, run: str, flagged: Sequence[object] | None = None) -> dict[str, int]:
        """How many samples have a decision (``decided``), and of those how many are among
        ``flagged`` (``decided_flagged``) when it is given, with ``flagged`` its size."""
        latest = self.latest_decisions(run)
        out = {"decided": int(len(latest)), "decisions": self.count(run)}
        if flagged is not None:
            wanted = {str(s) for s in flagged}
            out["flagged"] = len(wanted)
            out["decided_flagged"] = int(latest["sample"].isin(wanted).sum())
        return out

    def count(self, run: str) -> int:
        """All decision rows of ``run``, history included."""
        query = sa.select(sa.func.count()).select_from(decisions).where(decisions.c.run == run)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


def _row(run: str, sample: object, decision: str, label: int | None, annotator: str, when: float | None) -> dict:
    if decision not in DECISIONS:
        raise InputError("review", "decision", f"one of {DECISIONS}", repr(decision))
    if not run:
        raise InputError("review", "run", "a run name", repr(run))
    if decision == "relabel" and label is None:
        raise InputError("review", "label", "a class for a relabel decision", "nothing")
    if label is not None:
        try:
            label = int(label)
        except (TypeError, ValueError):
            raise InputError("review", "label", "an integer class", repr(label)) from None
    if decision not in LABELLED:
        label = None
    return {
        "run": str(run),
        "sample": str(sample),
        "decision": decision,
        "label": label,
        "annotator": str(annotator or ""),
        "time": float(time.time() if when is None else when),
    }


def _frame(pd, rows):  # noqa: ANN001
    frame = pd.DataFrame([tuple(r) for r in rows], columns=COLUMNS)
    frame["sample"] = frame["sample"].astype(str)
    frame["label"] = frame["label"].astype("Int64")
    frame["time"] = frame["time"].astype(float)
    return frame
