"""Export page: the cleaned labels as CSV or Parquet, the quality the review measured, the run handed
to cleanlab, Label Studio and FiftyOne, and a summary of decisions per class."""

from __future__ import annotations

import importlib.util
import io
import json

import streamlit as st

from dynacor import review
from dynacor.errors import InputError, MissingError
from dynacor.review import exports
from dynacor.review.exports import CONFIG_FILE, TASKS_FILE
from dynacor.review.reviewed import ReviewedRun, image_files, relabel_request
from dynacor.runs import store as runstore
from dynacor.runs.request import reads_now, rerun_of
from dynacor.runs.umap_map import run_points
from pages._auth import current, require
from pages._common import (
    audit_cards,
    candidates,
    class_names,
    pick_finished_run,
    require_router,
    review_key,
    review_store,
    run_dir,
    run_info,
    safe,
    samples,
    start_run,
)
from pages._text import code, plain

require_router()  # before anything is drawn: see pages/_common.py

st.title("Export")
require("export", "export the cleaned labels")
name = pick_finished_run("export", st.sidebar)
if name is None:
    st.stop()

frame = safe(samples, name)
latest = review_store().latest_decisions(review_key(name))
export = review.final_labels(frame, latest, class_names(name))
quality = review.review_quality(frame, latest, audit_cards(name)["key"])
shares = review.candidate_shares(frame, latest, safe(candidates, name)[0])  # fixes that took candidate 1, or 1-3
estimates = run_info(name).get("estimates")  # the detector's own figures at the run's cut, if any
estimated = review.estimates_line(estimates)
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
for line in review.quality_lines(quality) + [review.candidate_line(shares)] + ([estimated] if estimated else []):
    st.markdown(f"- {line}")

c1, c2, c3 = st.columns(3)
c1.download_button("Download CSV", export.to_csv(index=False).encode("utf-8"), file_name=f"{name}-labels.csv",
                   mime="text/csv", key="download_csv", type="primary")  # fmt: skip
buffer = io.BytesIO()
export.to_parquet(buffer, index=False)
c2.download_button("Download Parquet", buffer.getvalue(), file_name=f"{name}-labels.parquet",
                   mime="application/vnd.apache.parquet", key="download_parquet")  # fmt: skip
figures = review.quality_figures(name, {**quality, "candidates": shares}, estimates)
c3.download_button("Download the quality figures (JSON)", json.dumps(figures, indent=2).encode("utf-8"),
                   file_name=f"{name}-quality.json", mime="application/json", key="download_quality")  # fmt: skip

st.subheader("Hand it to other tools")
names = exports.class_list(frame, class_names(name))
reviewed = ReviewedRun(run_dir(name), review_key(name), frame, latest, names, review_store(), run_info(name).get("source") or {})
has_images = "path" in frame and bool((frame["path"].fillna("").astype(str) != "").all())
t1, t2, t3 = st.columns(3)
with t1:
    st.markdown("**cleanlab**")
    # Callables: built only when clicked, so big runs do not rebuild every file on each rerun.
    st.download_button("cleanlab table (CSV)", lambda: exports.cleanlab_table(frame, latest).to_csv(index=False),
                       file_name=f"{name}-cleanlab.csv", mime="text/csv", key="download_cleanlab")  # fmt: skip
    st.caption("`is_label_issue, label_score, given_label, predicted_label` as in cleanlab's "
               "`Datalab.get_issues(\"label\")`, the review's verdict where there is one; "
               "`CleanLearning.fit(X, labels, label_issues=table)` trains on the rest.")  # fmt: skip
with t2:
    st.markdown("**Label Studio**")
    if has_images:
        st.download_button("Tasks (JSON)", lambda: json.dumps(exports.tasks(frame, image_files(reviewed), names, reviewed.run_id)),
                           file_name=f"{name}-{TASKS_FILE}", mime="application/json", key="download_ls_tasks")  # fmt: skip
        st.download_button("Labelling config (XML)", exports.label_config(names), file_name=f"{name}-{CONFIG_FILE}",
                           mime="application/xml", key="download_ls_config")  # fmt: skip
        st.caption("One task per sample with the suggestion as a prediction (score = noisy score). "
                   "Images are given by path (the built-in sample's are extracted next to the run); "
                   "`dynacor export --to labelstudio --image-root DIR` writes local-files URLs instead. "
                   "Label Studio's JSON export comes back with "
                   f"{code(f'dynacor import-review {run_dir(name)} --from labelstudio FILE')}.")  # fmt: skip
    else:
        st.info("Label Studio shows images: this run was made from features without image paths.")
with t3:
    st.markdown("**FiftyOne**")
    if importlib.util.find_spec("fiftyone") is None:
        st.info("To write a FiftyOne dataset, install FiftyOne: `pip install 'dynacor[fiftyone]'`.")
    elif not has_images:
        st.info("FiftyOne shows images: this run was made from features without image paths.")
    else:
        target = run_dir(name) / "exports" / "fiftyone"
        if st.button("Write the FiftyOne dataset", key="write_fiftyone"):
            with st.spinner("Writing the FiftyOne dataset (its database starts first)..."):
                try:
                    rows = exports.fiftyone_rows(frame, latest, names, image_files(reviewed))
                    points, note = run_points(run_dir(name), len(rows))
                    exports.write_dataset(rows, target, points)
                except (InputError, MissingError) as exc:
                    st.error(plain(exc))
                else:
                    st.success(f"Wrote {len(rows):,} samples to {code(target)} ({plain(note)}).")
        st.caption("Open it with:")
        st.code(f"fiftyone datasets create --name dynacor-{name} --dataset-dir {target} "
                f"--type fiftyone.types.FiftyOneDataset\nfiftyone app launch dynacor-{name}", language="bash")  # fmt: skip

st.subheader("Close the loop")


def rerun_on_review(name: str):
    """The run of the same data with the labels the review decided, as of the click."""
    request = rerun_of(run_dir(name), file="Export page")
    samples, run_id, info = runstore.read_finished(run_dir(name))
    relabel_request(request, ReviewedRun.of(run_dir(name), run_id, samples, info, review_store()), read_now=reads_now(request))
    return request


can_start = current().can("start")
spec_known = bool((runstore.read_config(run_dir(name)).get("source") or {}).get("spec"))
st.caption("A new run of the same data with the labels this review decided (accepted and relabelled "
           "classes; removed samples left out), the same settings, synthetic noise off: what the review "
           "missed shows up there. The same as `dynacor detect ... --labels-from-review RUN_DIR`.")  # fmt: skip
if st.button("Re-run on the cleaned labels", key="rerun_cleaned", disabled=not (can_start and spec_known),
             help=None if spec_known else "Runs from recorded dynamics cannot be re-run here."):  # fmt: skip
    start_run(lambda: rerun_on_review(name), "reviewed")

st.subheader("Decisions per class")
summary = review.summary_per_class(export)
st.dataframe(summary, height=35 * (len(summary) + 1) + 3)
st.subheader("Preview")
only_decided = st.toggle("Only samples with a decision", value=decided > 0, key="only_decided")
preview = export[export["decision"] != ""] if only_decided else export
st.dataframe(preview.head(1000), hide_index=True)
