"""Review simulation (issue 22): how fast does an annotator fix the errors a queue shows?

    python benchmarks/review_sim.py [--features ../shared/data/cifar10_effl0_dev.npz] [--half report]
        [--settings ...] [--seeds 0,1,2] [--out benchmarks/results/review_sim]

For each noise setting and seed, DynaCor (defaults) and tuned confident learning (``--method cl``,
its table as the CLI writes it) run on one half of the dev file. A simulated annotator who knows
the true labels then works through each queue, most confidently noisy first, with the same calls
as the Review page (`dynacor.review.flagged_sorted`, `candidate_table`, `choice`,
`ReviewStore.record_decision` on an SQLite store), pressing the keys a person would:

- a false alarm: ``K`` (1 key);
- a true error whose true class is among the card's candidates: its key ``1``-``3`` (1 key);
- otherwise the search: focus it, type the shortest prefix of the true class's name that puts it
  first in the list (the list is ordered as the card orders it), Enter, the relabel button:
  ``3 + len(prefix)`` keys.

"Today's card" is the card before issue 22: one suggestion, the late softmax's argmax (the head's
last 5 epochs; the given label on most flagged cards), accepted with ``A`` when it is the true
class; otherwise ``O`` and a search over the classes in index order.

Prints per setting: for DynaCor's flagged true errors, how often the suggestion is the true class
(top 1) and the top 3 hold it, today's suggestion beside them; key presses per fixed error and
errors fixed per 100 cards for each queue and card. Writes ``rows.jsonl`` and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from dynacor.method.config import DynaCorConfig
from dynacor.method.device import set_threads
from dynacor.method.estimates import window_epochs
from dynacor.method.pipeline import run
from dynacor.method.suggest import candidate_matrix
from dynacor.review import flagged_sorted
from dynacor.review.candidates import candidate_table, choice, search_order, suggestion_order
from dynacor.review.store import ReviewStore
from dynacor.runs.baseline import baseline_frame
from dynacor.runs.bench import (
    DEFAULT_SETTINGS,
    SETTING_NAMES,
    load_half,
    machine_description,
    parse_seeds,
    run_method,
    setting_labels,
)

ROOT = Path(__file__).resolve().parents[1]
SEARCH_KEYS = 3  # focus the search, Enter, the relabel button
LATE_EPOCHS = 5  # today's card: the softmax averaged over the last 5 epochs


def prefix_keys(target: int, order: list[int], names: list[str]) -> int:
    """Characters to type until ``target`` is the first class of ``order`` whose name contains
    them (case-insensitive, as the select box filters)."""
    name = names[target].lower()
    for length in range(1, len(name) + 1):
        typed = name[:length]
        first = next(c for c in order if typed in names[c].lower())
        if first == target:
            return length
    return len(name)


def simulate(queue: pd.DataFrame, clean: np.ndarray, names: list[str], store: ReviewStore, run_key: str,
             candidates: np.ndarray | None) -> dict:  # fmt: skip
    """Work through ``queue`` (rows of `flagged_sorted`) with the new card (``candidates`` (Q, 3)
    from `candidate_table`) or today's (None: the suggestion alone, search in index order).
    Records each decision in ``store``; returns the key presses and the fixes."""
    confusions = suggestion_order(queue) if candidates is not None else {}
    keys = fixed = top3 = 0
    c = len(names)
    for i, row in enumerate(queue.itertuples(index=False)):
        given, truth = int(row.given_label), int(clean[row.index])
        if truth == given:
            keys += 1
            store.record_decision(run_key, row.key, "keep", given, "sim")
            continue
        offered = [int(x) for x in candidates[i] if x >= 0] if candidates is not None else [int(row.suggested_label)]
        if truth in offered[:3] and (candidates is not None or truth != given):
            keys += 1
            top3 += 1
        else:
            order = search_order(given, offered if candidates is not None else [], confusions.get(given, []), c) \
                if candidates is not None else [k for k in range(c) if k != given]
            keys += SEARCH_KEYS + prefix_keys(truth, order, names) + (0 if candidates is not None else 1)  # O
        picked = choice(given, truth, offered)
        store.record_decision(run_key, row.key, picked["decision"], picked["label"], "sim",
                              candidate_rank=picked["candidate_rank"])  # fmt: skip
        fixed += 1
    return {"cards": len(queue), "keys": keys, "fixed": fixed, "one_key": top3}


def with_late_window(config: DynaCorConfig) -> DynaCorConfig:
    """The config whose self-estimates keep every original's softmax over the last 5 epochs (their
    recall window): today's suggestion is its argmax. Flags and candidates are the defaults' (the
    recall window feeds only the estimates; the noise window, which the combined score also
    reads, stays as it is)."""
    first = (config.epochs - LATE_EPOCHS) / config.epochs
    late = config.replace(recall_window=(first, 1.0))
    assert window_epochs(late.recall_window, config.epochs) == (config.epochs - LATE_EPOCHS, config.epochs)
    return late


def late_suggestions(result) -> np.ndarray:
    """(N,) today's suggestion: the argmax of the late softmax, given class included."""
    parts = result.estimate_parts
    assert np.array_equal(parts["rows"], np.arange(result.num_samples)), "estimate_rows must cover every original"
    return np.asarray(parts["window_probs"][1]).argmax(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--half", default="report", choices=("tune", "report"))
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "review_sim"))
    args = parser.parse_args()
    set_threads(0)
    settings = args.settings.split(",")
    data, extra = load_half(Path(args.features), settings, args.half)
    names = list(data.class_names)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_description()}; {data.num_samples} samples ({args.half} half)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ReviewStore(f"sqlite:///{tmp}/reviews.sqlite")
        for setting in settings:
            for seed in parse_seeds(args.seeds):
                config = DynaCorConfig(seed=seed)
                given = setting_labels(data, setting, seed, extra)
                clean = data.clean_labels
                result = run(with_late_window(config), data.with_labels(given))
                frame = result.samples_frame()
                errors = result.flagged & (given != clean)
                row = {"setting": SETTING_NAMES.get(setting, setting), "seed": seed,
                       "flagged_errors": int(errors.sum()),
                       "top1": float(np.mean(result.suggested_labels[errors] == clean[errors])),
                       "top3": float(np.mean((result.candidates[errors] == clean[errors][:, None]).any(axis=1))),
                       "never_given": bool(not (result.candidates == given[:, None]).any())}  # fmt: skip
                late = late_suggestions(result)
                row["today_top1"] = float(np.mean(late[errors] == clean[errors]))
                row["today_given"] = float(np.mean(late[result.flagged] == given[result.flagged]))
                queue = flagged_sorted(frame)
                cands, probs = candidate_matrix(queue)
                cands, _ = candidate_table(queue, cands, probs)
                run_key = f"{setting}-{seed}"
                row["new"] = simulate(queue, clean, names, store, run_key + "-new", cands)
                today = queue.assign(suggested_label=late[queue["index"].to_numpy()])
                row["today"] = simulate(today, clean, names, store, run_key + "-today", None)
                flagged_cl, score_cl, _, _ = run_method("cl", data.with_labels(given), config, seed)
                cl_frame = baseline_frame(data, given, flagged_cl, score_cl)
                cl_queue = flagged_sorted(cl_frame)
                cl_cands, cl_probs = candidate_matrix(cl_queue)
                cl_cands, _ = candidate_table(cl_queue, cl_cands, cl_probs)
                row["cl"] = simulate(cl_queue, clean, names, store, run_key + "-cl", cl_cands)
                print(json.dumps(row), flush=True)
                rows.append(row)
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = markdown(rows)
    (out / "table.md").write_text(table)
    print(table)


def markdown(rows: list[dict]) -> str:
    def per(name: str, key: str, f) -> float:
        return float(np.mean([f(r) for r in rows if r["setting"] == name]))

    def keys_per_fix(queue: str):
        return lambda r: r[queue]["keys"] / max(1, r[queue]["fixed"])

    def fixed_per_100(queue: str):
        return lambda r: 100.0 * r[queue]["fixed"] / max(1, r[queue]["cards"])

    settings = list(dict.fromkeys(r["setting"] for r in rows))
    lines = ["| setting | suggestion = truth (today) | top 3 hold it | keys per fix: new card | today's card | "
             "CL queue, new card | fixed per 100 cards: DynaCor | CL |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in [*settings, "average"]:
        pick = settings if name == "average" else [name]

        def avg(f, pick=pick) -> float:
            return float(np.mean([per(s, "", f) for s in pick]))

        lines.append(
            f"| {name} | {100 * avg(lambda r: r['top1']):.1f} ({100 * avg(lambda r: r['today_top1']):.1f}) | "
            f"{100 * avg(lambda r: r['top3']):.1f} | {avg(keys_per_fix('new')):.2f} | {avg(keys_per_fix('today')):.2f} | "
            f"{avg(keys_per_fix('cl')):.2f} | {avg(fixed_per_100('new')):.1f} | {avg(fixed_per_100('cl')):.1f} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
