"""The review store: latest decision wins, history kept, nothing lost to concurrency or a kill;
leases split a run's queue between annotators; double review and its conflicts. On SQLite and on
a real PostgreSQL server (tests/postgres_server.py; skipped where PostgreSQL is absent)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynacor import review
from dynacor.errors import InputError
from dynacor.review import agreement
from dynacor.review.store import CHUNK, ReviewStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path: Path, monkeypatch) -> str:
    monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reviews.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_default_is_sqlite_in_wal_mode_next_to_the_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    store = ReviewStore(runs_root=tmp_path / "runs")
    store.record_decision("r", 1, "keep", 0, "ann")
    db = tmp_path / "runs" / "reviews.sqlite"
    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_configured_url_replaces_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNACOR_REVIEW_DB", f"sqlite:///{tmp_path / 'team.db'}")
    ReviewStore(runs_root=tmp_path / "runs").record_decision("r", 1, "unsure")
    assert (tmp_path / "team.db").exists()
    assert not (tmp_path / "runs" / "reviews.sqlite").exists()
    with pytest.raises(InputError, match="sqlite:// or postgresql://"):
        ReviewStore("mysql://someone@localhost/reviews")


def test_a_database_from_before_final_decisions_is_upgraded_in_place(tmp_path):
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:  # the decisions table as earlier versions made it
        conn.execute("CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, run VARCHAR(255) NOT NULL, "
                     "sample VARCHAR(255) NOT NULL, decision VARCHAR(16) NOT NULL, label INTEGER, "
                     "annotator VARCHAR(255) NOT NULL, time FLOAT NOT NULL)")  # fmt: skip
        conn.execute("INSERT INTO decisions (run, sample, decision, label, annotator, time) "
                     "VALUES ('r', '5', 'accept', 2, 'ann', 1.0)")  # fmt: skip
    store = ReviewStore(f"sqlite:///{db}")
    store.record_decision("r", 6, "remove", annotator="ann", when=2.0)
    latest = store.latest_decisions("r").set_index("sample")
    assert latest.loc["5", "decision"] == "accept" and latest.loc["5", "label"] == 2
    assert latest["final"].tolist() == [False, False]


OLD_DECISIONS = ("CREATE TABLE decisions (id {id}, run VARCHAR(255) NOT NULL, sample VARCHAR(255) NOT NULL, "
                 "decision VARCHAR(16) NOT NULL, label INTEGER, annotator VARCHAR(255) NOT NULL, time FLOAT NOT NULL, "
                 "final BOOLEAN NOT NULL DEFAULT {false})")  # fmt: skip


def test_a_database_from_before_candidate_ranks_is_upgraded_in_place(url):
    """A store made before decisions recorded a candidate rank (SQLite or PostgreSQL) opens,
    gains the column (idempotently), keeps its rows, and records ranks from then on."""
    import sqlalchemy as sa

    from dynacor.review import store as review_store

    postgres = url.startswith("postgresql")
    old = sa.create_engine(url)
    with old.begin() as conn:  # the decisions table as the previous version made it
        conn.exec_driver_sql(OLD_DECISIONS.format(id="SERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY AUTOINCREMENT",
                                                  false="false" if postgres else "0"))  # fmt: skip
        conn.exec_driver_sql("INSERT INTO decisions (run, sample, decision, label, annotator, time) "
                             "VALUES ('r', '5', 'relabel', 2, 'ann', 1.0)")  # fmt: skip
    old.dispose()
    store = ReviewStore(url)
    review_store._create_schema(store.engine)  # a second app process starting: nothing to do
    store.record_decision("r", 6, "relabel", 3, "ann", when=2.0, candidate_rank=2)
    latest = store.latest_decisions("r").set_index("sample")
    assert latest.loc["5", "label"] == 2 and pd.isna(latest.loc["5", "candidate_rank"])
    assert latest.loc["6", "candidate_rank"] == 2 and str(latest["candidate_rank"].dtype) == "Int64"


def test_decisions_record_which_candidate_was_taken(url):
    store = ReviewStore(url)
    store.record_decision("r", 1, "accept", 4, "ann")  # accepting is taking candidate 1
    store.record_decision("r", 2, "relabel", 5, "ann", candidate_rank=3)
    store.record_decision("r", 3, "relabel", 9, "ann", candidate_rank=0)  # found by search
    store.record_decision("r", 4, "keep", 1, "ann", candidate_rank=2)  # a keep takes no candidate
    store.record_decisions("r", [{"sample": 5, "decision": "relabel", "label": 6, "candidate_rank": 2},
                                 {"sample": 6, "decision": "remove"}], annotator="bob")  # fmt: skip
    latest = store.latest_decisions("r").set_index("sample")["candidate_rank"]
    assert latest.loc[["1", "2", "3", "5"]].tolist() == [1, 3, 0, 2]
    assert latest.loc[["4", "6"]].isna().all()
    assert store.history("r", 2)["candidate_rank"].tolist() == [3]
    for bad in ({"decision": "accept", "label": 4, "candidate_rank": 2}, {"decision": "relabel", "label": 4, "candidate_rank": -1},
                {"decision": "relabel", "label": 4, "candidate_rank": "first"}):  # fmt: skip
        with pytest.raises(InputError, match="candidate_rank"):
            store.record_decisions("r", [{"sample": 9, **bad}])
    assert store.count("r") == 6


def test_latest_decision_wins_and_history_is_kept(url):
    store = ReviewStore(url)
    store.record_decision("run1", 7, "keep", 2, "ann", when=1.0)
    store.record_decision("run1", 7, "relabel", 4, "bob", when=2.0)
    store.record_decision("run1", 8, "remove", None, "ann", when=3.0)
    store.record_decision("run2", 7, "unsure", None, "cy", when=4.0)  # another run: separate
    latest = store.latest_decisions("run1").set_index("sample")
    assert sorted(latest.index) == ["7", "8"]
    assert latest.loc["7", "decision"] == "relabel" and latest.loc["7", "label"] == 4
    assert latest.loc["7", "annotator"] == "bob"
    assert pd.isna(latest.loc["8", "label"])
    history = store.history("run1", 7)
    assert history["decision"].tolist() == ["keep", "relabel"]
    assert history["time"].tolist() == [1.0, 2.0]
    assert store.progress("run1", flagged=[7, 9]) == {
        "decided": 2,
        "decisions": 3,
        "flagged": 2,
        "decided_flagged": 1,
    }
    assert store.decided_among("run1", [7, 9, "8"]) == {"7", "8"}


def test_bulk_decisions_and_bad_input(url):
    store = ReviewStore(url)
    assert (
        store.record_decisions(
            "r", [{"sample": i, "decision": "accept", "label": 1} for i in range(50)], annotator="a"
        )
        == 50
    )
    assert len(store.latest_decisions("r")) == 50
    with pytest.raises(InputError, match="decision"):
        store.record_decision("r", 1, "delete")
    with pytest.raises(InputError, match="label"):
        store.record_decision("r", 1, "relabel")
    # A failed bulk write stores nothing: one bad item, no half batch.
    with pytest.raises(InputError):
        store.record_decisions(
            "r", [{"sample": 100, "decision": "keep"}, {"sample": 101, "decision": "nope"}]
        )
    assert store.count("r") == 50


def test_export_frame_final_labels(url):
    store = ReviewStore(url)
    samples = pd.DataFrame({"index": range(5), "id": [10, 11, 12, 13, 14], "given_label": [0, 1, 2, 0, 1],
                            "suggested_label": [1, 1, 0, 2, 0], "path": [f"/x/{i}.png" for i in range(5)]})  # fmt: skip
    store.record_decision("r", 10, "accept", 1, "ann")
    store.record_decision("r", 11, "keep", 1, "ann")
    store.record_decision("r", 12, "relabel", 1, "ann")
    store.record_decision("r", 13, "remove", None, "ann")
    out = review.final_labels(samples, store.latest_decisions("r"))
    assert list(out.columns[:7]) == review.EXPORT_COLUMNS
    assert out["final_label"].tolist()[:3] == [1, 1, 1]
    assert pd.isna(out["final_label"].iloc[3])
    # Undecided: the given label.
    assert out["final_label"].iloc[4] == 1 and out["decision"].iloc[4] == ""
    assert out["annotator"].tolist() == ["ann"] * 4 + [""]


def test_concurrent_threads_lose_nothing(url):
    store = ReviewStore(url)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(40):
                # Every thread also writes sample 0: history must hold all of those rows too.
                store.record_decision("r", f"{t}-{i}" if i else "0", "keep", 0, f"thread{t}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.count("r") == 8 * 40
    assert len(store.latest_decisions("r")) == 8 * 39 + 1
    assert len(store.history("r", "0")) == 8


WRITER = """
import sys
from dynacor.review.store import ReviewStore
store = ReviewStore(sys.argv[1])
tag, n = sys.argv[2], int(sys.argv[3])
for i in range(n):
    store.record_decision("r", f"{tag}-{i}", "relabel", i % 3, tag)
    print(f"ack {tag}-{i}", flush=True)
"""


def test_concurrent_processes_lose_nothing(url):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, f"p{k}", "60"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    acked = set()
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        acked |= {line.split()[1] for line in out.splitlines() if line.startswith("ack ")}
    latest = ReviewStore(url).latest_decisions("r")
    assert len(acked) == 240
    assert set(latest["sample"]) == acked


def test_killed_process_keeps_every_acknowledged_decision(url):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, "k", "100000"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    acked = []
    deadline = time.time() + 60
    assert proc.stdout is not None
    while len(acked) < 40 and time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ack "):
            acked.append(line.split()[1])
    os.kill(proc.pid, signal.SIGKILL)  # mid-review: no cleanup, no final commit
    proc.wait(10)
    assert len(acked) >= 40
    stored = set(ReviewStore(url).latest_decisions("r")["sample"])
    assert set(acked) <= stored


# ---- leases: the work split


def queued(url: str, n: int = 6, run: str = "r") -> ReviewStore:
    store = ReviewStore(url)
    store.set_queue(run, [f"s{i}" for i in range(n)])
    return store


def test_claims_split_the_queue_and_a_reload_keeps_the_card(url):
    store = queued(url)
    assert store.claim_next("r", "ann") == ["s0"]
    assert store.claim_next("r", "bob") == ["s1"]
    assert store.claim_next("r", "ann") == ["s0"]  # a reload: the same card back
    assert store.claim_next("r", "ann", n=2) == ["s0", "s2"]
    assert set(store.leases("r")["sample"]) == {"s0", "s1", "s2"}
    store.record_decision("r", "s0", "keep", 0, "ann")  # releases ann's lease on s0
    assert store.leases("r").set_index("sample")["annotator"].to_dict() == {
        "s1": "bob",
        "s2": "ann",
    }
    assert store.claim_next("r", "ann") == ["s2"]
    assert store.claim_next("r", "cy", n=10) == ["s3", "s4", "s5"]  # what is left
    assert store.claim_next("r", "dee") == []


def test_a_card_decided_by_someone_else_leaves_every_queue(url):
    store = queued(url)
    assert store.claim_next("r", "ann") == ["s0"]
    # A bulk action (no lease) decides ann's card and the next one.
    store.record_decisions(
        "r",
        [{"sample": "s0", "decision": "remove"}, {"sample": "s1", "decision": "remove"}],
        annotator="bob",
    )
    assert store.claim_next("r", "ann") == ["s2"]
    assert store.leases("r")["sample"].tolist() == ["s2"]  # the lease on s0 is gone


def test_an_expired_lease_goes_to_the_next_claimer_and_release_gives_cards_back(url):
    store = queued(url)
    assert store.claim_next("r", "ann", ttl_s=60, now=1000.0) == ["s0"]
    assert store.claim_next("r", "bob", ttl_s=60, now=1030.0) == ["s1"]
    assert store.claim_next("r", "bob", ttl_s=60, now=1061.0) == ["s1"]  # renewed, not expired
    assert store.claim_next("r", "cy", ttl_s=60, now=1065.0) == ["s0"]  # ann's expired at 1060
    assert store.claim_next("r", "ann", ttl_s=60, now=1066.0) == ["s2"]
    assert store.release("r", "bob") == 1
    assert store.claim_next("r", "dee", ttl_s=60, now=1067.0) == ["s1"]
    assert store.release("r", "ann", ["s2", "s5"]) == 1


def test_a_filtered_claim_skips_passed_cards_and_gives_back_what_it_no_longer_wants(url):
    store = queued(url, n=8)
    assert store.claim_next("r", "ann") == ["s0"]
    assert store.claim_next("r", "ann", passed=["s0"]) == ["s1"]  # skipped: s0 given back
    assert store.claim_next("r", "bob") == ["s0"]
    assert store.claim_next("r", "ann", among=["s5", "s6", "s1"]) == ["s1"]  # held and wanted
    assert store.claim_next("r", "ann", among=["s5", "s6"]) == ["s5"]  # s1 given back
    assert store.claim_next("r", "cy", among=["s1", "s5", "s6"], n=3) == ["s1", "s6"]
    assert store.leases("r").set_index("sample")["annotator"].to_dict() == {
        "s0": "bob", "s1": "cy", "s5": "ann", "s6": "cy"
    }  # fmt: skip
    assert store.claim_next("r", "dee", among=["s0", "s1"]) == []  # both held by others


def test_the_queue_is_built_once_from_the_decisions_so_far(url):
    store = ReviewStore(url)
    store.record_decision("r", "s1", "keep", 0, "ann")
    assert store.set_queue("r", [f"s{i}" for i in range(4)])
    assert not store.set_queue("r", [f"s{i}" for i in range(4)])  # unchanged: nothing rebuilt
    assert store.claim_next("r", "bob", n=4) == ["s0", "s2", "s3"]  # s1 was decided before
    assert store.set_queue("r", ["s3", "s1", "s0", "s4"])  # a new order
    assert store.claim_next("r", "cy", n=4) == ["s4"]
    assert store.queue_progress("r") == {"queued": 4, "decided": 1}
    assert store.progress("r") == {"decided": 1, "decisions": 1}
    with pytest.raises(InputError, match="each sample once"):
        store.set_queue("r", ["a", "b", "a"])


def test_a_claim_needs_a_queue_and_a_name(url):
    store = ReviewStore(url)
    with pytest.raises(InputError, match="set_queue first"):
        store.claim_next("r", "ann")
    store.set_queue("r", ["a"])
    with pytest.raises(InputError, match="annotator"):
        store.claim_next("r", "")
    with pytest.raises(InputError, match="reviewers"):
        store.set_reviewers("r", 0)


CLAIMER = """
import json, sys
from dynacor.review.store import ReviewStore
store = ReviewStore(sys.argv[1])
name = sys.argv[2]
while True:
    cards = store.claim_next("r", name)
    if not cards:
        break
    store.record_decision("r", cards[0], "keep", 0, name)
    print(json.dumps(cards[0]), flush=True)
"""


def decide_all(url: str, annotators: int, k: int) -> dict[str, list[str]]:
    """Threads (one per annotator, each its own store object) claim and decide until the queue is
    empty; who decided what."""
    done: dict[str, list[str]] = {f"a{t}": [] for t in range(annotators)}
    errors: list[BaseException] = []

    def annotate(name: str) -> None:
        try:
            store = ReviewStore(url)
            while cards := store.claim_next("r", name):
                store.record_decision("r", cards[0], "keep", 0, name)
                done[name].append(cards[0])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=annotate, args=(name,)) for name in done]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    return done


def test_concurrent_claimers_never_share_a_card(url):
    store = queued(url, 120)
    done = decide_all(url, 6, 1)
    cards = [c for mine in done.values() for c in mine]
    assert sorted(cards) == sorted(f"s{i}" for i in range(120))  # each card once, none lost
    assert store.count("r") == 120


def test_concurrent_claiming_processes_never_share_a_card(url):
    queued(url, 150)
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, f"p{k}"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for k in range(4)]  # fmt: skip
    cards = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        cards += [json.loads(line) for line in out.splitlines()]
    assert sorted(cards) == sorted(f"s{i}" for i in range(150))
    assert ReviewStore(url).count("r") == 150


# ---- double review


def test_double_review_gives_each_card_to_two_distinct_annotators(url):
    store = queued(url, 4)
    store.set_reviewers("r", 2)
    assert store.reviewers("r") == 2 and store.reviewers("other") == 1
    assert store.claim_next("r", "ann") == ["s0"]
    assert store.claim_next("r", "bob") == ["s0"]  # the second slot
    assert store.claim_next("r", "cy") == ["s1"]  # s0's two slots are taken
    store.record_decision("r", "s0", "accept", 3, "ann")
    assert store.claim_next("r", "ann") == ["s1"]  # never s0 again: ann voted on it
    assert "s0" not in set(store.latest_decisions("r")["sample"])  # one vote of two
    store.record_decision("r", "s0", "relabel", 3, "bob")  # the same class: they agree
    latest = store.latest_decisions("r").set_index("sample")
    assert list(latest.index) == ["s0"] and latest.loc["s0", "annotator"] == "bob"
    assert store.claim_next("r", "dee") == ["s2"]  # s1: cy and ann; s0: decided
    assert store.progress("r") == {"decided": 1, "decisions": 2, "conflicts": 0}
    assert store.queue_progress("r") == {"queued": 4, "decided": 1, "conflicts": 0}


def test_votes_that_differ_are_a_conflict_until_an_admin_decides(url):
    store = queued(url, 3)
    store.set_reviewers("r", 2)
    store.record_decision("r", "s0", "accept", 1, "ann", when=1.0)
    store.record_decision("r", "s0", "remove", None, "bob", when=2.0)
    store.record_decision("r", "s1", "keep", 0, "ann", when=3.0)
    store.record_decision("r", "s1", "keep", 0, "bob", when=4.0)
    conflicts = store.conflicts("r")
    assert conflicts[["sample", "annotator", "decision"]].values.tolist() == [
        ["s0", "ann", "accept"],
        ["s0", "bob", "remove"],
    ]
    assert set(store.latest_decisions("r")["sample"]) == {"s1"}
    assert store.progress("r")["conflicts"] == store.queue_progress("r")["conflicts"] == 1
    # A conflict is the admin's, not a third annotator's.
    assert store.claim_next("r", "cy", n=3) == ["s2"]
    store.record_decision("r", "s0", "relabel", 2, "admin", when=5.0, final=True)
    # A later vote: the final decision still counts.
    store.record_decision("r", "s0", "accept", 1, "bob", when=6.0)
    latest = store.latest_decisions("r").set_index("sample")
    assert latest.loc["s0", "decision"] == "relabel" and latest.loc["s0", "annotator"] == "admin"
    assert bool(latest.loc["s0", "final"])
    assert store.conflicts("r").empty
    assert store.progress("r")["decided"] == 2
    # Agreement from the votes: s0 changed to agree (bob's latest vote), s1 agreed.
    pairs = agreement.pairwise_kappa(store.votes("r"))
    assert pairs[["annotator_a", "annotator_b", "cards", "agreement"]].values.tolist() == [
        ["ann", "bob", 2, 1.0]
    ]


def test_concurrent_double_review_gives_every_card_exactly_two_annotators(url):
    store = queued(url, 60)
    store.set_reviewers("r", 2)
    done = decide_all(url, 6, 2)
    who: dict[str, list[str]] = {}
    for name, cards in done.items():
        assert len(cards) == len(set(cards))  # never the same card twice to one annotator
        for card in cards:
            who.setdefault(card, []).append(name)
    assert sorted(who) == sorted(f"s{i}" for i in range(60))
    assert all(len(names) == 2 for names in who.values())
    assert store.count("r") == 120 and len(store.latest_decisions("r")) == 60


def reference_decided(history: pd.DataFrame, k: int) -> set[str]:
    """The module docstring's rule, written out plainly over the whole history."""
    decided = set()
    for sample, rows in history.groupby("sample"):
        if rows["final"].any() or k == 1:
            decided.add(sample)
            continue
        votes = rows[~rows["final"]].groupby("annotator").tail(1)
        if len(votes) >= k and agreement.outcomes(votes).nunique() == 1:
            decided.add(sample)
    return decided


@pytest.mark.parametrize("k", [1, 2, 3])
def test_counts_and_decided_among_agree_with_latest_decisions(url, k):
    rng = np.random.default_rng(k)
    store = ReviewStore(url)
    store.set_reviewers("r", k)
    keys = [f"s{i}" for i in range(CHUNK + 200)]
    store.set_queue("r", keys)  # kept current decision by decision
    items = []
    for i in rng.choice(len(keys), 900):
        decision = str(rng.choice(["keep", "accept", "remove"]))
        items.append({"sample": keys[i], "decision": decision, "label": int(rng.integers(0, 2)) if decision != "remove" else None,
                      "annotator": f"a{rng.integers(0, 4)}"})  # fmt: skip
    store.record_decisions("r", items)
    store.record_decisions(
        "r",
        [{"sample": keys[i], "decision": "remove"} for i in range(0, 40, 3)],
        annotator="admin",
        final=True,
    )
    latest = store.latest_decisions("r")
    history = pd.DataFrame(items).assign(final=False, sample=lambda f: f["sample"].astype(str))
    history = pd.concat([history, pd.DataFrame({"sample": [keys[i] for i in range(0, 40, 3)], "decision": "remove",
                                                "annotator": "admin", "final": True})], ignore_index=True)  # fmt: skip
    assert set(latest["sample"]) == reference_decided(history, k)
    assert 0 < len(latest) < len(set(history["sample"])) or k == 1
    assert store.progress("r")["decided"] == len(latest)
    few = keys[:50]
    assert store.decided_among("r", few) == set(latest["sample"]) & set(few)  # IN lists
    assert store.decided_among("r", keys) == set(latest["sample"])  # one pass over the run
    conflicts = store.conflicts("r")["sample"].nunique()
    assert store.queue_progress("r") == {"queued": len(keys), "decided": len(latest)} | (
        {"conflicts": conflicts} if k > 1 else {}
    )
    store.set_queue("r", keys[::-1])  # rebuilt from the decisions
    assert store.queue_progress("r")["decided"] == len(latest)
