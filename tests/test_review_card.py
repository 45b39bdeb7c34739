"""The review card built around ranked candidate labels: the pure functions behind it
(`dynacor.review.candidates`, the fix shares in `dynacor.review.quality`) and the Review, Grid,
Team and Export pages through AppTest on a small faked run whose samples carry three candidates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynacor import atomic, review
from dynacor.errors import InputError
from dynacor.review import candidates as cc
from dynacor.review.store import ReviewStore
from dynacor.review.triage import grid_decisions
from dynacor.runs import store as runstore
from tests.app_fixtures import CANDIDATE_CLASSES, candidate_run

RUN = "candidate-run"


# ---- pure functions


def table(given, suggested, cands=None, probs=None, suggested_prob=None) -> tuple[np.ndarray, np.ndarray]:
    n = len(given)
    frame = pd.DataFrame({"given_label": given, "suggested_label": suggested,
                          "suggested_prob": suggested_prob if suggested_prob is not None else [0.5] * n})  # fmt: skip
    if cands is None:
        cands, probs = np.full((n, 3), -1), np.full((n, 3), np.nan)
    return cc.candidate_table(frame, np.asarray(cands), np.asarray(probs, dtype=float))


def test_candidate_table_drops_the_given_label_and_repeats_and_falls_back_to_the_suggestion():
    cands, probs = table(
        given=[0, 1, 2, 3, 4],
        suggested=[5, 1, -1, 7, 6],
        cands=[[5, 6, 7], [1, 1, 3], [-1, -1, -1], [-1, -1, -1], [0, -1, -1]],
        probs=[[0.5, 0.2, 0.1], [0.9, 0.9, 0.05], [np.nan] * 3, [np.nan] * 3, [0.3, np.nan, np.nan]],
    )
    assert cands.tolist() == [[5, 6, 7], [3, -1, -1], [-1, -1, -1], [7, -1, -1], [0, -1, -1]]
    assert probs[1, 0] == 0.05 and np.isnan(probs[1, 1:]).all()
    assert probs[3, 0] == 0.5  # the fallback carries suggested_prob
    # A run from before the candidates: the suggestion alone, unless it is the given label or -1.
    cands, _ = table(given=[0, 1, 2], suggested=[3, 1, -1])
    assert cands[:, 0].tolist() == [3, -1, -1] and (cands[:, 1:] == -1).all()
    assert cc.row_candidates(np.array([3, -1, -1]), np.array([0.4, np.nan, np.nan])) == [(3, 0.4)]


def test_search_order_puts_candidates_then_this_runs_confusions_then_the_rest():
    frame = pd.DataFrame({"given_label": [0, 0, 0, 0, 1, 2], "suggested_label": [4, 4, 2, 0, 3, -1]})
    confusions = cc.suggestion_order(frame)
    assert confusions == {0: [4, 2], 1: [3]}  # the given label and -1 count for nothing
    order = cc.search_order(0, [5, 2], confusions[0], 7)
    assert order == [5, 2, 4, 1, 3, 6]  # no given class, no repeats
    assert len(cc.search_order(7, [], [], 1000)) == 999


def test_a_choice_records_its_rank_and_means_what_it_says():
    assert cc.choice(0, 5, [5, 6, 7]) == {"decision": "accept", "label": 5, "candidate_rank": 1}
    assert cc.choice(0, 7, [5, 6, 7]) == {"decision": "relabel", "label": 7, "candidate_rank": 3}
    assert cc.choice(0, 9, [5, 6, 7]) == {"decision": "relabel", "label": 9, "candidate_rank": 0}
    assert cc.choice(0, 0, [5, 6, 7]) == {"decision": "keep", "label": 0, "candidate_rank": None}
    assert cc.choice(0, 9, [-1, -1, -1])["candidate_rank"] == 0
    with pytest.raises(ValueError, match="suggestion"):
        review.decision_label("accept", 0, -1)


def test_bulk_and_grid_accept_take_each_cards_own_suggestion_and_skip_cards_without_one():
    rows = pd.DataFrame({"key": ["a", "b", "c", "d"], "given_label": [0, 1, 2, 3], "suggested_label": [4, 5, -1, 3],
                         "noisy_score": [0.9, 0.8, 0.7, 0.6], "index": range(4)})  # fmt: skip
    items, left_out = cc.bulk_items(rows, "accept", None)
    assert [(i["sample"], i["label"], i["candidate_rank"]) for i in items] == [("a", 4, 1), ("b", 5, 1)]
    assert left_out == 2
    cands = np.array([[4, 6, 7], [5, 6, 7], [-1, -1, -1], [-1, -1, -1]])
    items, _ = cc.bulk_items(rows, "relabel", 6, cands)
    assert [(i["decision"], i["candidate_rank"]) for i in items] == [("relabel", 2), ("relabel", 2), ("relabel", 0), ("relabel", 0)]
    items, _ = cc.bulk_items(rows, "relabel", 0, cands)
    assert items[0]["decision"] == "keep"  # relabelling a card to its given class is a keep
    assert [i["label"] for i in cc.bulk_items(rows, "keep", None)[0]] == [0, 1, 2, 3]
    grid = grid_decisions(rows, ["a", "c", "d"], "accept")
    assert grid == [{"sample": "a", "decision": "accept", "label": 4}]
    with pytest.raises(InputError):
        grid_decisions(rows, ["a"], "relabel")


def test_fix_shares_count_label_changes_only_and_infer_old_ranks():
    samples = pd.DataFrame({"id": [10, 11, 12, 13, 14, 15, 16], "given_label": [0, 1, 2, 3, 4, 5, 6]})
    latest = pd.DataFrame({
        "sample": ["10", "11", "12", "13", "14", "15", "16"],
        "decision": ["accept", "relabel", "relabel", "accept", "relabel", "keep", "remove"],
        "label": pd.array([7, 8, 9, 3, 2, 5, None], dtype="Int64"),
        "candidate_rank": pd.array([1, 2, 0, 1, None, None, None], dtype="Int64"),
    })  # fmt: skip
    shares = review.candidate_shares(samples, latest)
    # 13: an accept of the given label changes nothing; 14: an old relabel without candidates.
    assert shares == {"fixes": 4, "ranked": 3, "suggestion": 1, "top3": 2, "suggestion_share": 1 / 3,
                      "top3_share": 2 / 3, "unranked": 1}  # fmt: skip
    cands = np.full((7, 3), -1)
    cands[4] = [5, 2, 6]  # the run's candidates place 14's class second
    shares = review.candidate_shares(samples, latest.drop(columns="candidate_rank"), cands)
    # 10: an accept (rank 1); 11, 12: classes outside the candidates (0); 14: second (2).
    assert (shares["fixes"], shares["ranked"], shares["suggestion"], shares["top3"]) == (4, 4, 1, 2)
    assert review.candidate_line(shares) == "The suggestion was taken for 25% of fixes, the top 3 for 50% (of 4 fixes)."
    assert "No fix yet" in review.candidate_line(review.candidate_shares(samples, latest.iloc[:0]))


# ---- the pages

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    candidate_run(root, RUN)
    monkeypatch.setenv("DYNACOR_RUNS", str(root))
    monkeypatch.setenv("DYNACOR_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    return root


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["current_run"] = RUN
    at.session_state["annotator"] = "alice"
    at.switch_page(f"pages/{page}.py")
    at.run()
    ok(at)
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "success") for e in at.get(kind))


def card(at: AppTest) -> str:
    return texts(at).split("#### id `")[1].split("`")[0]


def latest(runs: Path):
    return ReviewStore(runs_root=runs).latest_decisions(runstore.run_id(runs / RUN)).set_index("sample")


def test_the_card_offers_three_candidates_with_keys_and_records_the_rank_taken(runs):
    at = open_page("review")
    assert card(at) == "1000"  # given airplane (0); candidates 1, 2, 3
    buttons = {k: at.button(key=k) for k in ("act_accept", "act_cand_2", "act_cand_3", "act_accept_alias")}
    assert buttons["act_accept"].label == "1 · automobile \\(1\\) 60%"
    assert buttons["act_cand_2"].label == "2 · bird \\(2\\) 25%"
    assert buttons["act_cand_3"].label == "3 · cat \\(3\\) 10%"
    assert [b.proto.shortcut for b in buttons.values()] == ["1", "2", "3", "a"]
    shown = texts(at)
    assert "(suggested)" in shown and "(candidate 2)" in shown and "(candidate 3)" in shown and "(given)" in shown

    at.button(key="act_cand_2").click().run()  # 1000 -> bird, the second candidate
    assert card(at) == "1001"
    at.button(key="act_accept").click().run()  # 1001 (given 1) -> 2, the suggestion
    # 1002 (given bird): its third candidate is a class whose name is Markdown, printed as text.
    assert at.button(key="act_cand_3").label == "3 · dog\\_\\*big\\* \\(5\\) 10%"
    at.button(key="act_cand_3").click().run()
    assert card(at) == "1003"  # given cat (3): candidates 4, 5, 6
    search = at.selectbox(key="search_1003")
    assert search.value is None and at.button(key="act_relabel").disabled
    assert search.options[:3] == ["deer (4)", "dog_*big* (5)", "frog (6)"]  # then the rest by index
    assert search.options[3:] == [f"{CANDIDATE_CLASSES[c]} ({c})" for c in (0, 1, 2, 7, 8, 9)]
    search.set_value(9).run()  # typed, outside the candidates
    at.button(key="act_relabel").click().run()
    at.selectbox(key="search_1004").set_value(5).run()  # the search finds the suggestion itself
    at.button(key="act_relabel").click().run()
    at.button(key="act_accept_alias").click().run()  # A: the old accept key
    at.button(key="act_keep").click().run()
    ok(at)

    got = latest(runs)
    expected = {"1000": ("relabel", 2, 2), "1001": ("accept", 2, 1), "1002": ("relabel", 5, 3),
                "1003": ("relabel", 9, 0), "1004": ("accept", 5, 1), "1005": ("accept", 6, 1), "1006": ("keep", 6, None)}  # fmt: skip
    for key, (decision, label, rank) in expected.items():
        row = got.loc[key]
        assert (row["decision"], row["label"]) == (decision, label), key
        assert (pd.isna(row["candidate_rank"]) if rank is None else row["candidate_rank"] == rank), key

    line = "The suggestion was taken for 50% of fixes, the top 3 for 83% (of 6 fixes)."
    assert line in texts(open_page("team"))
    export = open_page("export")
    assert line in texts(export)


def strip_candidates(runs: Path, suggested) -> None:
    """The run as an older engine wrote it: no candidate columns, the given suggestion column."""
    path = runs / RUN / "samples.parquet"
    frame = pd.read_parquet(path).drop(columns=["candidates", "candidate_probs"])
    frame["suggested_label"] = suggested(frame)
    atomic.write_with(path, lambda h: frame.to_parquet(h, index=False))


def test_a_run_without_probabilities_offers_no_suggestion_but_the_search(runs):
    strip_candidates(runs, lambda f: -1)
    at = open_page("review")
    assert at.button(key="act_accept").disabled and at.button(key="act_accept_alias").disabled
    assert "No suggestion" in texts(at) and "(suggested)" not in texts(at)
    assert len(at.selectbox(key="search_1000").options) == 9
    at.selectbox(key="search_1000").set_value(4).run()
    at.button(key="act_relabel").click().run()
    ok(at)
    row = latest(runs).loc["1000"]
    assert (row["decision"], row["label"], row["candidate_rank"]) == ("relabel", 4, 0)
    # Bulk accept on the Review page: nothing to accept anywhere, nothing recorded.
    at.toggle(key="bulk_load").set_value(True).run()
    at.selectbox(key="bulk_decision").set_value("accept").run()
    at.button(key="bulk_all").click().run()
    ok(at)
    assert "Left out 29 with no suggestion to accept." in texts(at)
    assert len(latest(runs)) == 1


def test_an_old_run_falls_back_to_its_suggestion_and_bulk_accept_takes_each_cards_own(runs):
    strip_candidates(runs, lambda f: np.where(f["index"] % 2 == 0, (f["given_label"] + 4) % 10, f["given_label"]))
    at = open_page("review")
    assert at.button(key="act_accept").label == "1 · deer \\(4\\) 60%"  # 1000: given 0, suggested 4
    assert not [b for b in at.button if b.key in ("act_cand_2", "act_cand_3")]
    at.button(key="act_accept").click().run()
    assert at.button(key="act_accept").disabled  # 1001 suggests its own given label: nothing to accept
    at.toggle(key="bulk_load").set_value(True).run()
    at.selectbox(key="bulk_decision").set_value("accept").run()
    at.button(key="bulk_all").click().run()
    ok(at)
    got = latest(runs)
    samples = runstore.load_samples(runs / RUN).set_index(runstore.load_samples(runs / RUN)["id"].astype(str))
    assert len(got) == 15  # the 15 flagged cards with a suggestion, each to its own
    assert (got["label"] == samples.loc[got.index, "suggested_label"]).all()
    assert (got["label"] != samples.loc[got.index, "given_label"]).all() and (got["candidate_rank"] == 1).all()


def test_grid_groups_by_suggestion_and_accept_applies_each_cards_own(runs):
    at = open_page("grid")
    group = at.selectbox(key="grid_group")
    assert group.value == (0, 1) and "airplane (0) -> automobile (1): 3 undecided" in group.options
    at.button(key="grid_all_accept").click().run()
    ok(at)
    got = latest(runs)
    assert sorted(got.index) == ["1000", "1010", "1020"]
    assert (got["decision"] == "accept").all() and (got["label"] == 1).all() and (got["candidate_rank"] == 1).all()


def test_the_export_json_carries_the_fix_shares(runs, monkeypatch):
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    downloads = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self, path_or_data, mimetype, kind, filename=None):
        downloads[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    store = ReviewStore(runs_root=runs)
    run = runstore.run_id(runs / RUN)
    store.record_decision(run, 1000, "accept", 1, "ann")  # no rank given: an accept is rank 1
    store.record_decision(run, 1001, "relabel", 9, "ann", candidate_rank=0)
    open_page("export")
    shares = json.loads(downloads[f"{RUN}-quality.json"])["candidates"]
    assert (shares["fixes"], shares["suggestion"], shares["top3"]) == (2, 1, 1)
