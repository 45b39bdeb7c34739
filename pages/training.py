"""Training page: live progress of a run (refreshing by itself), or the record of a past one."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dynacor import review
from dynacor.errors import CorruptError, InputError, MissingError
from dynacor.method.estimates import threshold_for_target
from dynacor.review.quality import ESTIMATED
from dynacor.runs import cut as runcut
from dynacor.runs import store as runstore
from dynacor.runs import view as runview
from pages._auth import current
from pages._common import (
    PAGES,
    array,
    flagged,
    job_runner,
    require_router,
    review_key,
    review_store,
    runs_root,
    samples,
)
from pages._text import plain

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
        st.error(f"The run {status}: {plain(error) if error else 'no error recorded (the process stopped)'}")  # may quote data
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
                           "(docs/studies/encoder.md): the flags come from the initial projection and the centroid "
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
        estimates_section(info)
        c1, c2 = st.columns(2)
        if c1.button("See the clusters", key="to_clusters"):
            st.switch_page(PAGES["clusters"])
        if c2.button("Review the flagged samples", key="to_review", type="primary"):
            st.switch_page(PAGES["review"])
    return status


def estimates_section(info: dict) -> None:
    """The flags' quality as the run estimated it without ground truth (the true figures beside
    them on a benchmark run), the estimated precision-recall curve, and the control that moves
    the cut. Runs without estimates (baselines, dynamics recorded without the early-window
    softmax, older runs) show nothing here."""
    estimates = info.get("estimates")
    figures = review.estimated_figures(estimates)
    if not figures:
        return
    truth = info.get("metrics") or {}
    st.subheader("How good are the flags")
    words = dict(ESTIMATED)
    columns = st.columns(len(figures))
    for col, (field, (value, low, high)) in zip(columns, figures.items(), strict=True):
        col.metric(f"Estimated {words[field]}", f"{100 * value:.0f}%")
        col.caption(f"interval {100 * low:.0f}-{100 * high:.0f}%")
        true = truth.get(field)
        if isinstance(true, (int, float)) and math.isfinite(true):
            col.metric(f"True {words[field]} (clean labels)", f"{100 * true:.0f}%")
    rows, total = int(estimates.get("rows") or 0), int(info.get("num_samples") or 0)
    margin = 100 * float(estimates.get("margin") or 0.0)
    st.caption(
        "Estimated without ground truth, from the classifier's softmax over its early epochs, before "
        "it learns the wrong labels"
        + (f" (on {rows:,} of the {total:,} samples)" if 0 < rows < total else "")
        + ("; the recall is the mean of two views of which labels are wrong: the early classifier's and the "
           "samples' nearest neighbours' (the flags read the early classifier too, so its view alone "
           "overstates the recall), and each interval holds both" if int(estimates.get("views") or 1) > 1 else "")
        + f". Each interval is a {100 * float(estimates.get('confidence', 0.95)):.0f}% bootstrap interval "
        f"widened by {margin:.0f} points on both sides: the systematic error the estimates showed on the "
        "tuning half of the dev benchmark at this many samples per class (wider on fewer; under about 90 per "
        "class they are withheld), which resampling cannot see. Under asymmetric or "
        "structured noise (wrong labels that follow a pattern, e.g. one class often swapped for another) "
        "the early classifier learns the pattern as if it were true, and the estimates can miss by more "
        "than the interval: see \"Where it is biased\" in docs/estimates.md in the repository."
    )  # fmt: skip
    curve = estimates.get("curve") or {}
    if len(curve.get("threshold") or []) > 0:
        cut_control(info, estimates, curve)


def cut_control(info: dict, estimates: dict, curve: dict) -> None:
    """The estimated precision-recall curve with the run's cut on it, a point of the curve to move
    the cut to, and the button that moves it (`dynacor.runs.store.set_cut`) and the review queue
    with it."""
    thresholds = np.asarray(curve["threshold"], dtype=np.float64)
    share, precision, recall = (
        np.asarray(curve[k], dtype=np.float64) for k in ("flagged_share", "precision", "recall")
    )
    threshold = float(info.get("threshold", estimates.get("threshold", 0.5)))
    now = runcut.point_of_cut(curve, threshold)
    run_key = review_key(name)
    point_key = f"cut_point::{run_key}"
    if point_key not in st.session_state or not 0 <= st.session_state[point_key] < len(thresholds):
        st.session_state[point_key] = now
    moved = st.session_state.pop("cut_moved", None)
    if moved:
        st.success(moved)

    def label(i: int) -> str:
        return f"{100 * share[i]:.1f}% flagged: precision {100 * precision[i]:.0f}%, recall {100 * recall[i]:.0f}%"

    def aim() -> None:  # the number input's callback: the slider goes to the cut meeting the target
        target = st.session_state.get(f"cut_target::{run_key}")
        if target is None:
            return
        chosen, warning = threshold_for_target(curve, target_precision=float(target) / 100.0)
        st.session_state[point_key] = int(np.flatnonzero(thresholds == chosen)[0])
        st.session_state["cut_target_warning"] = warning

    st.markdown("**Estimated precision and recall of every cut**")
    left, right = st.columns([3, 2])
    with right:
        st.number_input("Aim for an estimated precision of (%)", min_value=1, max_value=100, value=None, step=1,
                        key=f"cut_target::{run_key}", on_change=aim, placeholder="e.g. 90")  # fmt: skip
        warning = st.session_state.pop("cut_target_warning", None)
        if warning:
            st.warning(warning)
        points = list(range(len(thresholds)))
        chosen = int(st.select_slider("Cut", points, format_func=label, key=point_key))
        frame = samples(name)
        try:  # the scores the cut is made on (the table's are rounded)
            scores = array(name, "scores")[: len(frame)].astype(np.float64)
        except MissingError:
            scores = frame["noisy_score"].to_numpy(dtype=np.float64)
        count_chosen = int(runcut.flagged_counts(scores, [thresholds[chosen]])[0])
        st.caption(f"Now: {int(frame['flagged'].astype(bool).sum()):,} of {len(frame):,} flagged "
                   f"(q > {threshold:.4f}). This point: {count_chosen:,} flagged (q > {thresholds[chosen]:.4f}).")  # fmt: skip
        may_manage = current().can("manage")
        if chosen != now:
            decided = review_store().progress(run_key)["decided"]
            if decided:
                st.info(f"This run has review decisions on {decided:,} sample{'s' if decided != 1 else ''}. They stay: samples the new cut "
                        "no longer flags leave the review queue (their decisions are kept and count again if a "
                        "later cut flags them), newly flagged samples join it.")  # fmt: skip
        if not may_manage:
            st.caption("Only an admin can move the cut.")
        if st.button("Use this cut", key="use_cut", type="primary", disabled=chosen == now or not may_manage,
                     help="This is the run's cut now." if chosen == now else None):  # fmt: skip
            try:
                runstore.set_cut(run_dir, float(thresholds[chosen]))
            except (InputError, MissingError, CorruptError) as exc:
                st.error(f"The cut did not move: {plain(exc)}")
            else:
                keys = flagged(name)["key"].tolist()  # re-read: samples.parquet was rewritten
                review_store().set_queue(run_key, keys)  # the queue the whole team shares follows
                st.session_state["cut_moved"] = (
                    f"The cut moved to q > {thresholds[chosen]:.4f}: {len(keys):,} samples flagged."
                )
                st.rerun()
    with left:
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines+markers", name="estimated", marker=dict(size=4),
                                 customdata=np.c_[100 * share, thresholds],
                                 hovertemplate="recall %{x:.0%}, precision %{y:.0%}<br>%{customdata[0]:.1f}% flagged "
                                 "(q > %{customdata[1]:.4f})<extra></extra>"))  # fmt: skip
        if "is_noisy" in frame:
            true = runcut.true_curve(scores, frame["is_noisy"].to_numpy(dtype=bool), thresholds)
            fig.add_trace(go.Scatter(x=true["recall"], y=true["precision"], mode="lines", name="true (clean labels)",
                                     line=dict(dash="dot", color="gray")))  # fmt: skip
        at = {k: estimates[k]["value"] for k in ("precision", "recall")}
        lows = {k: estimates[k]["value"] - estimates[k]["low"] for k in ("precision", "recall")}
        highs = {k: estimates[k]["high"] - estimates[k]["value"] for k in ("precision", "recall")}
        fig.add_trace(go.Scatter(x=[at["recall"]], y=[at["precision"]], mode="markers", name="the run's cut",
                                 marker=dict(symbol="star", size=14, color="#d62728"),
                                 error_x=dict(type="data", symmetric=False, array=[highs["recall"]], arrayminus=[lows["recall"]]),
                                 error_y=dict(type="data", symmetric=False, array=[highs["precision"]],
                                              arrayminus=[lows["precision"]])))  # fmt: skip
        if chosen != now:
            fig.add_trace(go.Scatter(x=[recall[chosen]], y=[precision[chosen]], mode="markers", name="chosen",
                                     marker=dict(symbol="circle-open", size=16, line=dict(width=3), color="#2ca02c")))  # fmt: skip
        fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="recall",
                          yaxis_title="precision", legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))  # fmt: skip
        fig.update_xaxes(range=[0, 1.02])
        fig.update_yaxes(range=[0, 1.02])
        st.plotly_chart(fig, key="cut_chart")


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
