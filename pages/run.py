"""Run page: choose data and settings, start or cancel a detection, reopen past runs."""

from __future__ import annotations

import streamlit as st

from dynacor.data.backbones import BACKBONES
from dynacor.data.runtimes import DEFAULT_RUNTIME, RUNTIMES, installed
from dynacor.data.spec import SOURCES, SourceSpec
from dynacor.method.config import CLASSIFIERS, DynaCorConfig
from dynacor.runs import view as runview
from dynacor.runs.request import SCRATCH_DEFAULTS, prepare
from pages._auth import current
from pages._common import PAGES, job_runner, require_router, runs_root, start_run
from pages._text import code, plain

require_router()  # before anything is drawn: see pages/_common.py

NOISE = {"none": "None (use the labels as given)", "sym": "Symmetric", "asym": "Asymmetric (pair flip)", "inst": "Instance-dependent"}
DEFAULTS = DynaCorConfig()

runner = job_runner()
job = runner.job
busy = job is not None and job.is_alive()
who = current()

st.title("Run DynaCor")
st.caption("Find wrongly labelled samples: pick the data, start, and follow it on the Training page.")
if who.mode == "single-user":
    st.caption("Single-user mode: no sign-in configured, so whoever opens this app can start and cancel runs "
               "(docs/team.md in the repository tells how to sign people in).")  # fmt: skip
elif not who.can("start"):
    st.info(f"Signed in as {plain(who.identity)} ({who.role}): runs are started and cancelled by an admin. "
            "Review the flagged samples of a finished run on the **Review** or **Grid** page.")  # fmt: skip

if busy:
    with st.container(border=True):
        st.markdown(f"**A run is working:** {code(job.run_dir.name)}")
        left, right = st.columns(2)
        if left.button("Follow it on the Training page", key="follow"):
            st.session_state["current_run"] = job.run_dir.name
            st.switch_page(PAGES["training"])
        if who.can("cancel") and right.button("Cancel the run", key="cancel", type="secondary"):
            job.cancel()
            st.toast("Cancelling: the run stops at the next step.")

if who.can("start"):  # annotators see the runs, not the form
    with st.form("start_run"):
        st.subheader("Data")
        kind = st.selectbox("Source", list(SOURCES), format_func=lambda k: SOURCES[k][0], key="source_kind")
        path = st.text_input(
            "Path (for every source but the built-in sample)",
            key="source_path",
            help="Relative paths start at the first data root. Allowed roots: "
            + ", ".join(plain(r) for r in runview.data_roots()),  # help text is Markdown
        )
        c1, c2, c3 = st.columns(3)
        backbone = c1.selectbox("Backbone (image sources)", list(BACKBONES), key="backbone", help="; ".join(f"{k}: {v}" for k, v in BACKBONES.items()))
        runtime = c2.selectbox(
            "Backbone runtime", list(RUNTIMES), index=list(RUNTIMES).index(DEFAULT_RUNTIME), key="runtime",
            format_func=lambda r: r if installed(r) or r == "auto" else f"{r} (not installed)",
            help="; ".join(f"{k}: {v}" for k, v in RUNTIMES.items()) + ". Features are cached per runtime.",
        )  # fmt: skip
        labels_key = c3.text_input("Labels field (feature files)", value="labels", key="labels_key")
        per_class = st.slider("Built-in sample: images per class (fewer is faster)", 10, 200, SourceSpec().sample_per_class or 200, 10, key="per_class")

        st.subheader("Synthetic noise (for benchmarking)")
        st.caption("The built-in sample's labels already carry 20% symmetric noise; a noise type here replaces it "
                   "(applied to the ground truth, so precision, recall and F1 are reported).")  # fmt: skip
        n1, n2, n3 = st.columns(3)
        noise_kind = n1.selectbox("Noise type", list(NOISE), format_func=NOISE.get, key="noise_kind")
        noise_rate = n2.slider("Noise rate", 0.0, 0.9, 0.2, 0.05, key="noise_rate")
        seed = n3.number_input("Seed", min_value=0, value=DEFAULTS.seed, step=1, key="seed")

        st.subheader("Method")
        classifier = st.selectbox(
            "Classifier whose dynamics are recorded", ["default", *CLASSIFIERS], key="classifier",
            help="default: the MLP head on frozen features; with the scratch backbone "
            f"{SCRATCH_DEFAULTS['classifier']} (scratch-cnn is a small CNN, much faster on a CPU)",
        )  # fmt: skip
        st.caption("Empty fields take the default shown in them; the scratch backbone trains a network on the "
                   "pixels with the paper's from-scratch settings.")  # fmt: skip
        m1, m2, m3, m4 = st.columns(4)
        gamma = m1.number_input("gamma (corrupted copies)", 0.01, 1.0, None, 0.01, key="gamma",
                                placeholder=f"{DEFAULTS.gamma}")  # fmt: skip
        alpha = m2.number_input("alpha (alignment weight)", 0.0, 10.0, None, 0.05, key="alpha",
                                placeholder=f"{DEFAULTS.alpha} (scratch {SCRATCH_DEFAULTS['alpha']})")  # fmt: skip
        epochs = m3.number_input("Classifier epochs", 2, 500, None, 1, key="epochs",
                                 placeholder=f"{DEFAULTS.epochs} (scratch {SCRATCH_DEFAULTS['epochs']})")  # fmt: skip
        encoder_epochs = m4.number_input("Encoder epochs", 1, 200, None, 1, key="encoder_epochs",
                                         placeholder=f"{DEFAULTS.encoder_epochs}")  # fmt: skip
        start = st.form_submit_button("Start run", type="primary")

    def request_from_form():  # noqa: ANN202
        want = SOURCES[kind][1]
        resolved = runview.resolve_data_path(path, runview.data_roots(), want) if want else None
        spec = SourceSpec(kind=kind, path=str(resolved) if resolved else None, labels_key=labels_key or "labels",
                          backbone=backbone, runtime=runtime, sample_per_class=int(per_class))  # fmt: skip
        noise = None if noise_kind == "none" else f"{noise_kind}:{noise_rate:g}"
        user = {"seed": int(seed), "noise": noise, "gamma": gamma, "alpha": alpha,
                "classifier": None if classifier == "default" else classifier,
                "epochs": None if epochs is None else int(epochs),
                "encoder_epochs": None if encoder_epochs is None else int(encoder_epochs)}  # fmt: skip
        return prepare(spec, user, "Run page")

    if start:
        start_run(request_from_form, kind)

st.subheader("Past runs")
table = runview.runs_table(runs_root())
if table.empty:
    st.caption("No runs yet.")
else:
    st.dataframe(
        table,
        hide_index=True,
        column_config={"F1": st.column_config.NumberColumn("F1 (%)", format="%.1f")},
        key="runs_table",
    )
    names = table["run"].tolist()
    current = st.session_state.get("current_run")
    o1, o2, o3 = st.columns([3, 1, 1])
    chosen = o1.selectbox("Reopen a run", names, index=names.index(current) if current in names else 0, key="reopen")
    status = table.set_index("run").loc[chosen, "status"]
    if o2.button("Training / log", key="open_training"):
        st.session_state["current_run"] = chosen
        st.switch_page(PAGES["training"])
    if o3.button("Clusters", key="open_clusters", disabled=status != "finished"):
        st.session_state["current_run"] = chosen
        st.switch_page(PAGES["clusters"])
