"""Every page of the app through streamlit's AppTest: empty state, a finished run made by the real
engine on tiny data, and the actions that write decisions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from dynacor import review  # noqa: E402
from dynacor.review.store import ReviewStore  # noqa: E402
from dynacor.runs import store as runstore  # noqa: E402
from tests.app_fixtures import finished_run, write_features  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = ["run", "training", "clusters", "sample", "review", "grid", "team", "export"]
RUN = "fixture-run"


def run_key(runs) -> str:
    """The review store knows a run by its run id, not its folder name."""
    return runstore.run_id(runs / RUN)


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> tuple[Path, Path]:
    """One engine run for the whole module (a second or two); tests copy it."""
    base = tmp_path_factory.mktemp("made")
    finished_run(base / "runs", base / "data", RUN)
    return base / "runs" / RUN, base / "data"


@pytest.fixture
def env(tmp_path, monkeypatch, made_run) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(made_run[0], runs / RUN)
    monkeypatch.setenv("DYNACOR_RUNS", str(runs))
    monkeypatch.setenv("DYNACOR_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    return runs


@pytest.fixture
def empty_env(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DYNACOR_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DYNACOR_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    return tmp_path / "runs"


def open_page(page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(f"pages/{page}.py")
    return at.run()


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "warning", "error", "title", "subheader") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_an_empty_state(empty_env, page):
    at = open_page(page)
    no_exception(at)
    text = texts(at)
    assert ("No runs yet" in text) if page == "run" else ("No finished run" in text or "No run yet" in text)


def test_run_page_preselects_the_builtin_sample_and_lists_runs(env):
    at = open_page("run")
    no_exception(at)
    assert at.selectbox(key="source_kind").value == "builtin"
    assert RUN in at.selectbox(key="reopen").options
    table = at.dataframe[0].value
    assert table.loc[0, "status"] == "finished" and table.loc[0, "F1"] is not None


def test_run_page_refuses_paths_outside_the_data_roots(env):
    at = open_page("run")
    at.selectbox(key="source_kind").set_value("features")
    at.text_input(key="source_path").input("/etc/passwd")
    at.button[0].click()  # the form's submit button is the first button without a live run
    at.run()
    no_exception(at)
    assert any("data root" in e.value for e in at.error)
    at.text_input(key="source_path").input("nothing-here.npz")
    at.button[0].click()
    at.run()
    assert any("no such file" in e.value for e in at.error)


def test_run_page_starts_a_run_and_refuses_a_second_one(env, tmp_path):
    from pages._common import job_runner

    features = write_features(tmp_path / "data2", n=200, with_images=False)
    at = open_page("run")
    at.selectbox(key="source_kind").set_value("features")
    at.text_input(key="source_path").input(str(features))
    at.number_input(key="epochs").set_value(5)
    at.number_input(key="encoder_epochs").set_value(2)
    submit = next(b for b in at.button if b.label == "Start run")
    submit.click()
    at.run()
    no_exception(at)
    job = job_runner().job
    assert job is not None
    # A second start while the first works is refused with a message, not an exception.
    if job.is_alive():
        again = open_page("run")
        again.selectbox(key="source_kind").set_value("features")
        again.text_input(key="source_path").input(str(features))
        next(b for b in again.button if b.label == "Start run").click()
        again.run()
        if job.is_alive():
            assert any("already working" in w.value for w in again.warning)
    assert job.wait(60)
    assert runstore.read_status(job.run_dir)["status"] == "finished"
    # The second start may have gone through if the first run had just ended: let it end too,
    # so no run of this test is still working when the next test starts one.
    assert job_runner().job.wait(120)
    at = open_page("training", current_run=job.run_dir.name)
    no_exception(at)
    assert any("samples" in s.value for s in at.success)


def test_training_page_shows_curves_and_failed_runs(env):
    at = open_page("training", current_run=RUN)
    no_exception(at)
    assert len(at.get("plotly_chart")) == 3  # classifier, encoder, estimated precision-recall
    assert any("flagged" in s.value for s in at.success)
    kept_initial = runstore.read_run(env / RUN)["chosen_epoch"] == 0
    assert ("kept the encoder's initial state" in texts(at)) == kept_initial  # said exactly when so
    bad = env / "broken-run"
    runstore.create_run(bad, {}, {"kind": "features", "path": "x.npz"})
    runstore.mark_failed(bad, "x.npz: field `labels` must be present, got nothing", "Traceback: boom")
    at = open_page("training", current_run="broken-run")
    no_exception(at)
    assert any("must be present" in e.value for e in at.error)
    assert any("Traceback: boom" in c.value for c in at.code)


def set_estimates(runs: Path, estimates: dict | None) -> None:
    """run.json with other estimates (None: as a run without them), the rest as the engine wrote it."""
    import json

    path = runs / RUN / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "estimates": estimates}))


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_training_page_shows_the_runs_estimates_beside_the_truth(env):
    info = runstore.read_run(env / RUN)
    estimates = info["estimates"]
    assert estimates is not None, "the fixture run (DynaCor, mlp head) records its estimates"
    at = open_page("training", current_run=RUN)
    no_exception(at)
    shown = metrics(at)
    for field, words in review.quality.ESTIMATED:
        e = estimates[field]
        assert shown[f"Estimated {words}"] == f"{100 * e['value']:.0f}%"
        assert f"interval {100 * e['low']:.0f}-{100 * e['high']:.0f}%" in texts(at)
        assert shown[f"True {words} (clean labels)"] == f"{100 * info['metrics'][field]:.0f}%"
    assert "without ground truth" in texts(at) and "docs/estimates.md" in texts(at)
    curve = at.get("plotly_chart")[-1].proto.spec
    assert '"estimated"' in curve and '"true (clean labels)"' in curve and "the run's cut" in curve
    assert at.button(key="use_cut").disabled  # the slider starts on the run's own cut


def test_moving_the_cut_on_the_training_page_moves_the_flags_and_the_review_queue(env):
    store = ReviewStore(runs_root=env)
    before = runstore.read_run(env / RUN)
    curve = before["estimates"]["curve"]
    at = open_page("review", current_run=RUN, annotator="alice")  # this session sets the queue
    no_exception(at)
    at.button(key="act_accept").click().run()
    assert store.queue_progress(run_key(env))["queued"] == before["num_flagged"]

    at.switch_page("pages/training.py").run()
    no_exception(at)
    slider = at.select_slider(key=f"cut_point::{run_key(env)}")
    now = slider.value
    assert now > 0, "the fixture's curve has a point flagging fewer samples than the run's cut"
    slider.set_value(0).run()  # the point flagging fewest
    no_exception(at)
    assert f"This point: {round(curve['flagged_share'][0] * 300)} flagged" in texts(at)
    assert "This run has review decisions on 1 sample." in texts(at)
    at.button(key="use_cut").click().run()
    no_exception(at)
    after = runstore.read_run(env / RUN)
    flagged_now = runstore.load_samples(env / RUN)["flagged"].astype(bool)
    assert after["threshold"] == after["estimates"]["threshold"] == curve["threshold"][0]
    assert int(flagged_now.sum()) == after["num_flagged"] == round(curve["flagged_share"][0] * 300)
    assert after["num_flagged"] < before["num_flagged"]
    assert "The cut moved to" in texts(at) and at.button(key="use_cut").disabled
    assert store.queue_progress(run_key(env))["queued"] == after["num_flagged"]  # the team's queue

    at.switch_page("pages/review.py").run()  # the same session: its queue and counts follow the cut
    no_exception(at)
    total = at.get("progress")[0].proto.text.split(" / ")[1].split("**")[0]
    assert int(total.replace(",", "")) == after["num_flagged"]
    assert review.estimates_line(after["estimates"]) in texts(at)


def test_an_open_review_follows_a_cut_moved_elsewhere(env):
    """Another session (or the Python API) moves the cut: this session's next run reads the new
    flags (the caches key on the files' times) and sets the team's queue to them."""
    at = open_page("review", current_run=RUN, annotator="alice")
    no_exception(at)
    curve = runstore.read_run(env / RUN)["estimates"]["curve"]
    runstore.set_cut(env / RUN, curve["threshold"][0])
    at.run()
    no_exception(at)
    moved = runstore.read_run(env / RUN)["num_flagged"]
    assert at.get("progress")[0].proto.text.startswith(f"**0 / {moved:,}**")
    assert ReviewStore(runs_root=env).queue_progress(run_key(env))["queued"] == moved


def test_a_target_precision_moves_the_slider_to_the_cut_that_meets_it(env):
    from dynacor.method.estimates import threshold_for_target

    curve = runstore.read_run(env / RUN)["estimates"]["curve"]
    at = open_page("training", current_run=RUN)
    at.number_input(key=f"cut_target::{run_key(env)}").set_value(99).run()
    no_exception(at)
    wanted, _ = threshold_for_target(curve, target_precision=0.99)
    slider = at.select_slider(key=f"cut_point::{run_key(env)}")
    assert slider.value == curve["threshold"].index(wanted)
    assert runstore.read_run(env / RUN)["threshold"] == 0.5  # nothing moves before "Use this cut"


def test_only_an_admin_moves_the_cut(env):
    from tests.test_app_auth import ANN, LEAD, SECRETS

    def signed_in(user: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        at.secrets.update(SECRETS)
        at.user = {"is_logged_in": True, "email": user, "sub": f"sub-{user}"}
        at.session_state["current_run"] = RUN
        at.switch_page("pages/training.py")
        at.run()
        at.select_slider(key=f"cut_point::{run_key(env)}").set_value(0).run()
        no_exception(at)
        return at

    at = signed_in(ANN)
    assert at.button(key="use_cut").disabled and "Only an admin can move the cut." in texts(at)
    at = signed_in(LEAD)
    assert not at.button(key="use_cut").disabled
    at.button(key="use_cut").click().run()
    assert runstore.read_run(env / RUN)["threshold"] != 0.5


def test_a_run_without_estimates_shows_none_and_no_error(env):
    set_estimates(env, None)
    for page in ("training", "review", "export"):
        at = open_page(page, current_run=RUN, annotator="alice")
        no_exception(at)
        assert "Estimated" not in texts(at)
        assert not any(m.label.startswith("Estimated") for m in at.metric)
    assert len(open_page("training", current_run=RUN).get("plotly_chart")) == 2  # no curve


def test_review_header_shows_the_runs_estimates_beside_the_measured_precision(env):
    estimates = runstore.read_run(env / RUN)["estimates"]
    at = open_page("review", current_run=RUN, annotator="alice")
    no_exception(at)
    before = review.estimates_line(estimates)
    assert before.startswith("Estimated before review: precision")
    assert before in texts(at) and "Precision of the flags: no decision yet." in texts(at)
    for button in ("act_accept", "act_accept", "act_keep"):
        at.button(key=button).click().run()
    no_exception(at)
    low, high = review.wilson_interval(2, 3)
    measured = f"Precision of the flags, measured: 67% ({100 * low:.0f}-{100 * high:.0f}%, from 3 decisions)"
    assert measured in texts(at) and before in texts(at)


def test_export_page_shows_and_downloads_the_runs_estimates(env, monkeypatch):
    import json

    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    downloads = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self, path_or_data, mimetype, kind, filename=None):  # the real storage, watched
        downloads[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    estimates = runstore.read_run(env / RUN)["estimates"]
    samples = runstore.load_samples(env / RUN)
    flagged_ids = samples.loc[samples["flagged"].astype(bool), "id"].astype(str).tolist()
    store = ReviewStore(runs_root=env)
    for key, decision in zip(flagged_ids[:4], ["accept", "accept", "accept", "keep"], strict=True):
        store.record_decision(run_key(env), key, decision, 0, "ann")
    at = open_page("export", current_run=RUN)
    no_exception(at)
    shown = texts(at)
    assert "Precision of the flags, measured: 75%" in shown
    assert review.estimates_line(estimates) in shown
    figures = json.loads(downloads[f"{RUN}-quality.json"])
    assert figures["precision"]["errors"] == 3 and figures["precision"]["decided"] == 4
    assert figures["estimated_before_review"] == estimates
    header = downloads[f"{RUN}-labels.csv"].decode("utf-8").splitlines()[0].split(",")
    assert header[: len(review.EXPORT_COLUMNS)] == review.EXPORT_COLUMNS  # labels: unchanged


def test_clusters_page_draws_the_map_once_and_caches_it(env):
    at = open_page("clusters", current_run=RUN)
    no_exception(at)
    assert (env / RUN / "umap.npz").exists()
    assert "ground truth" in at.radio(key="colour_by").options
    at.radio(key="colour_by").set_value("noisy score").run()
    no_exception(at)


def test_sample_page_by_id_with_history(env):
    store = ReviewStore(runs_root=env)
    store.record_decision(run_key(env), 1001, "relabel", 2, "ann")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = RUN
    at.query_params["id"] = "1001"
    at.switch_page("pages/sample.py").run()
    no_exception(at)
    assert "id 1001" in texts(at)
    assert len(at.get("plotly_chart")) == 1
    assert at.dataframe[0].value["decision"].tolist() == ["relabel"]
    # a moved image shows a placeholder, not a crash (the fixture deleted images 0-4)
    at.sidebar.text_input(key="sample_id_input").input("1000").run()
    no_exception(at)
    assert len(at.get("image")) == 1


def test_review_page_asks_the_annotator_once_and_records_decisions(env):
    at = open_page("review", current_run=RUN)
    no_exception(at)
    at.text_input(key="annotator_input").input("alice")
    at.button[0].click()
    at.run()
    no_exception(at)
    store = ReviewStore(runs_root=env)
    flagged = review.flagged_sorted(runstore.load_samples(env / RUN))
    first = str(flagged["id"].iloc[0])
    assert f"id `{first}`" in texts(at)
    shown = texts(at)  # why was this flagged: neighbours, exemplars of both classes, the curve
    assert "Nearest in feature space:" in shown and "(given)" in shown and "(suggested)" in shown
    assert len(at.get("plotly_chart")) == 1

    at.button(key="act_keep").click().run()
    latest = store.latest_decisions(run_key(env))
    assert latest["sample"].tolist() == [first] and latest["annotator"].tolist() == ["alice"]
    assert f"id `{first}`" not in texts(at)  # the next card came

    at.button(key="act_accept").click().run()
    at.button(key="act_remove").click().run()
    latest = store.latest_decisions(run_key(env)).set_index("sample")
    assert sorted(latest["decision"]) == ["accept", "keep", "remove"]
    second = str(flagged["id"].iloc[1])
    assert latest.loc[second, "label"] == flagged["suggested_label"].iloc[1]
    assert at.get("progress")[0].proto.text.startswith("**3 / ")

    at.toggle(key="bulk_load").set_value(True).run()  # the shared queue lists what is left on demand
    at.button(key="bulk_all").click().run()  # bulk: "keep" for everything left in the queue
    no_exception(at)
    assert store.progress(run_key(env), flagged["id"])["decided_flagged"] == len(flagged)
    assert "Nothing left" in texts(at)


def test_review_page_audit_cards_are_told_only_after_the_decision(env):
    at = open_page("review", current_run=RUN, annotator="alice")
    no_exception(at)
    at.toggle(key="audit_on").set_value(True).run()
    at.number_input(key="audit_every").set_value(2).run()
    samples = runstore.load_samples(env / RUN)
    unflagged = set(samples.loc[~samples["flagged"].astype(bool), "id"].astype(str))
    flagged_ids = set(samples.loc[samples["flagged"].astype(bool), "id"].astype(str))
    store = ReviewStore(runs_root=env)

    at.button(key="act_accept").click().run()  # card 1: flagged
    assert "audit card" not in texts(at)  # card 2 is an audit card, but nothing says so yet
    assert "Noisy score:" not in texts(at)  # a low score would give it away
    assert "Nearest in feature space" not in texts(at)  # and so would the evidence
    second_card = texts(at).split("#### id `")[1].split("`")[0]
    assert second_card in unflagged, (second_card, at.session_state["audit_every"], at.session_state["audit_on"])
    at.button(key="act_keep").click().run()  # card 2: audit
    no_exception(at)
    assert "That was an audit card" in texts(at)
    latest = store.latest_decisions(run_key(env)).set_index("sample")
    audited = [k for k in latest.index if k in unflagged]
    assert len(audited) == 1 and latest.loc[audited[0], "decision"] == "keep"
    assert len([k for k in latest.index if k in flagged_ids]) == 1
    shown = texts(at)
    assert "Precision of the flags, measured: 100%" in shown and "Errors among the unflagged, audited: 0.0%" in shown
    assert "of the labels are still wrong" in shown


def test_export_page_offers_csv_and_parquet_with_a_summary(env):
    store = ReviewStore(runs_root=env)
    store.record_decision(run_key(env), 1001, "relabel", 2, "ann")
    store.record_decision(run_key(env), 1002, "remove", None, "ann")
    at = open_page("export", current_run=RUN)
    no_exception(at)
    summary = at.dataframe[0].value
    assert summary.loc["all", "relabel"] == 1 and summary.loc["all", "remove"] == 1
    assert summary.loc["all", "samples"] == 300
    preview = at.dataframe[1].value
    assert set(preview["decision"]) == {"relabel", "remove"}
    assert [b.label for b in at.get("download_button")][:2] == ["Download CSV", "Download Parquet"]
    assert "Precision of the flags, measured" in texts(at)  # the relabel counts as a true error


def test_export_page_reruns_on_the_cleaned_labels(env):
    """The loop closed from the app: a new run of the same data with the review's labels."""
    from pages._common import job_runner

    if job_runner().job is not None:
        assert job_runner().job.wait(120)  # one run at a time per server
    store = ReviewStore(runs_root=env)
    store.record_decision(run_key(env), 1001, "relabel", 2, "ann")
    store.record_decision(run_key(env), 1002, "remove", None, "ann")
    at = open_page("export", current_run=RUN)
    at.button(key="rerun_cleaned").click().run()
    no_exception(at)
    job = job_runner().job
    assert job is not None and job.wait(120)
    assert job.snapshot().status == "finished", job.snapshot().error
    rerun = runstore.load_samples(job.run_dir)
    assert len(rerun) == 299 and "1002" not in set(rerun["id"].astype(str))
    assert rerun.set_index(rerun["id"].astype(str)).loc["1001", "given_label"] == 2
    source = runstore.read_run(job.run_dir)["source"]
    assert source["labels_from_review"]["removed"] == 1 and source["labels_from_review"]["run_id"] == run_key(env)
    assert runstore.read_config(job.run_dir)["config"]["epochs"] == runstore.read_config(env / RUN)["config"]["epochs"]


def test_a_scratch_run_started_in_the_app_equals_the_cli_run(env, tmp_path):
    """One path from a request to a run: the same request from the Run page and from `detect`
    gives the same config (the scratch defaults included) and the same flags."""
    import json

    import pandas as pd

    from dynacor.cli.main import main
    from pages._common import job_runner

    if job_runner().job is not None:
        assert job_runner().job.wait(120)  # one run at a time per server
    at = open_page("run")
    at.selectbox(key="source_kind").set_value("builtin")
    at.slider(key="per_class").set_value(10)
    at.selectbox(key="backbone").set_value("scratch")
    assert at.selectbox(key="runtime").value == "auto" and "openvino" in at.selectbox(key="runtime").options
    at.selectbox(key="runtime").set_value("torch")
    at.selectbox(key="classifier").set_value("scratch-cnn")
    at.number_input(key="epochs").set_value(3)
    at.number_input(key="encoder_epochs").set_value(1)
    next(b for b in at.button if b.label == "Start run").click()
    at.run()
    no_exception(at)
    job = job_runner().job
    assert job.wait(300)
    assert runstore.read_status(job.run_dir)["status"] == "finished", runstore.read_status(job.run_dir)
    cli_dir = tmp_path / "cli-run"
    assert main(["detect", "--builtin", "--sample-per-class", "10", "--backbone", "scratch", "--classifier", "scratch-cnn",
                 "--epochs", "3", "--encoder-epochs", "1", "--out", str(cli_dir), "--quiet"]) == 0  # fmt: skip
    app_run, cli_run = (json.loads((d / "run.json").read_text()) for d in (job.run_dir, cli_dir))
    assert app_run["config"] == cli_run["config"]
    # The Run page's runtime reaches the run's request.
    assert runstore.read_config(job.run_dir)["source"]["spec"]["runtime"] == "torch"
    assert app_run["config"]["lr"] == 0.1 and app_run["config"]["schedule"] == "multistep"
    assert app_run["config"]["alpha"] == 0.05 and app_run["config"]["classifier"] == "scratch-cnn"
    app_samples, cli_samples = (pd.read_csv(d / "samples.csv") for d in (job.run_dir, cli_dir))
    assert app_samples["given_label"].tolist() == cli_samples["given_label"].tolist()
    assert abs(app_run["metrics"]["auroc"] - cli_run["metrics"]["auroc"]) < 0.05


def test_review_card_of_a_run_without_dynamics(env):
    """Baselines run through `detect --method` write no margins: the card shows without the curve."""
    for name in ("dynamics.npy", "margins.npy", "neighbours.npz"):
        (env / RUN / name).unlink(missing_ok=True)
    at = open_page("review", current_run=RUN, annotator="alice")
    no_exception(at)
    assert "Why was this flagged?" in [e.label for e in at.get("expander")]
    assert "(given)" in texts(at) and "Nearest in feature space" not in texts(at)
