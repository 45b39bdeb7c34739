"""What an annotator can decide about a flagged sample, and which class each decision assigns."""

from __future__ import annotations

DECISIONS = ("keep", "accept", "relabel", "unsure", "remove")
# Decisions that carry a class: relabel needs one from the caller, keep/accept get one so an
# export never has to recompute which label "accept" meant at the time.
LABELLED = ("keep", "accept", "relabel")
# Decisions that change the label (when their class differs from the given one): they record
# which of the card's candidates was taken (`dynacor.review.candidates.choice`).
RANKED = ("accept", "relabel")


def decision_label(decision: str, given: int, suggested: int, label: int | None = None) -> int | None:
    """The class a decision assigns: keep -> given, accept -> suggested, relabel -> ``label``;
    unsure and remove assign none."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
    if decision == "keep":
        return int(given)
    if decision == "accept":
        if suggested is None or int(suggested) < 0:  # a run without probabilities suggests nothing
            raise ValueError("an accept decision needs a suggestion; this sample has none")
        return int(suggested)
    if decision == "relabel":
        if label is None:
            raise ValueError("a relabel decision needs a label")
        return int(label)
    return None
