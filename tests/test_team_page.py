"""The Team page through streamlit's AppTest, on SQLite and on a real PostgreSQL server
(tests/postgres_server.py; skipped where PostgreSQL is absent): the review mode set by an admin,
the queue's progress and who holds cards, agreement numbers checked against scikit-learn and a
Fleiss' kappa computed here, an admin deciding a conflict; annotators see numbers, not controls."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from sklearn.metrics import cohen_kappa_score  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dynacor import review  # noqa: E402
from dynacor.review.access import ADMIN, ANNOTATOR, SIGNED_IN, Access  # noqa: E402
from dynacor.review.store import ReviewStore, default_url  # noqa: E402
from dynacor.runs import store as runstore  # noqa: E402
from pages._text import plain  # noqa: E402
from tests.app_fixtures import finished_run  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
RUN = "fixture-run"
LEAD, ANN, BOB = "lead@example.org", "ann@example.org", "bob@example.org"
SECRETS = {
    "auth": {
        "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
        "cookie_secret": "c" * 32,
        "client_id": "dynacor",
        "client_secret": "x",
        "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration",
    },
    "dynacor": {"roles": {"admins": [LEAD], "annotators": ["*@example.org"]}},
}
# Two annotators' votes on the first 13 queued cards (ANN alone on the last): agreements,
# "accept" against "keep", a relabel, remove and unsure.
ANN_VOTES = ["keep"] * 6 + ["accept"] * 4 + ["remove", "unsure", "keep"]
BOB_VOTES = ["keep"] * 4 + ["accept"] * 4 + ["relabel", "accept", "remove", "remove"]


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("made")
    return finished_run(base / "runs", base / "data", RUN)


@pytest.fixture(params=["sqlite", "postgres"])
def env(request, tmp_path, monkeypatch, made_run) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(made_run, runs / RUN)
    monkeypatch.setenv("DYNACOR_RUNS", str(runs))
    monkeypatch.setenv("DYNACOR_DATA_ROOTS", str(tmp_path))
    if request.param == "postgres":
        monkeypatch.setenv("DYNACOR_REVIEW_DB", request.getfixturevalue("postgres_url"))
    else:
        monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    return runs


def store_of(runs: Path) -> ReviewStore:
    return ReviewStore(default_url(runs))  # the URL the app uses


def open_page(user: str | None, **state) -> AppTest:
    """``user``: an email signed in through OIDC; None: single-user mode."""
    at = AppTest.from_file(APP, default_timeout=60)
    if user is not None:
        at.secrets.update(SECRETS)
        at.user = {"is_logged_in": True, "email": user, "sub": f"sub-{user}"}
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page("pages/team.py")
    return at.run()


def texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "info", "success", "warning", "error", "title", "subheader")
    return "\n".join(str(e.value) for kind in kinds for e in at.get(kind))


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def table(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Team"  # routed for this user, not the default page


def cast_votes(runs: Path):
    """Both annotators' votes written through the store; returns the cards (queue order), their
    rows and each annotator's outcome per card, as the store compares them."""
    run = runstore.run_id(runs / RUN)
    cards = review.flagged_sorted(runstore.load_samples(runs / RUN)).head(len(ANN_VOTES))
    store = store_of(runs)
    outcomes: dict[str, dict[str, str]] = {ANN: {}, BOB: {}}
    for who, votes in ((ANN, ANN_VOTES), (BOB, BOB_VOTES)):
        for (_, row), decision in zip(cards.iterrows(), votes, strict=False):
            given, suggested = int(row["given_label"]), int(row["suggested_label"])
            other = 3 - given - suggested if given != suggested else (given + 1) % 3
            label = review.decision_label(decision, given, suggested, other)
            store.record_decision(run, row["key"], decision, label, who)
            outcomes[who][row["key"]] = decision if label is None else str(label)
    return run, cards, outcomes


def fleiss_by_hand(outcomes: dict[str, dict[str, str]]) -> float:
    """Fleiss (1971) with two raters per card, from the per-card category counts."""
    common = [c for c in outcomes[ANN] if c in outcomes[BOB]]
    categories = sorted({outcomes[w][c] for w in (ANN, BOB) for c in common})
    counts = np.array(
        [[sum(outcomes[w][c] == cat for w in (ANN, BOB)) for cat in categories] for c in common],
        dtype=float,
    )
    n = 2
    p_i = [(sum(x * x for x in row) - n) / (n * (n - 1)) for row in counts]
    p_j = counts.sum(axis=0) / (n * len(common))
    chance = sum(p * p for p in p_j)
    return (sum(p_i) / len(p_i) - chance) / (1 - chance)


def test_admin_sets_double_review_sees_agreement_and_resolves_a_conflict(env):
    at = open_page(LEAD)
    ok(at)
    assert "This run: **single review**" in texts(at)
    at.selectbox(key="team_reviewers").set_value(2)
    at.run()
    at.button(key="team_apply_mode").click()
    at.run()
    ok(at)
    run = runstore.run_id(env / RUN)
    store = store_of(env)
    assert store.reviewers(run) == 2
    assert "This run: **double review, 2 annotators per card**" in texts(at)

    run, cards, outcomes = cast_votes(env)
    common = list(outcomes[BOB])
    a = [outcomes[ANN][c] for c in common]
    b = [outcomes[BOB][c] for c in common]
    conflicted = [c for c, x, y in zip(common, a, b, strict=True) if x != y]
    assert 0 < len(conflicted) < len(common)  # the fixture's votes make both kinds
    held = store.claim_next(run, "carol@example.org", n=2)
    assert len(held) == 2

    at = open_page(LEAD)
    ok(at)
    flagged = review.flagged_sorted(runstore.load_samples(env / RUN))
    shown = metrics(at)
    assert shown["Cards queued"] == f"{len(flagged):,}"
    assert shown["Decided"] == str(len(common) - len(conflicted))
    assert shown["In conflict"] == str(len(conflicted))
    assert shown["Fleiss' kappa"] == f"{fleiss_by_hand(outcomes):.3f}"
    pairs = table(at, "Cohen's kappa")
    assert len(pairs) == 1
    pair = pairs.iloc[0]
    assert (pair["annotator A"], pair["annotator B"]) == (ANN, BOB)
    assert pair["cards in common"] == len(common)
    assert pair["raw agreement"] == pytest.approx(np.mean(np.array(a) == np.array(b)))
    assert pair["Cohen's kappa"] == pytest.approx(cohen_kappa_score(a, b))
    assert "Landis & Koch" in texts(at)
    working = table(at, "cards held")
    assert working.to_dict("records")[0]["annotator"] == "carol@example.org"
    assert working["cards held"].tolist() == [2]
    per = table(at, "votes").set_index("annotator")
    assert per.loc[ANN, "votes"] == len(ANN_VOTES) and per.loc[BOB, "votes"] == len(BOB_VOTES)
    assert per.loc[BOB, "relabel"] == BOB_VOTES.count("relabel")
    # The conflicts queue: in queue order, each annotator's vote on the chosen card.
    queue_order = [c for c in cards["key"] if c in conflicted]
    assert at.selectbox(key="team_conflict_pick").options == [f"id {c}" for c in queue_order]
    target = queue_order[-1]
    at.selectbox(key="team_conflict_pick").set_value(target)
    at.run()
    ok(at)
    row = cards.set_index("key").loc[target]
    assert f"#### id `{target}`" in texts(at)
    assert f"**{plain(ANN)}** voted" in texts(at) and f"**{plain(BOB)}** voted" in texts(at)  # data shows as text
    assert len(at.get("image")) == 1  # the run has images: the card shows its thumbnail
    at.button(key="final_accept").click()
    at.run()
    ok(at)

    latest = store.latest_decisions(run).set_index("sample")
    assert latest.loc[target, "final"] and latest.loc[target, "annotator"] == LEAD
    assert latest.loc[target, "decision"] == "accept"
    assert latest.loc[target, "label"] == int(row["suggested_label"])
    assert target not in set(store.conflicts(run)["sample"])
    progress = store.queue_progress(run)
    assert progress["conflicts"] == len(conflicted) - 1
    assert progress["decided"] == len(common) - len(conflicted) + 1
    assert f"Final decision on id `{target}`: accept" in texts(at)
    assert metrics(at)["In conflict"] == str(len(conflicted) - 1)
    assert target not in [
        o.removeprefix("id ") for o in at.selectbox(key="team_conflict_pick").options
    ]
    assert table(at, "votes").set_index("annotator").loc[LEAD, "final decisions"] == 1


def test_an_annotator_sees_the_numbers_but_no_settings_and_no_resolve_buttons(env):
    assert Access(SIGNED_IN, LEAD, ADMIN).can("manage")
    assert not Access(SIGNED_IN, ANN, ANNOTATOR).can("manage")
    run = runstore.run_id(env / RUN)
    store_of(env).set_reviewers(run, 2)
    _, _, outcomes = cast_votes(env)
    conflicts = sum(outcomes[ANN][c] != outcomes[BOB][c] for c in outcomes[BOB])
    at = open_page(ANN)
    ok(at)
    assert "This run: **double review, 2 annotators per card**" in texts(at)
    assert "team_reviewers" not in [s.key for s in at.selectbox]
    buttons = [b.key for b in at.button]
    assert "team_apply_mode" not in buttons
    assert not [k for k in buttons if k and k.startswith("final_")]
    assert "team_conflict_pick" not in [s.key for s in at.selectbox]
    assert f"{conflicts} cards in conflict wait for an admin's final decision." in texts(at)
    assert metrics(at)["Fleiss' kappa"] == f"{fleiss_by_hand(outcomes):.3f}"


def test_empty_states_in_single_user_mode(env):
    at = open_page(None)
    ok(at)
    flagged = review.flagged_sorted(runstore.load_samples(env / RUN))
    shown = metrics(at)
    assert shown["Cards queued"] == f"{len(flagged):,}"  # the page put the queue in the store
    assert shown["Decided"] == "0" and "In conflict" not in shown
    assert "No votes yet" in texts(at) and "Single review has no conflicts" in texts(at)
    assert "Nobody holds a card of this run right now." in texts(at)
    run = runstore.run_id(env / RUN)
    store_of(env).record_decision(run, flagged["key"].iloc[0], "remove", None, "solo")
    at = open_page(None)
    ok(at)
    assert "No card has votes from two annotators yet. In single review" in texts(at)
    assert metrics(at)["Decided"] == "1"
    assert "Fleiss' kappa" not in metrics(at)
