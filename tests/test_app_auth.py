"""Sign-in and roles in the app, and the grid page, through streamlit's AppTest: an annotator sees
the runs but cannot start or cancel one, nor export; an admin can; a decision carries the
signed-in identity; single-user mode is unchanged. The real sign-in through an OIDC provider is in
test_auth_browser.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from dynacor.data.spec import SourceSpec, make_loader  # noqa: E402
from dynacor.method.config import DynaCorConfig  # noqa: E402
from dynacor.review import flagged_sorted  # noqa: E402
from dynacor.review.store import ReviewStore  # noqa: E402
from dynacor.runs import store as runstore  # noqa: E402
from pages._text import plain  # noqa: E402
from tests.app_fixtures import finished_run, write_features  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
RUN = "fixture-run"
LEAD, ANN = "lead@example.org", "ann@example.org"
SECRETS = {
    "auth": {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "c" * 32, "client_id": "dynacor",
             "client_secret": "x", "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration"},
    "dynacor": {"roles": {"admins": [LEAD], "annotators": ["*@example.org"]}},
}  # fmt: skip


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("made")
    return finished_run(base / "runs", base / "data", RUN)


@pytest.fixture
def env(tmp_path, monkeypatch, made_run) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(made_run, runs / RUN)
    monkeypatch.setenv("DYNACOR_RUNS", str(runs))
    monkeypatch.setenv("DYNACOR_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    return runs


def open_page(page: str, user: str | None = None, secrets: dict | None = None, **state) -> AppTest:
    """``user``: an email signed in through OIDC; "" signed out; None single-user mode."""
    at = AppTest.from_file(APP, default_timeout=60)
    if user is not None:
        at.secrets.update(SECRETS if secrets is None else secrets)
        at.user = {
            "is_logged_in": bool(user),
            **({"email": user, "sub": f"sub-{user}"} if user else {}),
        }
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(f"pages/{page}.py")
    return at.run()


def texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "info", "success", "warning", "error", "title", "subheader")
    return "\n".join(str(e.value) for kind in kinds for e in at.get(kind))


def labels(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def decisions(runs: Path):
    return ReviewStore(f"sqlite:///{runs / 'reviews.sqlite'}").latest_decisions(
        runstore.run_id(runs / RUN)
    )


def test_single_user_mode_is_unchanged_and_says_so(env):
    at = open_page("run")
    no_exception(at)
    assert "Single-user mode: no sign-in configured" in texts(at)
    assert "Start run" in labels(at) and "Sign in" not in labels(at)
    review = open_page("review")
    assert (
        review.text_input(key="annotator_input").label == "Your name (stored with every decision)"
    )
    export = open_page("export")
    no_exception(export)
    assert [d.label for d in export.get("download_button")][:1] == ["Download CSV"]


def test_signed_out_sees_only_the_sign_in_button(env):
    at = open_page("run", user="")
    no_exception(at)
    assert labels(at) == ["Sign in"]
    assert "Past runs" not in texts(at) and "Single-user" not in texts(at)


def test_annotator_sees_runs_but_cannot_start_cancel_or_export(env, tmp_path):
    from pages._common import job_runner

    at = open_page("run", user=ANN)
    no_exception(at)
    text = texts(at)
    assert "Past runs" in text and f"Signed in as {plain(ANN)} (annotator)" in text  # data shows as text
    assert "Start run" not in labels(at) and "source_kind" not in [s.key for s in at.selectbox]
    assert f"Signed in as **{plain(ANN)}** (annotator)" in [c.value for c in at.sidebar.caption]
    export = open_page("export", user=ANN)
    assert not export.get("download_button")
    # A run working (long enough to be seen working): the annotator sees it, without a cancel button.
    features = write_features(tmp_path / "slow", n=3000, with_images=False)
    spec = SourceSpec(kind="features", path=str(features))
    job = job_runner().start(
        env / "slow-run",
        DynaCorConfig(epochs=300, encoder_epochs=100),
        make_loader(spec),
        spec.to_dict(),
    )
    try:
        for page, cancel in (("run", "Cancel the run"), ("training", "Cancel this run")):
            ann = open_page(page, user=ANN, current_run="slow-run")
            no_exception(ann)
            lead = open_page(page, user=LEAD, current_run="slow-run")
            no_exception(lead)
            if not job.is_alive():
                pytest.fail("the slow run ended before the pages were seen; make it slower")
            assert cancel not in labels(ann)
            assert cancel in labels(lead)
        next(b for b in lead.button if b.label == "Cancel this run").click()
        lead.run()
        assert job.wait(120)
        assert runstore.read_status(job.run_dir)["status"] == "cancelled"
    finally:
        job.cancel()
        job.wait(120)


def test_admin_can_start_and_export(env):
    at = open_page("run", user=LEAD)
    no_exception(at)
    assert "Start run" in labels(at)
    assert f"Signed in as **{plain(LEAD)}** (admin)" in [c.value for c in at.sidebar.caption]
    export = open_page("export", user=LEAD)
    no_exception(export)
    assert "Download CSV" in [d.label for d in export.get("download_button")]


def test_a_decision_carries_the_signed_in_identity_never_a_typed_name(env):
    at = open_page("review", user=ANN, annotator="someone typed this")
    no_exception(at)
    assert not at.get("text_input") or "annotator_input" not in [t.key for t in at.text_input]
    at.button(key="act_keep").click()
    at.run()
    no_exception(at)
    latest = decisions(env)
    assert latest["decision"].tolist() == ["keep"] and latest["annotator"].tolist() == [ANN]


def test_signed_in_without_a_role_is_told_and_stopped(env):
    at = open_page("review", user="eve@elsewhere.net")
    no_exception(at)
    assert "no role is given to you" in texts(at)
    assert "Sign out" in labels(at) and "act_keep" not in [b.key for b in at.button]


def test_a_malformed_role_configuration_is_shown_not_a_traceback(env):
    bad = {**SECRETS, "dynacor": {"roles": {"admin": [LEAD]}}}
    at = open_page("run", user=LEAD, secrets=bad)
    no_exception(at)
    assert "secrets.toml: field `dynacor.roles.admin`" in texts(at)


def test_grid_applies_one_decision_to_the_selection_and_to_all_shown(env):
    frame = runstore.load_samples(env / RUN)
    flagged = flagged_sorted(frame)
    sizes = flagged.groupby(["given_label", "suggested_label"]).size()
    given, suggested = sizes.idxmax()
    group = flagged[(flagged["given_label"] == given) & (flagged["suggested_label"] == suggested)]
    at = open_page("grid", user=ANN)
    no_exception(at)
    at.selectbox(key="grid_group").set_value((int(given), int(suggested)))
    at.run()
    shown = group["key"].head(24).tolist()
    boxes = [c for c in at.checkbox if c.key.startswith("grid_pick::")]
    assert [c.label.split(" ")[0] for c in boxes] == shown  # most confidently noisy first
    boxes[0].check()
    boxes[2].check()
    at.run()
    at.button(key="grid_sel_remove").click()
    at.run()
    no_exception(at)
    latest = decisions(env).set_index("sample")
    assert sorted(latest.index) == sorted([shown[0], shown[2]])
    assert set(latest["decision"]) == {"remove"} and set(latest["annotator"]) == {ANN}
    assert "Recorded 'remove' for 2 cards." in texts(at)
    rest = [c.label.split(" ")[0] for c in at.checkbox if c.key.startswith("grid_pick::")]
    assert rest  # the group has more cards than the two decided
    assert rest == [k for k in group["key"] if k not in latest.index][:24]
    assert not any(c.value for c in at.checkbox)  # nothing selected on the refreshed grid
    at.button(key="grid_all_accept").click()
    at.run()
    latest = decisions(env).set_index("sample")
    assert len(latest) == 2 + len(rest)
    accepted = latest.loc[rest]
    assert set(accepted["decision"]) == {"accept"} and set(accepted["label"]) == {int(suggested)}
