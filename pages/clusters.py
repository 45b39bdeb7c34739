"""Clusters page: the UMAP of the dynamics representations, coloured, with box/lasso selection."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dynacor.data import thumbnails
from dynacor.runs import store as runstore
from dynacor.runs import umap_map
from pages._common import (
    PAGES,
    class_names,
    label_name,
    pick_finished_run,
    require_router,
    run_dir,
    run_info,
    safe,
    samples,
)
from pages._text import plain, plain_html

require_router()  # before anything is drawn: see pages/_common.py

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
MAX_THUMBS = 24
MAX_DRAWN = 60_000

st.title("Clusters")
name = pick_finished_run("clusters", st.sidebar)
if name is None:
    st.stop()

frame = safe(samples, name)
names = class_names(name)
info = run_info(name)
n = len(frame)


@st.cache_data(max_entries=4, show_spinner=False)
def cached_map(path: str, mtime: int) -> tuple[np.ndarray, dict]:
    return umap_map.run_map(path)


d = run_dir(name)
reps = d / "representations.npy"
if umap_map.load_cached(d) is None:
    with st.spinner("Computing the map of this run (once; it is cached with the run)..."):
        coords, how = safe(cached_map, str(d), reps.stat().st_mtime_ns if reps.exists() else 0)
    st.toast(f"Map computed in {how['seconds']:.1f} s and cached.")
else:
    coords, how = safe(cached_map, str(d), reps.stat().st_mtime_ns if reps.exists() else 0)
pair, copy_labels = safe(runstore.load_copies, d)

options = ["predicted cluster", "given label"]
if "clean_label" in frame:
    options.append("ground truth")
options.append("noisy score")
c1, c2 = st.columns([3, 1])
colour_by = c1.radio("Colour by", options, horizontal=True, key="colour_by")
show_copies = c2.toggle("Show corrupted copies", value=True, key="show_copies")


def label_text(values: np.ndarray) -> np.ndarray:
    """Class names for the hover text, which plotly reads as HTML."""
    return np.asarray([plain_html(label_name(names, v)) for v in values], dtype=object)


def id_text(values: np.ndarray) -> np.ndarray:
    """Sample ids for the hover text (only the drawn ones: a big run has a million)."""
    return np.asarray([plain_html(v) for v in values], dtype=object).astype(str)


# Big runs: a seeded subset is drawn over a density shading of every point; a box or lasso still
# selects every point inside it (below), drawn or not.
drawn = umap_map.drawn_subset(n + pair.size, MAX_DRAWN)
sampled = len(drawn) < n + pair.size
drawn_orig = drawn[drawn < n]
drawn_copies = drawn[drawn >= n] - n
ids = frame["id"].astype(str).to_numpy()


def hover_of_originals(rows: np.ndarray) -> np.ndarray:
    given = label_text(frame["given_label"].to_numpy()[rows]).astype(str)
    suggested = label_text(frame["suggested_label"].to_numpy()[rows]).astype(str)
    score = np.char.mod("%.3f", frame["noisy_score"].to_numpy()[rows])
    return np.char.add(np.char.add(np.char.add("id ", id_text(ids[rows])), np.char.add("<br>given: ", given)),
                       np.char.add(np.char.add("<br>suggested: ", suggested), np.char.add("<br>score: ", score)))  # fmt: skip


fig = go.Figure()
if sampled:
    counts, xedges, yedges = np.histogram2d(coords[:, 0], coords[:, 1], bins=160)
    fig.add_trace(go.Heatmap(
        z=np.log1p(counts.T), x=(xedges[:-1] + xedges[1:]) / 2, y=(yedges[:-1] + yedges[1:]) / 2,
        colorscale=[[0, "rgba(255,255,255,0)"], [1, "rgba(40,40,40,0.9)"]], showscale=False,
        hoverinfo="skip", name="all points (density)",
    ))  # fmt: skip
# customdata = row in the samples table (copies: -1 - row of their original) so a selection maps
# back to samples whatever the trace order.
groups: list[tuple[str, np.ndarray, np.ndarray | None]] = []
if colour_by == "noisy score":
    groups.append(("originals", np.arange(n), None))
else:
    column = {"predicted cluster": "cluster", "given label": "given_label", "ground truth": "clean_label"}[colour_by]
    values = frame[column].to_numpy()
    for k, value in enumerate(sorted(set(values.tolist()))):
        label = str(value) if column == "cluster" else plain_html(label_name(names, value))  # legend: HTML
        groups.append((label, np.flatnonzero(values == value), np.array(COLOURS[k % len(COLOURS)])))
for label, rows, colour in groups:
    rows = np.intersect1d(rows, drawn_orig, assume_unique=True) if sampled else rows
    marker = dict(size=5, opacity=0.75)
    if colour is None:
        marker.update(color=frame["noisy_score"].to_numpy()[rows], colorscale="RdYlBu_r", cmin=0, cmax=1,
                      colorbar=dict(title="noisy score"))  # fmt: skip
    else:
        marker.update(color=str(colour))
    fig.add_trace(go.Scattergl(x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=label, marker=marker,
                               customdata=rows, hovertext=hover_of_originals(rows), hoverinfo="text"))  # fmt: skip
if show_copies and drawn_copies.size:
    copy_hover = np.char.add(np.char.add("copy of id ", id_text(ids[pair[drawn_copies]])),
                             np.char.add("<br>corrupted label: ", label_text(copy_labels[drawn_copies]).astype(str)))  # fmt: skip
    fig.add_trace(go.Scattergl(
        x=coords[n + drawn_copies, 0], y=coords[n + drawn_copies, 1], mode="markers", name="corrupted copies",
        marker=dict(size=6, symbol="x", color="rgba(60,60,60,0.55)"),
        customdata=-1 - pair[drawn_copies], hovertext=copy_hover, hoverinfo="text",
    ))  # fmt: skip
fig.update_layout(height=620, margin=dict(l=10, r=10, t=40, b=10), dragmode="lasso",
                  legend=dict(itemsizing="constant", orientation="h", yanchor="bottom", y=1.0, x=0),
                  xaxis=dict(showticklabels=False, title=None), yaxis=dict(showticklabels=False, title=None))  # fmt: skip
st.caption(
    f"{n:,} samples and {pair.size:,} corrupted copies; chosen encoder epoch {info.get('chosen_epoch')}. "
    + (f"{len(drawn):,} points drawn, a random subset; the shading shows all of them, and a box or lasso "
       "selects every point inside it, drawn or not. " if sampled else "")
    + "Draw a box or lasso around points to list them."
)  # fmt: skip
event = st.plotly_chart(fig, on_select="rerun", selection_mode=("box", "lasso", "points"), key="map")

selection = getattr(event, "selection", None)
points = getattr(selection, "points", None) or []
selected_rows: list[int] = []
boxes, lassos = (getattr(selection, "box", None) or []), (getattr(selection, "lasso", None) or [])
if sampled and (boxes or lassos):
    hit = umap_map.inside_selection(coords, boxes, lassos)
    points = []  # the drawn points are among those found
    selected_rows = np.unique(np.concatenate([np.flatnonzero(hit[:n]), pair[hit[n:]]])).tolist()
trace_data = [np.asarray(t.customdata) if t.customdata is not None else None for t in fig.data]
for p in points:
    value = p.get("customdata")
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:  # older streamlit: no customdata in the event, find it through the trace
        curve, index = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is None or index is None:
            continue
        if trace_data[int(curve)] is None:  # the density shading
            continue
        value = trace_data[int(curve)][int(index)]
    row = int(value)
    selected_rows.append(row if row >= 0 else -1 - row)  # a copy stands for its original
selected_rows = sorted(set(selected_rows))

if not selected_rows:
    st.caption("Nothing selected.")
    st.stop()

chosen = frame.iloc[selected_rows]
st.subheader(f"{len(chosen):,} selected samples")
a, b, c = st.columns([2, 2, 3])
if a.button(f"Send {len(chosen):,} to the review queue", key="to_queue", type="primary"):
    st.session_state["review_selection"] = chosen["id"].astype(str).tolist()
    st.switch_page(PAGES["review"])
open_id = c.selectbox("Sample", chosen["id"].astype(str).tolist(), key="open_id", label_visibility="collapsed")
if b.button("Open in the Sample page", key="to_sample"):
    st.switch_page(PAGES["sample"], query_params={"run": name, "id": open_id})

source = info.get("source") or {}
if "path" in frame:
    shown = chosen.head(MAX_THUMBS)
    cols = st.columns(8)
    for k, (_, row) in enumerate(shown.iterrows()):
        image = thumbnails.for_display(thumbnails.load_image(source, row["path"]), size=96)
        cols[k % 8].image(image, caption=plain(f"{row['id']}: {label_name(names, row['given_label'])}"))
    if len(chosen) > MAX_THUMBS:
        st.caption(f"Thumbnails of the first {MAX_THUMBS}; the table lists all.")
else:
    st.info("This run was made from a feature file: there are no images to show.")
table_cols = [c for c in ("id", "given_name", "given_label", "suggested_name", "suggested_label", "noisy_score", "cluster", "path") if c in chosen]
st.dataframe(chosen[table_cols], hide_index=True)
