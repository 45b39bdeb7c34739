"""DynaCor review app: ``streamlit run app.py``.

Environment: DYNACOR_RUNS (runs folder, default ./dynacor_runs), DYNACOR_DATA_ROOTS (folders
data may be read from, ``os.pathsep``-separated; default the working directory and
sample_data/), DYNACOR_REVIEW_DB (an SQLAlchemy URL; default RUNS/reviews.sqlite).
Sign-in and roles: ``[auth]`` and ``[dynacor]`` in .streamlit/secrets.toml (docs/team.md);
without them the app runs in single-user mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# Pages import their shared helpers as ``pages._common``; the test harness does not put the
# app's folder on sys.path the way ``streamlit run`` does. (Because of the ``pages/`` folder a fresh
# server starts in streamlit's legacy "pages directory" mode, where a first visit to e.g. /review
# runs that page file directly; every page calls ``require_router()`` first, which runs this
# script in its place. See pages/_common.py.)
APP_DIR = str(Path(__file__).resolve().parent)
if APP_DIR not in sys.path:
    sys.path.insert(0, APP_DIR)

from pages._auth import gate  # noqa: E402
from pages._common import PAGES, job_runner, routed  # noqa: E402

st.set_page_config(page_title="DynaCor", page_icon=":material/label:", layout="wide")

job_runner()  # created once per server, shared by every session and page
who = gate()  # with sign-in configured, nothing below is drawn for someone not signed in

navigation = st.navigation(
    [
        st.Page(PAGES["run"], title="Run", icon=":material/play_arrow:", url_path="run", default=True),
        st.Page(PAGES["training"], title="Training", icon=":material/monitoring:", url_path="training"),
        st.Page(PAGES["clusters"], title="Clusters", icon=":material/scatter_plot:", url_path="clusters"),
        st.Page(PAGES["sample"], title="Sample", icon=":material/image_search:", url_path="sample"),
        st.Page(PAGES["review"], title="Review", icon=":material/fact_check:", url_path="review"),
        st.Page(PAGES["grid"], title="Grid", icon=":material/grid_view:", url_path="grid"),
        st.Page(PAGES["team"], title="Team", icon=":material/groups:", url_path="team"),
    ]
    + ([st.Page(PAGES["export"], title="Export", icon=":material/download:", url_path="export")] if who.can("export") else [])
)
with routed():  # tells the page's require_router() that this script chose it
    navigation.run()
