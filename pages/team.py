"""Team page: how a run is reviewed (single or double review), its progress and who is working on
it now, how much the annotators agree, and (admins) the conflicts of double review, one card at a
time."""

from __future__ import annotations

import math
import time

import pandas as pd
import streamlit as st

from dynacor import review
from dynacor.data import thumbnails
from dynacor.review import agreement
from dynacor.review.candidates import has_suggestion
from pages._auth import annotator as signed_annotator
from pages._auth import current
from pages._common import (
    candidates,
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
from pages._text import code, plain

require_router()  # before anything is drawn: see pages/_common.py

MAX_REVIEWERS = 5
# Landis & Koch (1977), the usual reading of kappa: each band's upper bound.
BANDS = (
    (0.20, "slight"),
    (0.40, "fair"),
    (0.60, "moderate"),
    (0.80, "substantial"),
    (1.0, "almost perfect"),
)
GUIDE = (
    "Kappa is agreement corrected for chance: 1 always the same outcome, 0 no better than "
    "chance (raw agreement flatters annotators who mostly pick one outcome). Landis & Koch: "
    "below 0 poor, 0-0.20 slight, 0.21-0.40 fair, 0.41-0.60 moderate, 0.61-0.80 substantial, "
    "0.81-1 almost perfect."
)
PICK = "team_conflict_pick"
OVERVIEW_ROWS = 500


def mode_name(k: int) -> str:
    return "single review" if k == 1 else f"double review, {k} annotators per card"


def meaning(k: int) -> str:
    if k == 1:
        return "Each card is decided by the first annotator who reviews it."
    return (
        f"Each card goes to {k} different annotators and is decided when their votes agree; "
        "votes that differ put it in the conflicts queue, for an admin to decide."
    )


def reading(kappa: float) -> str:
    if math.isnan(kappa):
        return "undefined (a single outcome between them)"
    if kappa < 0:
        return "poor"
    return next(text for bound, text in BANDS if kappa <= bound)


def who_name(annotator: str) -> str:
    return annotator or "(no name)"


def vote_text(decision: str, label: object) -> str:
    return decision if pd.isna(label) else f"{decision} → {label_name(names, label)}"


st.title("Team")
name = pick_finished_run("team", st.sidebar)
if name is None:
    st.stop()

may_manage = current().can("manage")
store = review_store()
run_key = shared_queue(name)  # the queue's counts need the queue in the store
frame = safe(samples, name)
names = class_names(name)
queue_all = safe(flagged, name)
source = run_info(name).get("source") or {}

k = store.reviewers(run_key)

# ---- review mode

st.subheader("Review mode")
st.markdown(f"This run: **{mode_name(k)}**. {meaning(k)}")
if may_manage:
    options = list(range(1, max(MAX_REVIEWERS, k) + 1))
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    chosen = left.selectbox(
        "Review mode",
        options,
        index=options.index(k),
        key="team_reviewers",
        format_func=lambda n: mode_name(n).capitalize(),
    )
    if right.button("Apply", key="team_apply_mode", disabled=chosen == k, width="stretch"):
        store.set_reviewers(run_key, int(chosen))
        st.rerun()
    st.caption(
        "A change re-counts the cards already reviewed: in double review a card with fewer "
        "votes than annotators per card waits for more."
    )

# ---- progress

st.subheader("Progress")
counts = store.queue_progress(run_key)
queued, decided = counts["queued"], counts["decided"]
in_conflict = counts.get("conflicts", 0)
cols = st.columns(4 if k > 1 else 3)
cols[0].metric("Cards queued", f"{queued:,}")
cols[1].metric("Decided", f"{decided:,}")
if k > 1:
    cols[2].metric("In conflict", f"{in_conflict:,}")
cols[-1].metric("Left to review", f"{queued - decided - in_conflict:,}")

leases = store.leases(run_key)
if leases.empty:
    st.caption("Nobody holds a card of this run right now.")
else:
    now = time.time()
    working = leases.groupby("annotator").agg(cards=("sample", "size"), until=("expires", "max"))
    st.markdown("**Working now** (cards held on a lease)")
    st.dataframe(
        pd.DataFrame(
            {
                "annotator": [who_name(a) for a in working.index],
                "cards held": working["cards"].to_numpy(),
                "lease ends in": [
                    f"{max(0, int(t - now)) // 60} min {max(0, int(t - now)) % 60} s"
                    for t in working["until"]
                ],
            }
        ),
        hide_index=True,
        key="team_working",
    )

votes = store.votes(run_key)
latest = store.latest_decisions(run_key)
finals = latest[latest["final"]].groupby("annotator").size()
if votes.empty and finals.empty:
    st.caption("No decisions on this run yet.")
else:
    per = pd.crosstab(votes["annotator"], votes["decision"]) if len(votes) else pd.DataFrame()
    per = per.reindex(columns=list(review.DECISIONS), fill_value=0)
    per.insert(0, "votes", per.sum(axis=1))
    per = per.join(finals.rename("final decisions"), how="outer").fillna(0).astype(int)
    st.markdown(
        "**Decisions per annotator** (each one's latest vote per card; final: conflicts "
        "an admin decided)"
    )
    st.dataframe(
        per.rename(index=who_name).rename_axis("annotator").reset_index(),
        hide_index=True,
        key="team_per_annotator",
    )

# Whether the ranked candidates were worth having: how many fixes took the suggestion, or one of 3.
st.caption(review.candidate_line(review.candidate_shares(frame, latest, safe(candidates, name)[0])))

# ---- agreement

st.subheader("Agreement")
per_card = votes.groupby("sample").size()
shared = int((per_card >= 2).sum())
if votes.empty:
    st.info("No votes yet: agreement shows once two annotators have reviewed the same cards.")
elif shared == 0:
    hint = (
        " In single review each card gets one vote: choose double review above." if k == 1 else ""
    )
    st.info("No card has votes from two annotators yet." + hint)
else:
    raters = max(k, 2)
    complete = int((per_card >= raters).sum())
    fleiss = agreement.fleiss_kappa(votes, raters)
    st.metric("Fleiss' kappa", "-" if math.isnan(fleiss) else f"{fleiss:.3f}")
    if complete:
        st.caption(f"Over {complete:,} cards with {raters} votes each: {reading(fleiss)}.")
    else:
        st.caption(f"No card has {raters} votes yet.")
    pairs = agreement.pairwise_kappa(votes)
    st.dataframe(
        pd.DataFrame(
            {
                "annotator A": [who_name(a) for a in pairs["annotator_a"]],
                "annotator B": [who_name(b) for b in pairs["annotator_b"]],
                "cards in common": pairs["cards"].astype(int),
                "raw agreement": pairs["agreement"],
                "Cohen's kappa": pairs["kappa"],
                "reading": [reading(x) for x in pairs["kappa"]],
            }
        ),
        hide_index=True,
        key="team_pairs",
        column_config={
            "raw agreement": st.column_config.NumberColumn(format="percent"),
            "Cohen's kappa": st.column_config.NumberColumn(format="%.3f"),
        },
    )
    st.caption(GUIDE)

# ---- conflicts


def settle(
    key: str, decision: str, given: int, suggested: int, admin: str, label: int | None = None
) -> None:
    """Button callback: the admin's final decision, committed; the card leaves the queue."""
    chosen = review.decision_label(decision, given, suggested, label)
    store.record_decision(run_key, key, decision, chosen, admin, final=True)
    st.session_state.pop(PICK, None)  # the next conflict comes up
    st.session_state["team_resolved"] = (
        f"Final decision on id {code(key)}: {plain(vote_text(decision, chosen))}."
    )


def conflict_queue() -> None:
    """Annotators see how many cards wait; an admin decides them, one chosen card at a time."""
    if k == 1:
        st.caption("Single review has no conflicts: a card's latest decision counts.")
        return
    conflicts = store.conflicts(run_key)
    keys = review.sample_keys(frame)
    # Queue order first (most confidently noisy first), then any other card (audit cards).
    order = pd.concat([queue_all["key"], keys[~keys.isin(queue_all["key"])]], ignore_index=True)
    cards = order[order.isin(set(conflicts["sample"]))].tolist()
    done = st.session_state.pop("team_resolved", None)
    if done:
        st.success(done)
    if not cards:
        st.success("No card in conflict.")
        return
    if not may_manage:
        st.info(f"{len(cards):,} cards in conflict wait for an admin's final decision.")
        return

    admin = signed_annotator()  # the signed-in identity (single-user mode: the typed name)
    by_key = frame.assign(key=keys).set_index("key")
    votes_of = {s: part for s, part in conflicts.groupby("sample", sort=False)}
    st.caption(
        f"{len(cards):,} cards in conflict. The final decision is recorded under your name, "
        f"**{plain(admin)}**, and overrides the votes."
    )
    overview = by_key.loc[cards[:OVERVIEW_ROWS]]
    st.dataframe(
        pd.DataFrame(
            {
                "id": overview.index,
                "given": [label_name(names, v) for v in overview["given_label"]],
                "suggested": [label_name(names, v) for v in overview["suggested_label"]],
                "votes": [
                    "; ".join(
                        f"{who_name(v.annotator)}: {vote_text(v.decision, v.label)}"
                        for v in votes_of[c].itertuples()
                    )
                    for c in overview.index
                ],
            }
        ),
        hide_index=True,
        key="team_conflicts",
    )
    if st.session_state.get(PICK) not in cards:  # decided meanwhile (another admin, another tab)
        st.session_state.pop(PICK, None)
    pick = st.selectbox("Card to decide", cards, key=PICK, format_func=lambda c: f"id {c}")
    row = by_key.loc[pick]
    given, suggested = int(row["given_label"]), int(row["suggested_label"])
    num_classes = (
        len(names)
        if names
        else int(max(frame["given_label"].max(), frame["suggested_label"].max())) + 1
    )
    with st.container(border=True):
        left, right = st.columns([1, 2])
        with left:
            if "path" in frame:
                image = thumbnails.load_image(source, row.get("path"))
                st.image(thumbnails.for_display(image), caption=plain(row.get("path", "")))
            else:
                st.info("Feature-only run: no image to show.")
        with right:
            st.markdown(f"#### id {code(pick)}")
            st.markdown(f"Given label: **{plain(label_name(names, given))}**")
            st.markdown(
                f"Suggested label: **{plain(label_name(names, suggested))}** "
                f"(p = {row['suggested_prob']:.2f})"
            )
            st.markdown(
                "\n".join(
                    f"- **{plain(who_name(v.annotator))}** voted {plain(vote_text(v.decision, v.label))}"
                    for v in votes_of[pick].itertuples()
                )
            )
            card = (given, suggested, admin)
            b1, b2 = st.columns(2)
            b1.button(
                "Keep label",
                key="final_keep",
                on_click=settle,
                args=(pick, "keep", *card),
                width="stretch",
            )
            b2.button(
                f"Accept suggestion: {plain(label_name(names, suggested))}",
                key="final_accept",
                type="primary",
                disabled=not has_suggestion(given, suggested),  # nothing to accept
                on_click=settle,
                args=(pick, "accept", *card),
                width="stretch",
            )
            c1, c2 = st.columns(2)
            other = c1.selectbox(
                "Another class",
                [c for c in range(num_classes) if c != given],
                format_func=lambda c: label_name(names, c),
                key=f"final_other_{pick}",
                label_visibility="collapsed",
            )
            c2.button(
                "Relabel as this class",
                key="final_relabel",
                on_click=settle,
                args=(pick, "relabel", *card, other),
                width="stretch",
            )
            d1, d2 = st.columns(2)
            d1.button(
                "Unsure",
                key="final_unsure",
                on_click=settle,
                args=(pick, "unsure", *card),
                width="stretch",
            )
            d2.button(
                "Remove sample",
                key="final_remove",
                on_click=settle,
                args=(pick, "remove", *card),
                width="stretch",
            )


st.subheader("Conflicts")
conflict_queue()
