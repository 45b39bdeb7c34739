"""Export page: the cleaned labels as CSV or Parquet, the quality the review measured, and a summary
of decisions per class."""

from __future__ import annotations

import io
import json

import streamlit as st

from dynacor import review
from pages._common import (
    audit_cards,
    class_names,
    pick_finished_run,
    require_router,
    review_key,
    review_store,
    safe,
    samples,
)

require_router()  # before anything is drawn: see pages/_common.py

st.title("Export")
name = pick_finished_run("export", st.sidebar)
if name is None:
    st.stop()

frame = safe(samples, name)
latest = review_store().latest_decisions(review_key(name))
export = review.final_labels(frame, latest, class_names(name))
quality = review.review_quality(frame, latest, audit_cards(name)["key"])
decided = int((export["decision"] != "").sum())
removed = int((export["decision"] == "remove").sum())
changed = int(((export["final_label"] != export["given_label"]) & export["final_label"].notna()).sum())
m1, m2, m3, m4 = st.columns(4)
m1.metric("Samples", f"{len(export):,}")
m2.metric("Decided", f"{decided:,}")
m3.metric("Labels changed", f"{changed:,}")
m4.metric("Removed", f"{removed:,}")
st.caption(
    "final_label: keep -> given label; accept / relabel -> the chosen class; unsure or undecided -> "
    "given label; remove -> empty (drop the sample)."
)

st.subheader("Quality measured by the review")
for line in review.quality_lines(quality):
    st.markdown(f"- {line}")

c1, c2, c3 = st.columns(3)
c1.download_button("Download CSV", export.to_csv(index=False).encode("utf-8"), file_name=f"{name}-labels.csv",
                   mime="text/csv", key="download_csv", type="primary")  # fmt: skip
buffer = io.BytesIO()
export.to_parquet(buffer, index=False)
c2.download_button("Download Parquet", buffer.getvalue(), file_name=f"{name}-labels.parquet",
                   mime="application/vnd.apache.parquet", key="download_parquet")  # fmt: skip
c3.download_button("Download the quality figures (JSON)", json.dumps({"run": name, **quality}, indent=2).encode("utf-8"),
                   file_name=f"{name}-quality.json", mime="application/json", key="download_quality")  # fmt: skip

st.subheader("Decisions per class")
summary = review.summary_per_class(export)
st.dataframe(summary, height=35 * (len(summary) + 1) + 3)
st.subheader("Preview")
only_decided = st.toggle("Only samples with a decision", value=decided > 0, key="only_decided")
preview = export[export["decision"] != ""] if only_decided else export
st.dataframe(preview.head(1000), hide_index=True)
