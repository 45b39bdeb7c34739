"""App speed: review action -> next card on a 50,000-sample run, and the UMAP map of 55,000 points.

    python benchmarks/app_speed.py review [--samples 50000]
    python benchmarks/app_speed.py umap [--points 55000]
    python benchmarks/app_speed.py run --run RUN_DIR       # a real run, e.g. benchmarks/scale.py's 1M

`run` opens a finished run's Clusters page twice in fresh sessions (the first computes and
caches the map with the run if it is not cached yet; the second is what a user opening the page
gets), then times review actions on the Review page, in Python (the card's own work: the decision,
the next claim, the queue's counts: what a click reruns in a browser, where the card is a
fragment) and through AppTest (the whole page rerun, the quality header included).

`review` fakes a finished run directory (samples table only) and times, per action, the store
write (committed) plus the queue recompute and the next card's row, in Python and through the
real Review page (streamlit AppTest: the whole server-side rerun of the card).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fake_run(root: Path, n: int, seed: int = 0) -> str:
    from dynacor import atomic
    from dynacor.runs import store as runstore

    rng = np.random.default_rng(seed)
    score = rng.beta(2, 5, n)
    given = rng.integers(0, 10, n)
    # Three ranked candidates per sample, none the given class (what the card offers).
    candidates = (given[:, None] + np.array([1, 2, 3])) % 10
    frame = pd.DataFrame({
        "index": np.arange(n), "id": np.arange(n) + 100_000, "given_label": given,
        "suggested_label": candidates[:, 0], "suggested_prob": rng.random(n).round(4),
        "noisy_score": score.round(6), "flagged": (score > 0.5).astype(np.int8),
        "cluster": np.where(score > 0.5, "noisy", "clean"),
        "candidates": list(candidates), "candidate_probs": [[0.5, 0.3, 0.1]] * n,
    })  # fmt: skip
    run = root / "bench-run"
    runstore.create_run(run, {}, {"kind": "features", "path": "fake.npz"})
    atomic.write_with(run / "samples.parquet", lambda h: frame.to_parquet(h, index=False))
    atomic.write_json(run / "run.json", {"class_names": [f"class{i}" for i in range(10)], "source": {}, "chosen_epoch": 0})
    runstore._write_status(run, runstore.FINISHED, created=time.time())
    return run.name


def bench_review(n: int, actions: int = 30) -> None:
    from dynacor import review
    from dynacor.review.store import ReviewStore
    from dynacor.runs import store as runstore

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        name = fake_run(root, n)
        store = ReviewStore(runs_root=root)
        key = runstore.run_id(root / name)  # what the pages key decisions by
        samples = runstore.load_samples(root / name)
        flagged = review.flagged_sorted(samples)
        # A review well under way: 5,000 earlier decisions in the store.
        store.record_decisions(key, [{"sample": k, "decision": "keep", "label": 0} for k in flagged["key"].iloc[-5000:]])
        store.set_queue(key, flagged["key"].tolist())
        times = []
        card = store.claim_next(key, "bench")[0]
        for _ in range(actions):
            t = time.perf_counter()
            card = card_action(store, key, flagged, card)
            times.append(1000 * (time.perf_counter() - t))
        print(f"{n:,} samples, {len(flagged):,} flagged: decision + next claim + queue counts + next row: "
              f"median {statistics.median(times):.1f} ms, max {max(times):.1f} ms (Python)")  # fmt: skip


        os.environ["DYNACOR_RUNS"] = str(root)
        page_actions(name, "bench", 10)


def page_actions(run_name: str, annotator: str, actions: int) -> None:
    """Click 'Keep label', then the second candidate (key 2), on the real Review page ``actions``
    times each (AppTest: the whole page reruns, the quality header included, where a browser
    reruns only the card)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.session_state["current_run"] = run_name
    at.session_state["annotator"] = annotator
    at.switch_page("pages/review.py").run()
    for button, what in (("act_keep", "'Keep label'"), ("act_cand_2", "the second candidate")):
        page_times = []
        for _ in range(actions):
            t = time.perf_counter()
            at.button(key=button).click().run()
            page_times.append(1000 * (time.perf_counter() - t))
        assert not at.exception, at.exception
        print(f"Review page, click {what} -> next card rendered (AppTest, whole page rerun): "
              f"median {statistics.median(page_times):.0f} ms, max {max(page_times):.0f} ms")  # fmt: skip


def card_action(store, key: str, flagged, card: str) -> str:
    """What a click on the Review page's card does: record, claim the next card, count, find its row."""
    row = flagged.loc[flagged["key"] == card].iloc[0]
    store.record_decision(key, card, "accept", int(row["suggested_label"]), "bench")
    nxt = store.claim_next(key, "bench")[0]
    store.queue_progress(key)
    flagged.loc[flagged["key"] == nxt].iloc[0]
    return nxt


def bench_run(run: Path, actions: int = 30) -> None:
    from streamlit.testing.v1 import AppTest

    from dynacor import review
    from dynacor.review.store import ReviewStore
    from dynacor.runs import store as runstore

    run = run.resolve()
    os.environ["DYNACOR_RUNS"] = str(run.parent)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DYNACOR_REVIEW_DB"] = f"sqlite:///{Path(tmp) / 'reviews.sqlite'}"
        for attempt in ("first (map computed unless cached)", "second (map cached)"):
            t = time.perf_counter()
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=1800)
            at.session_state["current_run"] = run.name
            at.switch_page("pages/clusters.py").run()
            assert not at.exception, at.exception
            print(f"Clusters page, {attempt}: {time.perf_counter() - t:.1f} s")
        samples = runstore.load_samples(run)
        flagged = review.flagged_sorted(samples)
        store = ReviewStore(os.environ["DYNACOR_REVIEW_DB"])
        key = runstore.run_id(run)
        t = time.perf_counter()
        store.set_queue(key, flagged["key"].tolist())
        print(f"{len(samples):,} samples, {len(flagged):,} flagged: queue stored once in {time.perf_counter() - t:.1f} s")
        store.record_decisions(key, [{"sample": k, "decision": "keep", "label": 0} for k in flagged["key"].iloc[-5000:]])
        card = store.claim_next(key, "bench")[0]
        times = []
        for _ in range(actions):
            t = time.perf_counter()
            card = card_action(store, key, flagged, card)
            times.append(1000 * (time.perf_counter() - t))
        print(f"card action (decision + next claim + counts + row): median {statistics.median(times):.1f} ms, "
              f"max {max(times):.1f} ms")  # fmt: skip
        page_actions(run.name, "bench2", 5)


def bench_umap(points: int) -> None:
    from dynacor.runs.umap_map import embed

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, size=(12, 512))
    x = (centres[rng.integers(0, 12, points)] + rng.normal(0, 0.6, size=(points, 512))).astype(np.float16)
    wall, cpu = time.perf_counter(), time.process_time()
    coords = embed(x, seed=0)
    print(f"UMAP of {points:,} distinct points x 512 (fresh process, numba compile included): "
          f"{time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU; {coords.shape}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["review", "umap", "run"])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--points", type=int, default=55_000)
    parser.add_argument("--run", type=Path, help="a finished run directory (for 'run')")
    args = parser.parse_args()
    if args.what == "run":
        bench_run(args.run)
    else:
        bench_review(args.samples) if args.what == "review" else bench_umap(args.points)
