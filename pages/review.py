"""Review page: the queue of flagged samples, one card at a time, with keyboard shortcuts."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dynacor import review
from dynacor.data import thumbnails
from dynacor.review import candidates as card_classes
from pages._auth import annotator as signed_annotator
from pages._auth import current
from pages._common import (
    PAGES,
    audit_cards,
    candidates,
    class_names,
    explain,
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
from pages._text import code, plain

require_router()  # before anything is drawn: see pages/_common.py

SHORTCUTS = {"keep": "K", "unsure": "U", "remove": "X", "skip": "N"}
CANDIDATE_KEYS = ("1", "2", "3")  # the card's candidates, the suggestion first
ACCEPT_ALIAS = "A"  # the suggestion's key before there were candidates: kept for the hands used to it
SEARCH_KEY = "o"  # focuses the class search (a small script: Streamlit's shortcuts only press buttons)
RELABEL_KEY = "Ctrl+Enter"  # with a modifier, a shortcut works while the search box has the focus
BULK_ROWS = 1000
QUALITY_EVERY_S = 20

st.title("Review")
name = pick_finished_run("review", st.sidebar)
if name is None:
    st.stop()

annotator = signed_annotator()  # the signed-in identity, or a typed name in single-user mode
may_export = current().can("export")

frame = safe(samples, name)
names = class_names(name)
queue_all = safe(flagged, name)
source = run_info(name).get("source") or {}
estimated = review.estimates_line(run_info(name).get("estimates"))  # the detector's own, if any
store = review_store()
run_key = shared_queue(name)
card_candidates, card_probs, confusions = safe(candidates, name)
num_classes = len(names) if names else int(max(frame["given_label"].max(), frame["suggested_label"].max(),
                                                card_candidates.max(initial=-1))) + 1  # fmt: skip

with st.sidebar:
    st.caption(f"Annotator: **{plain(annotator)}**")
    classes = st.multiselect("Given class", list(range(num_classes)), format_func=lambda c: label_name(names, c), key="filter_classes")
    lo = float(queue_all["noisy_score"].min()) if len(queue_all) else 0.5
    full_range = (round(max(0.0, lo - 0.005), 2), 1.0)
    score_range = st.slider("Noisy score", 0.0, 1.0, full_range, 0.01, key="filter_score")
    undecided_only = st.toggle("Undecided only", value=True, key="filter_undecided",
                               help="On: cards come from the queue the team shares, each held by one "
                               "person at a time. Off: browse decided cards too.")  # fmt: skip
    audit_on = st.toggle("Audit: mix in unflagged samples", key="audit_on",
                         help="A random sample of the unflagged samples joins the queue, so the errors the "
                         "detector missed are measured too. Audit cards look like the others until decided.")  # fmt: skip
    audit_every = int(st.number_input("One card in K is an audit card", 2, 50, 10, key="audit_every",
                                      disabled=not audit_on))  # fmt: skip
    selection = st.session_state.get("review_selection")
    only_selection = False
    if selection:
        only_selection = st.toggle(f"Only the {len(selection):,} selected on Clusters", value=True, key="filter_selection")

passed_key = f"passed::{name}"
seen_key = f"seen::{name}"  # cards gone through in this session: keeps the audit's one-in-K rhythm
if passed_key not in st.session_state:
    st.session_state[passed_key] = []


def decide(key: str, decision: str, given: int, audit: bool = False) -> None:
    """Button callback for keep, unsure, remove and skip: commit the decision, then the rerun
    shows the next card."""
    if decision != "skip":
        store.record_decision(run_key, key, decision, review.decision_label(decision, given, -1), annotator)
        if audit:  # said only now, so the audit card was judged like any other
            st.session_state["audit_notice"] = key
    else:
        store.release(run_key, annotator, [key])  # someone else may take it
    went_through(key)


def take(key: str, given: int, label: int, ranked: list[int], audit: bool = False) -> None:
    """Button callback of a candidate: the card gets that class (accept for the suggestion,
    relabel for another), with the candidate's rank recorded."""
    chosen = card_classes.choice(given, label, ranked)
    store.record_decision(run_key, key, chosen["decision"], chosen["label"], annotator,
                          candidate_rank=chosen["candidate_rank"])  # fmt: skip
    if audit:
        st.session_state["audit_notice"] = key
    went_through(key)


def take_searched(key: str, given: int, ranked: list[int], audit: bool, search: str) -> None:
    """Button callback of the search: the class in the search box, read from the session state
    (not bound when the button was drawn: the box may have changed in the same rerun)."""
    label = st.session_state.get(search)
    if label is not None:
        take(key, given, int(label), ranked, audit)


def went_through(key: str) -> None:
    st.session_state[passed_key].append(key)
    st.session_state[seen_key] = st.session_state.get(seen_key, 0) + 1


def bulk(keys: list[str], decision: str, rows, label: int | None) -> None:
    chosen = rows.set_index("key", drop=False).loc[keys]
    # Each card as its own card would record it: its own suggestion, its own candidates' ranks.
    items, left_out = card_classes.bulk_items(chosen, decision, label, card_candidates[chosen["index"].to_numpy()])
    count = store.record_decisions(run_key, items, annotator=annotator)
    done = f"Recorded '{decision}' for {count:,} samples."
    if left_out:
        done += f" Left out {left_out:,} with no suggestion to accept."
    st.session_state["bulk_done"] = done


def why_flagged(row, given: int, ranked: list[int]) -> None:
    """The card's evidence: the sample's dynamics against the clusters' means, its neighbours in
    feature space with their given labels, and what the given class and each candidate look like."""
    neighbours, exemplars, means, signs = safe(explain, name)
    i = int(row["index"])
    if means is not None:
        fig = go.Figure()
        for cluster, part in means.groupby("cluster"):
            colour = "#d62728" if "noisy" in cluster else "#1f77b4"
            fig.add_trace(go.Scatter(x=part["epoch"], y=part["sign"], name=cluster, line=dict(color=colour, dash="dash")))
        fig.add_trace(go.Scatter(x=part["epoch"], y=signs[i], name="this sample", mode="lines+markers",
                                 line=dict(color="black")))  # fmt: skip
        fig.update_layout(height=200, margin=dict(l=10, r=10, t=10, b=10), yaxis=dict(range=[-1.1, 1.1]),
                          legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0), xaxis_title="classifier epoch")  # fmt: skip
        st.caption("Sign of the margin per classifier epoch (+1: the given label wins), against the clusters' means")
        st.plotly_chart(fig, key=f"why_curve_{i}")
    show_images = "path" in frame

    def gallery(rows, caption: str, key: str) -> None:
        if len(rows) == 0:
            return
        st.caption(caption)
        if show_images:
            cols = st.columns(len(rows))
            for col, (_, r) in zip(cols, rows.iterrows(), strict=True):
                image = thumbnails.for_display(thumbnails.load_image(source, r.get("path")), size=96)
                col.image(image, caption=plain(f"{r['id']}: {label_name(names, r['given_label'])}"))
        else:
            st.dataframe(rows[["id", "given_label", "noisy_score"]].assign(
                given_label=[label_name(names, v) for v in rows["given_label"]]), hide_index=True, key=key)  # fmt: skip

    near = neighbours.get(i)
    if near is not None:
        rows = frame.iloc[near[:6]]
        agree = int((rows["given_label"] == given).sum())
        gallery(rows, f"Nearest in feature space: {agree} of {len(rows)} carry the given label", f"near_{i}")
    gallery(exemplars.get(given, frame.iloc[:0]), f"Clearly {plain(label_name(names, given))} (given)", f"ex_given_{i}")
    for rank, c in enumerate(ranked, start=1):
        gallery(exemplars.get(c, frame.iloc[:0]),
                f"Clearly {plain(label_name(names, c))} ({'suggested' if rank == 1 else f'candidate {rank}'})",
                f"ex_cand{rank}_{i}")  # fmt: skip


@st.fragment(run_every=QUALITY_EVERY_S)
def quality_header() -> None:
    """The review's measured quality. It reads every decision of the run, so it refreshes on a
    timer rather than after every card (the card's own counts come from the queue's rows)."""
    latest = store.latest_decisions(run_key)
    quality = review.review_quality(frame, latest, audit_cards(name)["key"])
    st.caption(" · ".join(review.quality_lines(quality)))
    if estimated:
        st.caption(estimated)


def shared_card(filtered: bool):
    """The next card from the queue the team shares: leased to this annotator, so nobody else
    gets it (None when no card is left for them). With a filter, only among the cards it keeps."""
    among = None
    if filtered:
        no_decisions = pd.DataFrame({"sample": [], "decision": []})  # the store leaves decided cards out
        among = review.queue(pending_base(), no_decisions, classes, score_range, undecided_only=False)["key"]
    keys = store.claim_next(run_key, annotator, among=among, passed=st.session_state[passed_key])
    if not keys:
        return None
    return queue_all.loc[queue_all["key"] == keys[0]].iloc[0].copy()


def pending_base():
    if only_selection and selection:
        return queue_all[queue_all["key"].isin(selection)]
    return queue_all


def next_audit_card():
    """An undecided audit card, or None. Annotators start at different places of the audit's
    random order (by a hash of their name), so two seldom judge the same card."""
    audit = audit_cards(name)
    passed = set(st.session_state[passed_key])
    open_cards = audit[~audit["key"].isin(passed)]
    open_cards = open_cards[~open_cards["key"].isin(store.decided_among(run_key, open_cards["key"]))]
    if open_cards.empty:
        return None
    start = zlib.crc32(annotator.encode()) % len(open_cards)
    return open_cards.iloc[start].copy()


@st.fragment
def card() -> None:
    counts = store.queue_progress(run_key)
    decided, total = counts["decided"], counts["queued"]
    st.progress(decided / total if total else 1.0, text=f"**{decided:,} / {total:,}** flagged samples decided")
    notice = st.session_state.pop("audit_notice", None)
    if notice is not None:
        st.info(f"That was an audit card (id {code(notice)}): a random unflagged sample, mixed in to measure the "
                "errors the detector missed.")  # fmt: skip
    filtered = bool(classes) or (only_selection and bool(selection)) or tuple(score_range) != full_range
    row = None
    if undecided_only:  # the shared queue: leases keep two people off one card
        wants_audit = audit_on and (st.session_state.get(seen_key, 0) + 1) % audit_every == 0
        row = next_audit_card() if wants_audit else None
        if row is not None:
            row["audit"], row["decision"] = True, ""
        else:
            row = shared_card(filtered)
            if row is None and audit_on:
                row = next_audit_card()  # flagged cards done: the audit goes on
                if row is not None:
                    row["audit"] = True
            elif row is not None:
                row["audit"] = False
            if row is not None:
                row["decision"] = ""
        pending = None
        left = max(0, total - decided)
    else:  # browsing decided cards too: every card of the filter, but none someone else holds
        latest = store.latest_decisions(run_key)
        pending = review.queue(pending_base(), latest, classes, score_range, undecided_only)
        held = store.leases(run_key)
        others = held.loc[held["annotator"] != annotator, "sample"]
        remaining = pending[~pending["key"].isin(st.session_state[passed_key]) & ~pending["key"].isin(others)]
        if len(remaining):
            row = remaining.iloc[0].copy()
            row["audit"] = False
        left = len(remaining)
    if row is None:
        if left == 0 or (pending is not None and pending.empty):
            st.success("Nothing left in this queue.")
        elif pending is None:
            st.success(f"{left:,} cards are still undecided: others hold them, or you skipped them.")
        else:
            st.success("You went through every card in this queue.")
        if st.session_state[passed_key] and st.button("Start again from the top (shows skipped cards)", key="restart"):
            st.session_state[passed_key] = []
            st.rerun(scope="fragment")
        if may_export and st.button("Export the cleaned labels", key="to_export"):
            st.switch_page(PAGES["export"])
        return
    key, given = row["key"], int(row["given_label"])
    at = int(row["index"])  # the candidates' arrays are in the samples table's order
    offered = card_classes.row_candidates(card_candidates[at], card_probs[at])
    ranked = [c for c, _ in offered]
    is_audit = bool(row["audit"])
    previous = row["decision"] if isinstance(row["decision"], str) else ""
    st.caption(f"{left:,} cards left in this queue" + ("" if pending is not None else " (for the whole team)"))
    with st.container(border=True):
        left, right = st.columns([1, 2])
        with left:
            if "path" in frame:
                image = thumbnails.load_image(source, row.get("path"))
                st.image(thumbnails.for_display(image), caption=plain(row.get("path", "")))
            else:
                st.info("Feature-only run: no image to show.")
        with right:
            st.markdown(f"#### id {code(key)}" + (f" - previous decision: **{previous}**" if previous else ""))
            st.markdown(f"Given label: **{plain(label_name(names, given))}**")
            if audit_on:  # a low score would give an audit card away before the decision
                st.caption("Noisy scores are hidden while the audit is on.")
            else:
                st.markdown(f"Noisy score: **{row['noisy_score']:.3f}**")
            candidate_buttons(key, given, offered, is_audit)
            search_box(key, given, ranked, is_audit)
            b1, b2, b3, b4 = st.columns(4)
            b1.button("Keep label", key="act_keep", shortcut=SHORTCUTS["keep"], on_click=decide,
                      args=(key, "keep", given, is_audit), width="stretch")  # fmt: skip
            b2.button("Unsure", key="act_unsure", shortcut=SHORTCUTS["unsure"], on_click=decide,
                      args=(key, "unsure", given, is_audit), width="stretch")  # fmt: skip
            b3.button("Remove sample", key="act_remove", shortcut=SHORTCUTS["remove"], on_click=decide,
                      args=(key, "remove", given, is_audit), width="stretch")  # fmt: skip
            b4.button("Skip", key="act_skip", shortcut=SHORTCUTS["skip"], on_click=decide,
                      args=(key, "skip", given), width="stretch")  # fmt: skip
            st.caption("Keys: 1 2 3 take a candidate (A = 1), O searches every class (Ctrl+Enter relabels as "
                       "the class found), K keep, U unsure, X remove, N skip.")  # fmt: skip
            if not audit_on:  # the evidence would tell an audit card apart
                with st.expander("Why was this flagged?", expanded=True):
                    why_flagged(row, given, ranked)
            if st.button("Open in the Sample page", key="act_open"):
                st.switch_page(PAGES["sample"], query_params={"run": name, "id": key})

    bulk_actions(pending)


def candidate_buttons(key: str, given: int, offered: list[tuple[int, float]], audit: bool) -> None:
    """The card's candidates as buttons, most likely first, with keys 1-3 (and A for the first).
    A card without any (a run that recorded no probabilities) offers none to accept."""
    if not offered:
        st.caption("No suggestion: this run recorded no class probabilities. Search for a class below.")
    cols = st.columns(len(CANDIDATE_KEYS))
    ranked = [c for c, _ in offered]
    for rank, (col, shortcut) in enumerate(zip(cols, CANDIDATE_KEYS, strict=True), start=1):
        if rank > len(offered):
            if rank == 1:  # keep the button (and its key) so the card's layout does not jump
                col.button(f"{shortcut} · no suggestion", key="act_accept", disabled=True, width="stretch")
            continue
        c, p = offered[rank - 1]
        share = "" if np.isnan(p) else f" {100 * p:.0f}%"
        col.button(f"{shortcut} · {plain(label_name(names, c))}{share}", key="act_accept" if rank == 1 else f"act_cand_{rank}",
                   shortcut=shortcut, type="primary" if rank == 1 else "secondary", on_click=take,
                   args=(key, given, c, ranked, audit), width="stretch",
                   help="The suggestion: the most likely class other than the given one" if rank == 1 else None)  # fmt: skip
    # The old key of "accept", on a button nobody sees: A still takes the suggestion.
    with st.container(key="accept_alias"):
        st.button("Accept the suggestion", key="act_accept_alias", shortcut=ACCEPT_ALIAS, disabled=not offered,
                  on_click=take, args=(key, given, ranked[0] if offered else -1, ranked, audit))  # fmt: skip
    st.html("<style>.st-key-accept_alias { display: none; }</style>")


def search_box(key: str, given: int, ranked: list[int], audit: bool) -> None:
    """Every class but the given one, most likely first (the candidates, then the classes this run
    suggests most often for the given class, then by index); typing filters the list."""
    order = card_classes.search_order(given, ranked, confusions.get(given, []), num_classes)
    search = f"search_{key}"  # per card: a new card starts with an empty search
    # Per card too, so O never finds the previous card's box while the page redraws.
    box = f"class_search_{zlib.crc32(str(key).encode())}"
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    with c1.container(key=box):
        st.selectbox("Another class (type to search)", order, index=None, key=search, placeholder="Type a class name...",
                     format_func=lambda c: label_name(names, c), label_visibility="collapsed")  # fmt: skip
    c2.button("Relabel as the class found", key="act_relabel", shortcut=RELABEL_KEY, disabled=st.session_state.get(search) is None,
              on_click=take_searched, args=(key, given, ranked, audit, search), width="stretch")  # fmt: skip
    # O puts the cursor in the search box: Streamlit's shortcuts press buttons only, so a few lines
    # of script do it, and leave the key alone while someone types.
    st.html(SEARCH_SCRIPT.replace("SEARCH_BOX", f".st-key-{box} input"), unsafe_allow_javascript=True)


SEARCH_SCRIPT = """<script>
window.dynacorSearchBox = "SEARCH_BOX";
if (!window.dynacorSearchKey) {
  window.dynacorSearchKey = true;
  document.addEventListener("keydown", (event) => {
    if (event.key.toLowerCase() !== "SEARCH_KEY" || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
    const box = document.querySelector(window.dynacorSearchBox);
    if (!box) return;
    event.preventDefault();
    box.focus();
    box.click();
  });
}
</script>""".replace("SEARCH_KEY", SEARCH_KEY)


def bulk_actions(pending) -> None:
    if pending is None:  # the shared queue: the list of what is left reads every decision
        with st.expander("Bulk actions"):
            if not st.toggle("List the undecided samples of this queue", key="bulk_load"):
                return
            latest = store.latest_decisions(run_key)
            pending = review.queue(pending_base(), latest, classes, score_range, undecided_only=True)
            bulk_table(pending)
        return
    with st.expander(f"Bulk actions ({len(pending):,} samples in this queue)"):
        bulk_table(pending)


def bulk_table(pending) -> None:
    if st.session_state.get("bulk_done"):
        st.success(st.session_state.pop("bulk_done"))
    shown = pending.head(BULK_ROWS)
    cols = [c for c in ("key", "given_name", "suggested_name", "noisy_score", "decision") if c in shown]
    picked = st.dataframe(shown[cols], hide_index=True, on_select="rerun", selection_mode="multi-row", key="bulk_table")
    rows = list(getattr(getattr(picked, "selection", None), "rows", []) or [])
    chosen_keys = shown["key"].iloc[rows].tolist()
    e1, e2 = st.columns(2)
    decision = e1.selectbox("Decision", [d for d in review.DECISIONS], key="bulk_decision")
    label = e2.selectbox("Class (for relabel)", list(range(num_classes)), format_func=lambda c: label_name(names, c), key="bulk_label")
    f1, f2 = st.columns(2)
    f1.button(f"Apply to the {len(chosen_keys):,} selected rows", key="bulk_selected", disabled=not chosen_keys,
              on_click=bulk, args=(chosen_keys, decision, pending, label))  # fmt: skip
    f2.button(f"Apply to all {len(pending):,} in this queue", key="bulk_all", disabled=pending.empty,
              on_click=bulk, args=(pending["key"].tolist(), decision, pending, label))  # fmt: skip


quality_header()
card()
