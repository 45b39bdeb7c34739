"""Review decisions, one row per decision, in SQLite (WAL) or PostgreSQL through SQLAlchemy.

Every call that records a decision commits before it returns, so whatever the app has
acknowledged survives the app being killed. Decision rows are only ever inserted: the latest row
of a sample is its decision, the earlier ones are its history. Concurrent writers (threads,
processes, annotators in several tabs or on several app servers) cannot overwrite each other.

Default location: ``RUNS_ROOT/reviews.sqlite``; ``DYNACOR_REVIEW_DB`` (an SQLAlchemy URL, e.g.
``postgresql+psycopg://host/db``, needs ``pip install "dynacor[postgres]"``) replaces it for a
team.

Work split: leases
------------------
A team reviews one run's queue without two people on one card.

- `ReviewStore.set_queue` stores the run's review order once (each card with its rank). Each
  queued card also keeps its votes, whether they agree and whether it still needs a review,
  updated in the same transaction as every decision on it, so neither a claim nor
  `ReviewStore.queue_progress` reads the decisions of the whole run.
- `ReviewStore.claim_next` hands an annotator the first cards in queue order that they may take
  and records a lease (run, sample, annotator) that expires ``ttl_s`` seconds later. A card is
  leased to at most k minus its votes annotators at once (k: the run's reviewers, 1 unless
  `ReviewStore.set_reviewers` says otherwise), never to one who already voted on it, and never
  once it is decided.
- The cards an annotator holds come back first on their next claim (a page reload loses
  nothing), their leases renewed once past half their time. A decision releases the decider's
  lease on that card in the same transaction; `ReviewStore.release` gives cards back; an expired
  lease is ignored, so the card goes to whoever claims next.

Guarantees. SQLite: every writing transaction begins with ``BEGIN IMMEDIATE`` (writers of all
processes queue on a lock file first, see `_writer_turn`), so claims and decisions run one at a
time and each sees the others' commits. PostgreSQL: a claim locks the card's queue row
(``FOR UPDATE SKIP LOCKED``) and re-checks the card in a fresh snapshot before leasing it; a
decision locks the same row; a queue rebuild or a change of reviewers locks the decisions table
against writes while it reads them. So two claimers never exceed a card's free slots, a claimer
skips a card being decided instead of waiting for it, and the queue's counts never miss a
decision. What leases cannot stop: a decision made without holding the card (a bulk action, the
grid) on a card someone else holds; that card then leaves the holder's next claim. Lease times
come from the app's clock: run several app servers with synchronised clocks.

Double review
-------------
With ``set_reviewers(run, k)``, k >= 2, every card goes to k distinct annotators. An annotator's
latest non-final decision on a card is their vote; an admin's decision recorded with
``final=True`` overrides the votes. The decision that counts for a card (what `latest_decisions`,
`progress`, `queue_progress` and `decided_among` report) is:

- its latest final decision, if it has one (in every mode);
- otherwise, in single review (k = 1), its latest decision, whoever made it;
- otherwise, in double review, its latest vote once at least k annotators voted and all their
  votes have the same outcome (the class they assign, or unsure, or remove; so "accept" of
  class 3 and "relabel as 3" agree). Votes that differ make the card a conflict
  (`ReviewStore.conflicts`): undecided until an admin's final decision. A card with fewer than
  k votes is undecided.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

try:
    import fcntl
except ImportError:  # Windows: SQLite's own busy wait only
    fcntl = None

from dynacor.errors import InputError
from dynacor.review.decisions import DECISIONS, LABELLED, RANKED

DB_FILE = "reviews.sqlite"
ENV_URL = "DYNACOR_REVIEW_DB"
LEASE_TTL_S = 300.0
# Parameters per IN list: well under SQLite's limit, and short statements for PostgreSQL.
CHUNK = 500
# Cards a claim looks at per round; more than one so a PostgreSQL claimer that finds the first
# cards locked by others moves on without another scan.
SCAN = 16
# ... and when a filter leaves some out: rows are cheap, rounds are not.
FILTER_SCAN = 1000
_WRITE = "dynacor_write"
_SCHEMA_LOCK = 7_331_113  # PostgreSQL advisory lock id: one process creates the tables at a time

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
    # An admin's decision on a card, over the annotators' (double review's conflicts).
    sa.Column("final", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    # Which of the card's candidate classes an accept or relabel took: 1-3, or 0 for a class found
    # by search (`dynacor.review.candidates.choice`); NULL for the other decisions and for
    # decisions recorded before the column existed.
    sa.Column("candidate_rank", sa.Integer, nullable=True),
    sa.Index("ix_decisions_run_sample", "run", "sample", "id"),
)
review_runs = sa.Table(
    "review_runs",
    metadata,
    sa.Column("run", sa.String(255), primary_key=True),
    sa.Column("reviewers", sa.Integer, nullable=False, default=1),
    sa.Column("queue_hash", sa.String(64), nullable=True),
)
# Derived from the decisions (rebuilt by set_queue, kept current by every decision): what a claim
# needs without reading the run's decisions. ``open``: not final and fewer votes than reviewers.
review_queue = sa.Table(
    "review_queue",
    metadata,
    sa.Column("run", sa.String(255), primary_key=True),
    sa.Column("sample", sa.String(255), primary_key=True),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("votes", sa.Integer, nullable=False),
    sa.Column("agreed", sa.Boolean, nullable=False),  # the latest votes have a single outcome
    sa.Column("final", sa.Boolean, nullable=False),
    sa.Column("open", sa.Boolean, nullable=False),
    sa.Index("ix_review_queue_open", "run", "open", "rank"),
)
review_leases = sa.Table(
    "review_leases",
    metadata,
    sa.Column("run", sa.String(255), primary_key=True),
    sa.Column("sample", sa.String(255), primary_key=True),
    sa.Column("annotator", sa.String(255), primary_key=True),
    sa.Column("expires", sa.Float, nullable=False),
    sa.Index("ix_review_leases_annotator", "run", "annotator"),
)

COLUMNS = ["sample", "decision", "label", "annotator", "time", "final", "candidate_rank"]
VOTE_COLUMNS = ["sample", "annotator", "decision", "label", "time"]


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
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        try:
            engine = sa.create_engine(url, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f'{url.split(":", 1)[0]} needs a PostgreSQL driver: pip install "dynacor[postgres]"'
            ) from exc
        _create_schema(engine)
        return engine
    if backend != "sqlite":
        raise InputError(ENV_URL, "url", "an sqlite:// or postgresql:// SQLAlchemy URL", url)
    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # timeout: how long a writer waits for another's lock instead of failing with "locked".
    engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):  # noqa: ANN001
        # The driver's own BEGIN handling off: transactions begin in `_begin` below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer (annotators in other tabs keep browsing);
        # synchronous=FULL: a commit is on disk when it returns, even across a power cut.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):  # noqa: ANN001
        # A writing transaction takes the write lock up front: one that began deferred, read,
        # then wrote would fail at once (no busy wait) if another writer committed in between.
        immediate = conn.get_execution_options().get(_WRITE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    _create_schema(engine)
    return engine


_turns: dict[tuple[int, str], tuple[threading.Lock, int]] = {}


@contextmanager
def _writer_turn(engine: sa.Engine) -> Iterator[None]:
    """SQLite: writers of every process queue on a lock file next to the database.

    Only a schedule (SQLite's locks keep the data safe without it): a writer that finds the
    database locked sleeps in growing steps up to 100 ms and may lose to newcomers again and
    again, so with many annotators some actions took seconds; on the lock file the kernel wakes
    a waiter as soon as the writer before it is done.
    """
    path = engine.url.database
    if engine.dialect.name != "sqlite" or fcntl is None or not path or path == ":memory:":
        yield
        return
    key = (os.getpid(), path)  # a forked child opens its own (flock is per open file)
    with _engines_lock:
        if key not in _turns:
            _turns[key] = (threading.Lock(), os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644))
        in_process, fd = _turns[key]
    with in_process:  # threads of one process share the file's lock: they queue here first
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _create_schema(engine: sa.Engine) -> None:
    """The tables, and the columns added since (``final``, ``candidate_rank``) added to a
    decisions table made before they existed. Idempotent; one process at a time (several app
    processes may start at once)."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
            metadata.create_all(conn)
            columns = {c["name"] for c in sa.inspect(conn).get_columns("decisions")}
            if "final" not in columns:
                default = "false" if engine.dialect.name == "postgresql" else "0"
                conn.exec_driver_sql(
                    f"ALTER TABLE decisions ADD COLUMN final BOOLEAN NOT NULL DEFAULT {default}"
                )
            if "candidate_rank" not in columns:  # nullable: old rows say nothing about candidates
                conn.exec_driver_sql("ALTER TABLE decisions ADD COLUMN candidate_rank INTEGER")


class ReviewStore:
    """Decisions of every run, in one database; leases and queues for a team (module docstring).

    Parameters
    ----------
    url : an SQLAlchemy URL (sqlite or postgresql); None takes `default_url(runs_root)`
    runs_root : where the runs live (the default SQLite file goes there)
    """

    def __init__(self, url: str | None = None, runs_root: str | os.PathLike[str] = "dynacor_runs"):
        self.url = url or default_url(runs_root)
        self.engine = _engine(self.url)
        self._postgres = self.engine.dialect.name == "postgresql"

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        with _writer_turn(self.engine), self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    # ---- writing decisions

    def record_decision(
        self,
        run: str,
        sample: object,
        decision: str,
        label: int | None = None,
        annotator: str = "",
        when: float | None = None,
        final: bool = False,
        candidate_rank: int | None = None,
    ) -> int:
        """Store one decision and commit; release the annotator's lease on the card. ``final``:
        an admin's decision that overrides the annotators' (module docstring).
        ``candidate_rank``: for accept and relabel, which of the card's candidates was taken (1-3;
        0: a class found by search); an accept without one is rank 1 (the suggestion), the other
        decisions record none. Returns its row id."""
        row = _row(run, sample, decision, label, annotator, when, final, candidate_rank)
        with self._writing() as conn:
            result = conn.execute(decisions.insert().values(**row))
            self._lock_cards(conn, row["run"], [row["sample"]])
            self._after_decisions(conn, row["run"], [row])
            return int(result.inserted_primary_key[0])

    def record_decisions(
        self, run: str, items: Iterable[dict[str, Any]], annotator: str = "", final: bool = False
    ) -> int:
        """Store many decisions in one transaction (bulk actions). Each item has ``sample``,
        ``decision`` and optionally ``label``, ``annotator``, ``time``, ``candidate_rank`` (as
        `record_decision`). Returns how many."""
        now = time.time()
        rows = [
            _row(run, item["sample"], item["decision"], item.get("label"),
                 item.get("annotator", annotator), item.get("time", now), final, item.get("candidate_rank"))
            for item in items
        ]  # fmt: skip
        if not rows:
            return 0
        with self._writing() as conn:
            conn.execute(decisions.insert(), rows)
            self._lock_cards(conn, rows[0]["run"], sorted({r["sample"] for r in rows}))
            self._after_decisions(conn, rows[0]["run"], rows)
        return len(rows)

    def _lock_cards(self, conn: sa.Connection, run: str, samples: Sequence[str]) -> None:
        # PostgreSQL: a decision holds the card's queue row, so a claimer re-checking that card
        # sees the decision; in sorted order, so two bulk writers cannot deadlock; after the
        # insert, so a writer waiting on `_hold_decisions` holds no row a queue rebuild needs.
        if not self._postgres:
            return
        for chunk in _chunks(samples):
            conn.execute(
                sa.select(review_queue.c.sample)
                .where(review_queue.c.run == run, review_queue.c.sample.in_(chunk))
                .order_by(review_queue.c.sample)
                .with_for_update()
            )

    def _after_decisions(self, conn: sa.Connection, run: str, rows: list[dict]) -> None:
        """The decided cards' leases released (the deciders'), their queue rows recounted."""
        by_annotator: dict[str, set[str]] = {}
        for r in rows:
            by_annotator.setdefault(r["annotator"], set()).add(r["sample"])
        for annotator, samples in by_annotator.items():
            for chunk in _chunks(sorted(samples)):
                conn.execute(
                    review_leases.delete().where(
                        review_leases.c.run == run,
                        review_leases.c.annotator == annotator,
                        review_leases.c.sample.in_(chunk),
                    )
                )
        _recount(conn, run, _reviewers(conn, run), sorted({r["sample"] for r in rows}))

    # ---- the team: reviewers, queue, leases

    def set_reviewers(self, run: str, k: int) -> None:
        """How many distinct annotators review each card of ``run``: 1 (single review, the
        default) or k >= 2 (double review). Changes which cards count as decided."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError("review", "reviewers", "an integer >= 1", repr(k))
        with self._writing() as conn:
            self._run_row(conn, run)
            self._hold_decisions(conn)
            conn.execute(review_runs.update().where(review_runs.c.run == run).values(reviewers=k))
            conn.execute(
                review_queue.update()
                .where(review_queue.c.run == run)
                .values(open=sa.and_(review_queue.c.final == sa.false(), review_queue.c.votes < k))
            )

    def reviewers(self, run: str) -> int:
        """The run's reviewers per card (1 unless `set_reviewers` said otherwise)."""
        with self.engine.connect() as conn:
            return _reviewers(conn, run)

    def set_queue(self, run: str, samples: Sequence[object]) -> bool:
        """The order in which `claim_next` hands out the cards of ``run`` (e.g. the flagged
        samples, most confidently noisy first). Cheap when unchanged (compares a hash); rebuilt
        when the samples differ. Returns whether it was (re)built."""
        keys = [str(s) for s in samples]
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise InputError("review", "queue", "each sample once", f"{key!r} twice")
            seen.add(key)
        digest = hashlib.sha256("\0".join(keys).encode()).hexdigest()
        with self._writing() as conn:
            if self._run_row(conn, run)["queue_hash"] == digest:
                return False
            self._hold_decisions(conn)
            reviewers = _reviewers(conn, run)
            conn.execute(review_queue.delete().where(review_queue.c.run == run))
            states = _card_states(conn, run)
            rows = [
                {"run": run, "sample": sample, "rank": rank, **_card_row(states.get(sample), reviewers)}
                for rank, sample in enumerate(keys)
            ]  # fmt: skip
            if rows:
                conn.execute(review_queue.insert(), rows)
            conn.execute(
                review_runs.update().where(review_runs.c.run == run).values(queue_hash=digest)
            )
        return True

    def claim_next(
        self,
        run: str,
        annotator: str,
        n: int = 1,
        ttl_s: float = LEASE_TTL_S,
        now: float | None = None,
        among: Collection[object] | None = None,
        passed: Collection[object] = (),
    ) -> list[str]:
        """The next ``n`` cards of the run's queue for ``annotator``, leased to them for ``ttl_s``
        seconds (module docstring): first the cards they already hold, then the first cards in
        queue order that are undecided, that they have not voted on, and whose review slots are
        not all held by others. Fewer than ``n`` (or none) when the queue has no more.

        ``among``: only these cards (a filtered view of the queue; None: all); ``passed``: never
        these (cards the annotator skipped). Cards they hold outside ``among`` or in ``passed``
        are given back. ``now``: the clock (tests). Needs `set_queue` first."""
        if not annotator:
            raise InputError(
                "review", "annotator", "a name (leases are per annotator)", repr(annotator)
            )
        if n < 1 or not ttl_s > 0:
            raise InputError("review", "claim", "n >= 1 and ttl_s > 0", f"n={n}, ttl_s={ttl_s}")
        now = time.time() if now is None else float(now)
        expires = now + float(ttl_s)
        q, leases = review_queue, review_leases
        wanted = None if among is None else {str(s) for s in among}
        skipped = {str(s) for s in passed}

        def allowed(sample: str) -> bool:
            return sample not in skipped and (wanted is None or sample in wanted)

        with self._writing() as conn:
            # Read, not locked: claims of one run must not queue behind each other here.
            info = conn.execute(
                sa.select(review_runs.c.reviewers, review_runs.c.queue_hash).where(
                    review_runs.c.run == run
                )
            ).first()
            if info is None or info.queue_hash is None:
                raise InputError(
                    "review", "queue", f"a queue for run {run!r} (set_queue first)", "none"
                )
            k = int(info.reviewers)
            available = _available(annotator, now, k)
            mine: list[str] = []
            held = conn.execute(
                sa.select(q.c.sample, available)
                .join(leases, sa.and_(leases.c.run == q.c.run, leases.c.sample == q.c.sample))
                .where(q.c.run == run, leases.c.annotator == annotator, leases.c.expires > now)
                .order_by(q.c.rank)
            ).all()
            # Decided meanwhile (a bulk action, an admin), or no longer asked for.
            gone = [s for s, ok in held if not (ok and allowed(s))]
            mine = [s for s, ok in held if ok and allowed(s)]
            for chunk in _chunks(gone):
                conn.execute(leases.delete().where(leases.c.run == run, leases.c.annotator == annotator,
                                                   leases.c.sample.in_(chunk)))  # fmt: skip
            # Renewed once past half their time: a page rerun on the same card writes nothing.
            for chunk in _chunks(mine):
                conn.execute(leases.update().where(leases.c.run == run, leases.c.annotator == annotator,
                                                   leases.c.sample.in_(chunk), leases.c.expires < now + ttl_s / 2)
                             .values(expires=expires))  # fmt: skip
            mine_already = sa.exists().where(
                leases.c.run == q.c.run,
                leases.c.sample == q.c.sample,
                leases.c.annotator == annotator,
            )
            after = -1
            while len(mine) < n:
                candidates = conn.execute(
                    sa.select(q.c.sample, q.c.rank)
                    .where(
                        q.c.run == run,
                        q.c.open == sa.true(),
                        q.c.rank > after,
                        available,
                        ~mine_already,
                    )
                    .order_by(q.c.rank)
                    .limit(n - len(mine) + (SCAN if wanted is None and not skipped else FILTER_SCAN))
                ).all()
                if not candidates:
                    break
                after = candidates[-1].rank
                for sample, _rank in candidates:
                    if allowed(sample) and self._take(conn, run, sample, annotator, now, expires, available):
                        mine.append(sample)
                        if len(mine) == n:
                            break
            return mine[:n]

    def _take(self, conn: sa.Connection, run: str, sample: str, annotator: str, now: float,
              expires: float, available: sa.ColumnElement[bool]) -> bool:  # fmt: skip
        q, leases = review_queue, review_leases
        card = sa.select(q.c.sample).where(q.c.run == run, q.c.sample == sample)
        if self._postgres:
            # Another claimer or a decision holds the card: skip it rather than wait. Once the
            # lock is ours, the next statement's snapshot sees whatever they committed.
            if conn.execute(card.with_for_update(skip_locked=True)).first() is None:
                return False
            if conn.execute(card.where(available)).first() is None:
                return False
        # The card's expired leases go (no table of dead leases), and any old one of ours.
        conn.execute(leases.delete().where(
            leases.c.run == run, leases.c.sample == sample,
            sa.or_(leases.c.annotator == annotator, leases.c.expires <= now)))  # fmt: skip
        conn.execute(
            leases.insert().values(run=run, sample=sample, annotator=annotator, expires=expires)
        )
        return True

    def release(self, run: str, annotator: str, samples: Sequence[object] | None = None) -> int:
        """Give back ``annotator``'s leases on ``samples`` (all of theirs on ``run`` when None),
        e.g. on skip or sign-out. Returns how many."""
        where = [review_leases.c.run == run, review_leases.c.annotator == annotator]
        with self._writing() as conn:
            if samples is None:
                return int(conn.execute(review_leases.delete().where(*where)).rowcount)
            total = 0
            for chunk in _chunks(sorted({str(s) for s in samples})):
                result = conn.execute(
                    review_leases.delete().where(*where, review_leases.c.sample.in_(chunk))
                )
                total += int(result.rowcount)
            return total

    def leases(self, run: str, now: float | None = None):
        """Live leases of ``run``: a DataFrame with columns sample, annotator, expires."""
        import pandas as pd

        now = time.time() if now is None else float(now)
        query = (
            sa.select(review_leases.c.sample, review_leases.c.annotator, review_leases.c.expires)
            .where(review_leases.c.run == run, review_leases.c.expires > now)
            .order_by(review_leases.c.sample, review_leases.c.annotator)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=["sample", "annotator", "expires"])

    def _hold_decisions(self, conn: sa.Connection) -> None:
        # PostgreSQL: a queue rebuild or a reviewers change reads every decision of the run and
        # rewrites its queue rows: it waits for the decisions being written and holds new ones
        # back until it commits (once per run, rarely more), so no decision slips between.
        # SQLite's BEGIN IMMEDIATE does this already.
        if self._postgres:
            conn.execute(sa.text("LOCK TABLE decisions IN SHARE MODE"))

    def _run_row(self, conn: sa.Connection, run: str) -> dict:
        """The run's settings row, created when missing; on PostgreSQL locked for this
        transaction, so queue rebuilds and reviewer changes of one run take turns."""
        if not run:
            raise InputError("review", "run", "a run name", repr(run))
        dialect = postgresql if self._postgres else sqlite
        conn.execute(
            dialect.insert(review_runs).values(run=run, reviewers=1).on_conflict_do_nothing()
        )
        query = sa.select(review_runs.c.reviewers, review_runs.c.queue_hash).where(
            review_runs.c.run == run
        )
        if self._postgres:
            query = query.with_for_update()
        return dict(conn.execute(query).one()._mapping)

    # ---- reading

    def latest_decisions(self, run: str):
        """The decision that counts for each decided sample of ``run`` (module docstring: the
        latest one in single review): a DataFrame with columns sample (str), decision, label
        (nullable Int64), annotator, time, final, candidate_rank (nullable Int64); one row per
        sample."""
        import pandas as pd

        with self.engine.connect() as conn:
            counting = _counting(run, _reviewers(conn, run)).subquery()
            query = sa.select(*[decisions.c[c] for c in COLUMNS]).join(
                counting, decisions.c.id == counting.c.id
            )
            rows = conn.execute(query).all()
        return _frame(pd, rows)

    def history(self, run: str, sample: object):
        """Every decision on one sample, oldest first (columns as `latest_decisions`)."""
        import pandas as pd

        query = (
            sa.select(*[decisions.c[c] for c in COLUMNS])
            .where(decisions.c.run == run, decisions.c.sample == str(sample))
            .order_by(decisions.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return _frame(pd, rows)

    def decided_among(self, run: str, samples: Iterable[object]) -> set[str]:
        """Which of ``samples`` have a decision that counts (as `latest_decisions` would say),
        as keys (str), without reading the run's other decisions when the list is short."""
        wanted = {str(s) for s in samples}
        with self.engine.connect() as conn:
            return _decided(conn, run, _reviewers(conn, run), wanted)

    def progress(self, run: str, flagged: Sequence[object] | None = None) -> dict[str, int]:
        """Counts by SQL, consistent with `latest_decisions`: samples with a decision that counts
        (``decided``), decision rows (``decisions``); with ``flagged``, its size (``flagged``) and
        how many of those are decided (``decided_flagged``); in double review, the cards in
        conflict (``conflicts``). For the page's header on a queued run, `queue_progress` is
        cheaper."""
        with self.engine.connect() as conn:
            k = _reviewers(conn, run)
            counting = _counting(run, k).subquery()
            out = {
                "decided": _scalar(conn, sa.select(sa.func.count()).select_from(counting)),
                "decisions": _scalar(
                    conn, sa.select(sa.func.count()).where(decisions.c.run == run)
                ),
            }
            if flagged is not None:
                wanted = {str(s) for s in flagged}
                out["flagged"] = len(wanted)
                out["decided_flagged"] = len(_decided(conn, run, k, wanted))
            if k > 1:
                out["conflicts"] = _scalar(
                    conn, sa.select(sa.func.count()).select_from(_conflicted(run, k).subquery())
                )
        return out

    def queue_progress(self, run: str) -> dict[str, int]:
        """The queue's counts from its own rows (no decision read): cards (``queued``), cards
        decided (``decided``, as `latest_decisions` counts them), and in double review the cards
        in conflict (``conflicts``). All 0 without a queue."""
        q = review_queue
        count = sa.select(sa.func.count()).where(q.c.run == run)
        with self.engine.connect() as conn:
            k = _reviewers(conn, run)
            if k == 1:  # decided = no longer open: two counts on the queue's index
                return {"queued": _scalar(conn, count),
                        "decided": _scalar(conn, count.where(q.c.open == sa.false()))}  # fmt: skip
            decided = sa.or_(
                q.c.final == sa.true(), sa.and_(q.c.votes >= k, q.c.agreed == sa.true())
            )
            conflict = sa.and_(q.c.final == sa.false(), q.c.votes >= k, q.c.agreed == sa.false())
            queued, done, conflicts = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(sa.case((decided, 1), else_=0)), 0),
                    sa.func.coalesce(sa.func.sum(sa.case((conflict, 1), else_=0)), 0),
                ).where(q.c.run == run)
            ).one()
        return {"queued": int(queued), "decided": int(done), "conflicts": int(conflicts)}

    def count(self, run: str) -> int:
        """All decision rows of ``run``, history included."""
        with self.engine.connect() as conn:
            return _scalar(conn, sa.select(sa.func.count()).where(decisions.c.run == run))

    def votes(self, run: str):
        """Each annotator's vote on each card: their latest non-final decision. A DataFrame with
        columns sample, annotator, decision, label (Int64), time; what `dynacor.review.agreement`
        measures."""
        import pandas as pd

        latest = _vote_ids([decisions.c.run == run]).subquery()
        query = (
            sa.select(*[decisions.c[c] for c in VOTE_COLUMNS])
            .join(latest, decisions.c.id == latest.c.id)
            .order_by(decisions.c.sample, decisions.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return _frame(pd, rows, VOTE_COLUMNS)

    def conflicts(self, run: str):
        """The votes (as `votes`) of the cards in conflict: at least k votes that differ, no
        final decision yet. Empty in single review."""
        import pandas as pd

        with self.engine.connect() as conn:
            k = _reviewers(conn, run)
            if k == 1:
                return _frame(pd, [], VOTE_COLUMNS)
            cards = _conflicted(run, k).subquery()
            latest = _vote_ids(
                [decisions.c.run == run, decisions.c.sample.in_(sa.select(cards.c.sample))]
            ).subquery()
            query = (
                sa.select(*[decisions.c[c] for c in VOTE_COLUMNS])
                .join(latest, decisions.c.id == latest.c.id)
                .order_by(decisions.c.sample, decisions.c.id)
            )
            rows = conn.execute(query).all()
        return _frame(pd, rows, VOTE_COLUMNS)


# ---- SQL pieces (one definition of "decided", used by every reader)


def _reviewers(conn: sa.Connection, run: str) -> int:
    k = conn.execute(sa.select(review_runs.c.reviewers).where(review_runs.c.run == run)).scalar()
    return int(k or 1)


def _outcome() -> sa.ColumnElement[str]:
    """What a decision does to the label: its class, or "unsure" / "remove"."""
    return sa.func.coalesce(sa.cast(decisions.c.label, sa.String), decisions.c.decision)


def _vote_ids(where: list) -> sa.Select:
    """(sample, annotator, id): each annotator's latest non-final decision per sample."""
    return (
        sa.select(
            decisions.c.sample, decisions.c.annotator, sa.func.max(decisions.c.id).label("id")
        )
        .where(*where, decisions.c.final == sa.false())
        .group_by(decisions.c.sample, decisions.c.annotator)
    )


def _vote_groups(where: list) -> sa.Select:
    """Per sample with votes: how many, how many different outcomes, the latest vote's id."""
    votes = _vote_ids(where).subquery()
    return (
        sa.select(
            votes.c.sample,
            sa.func.max(votes.c.id).label("id"),
            sa.func.count().label("votes"),
            sa.func.count(sa.distinct(_outcome())).label("outcomes"),
        )
        .join(decisions, decisions.c.id == votes.c.id)
        .group_by(votes.c.sample)
    )


def _finals(where: list) -> sa.Select:
    return (
        sa.select(decisions.c.sample, sa.func.max(decisions.c.id).label("id"))
        .where(*where, decisions.c.final == sa.true())
        .group_by(decisions.c.sample)
    )


def _counting(run: str, k: int, samples: Sequence[str] | None = None):
    """(sample, id) of the decision that counts, per decided sample (module docstring).
    ``samples`` restricts the rows read (each sample's state depends on its rows only)."""
    where = [decisions.c.run == run]
    if samples is not None:
        where.append(decisions.c.sample.in_(samples))
    if k == 1:
        last_final = sa.func.max(sa.case((decisions.c.final == sa.true(), decisions.c.id)))
        return (
            sa.select(
                decisions.c.sample,
                sa.func.coalesce(last_final, sa.func.max(decisions.c.id)).label("id"),
            )
            .where(*where)
            .group_by(decisions.c.sample)
        )
    finals = _finals(where)
    groups = _vote_groups(where).subquery()
    agreed = sa.select(groups.c.sample, groups.c.id).where(
        groups.c.votes >= k,
        groups.c.outcomes == 1,
        groups.c.sample.not_in(sa.select(finals.subquery().c.sample)),
    )
    return sa.union_all(finals, agreed)


def _conflicted(run: str, k: int) -> sa.Select:
    where = [decisions.c.run == run]
    groups = _vote_groups(where).subquery()
    return sa.select(groups.c.sample).where(
        groups.c.votes >= k,
        groups.c.outcomes > 1,
        groups.c.sample.not_in(sa.select(_finals(where).subquery().c.sample)),
    )


def _decided(conn: sa.Connection, run: str, k: int, wanted: set[str]) -> set[str]:
    if len(wanted) <= CHUNK:
        if not wanted:
            return set()
        counting = _counting(run, k, sorted(wanted)).subquery()
        return set(conn.execute(sa.select(counting.c.sample)).scalars())
    # Many samples: one pass over the run's decisions beats many IN lists.
    counting = _counting(run, k).subquery()
    return set(conn.execute(sa.select(counting.c.sample)).scalars()) & wanted


def _available(annotator: str, now: float, k: int) -> sa.ColumnElement[bool]:
    """Whether ``annotator`` may take a queued card (a condition on ``review_queue``'s row): it
    needs a review, its free slots are not all held by others, and (double review) it has no
    vote of theirs."""
    # An alias: the claim's own query joins the leases table too.
    q, d, leases = review_queue, decisions, review_leases.alias("others")
    held_by_others = (
        sa.select(sa.func.count())
        .where(
            leases.c.run == q.c.run,
            leases.c.sample == q.c.sample,
            leases.c.annotator != annotator,
            leases.c.expires > now,
        )  # fmt: skip
        .scalar_subquery()
    )
    free = sa.and_(q.c.open == sa.true(), q.c.votes + held_by_others < k)
    if k == 1:
        return free
    voted = sa.exists().where(d.c.run == q.c.run, d.c.sample == q.c.sample,
                              d.c.annotator == annotator, d.c.final == sa.false())  # fmt: skip
    return sa.and_(free, ~voted)


def _card_states(
    conn: sa.Connection, run: str, samples: Sequence[str] | None = None
) -> dict[str, tuple[int, bool, bool]]:
    """Per sample with decisions (of ``samples``, or all of the run's): its votes, whether they
    agree, whether it has a final decision. Grouped queries, not a subquery per queue row: a
    fresh PostgreSQL table without statistics plans those as scans of every decision."""
    where = [decisions.c.run == run]
    if samples is not None:
        where.append(decisions.c.sample.in_(samples))
    groups = {s: (int(v), int(o) <= 1) for s, _id, v, o in conn.execute(_vote_groups(where))}
    finals = set(conn.execute(sa.select(_finals(where).subquery().c.sample)).scalars())
    return {s: (*groups.get(s, (0, True)), s in finals) for s in groups.keys() | finals}


def _card_row(state: tuple[int, bool, bool] | None, k: int) -> dict:
    votes, agreed, final = state or (0, True, False)
    return {"votes": votes, "agreed": agreed, "final": final, "open": not final and votes < k}


def _recount(conn: sa.Connection, run: str, k: int, samples: Sequence[str]) -> None:
    """The queue rows of ``samples`` (those queued) brought up to date with their decisions."""
    # Many samples (a bulk action): one pass over the run's decisions beats many IN lists.
    states = _card_states(conn, run, samples if len(samples) <= CHUNK else None)
    q = review_queue
    rows = [
        {"b_sample": s, **{f"b_{c}": v for c, v in _card_row(states.get(s), k).items()}}
        for s in samples
    ]
    conn.execute(
        q.update()
        .where(q.c.run == run, q.c.sample == sa.bindparam("b_sample"))
        .values({c: sa.bindparam(f"b_{c}") for c in ("votes", "agreed", "final", "open")}),
        rows,
    )


def _scalar(conn: sa.Connection, query: sa.Select) -> int:
    return int(conn.execute(query).scalar_one())


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _row(run: str, sample: object, decision: str, label: int | None, annotator: str,
         when: float | None, final: bool = False, candidate_rank: int | None = None) -> dict:  # fmt: skip
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
    if decision not in RANKED:
        candidate_rank = None
    elif candidate_rank is None and decision == "accept":
        candidate_rank = 1  # accepting is taking the suggestion, the first candidate
    if candidate_rank is not None:
        try:
            candidate_rank = int(candidate_rank)
        except (TypeError, ValueError):
            candidate_rank = -1
        if candidate_rank < 0 or (decision == "accept" and candidate_rank != 1):
            raise InputError("review", "candidate_rank", "1-3 for a candidate, 0 for a searched class "
                             "(an accept is rank 1)", repr(candidate_rank))  # fmt: skip
    return {
        "run": str(run),
        "sample": str(sample),
        "decision": decision,
        "label": label,
        "annotator": str(annotator or ""),
        "time": float(time.time() if when is None else when),
        "final": bool(final),
        "candidate_rank": candidate_rank,
    }


def _frame(pd, rows, columns: list[str] = COLUMNS):  # noqa: ANN001
    frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
    frame["sample"] = frame["sample"].astype(str)
    frame["label"] = frame["label"].astype("Int64")
    frame["time"] = frame["time"].astype(float)
    if "final" in frame:
        frame["final"] = frame["final"].astype(bool)
    if "candidate_rank" in frame:
        frame["candidate_rank"] = frame["candidate_rank"].astype("Int64")
    return frame
