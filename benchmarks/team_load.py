"""Team load: N annotators reviewing one 50k-card run at once, through the review store.

    python benchmarks/team_load.py --db sqlite --annotators 20 --run-size 50000 --seconds 60
    python benchmarks/team_load.py --db postgres --annotators 20 --run-size 50000 --seconds 60

Each annotator (a process of its own, or a thread of one process with ``--threads``, like the
sessions of one Streamlit server) makes the calls the Review page makes for one card: record the
decision (committed), claim the next card (`ReviewStore.claim_next`) and read the header's counts
(`ReviewStore.queue_progress`); one action is those three, timed together. The run's queue is
``--run-size`` cards, ``--decided`` of them decided before the clock starts (a review half
done). PostgreSQL is a throwaway server started here on a loopback port (tests/postgres_server.py,
durable settings: fsync on); SQLite is a file in a temp folder (WAL, synchronous=FULL).

Reports decisions/s and the p50/p95/max action latency, then checks the table: every
acknowledged decision stored (none lost), no decision stored twice, no card decided twice in
single review (in double review: at most k annotators per card, never one twice).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN = "team-load"
DECISIONS = (("keep", 0), ("accept", 1), ("remove", None))


def annotate(
    url: str, name: str, seed: int, start_at: float, seconds: float, think_s: float
) -> dict:
    """One annotator's session: claim, decide, claim again until the time is up (or no card is
    left). Returns the acknowledged cards and each action's latency."""
    from dynacor.review.store import ReviewStore

    store = ReviewStore(url)
    rng = np.random.default_rng(seed)
    acked, latencies = [], []
    time.sleep(max(0.0, start_at - time.time()))
    cards = store.claim_next(RUN, name)
    end = start_at + seconds
    while cards and time.time() < end:
        if think_s:
            time.sleep(rng.exponential(think_s))
        decision, label = DECISIONS[int(rng.integers(0, len(DECISIONS)))]
        t0 = time.perf_counter()
        store.record_decision(RUN, cards[0], decision, label, name)
        acked.append(cards[0])  # record_decision returned: committed
        cards = store.claim_next(RUN, name)
        store.queue_progress(RUN)
        latencies.append(time.perf_counter() - t0)
    return {"name": name, "acked": acked, "latencies": latencies}


def _process_main(url, name, seed, start_at, seconds, think_s, out_dir) -> None:  # noqa: ANN001
    result = annotate(url, name, seed, start_at, seconds, think_s)
    (Path(out_dir) / f"{name}.json").write_text(json.dumps(result))


def prepare(url: str, run_size: int, decided: int, reviewers: int) -> None:
    from dynacor.review.store import ReviewStore

    store = ReviewStore(url)
    keys = [str(100_000 + i) for i in range(run_size)]
    store.set_reviewers(RUN, reviewers)
    store.set_queue(RUN, keys)
    votes = [{"sample": k, "decision": "keep", "label": 0, "annotator": f"before{r}"}
             for k in keys[:decided] for r in range(reviewers)]  # fmt: skip
    store.record_decisions(RUN, votes)


def check(url: str, results: list[dict], decided: int, reviewers: int) -> dict:
    """What the table holds against what the annotators were told was stored."""
    import sqlalchemy as sa

    from dynacor.review.store import ReviewStore, decisions

    store = ReviewStore(url)
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(decisions.c.sample, decisions.c.annotator).where(decisions.c.run == RUN)
        ).all()
    stored = Counter((s, a) for s, a in rows if not a.startswith("before"))
    acked = Counter((card, r["name"]) for r in results for card in r["acked"])
    per_card: dict[str, list[str]] = {}
    for sample, annotator in rows:
        per_card.setdefault(sample, []).append(annotator)
    return {
        "acknowledged": acked.total(),
        "lost": (acked - stored).total(),  # told "stored", not in the table
        "duplicated": (stored - acked).total(),  # in the table more often than acknowledged
        "cards_over_k": sum(len(set(a)) > reviewers for a in per_card.values()),
        "same_annotator_twice": sum(len(a) != len(set(a)) for a in per_card.values()),
        "prefilled": decided,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--run-size", type=int, default=50_000)
    parser.add_argument(
        "--decided", type=int, default=25_000, help="cards decided before the clock starts"
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--reviewers", type=int, default=1, help="k: annotators per card (2: double review)"
    )
    parser.add_argument(
        "--think-ms", type=float, default=0.0, help="mean pause before each decision (0: flat out)"
    )
    parser.add_argument(
        "--threads", action="store_true", help="annotators as threads of one process"
    )
    args = parser.parse_args(argv)

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="team-load-")))
        if args.db == "postgres":
            from tests.postgres_server import missing, postgres_server

            reason = missing()
            if reason:
                raise SystemExit(f"team_load: {reason}")
            url = stack.enter_context(postgres_server()).create_database()
        else:
            url = f"sqlite:///{tmp / 'reviews.sqlite'}"
        t0 = time.perf_counter()
        prepare(url, args.run_size, args.decided, args.reviewers)
        print(
            f"prepared {args.run_size:,} cards, {args.decided:,} decided, in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )

        names = [f"ann{i:02d}" for i in range(args.annotators)]
        # Started a while from now, so every session is up (imports, connections) before the clock.
        start_at = time.time() + (5.0 if args.threads else 10.0 + 2.0 * args.annotators)
        think_s = args.think_ms / 1000.0
        if args.threads:
            results: list[dict] = []
            threads = [threading.Thread(target=lambda n=n, i=i: results.append(
                annotate(url, n, i, start_at, args.seconds, think_s))) for i, n in enumerate(names)]  # fmt: skip
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_process_main, args=(url, n, i, start_at, args.seconds, think_s, str(tmp)))
                     for i, n in enumerate(names)]  # fmt: skip
            for p in procs:
                p.start()
            for p in procs:
                p.join(timeout=max(60.0, start_at - time.time() + args.seconds + 120.0))
                if p.is_alive():
                    p.kill()
                    p.join()
            missing_results = [n for n in names if not (tmp / f"{n}.json").exists()]
            if missing_results:
                raise SystemExit(f"team_load: sessions without a result: {missing_results}")
            results = [json.loads((tmp / f"{n}.json").read_text()) for n in names]
        wall = max(args.seconds, 1e-9)
        latencies = np.array([x for r in results for x in r["latencies"]]) * 1000.0
        summary = {
            "db": args.db,
            "annotators": args.annotators,
            "mode": "threads" if args.threads else "processes",
            "run_size": args.run_size,
            "reviewers": args.reviewers,
            "think_ms": args.think_ms,
            "seconds": args.seconds,
            "decisions_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(latencies) else None,
            "p95_ms": round(float(np.percentile(latencies, 95)), 1) if len(latencies) else None,
            "max_ms": round(float(latencies.max()), 1) if len(latencies) else None,
            **check(url, results, args.decided, args.reviewers),
        }
    print(json.dumps(summary), flush=True)
    ok = summary["lost"] == 0 and summary["duplicated"] == 0 and summary["cards_over_k"] == 0
    ok = ok and summary["same_annotator_twice"] == 0
    print("checks: " + ("passed" if ok else "FAILED"), flush=True)
    if not ok:
        raise SystemExit(1)
    return summary


if __name__ == "__main__":
    os.environ.pop("DYNACOR_REVIEW_DB", None)  # the benchmark makes its own database
    main()
