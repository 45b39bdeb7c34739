"""Training page: live progress of a run (refreshing by itself), or the record of a past one."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dynacor.errors import CorruptError, MissingError
from dynacor.runs import store as runstore
from dynacor.runs import view as runview
from pages._auth import current
from pages._common import PAGES, job_runner, require_router, runs_root

require_router()  # before anything is drawn: see pages/_common.py

REFRESH_SECONDS = 1.5

st.title("Training")

runner = job_runner()
may_cancel = current().can("cancel")
table = runview.runs_table(runs_root())
if table.empty:
    st.info("No run yet. Start one on the **Run** page.")
    if st.button("Go to the Run page", key="go_run"):
        st.switch_page(PAGES["run"])
    st.stop()

names = table["run"].tolist()
live_job = runner.job if runner.job is not None and runner.job.is_alive() else None
wanted = st.session_state.get("current_run") or (live_job.run_dir.name if live_job else None)
name = st.selectbox("Run", names, index=names.index(wanted) if wanted in names else 0, key="training_run")
st.session_state["current_run"] = name
run_dir = runs_root() / name


def read_state() -> tuple[str, list[dict], str | None]:
    """Status, events and error of the run: from the live job's memory when it is this one (the
    worker only appends; nothing here touches it), else from the run directory."""
    job = runner.job
    if job is not None and job.run_dir.resolve() == run_dir.resolve():
        snap = job.snapshot()
        return snap.status, snap.events, snap.error
    try:
        status = runstore.read_status(run_dir)
    except (MissingError, CorruptError) as exc:
        return runstore.FAILED, [], str(exc)
    return status["status"], runstore.read_events(run_dir), status.get("error")


def render() -> None:
    status, events, error = read_state()
    badge = {"running": "blue", "finished": "green", "failed": "red", "cancelled": "orange", "interrupted": "orange"}
    st.markdown(f"Status: :{badge.get(status, 'gray')}-badge[{status}]")
    if status == runstore.RUNNING:
        job = runner.job
        if may_cancel and job is not None and job.is_alive() and st.button("Cancel this run", key="cancel_live"):
            job.cancel()

    for row in runview.stage_progress(events):
        total = row["total"]
        steps = f"{row['done']}/{total} " + ("epochs" if row["stage"] != "features" else "images") if total else ""
        if row["state"] == "done":
            text = f"{row['stage']}: done in {runview.format_seconds(row['elapsed'])}"
        elif row["state"] == "waiting":
            text = f"{row['stage']}: waiting"
        else:
            text = f"{row['stage']}: {steps} - {runview.format_seconds(row['left'])} left"
        st.progress(float(row["fraction"]), text=text)

    if status in (runstore.FAILED, runstore.INTERRUPTED):
        st.error(f"The run {status}: {error or 'no error recorded (the process stopped)'}")
        log = run_dir / "error.txt"
        if log.exists():
            with st.expander("error.txt", expanded=True):
                st.code(log.read_text(encoding="utf-8", errors="replace"), language="text")
    elif status == runstore.CANCELLED:
        st.warning("The run was cancelled.")

    cls, enc = runview.epoch_frames(events)
    left, right = st.columns(2)
    with left:
        st.subheader("Classifier")
        if cls.empty:
            st.caption("No epoch finished yet.")
        else:
            fig = make_subplots(specs=[[{"secondary_y": True}]])
            fig.add_trace(go.Scatter(x=cls["epoch"], y=cls["loss"], name="loss", mode="lines+markers"))
            fig.add_trace(go.Scatter(x=cls["epoch"], y=cls["accuracy"], name="train accuracy", mode="lines+markers"), secondary_y=True)
            if "test_accuracy" in cls:
                fig.add_trace(go.Scatter(x=cls["epoch"], y=cls["test_accuracy"], name="test accuracy", mode="lines+markers"), secondary_y=True)
            fig.update_layout(height=320, margin=dict(l=10, r=10, t=60, b=10), xaxis_title="epoch", legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
            fig.update_yaxes(title_text="loss", secondary_y=False)
            fig.update_yaxes(title_text="accuracy", range=[0, 1.02], secondary_y=True)
            st.plotly_chart(fig, key="cls_chart")
    with right:
        st.subheader("Encoder")
        if enc.empty:
            st.caption("Starts after the classifier.")
        else:
            chosen = None
            if status == runstore.FINISHED:
                try:
                    chosen = runstore.read_run(run_dir).get("chosen_epoch")
                except (MissingError, CorruptError):
                    chosen = None
            if chosen is None and enc["val_metric"].notna().any():
                chosen = int(enc.loc[enc["val_metric"].idxmax(), "epoch"])  # the best so far
            fig = make_subplots(specs=[[{"secondary_y": True}]])
            for col, label in (("cluster_loss", "clustering loss"), ("align_loss", "alignment loss")):
                if col in enc:
                    fig.add_trace(go.Scatter(x=enc["epoch"], y=enc[col], name=label, mode="lines+markers"))
            fig.add_trace(go.Scatter(x=enc["epoch"], y=enc["val_metric"], name="validation metric V",
                                     mode="lines+markers", line=dict(dash="dot")), secondary_y=True)  # fmt: skip
            if "f1" in enc and enc["f1"].notna().any():
                fig.add_trace(go.Scatter(x=enc["epoch"], y=enc["f1"], name="F1 (ground truth)", mode="lines+markers"), secondary_y=True)
            if chosen is not None:
                fig.add_vline(x=chosen, line=dict(color="green", dash="dash"),
                              annotation_text=f"chosen epoch {chosen}", annotation_position="top left")  # fmt: skip
            fig.update_layout(height=320, margin=dict(l=10, r=10, t=60, b=10), xaxis_title="epoch (0 = after initialisation)", legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
            fig.update_yaxes(title_text="loss", secondary_y=False)
            fig.update_yaxes(title_text="V / F1", secondary_y=True)
            st.plotly_chart(fig, key="enc_chart")
            if status == runstore.FINISHED and chosen == 0:
                st.caption("The validation metric kept the encoder's initial state: its training did not "
                           "separate the clusters better on this run. That is the rule on the dev benchmark "
                           "(BENCHMARKS.md): the flags come from the initial projection and the centroid "
                           "refinement.")  # fmt: skip
    if not enc.empty and "f1" in enc and enc["f1"].notna().any():
        last = enc.iloc[-1]
        st.caption(f"F1 at the last encoder epoch: {100 * last['f1']:.1f}%" + ("" if math.isnan(last.get("auroc", math.nan)) else f", AUROC {100 * last['auroc']:.1f}%"))

    if status == runstore.FINISHED:
        try:
            info = runstore.read_run(run_dir)
        except (MissingError, CorruptError):
            info = {}
        st.success(info.get("summary", "Finished."))
        for message in info.get("warnings") or []:
            st.warning(message)
        c1, c2 = st.columns(2)
        if c1.button("See the clusters", key="to_clusters"):
            st.switch_page(PAGES["clusters"])
        if c2.button("Review the flagged samples", key="to_review", type="primary"):
            st.switch_page(PAGES["review"])
    return status


@st.fragment(run_every=REFRESH_SECONDS)
def live() -> None:
    status = render()
    if status != runstore.RUNNING:
        # The run ended: one full rerun draws the final page without the timer.
        st.rerun()


status_now = read_state()[0]
if status_now == runstore.RUNNING:
    live()
else:
    render()
