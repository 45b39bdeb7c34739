"""The review store: latest decision wins, history kept, nothing lost to concurrency or a kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from dynacor import review
from dynacor.errors import InputError
from dynacor.review.store import ReviewStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def url(tmp_path: Path, monkeypatch) -> str:
    monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    return f"sqlite:///{tmp_path / 'reviews.sqlite'}"


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
    assert store.progress("run1", flagged=[7, 9]) == {"decided": 2, "decisions": 3, "flagged": 2, "decided_flagged": 1}


def test_bulk_decisions_and_bad_input(url):
    store = ReviewStore(url)
    assert store.record_decisions("r", [{"sample": i, "decision": "accept", "label": 1} for i in range(50)], annotator="a") == 50
    assert len(store.latest_decisions("r")) == 50
    with pytest.raises(InputError, match="decision"):
        store.record_decision("r", 1, "delete")
    with pytest.raises(InputError, match="label"):
        store.record_decision("r", 1, "relabel")
    # A failed bulk write stores nothing: one bad item, no half batch.
    with pytest.raises(InputError):
        store.record_decisions("r", [{"sample": 100, "decision": "keep"}, {"sample": 101, "decision": "nope"}])
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
    assert out["final_label"].iloc[4] == 1 and out["decision"].iloc[4] == ""  # undecided: given label
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
        subprocess.Popen([sys.executable, "-c", WRITER, url, f"p{k}", "60"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for k in range(4)
    ]
    acked = set()
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        acked |= {line.split()[1] for line in out.splitlines() if line.startswith("ack ")}
    latest = ReviewStore(url).latest_decisions("r")
    assert len(acked) == 240
    assert set(latest["sample"]) == acked


def test_killed_process_keeps_every_acknowledged_decision(url):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url, "k", "100000"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    acked = []
    deadline = time.time() + 30
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
