"""Grid triage: a page of thumbnails of one group (given class -> suggested class), one decision for
the selected cards or for all shown, committed before the grid refreshes."""

from __future__ import annotations

import io
import json

import streamlit as st

from dynacor import review
from dynacor.data import thumbnails
from dynacor.review import triage
from dynacor.review.candidates import has_suggestion
from pages._auth import annotator as signed_annotator
from pages._common import (
    class_names,
    flagged,
    label_name,
    pick_finished_run,
    require_router,
    review_store,
    run_info,
    safe,
    samples,
    shared_queue,
)
from pages._text import plain

require_router()  # before anything is drawn: see pages/_common.py

COLUMNS = 6
THUMB = 128
# Actions on the selection, and (with Shift) on every card shown.
KEYS = {"keep": "K", "accept": "A", "remove": "X"}

st.title("Grid triage")
name = pick_finished_run("grid", st.sidebar)
if name is None:
    st.stop()
annotator = signed_annotator()

frame = safe(samples, name)
names = class_names(name)
queue_all = safe(flagged, name)
source = run_info(name).get("source") or {}
store = review_store()
run_key = shared_queue(name)
with st.sidebar:
    st.caption(f"Annotator: **{plain(annotator)}**")
    size = st.select_slider(
        "Cards per page", triage.GRID_SIZES, value=triage.GRID_SIZES[0], key="grid_size"
    )


@st.cache_data(max_entries=1024, show_spinner=False)
def thumbnail(source_json: str, path: str | None) -> bytes:
    image = thumbnails.for_display(thumbnails.load_image(json.loads(source_json), path), size=THUMB)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pick_key(key: str) -> str:
    return f"grid_pick::{name}::{key}"


def apply(keys: list[str], decision: str, cards) -> None:
    """Button callback: all of ``keys`` in one transaction, committed before the rerun draws the
    next cards."""
    # Each card's own class: keep its given label, accept its own suggestion.
    count = store.record_decisions(
        run_key, triage.grid_decisions(cards, keys, decision), annotator=annotator
    )
    for key in keys:
        st.session_state.pop(pick_key(key), None)
    done = f"Recorded '{decision}' for {count:,} cards."
    if count < len(keys):
        done += f" Left out {len(keys) - count:,} with no suggestion to accept."
    st.session_state["grid_done"] = done


def suggestion_name(given: int, suggested: int) -> str:
    return label_name(names, suggested) if has_suggestion(given, suggested) else "no suggestion"


@st.fragment
def grid() -> None:
    pending = review.queue(queue_all, store.latest_decisions(run_key))
    groups = triage.groups(pending)
    if st.session_state.get("grid_done"):
        st.success(st.session_state.pop("grid_done"))
    if groups.empty:
        st.success("Every flagged sample of this run has a decision.")
        return
    options = [
        (int(g), int(s))
        for g, s in zip(groups["given_label"], groups["suggested_label"], strict=True)
    ]
    count = dict(zip(options, groups["cards"], strict=True))
    given, suggested = st.selectbox(
        "Group: given class -> suggested class", options, key="grid_group",
        format_func=lambda o: f"{label_name(names, o[0])} -> {suggestion_name(o[0], o[1])}: {count[o]:,} undecided",
    )  # fmt: skip
    group = triage.grid_cards(pending, given, suggested, len(pending))
    # Leased like the Review page's cards: two people on one group get different pages.
    keys = store.claim_next(run_key, annotator, n=size, among=group["key"])
    if not keys:
        st.info("Every undecided card of this group is held by someone else right now.")
        return
    cards = group.set_index("key", drop=False).loc[keys]
    # Checkbox values are in the session state before this rerun: the action bar can sit above
    # the grid, where it is seen without scrolling.
    chosen = [k for k in keys if st.session_state.get(pick_key(k))]
    labels = {"keep": f"Keep {plain(label_name(names, given))}", "remove": "Remove",
              "accept": f"Accept {plain(suggestion_name(given, suggested))}"}  # fmt: skip
    acceptable = has_suggestion(given, suggested)  # no suggestion: accepting would change nothing
    for scope, targets in (("sel", chosen), ("all", keys)):
        head, *cols = st.columns([1, 2, 2, 2], vertical_alignment="center")
        head.markdown(
            f"**The {len(chosen)} selected**" if scope == "sel" else f"**All {len(keys)} shown**"
        )
        for col, decision in zip(cols, triage.GRID_DECISIONS, strict=True):
            col.button(labels[decision] + ("" if scope == "sel" else f" (all {len(keys)})"), key=f"grid_{scope}_{decision}",
                       shortcut=KEYS[decision] if scope == "sel" else f"Shift+{KEYS[decision]}",
                       disabled=not targets or (decision == "accept" and not acceptable), on_click=apply, args=(targets, decision, cards), width="stretch",
                       type="primary" if decision == "accept" and scope == "sel" else "secondary")  # fmt: skip
    st.caption(f"{len(cards)} of {count[(given, suggested)]:,} shown, most confidently noisy first. Tick cards "
               "to select them (Tab and Space work too). Keys: K keep, A accept, X remove the selected; "
               "with Shift, all shown.")  # fmt: skip
    show_images = "path" in frame
    source_json = json.dumps(source, sort_keys=True, default=str)
    for start in range(0, len(cards), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, (_, row) in zip(
            cols, cards.iloc[start : start + COLUMNS].iterrows(), strict=False
        ):
            with col.container(border=True):
                if show_images:
                    st.image(thumbnail(source_json, row.get("path")))
                st.checkbox(f"{plain(row['key'])} · {row['noisy_score']:.2f}", key=pick_key(row["key"]))


grid()
