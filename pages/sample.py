"""Sample page: one sample's image, labels, score, dynamics against the cluster means, history.

Reachable by id: ``/sample?run=RUN&id=ID``.
"""

from __future__ import annotations

import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dynacor.data import thumbnails
from dynacor.runs import view as runview
from pages._common import (
    array,
    class_names,
    label_name,
    pick_finished_run,
    require_router,
    review_key,
    review_store,
    run_info,
    safe,
    samples,
)
from pages._text import code, plain

require_router()  # before anything is drawn: see pages/_common.py

st.title("Sample")
name = pick_finished_run("sample", st.sidebar)
if name is None:
    st.stop()
frame = safe(samples, name)
names = class_names(name)
keys = frame["id"].astype(str)

wanted = st.query_params.get("id") or st.session_state.get("current_sample")
typed = st.sidebar.text_input("Sample id", value=str(wanted) if wanted is not None else "", key="sample_id_input")
if not typed:
    # Without an id, start with the most confidently noisy sample: the interesting ones.
    typed = keys.iloc[int(frame["noisy_score"].to_numpy().argmax())]
matches = frame.index[keys == str(typed).strip()]
if len(matches) == 0:
    st.warning(f"No sample with id {code(typed)} in run {code(name)}.")
    st.stop()
row = frame.loc[matches[0]]
st.session_state["current_sample"] = str(row["id"])
st.query_params.update({"run": name, "id": str(row["id"])})

left, right = st.columns([1, 2])
with left:
    if "path" in frame:
        image = thumbnails.load_image(run_info(name).get("source"), row.get("path"))
        st.image(thumbnails.for_display(image), caption=plain(row.get("path", "")))
    else:
        st.info("Feature-only run: this sample has no image.")
with right:
    st.subheader(f"id {plain(row['id'])}")
    m1, m2, m3 = st.columns(3)
    m1.metric("Given label", plain(label_name(names, row["given_label"])))
    m2.metric("Suggested label", plain(label_name(names, row["suggested_label"])))
    m3.metric("Noisy score", f"{row['noisy_score']:.3f}")
    m2.caption(f"classifier probability {row['suggested_prob']:.2f}")
    m3.caption("flagged as noisy" if int(row["flagged"]) else "not flagged")
    if "clean_label" in frame:
        truth = label_name(names, row["clean_label"])
        verdict = "noisy" if int(row.get("is_noisy", 0)) else "clean"
        st.caption(f"Ground truth: {plain(truth)} (the given label is {verdict})")

signs = safe(array, name, "dynamics")
margins = safe(array, name, "margins")
i = int(row["index"])
means = runview.cluster_mean_curves(signs, margins, frame["flagged"].to_numpy().astype(bool))
epochs = list(range(1, signs.shape[1] + 1))
fig = make_subplots(rows=1, cols=2, subplot_titles=("sign of the margin", "raw margin"))
styles = {"mean of clean cluster": dict(color="#1f77b4", dash="dash"), "mean of noisy cluster": dict(color="#d62728", dash="dash")}
for col, field in ((1, "sign"), (2, "margin")):
    for cluster, part in means.groupby("cluster"):
        fig.add_trace(go.Scatter(x=part["epoch"], y=part[field], name=cluster, line=styles.get(cluster), showlegend=col == 1), row=1, col=col)
    values = signs[i] if field == "sign" else margins[i].astype(float)
    fig.add_trace(go.Scatter(x=epochs, y=values, name="this sample", mode="lines+markers", line=dict(color="black"), showlegend=col == 1), row=1, col=col)
fig.update_layout(height=360, margin=dict(l=10, r=10, t=70, b=10), legend=dict(orientation="h", yanchor="bottom", y=1.12, x=0))
fig.update_xaxes(title_text="classifier epoch")
st.subheader("Training dynamics")
st.plotly_chart(fig, key="dynamics")

st.subheader("Decision history")
history = review_store().history(review_key(name), row["id"])
if history.empty:
    st.caption("No decision yet.")
else:
    history = history.assign(
        label=["-" if pd.isna(v) else label_name(names, v) for v in history["label"].astype(object)],
        time=[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) for t in history["time"]],
    )
    st.dataframe(history.drop(columns=["sample"]), hide_index=True)
