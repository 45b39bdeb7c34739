"""Quality measured by the review itself: how many flags were right, and how many errors are left.

The annotators' decisions are the ground truth this module counts: on a flagged sample, ``keep``
is a false alarm and ``accept``, ``relabel`` and ``remove`` are true errors (``unsure`` counts for
neither). An audit mixes a random sample of the unflagged samples into the queue, so the errors
the detector missed are measured too. Intervals are Wilson score intervals (binomial).

Pure functions on DataFrames: ``samples`` is a run's per-sample table (``id``, ``flagged``, ...),
``latest`` the latest decision per sample (`dynacor.review.store.ReviewStore.latest_decisions`).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from dynacor.review.queue import sample_keys

ERRORS = ("accept", "relabel", "remove")
FALSE_ALARMS = ("keep",)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def audit_order(samples: pd.DataFrame, run_key: str) -> pd.DataFrame:
    """The unflagged samples in the audit's random order, with a ``key`` column.

    The order depends on the run only (its id seeds the generator), so every annotator and every
    session draws the same audit cards, and an audit decision is recognised later by membership.
    """
    unflagged = samples[~samples["flagged"].astype(bool)].copy()
    unflagged["key"] = sample_keys(unflagged)
    rng = np.random.default_rng(np.random.SeedSequence([zlib.crc32(str(run_key).encode()), 2024]))
    return unflagged.iloc[rng.permutation(len(unflagged))]


def queue_with_audit(queue: pd.DataFrame, audit: pd.DataFrame, every: int, start: int = 0) -> pd.DataFrame:
    """Cards in review order where one card in ``every`` is an audit card.

    Parameters
    ----------
    queue : flagged cards to show, in order (from `dynacor.review.queue.queue`)
    audit : undecided audit cards, in audit order (from `audit_order`, decided ones removed)
    every : one card in ``every`` is an audit card (>= 2)
    start : cards the annotator has already gone through, so the rhythm carries on across cards
        (the queue is recomputed after every decision)

    Returns
    -------
    The cards with an ``audit`` column (bool); when one kind runs out the other follows.
    """
    if every < 2:
        raise ValueError(f"every must be at least 2, got {every}")
    n_flagged, n_audit = len(queue), len(audit)
    order, f, a = [], 0, 0
    for k in range(n_flagged + n_audit):
        wants_audit = (start + k + 1) % every == 0
        if a < n_audit and (wants_audit or f >= n_flagged):
            order.append(n_flagged + a)
            a += 1
        else:
            order.append(f)
            f += 1
    cards = pd.concat([queue.assign(audit=False), audit.assign(audit=True, decision="")], ignore_index=True)
    return cards.iloc[order].reset_index(drop=True)


def review_quality(samples: pd.DataFrame, latest: pd.DataFrame, audit_keys=(), confidence: float = 0.95) -> dict:
    """What the decisions so far say about the flags and about the labels left wrong.

    Parameters
    ----------
    samples : the run's per-sample table (N rows)
    latest : latest decision per sample (``sample``, ``decision``)
    audit_keys : keys of the audit sample (decisions on them measure the unflagged part)
    confidence : of the Wilson intervals

    Returns
    -------
    dict with
    - ``precision``: ``{"value", "low", "high", "errors", "decided"}`` over the decided flagged
      samples (``unsure`` excluded); value None before any decision
    - ``unflagged_error_rate``: the same over the audited unflagged samples
    - ``remaining_errors``: ``{"value", "low", "high", "count", "of"}``: the estimated fraction
      of the labels still wrong after the decisions so far: errors among the unflagged samples
      not audited (rate x count) plus errors among the flagged samples not yet decided
      (precision x count), over the samples kept (removed ones are dropped); None until both
      the flags and the audit have decisions
    - counts: ``samples``, ``flagged``, ``unflagged``, ``decided_flagged``, ``audited``
    """
    keys = sample_keys(samples)
    is_flagged = samples["flagged"].astype(bool).to_numpy()
    decision = keys.map(dict(zip(latest["sample"], latest["decision"], strict=False)) if len(latest) else {})
    decision = decision.fillna("").to_numpy(dtype=object)
    audited = keys.isin(set(map(str, audit_keys))).to_numpy() & ~is_flagged
    error = np.isin(decision, ERRORS)
    alarm = np.isin(decision, FALSE_ALARMS)

    def proportion(mask: np.ndarray) -> dict:
        k, n = int((error & mask).sum()), int(((error | alarm) & mask).sum())
        low, high = wilson_interval(k, n, confidence)
        return {"value": k / n if n else None, "low": low, "high": high, "errors": k, "decided": n}

    precision = proportion(is_flagged)
    unflagged = proportion(audited)
    total = len(samples)
    kept = total - int((decision == "remove").sum())
    out = {"precision": precision, "unflagged_error_rate": unflagged, "remaining_errors": None,
           "samples": total, "flagged": int(is_flagged.sum()), "unflagged": int((~is_flagged).sum()),
           "decided_flagged": precision["decided"], "audited": unflagged["decided"], "confidence": confidence}  # fmt: skip
    if precision["value"] is not None and unflagged["value"] is not None and kept > 0:
        undecided_flagged = int((is_flagged & ~(error | alarm)).sum())
        unaudited = int((~is_flagged & ~(audited & (error | alarm))).sum())

        def left(p: float, r: float) -> float:
            return (r * unaudited + p * undecided_flagged) / kept

        out["remaining_errors"] = {
            "value": left(precision["value"], unflagged["value"]),
            "low": left(precision["low"], unflagged["low"]),
            "high": left(precision["high"], unflagged["high"]),
            "count": left(precision["value"], unflagged["value"]) * kept,
            "of": kept,
        }
    return out


def quality_lines(quality: dict) -> list[str]:
    """The figures as sentences, for the Review and Export pages and the exported summary."""
    lines = []
    p = quality["precision"]
    if p["value"] is None:
        lines.append("Precision of the flags: no decision yet.")
    else:
        lines.append(f"Precision of the flags, measured: {100 * p['value']:.0f}% ({100 * p['low']:.0f}-"
                     f"{100 * p['high']:.0f}%, from {p['decided']:,} decisions)")  # fmt: skip
    u = quality["unflagged_error_rate"]
    if u["value"] is not None:
        lines.append(f"Errors among the unflagged, audited: {100 * u['value']:.1f}% ({100 * u['low']:.1f}-"
                     f"{100 * u['high']:.1f}%, from {u['decided']:,} audit cards)")  # fmt: skip
    r = quality.get("remaining_errors")
    if r is not None:
        lines.append(f"After this review, about {100 * r['value']:.1f}% ({100 * r['low']:.1f}-{100 * r['high']:.1f}%) "
                     "of the labels are still wrong")  # fmt: skip
    elif u["value"] is None:
        lines.append("Turn the audit on to estimate the errors left among the unflagged samples.")
    return lines


# What the detector estimated about itself before any review (run.json ``estimates``,
# `dynacor.method.estimates.quality_at_cut`), in the order the pages read them.
ESTIMATED = (("precision", "precision"), ("recall", "recall"), ("noise_rate", "noise rate"))


def estimated_figures(estimates: object) -> dict[str, tuple[float, float, float]]:
    """The run's own estimates as ``{field: (value, low, high)}`` (fractions), in `ESTIMATED`'s
    order; empty when the run has none.

    Figures that are missing or not finite numbers are left out rather than failing: runs written
    before the estimates existed, and a cut that flags nothing (precision undefined), must still
    open.
    """
    if not isinstance(estimates, dict):
        return {}
    out = {}
    for field, _ in ESTIMATED:
        figure = estimates.get(field)
        if not isinstance(figure, dict):
            continue
        try:
            value, low, high = (float(figure[k]) for k in ("value", "low", "high"))
        except (KeyError, TypeError, ValueError):
            continue
        if all(map(math.isfinite, (value, low, high))):
            out[field] = (value, low, high)
    return out


def estimates_line(estimates: object) -> str | None:
    """The run's own estimates as one sentence (``Estimated before review: precision 80% (75-85%),
    ...``); None when it has none."""
    figures = estimated_figures(estimates)
    words = dict(ESTIMATED)
    parts = [
        f"{words[field]} {100 * v:.0f}% ({100 * lo:.0f}-{100 * hi:.0f}%)"
        for field, (v, lo, hi) in figures.items()
    ]
    return "Estimated before review: " + ", ".join(parts) if parts else None


def quality_figures(run: str, quality: dict, estimates: object) -> dict:
    """What the Export page's quality JSON holds: the figures the review measured
    (`review_quality`) and the run's own estimates at its cut (run.json ``estimates``, None when
    it has none) under ``estimated_before_review``. Non-finite numbers become null, so the file is
    strict JSON."""

    def finite(value: object) -> object:
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    own = estimates if isinstance(estimates, dict) else None
    return finite({"run": run, **quality, "estimated_before_review": own})


def candidate_shares(samples: pd.DataFrame, latest: pd.DataFrame, candidates: np.ndarray | None = None) -> dict:
    """How often the fixes took the card's suggestion, and how often one of its top 3 candidates.

    A fix is a latest decision that changes the label: an accept or relabel whose class differs
    from the sample's given label (an accept of the given label changes nothing and is no fix).
    Its rank is the one it recorded (``candidate_rank``: 1-3, 0 for a searched class); a decision
    recorded before ranks existed gets 1 for an accept, else the place of its class among the
    sample's ``candidates`` ((N, W) rows of `samples`, from
    `dynacor.review.candidates.candidate_table`), else it is left out of the shares (``unranked``).

    Returns
    -------
    dict with ``fixes`` (count), ``ranked`` (fixes with a rank), ``suggestion`` and ``top3``
    (how many of those took candidate 1, or one of 1-3), ``suggestion_share`` and ``top3_share``
    (fractions of ``ranked``; None when it is 0), ``unranked``.
    """
    empty = {"fixes": 0, "ranked": 0, "suggestion": 0, "top3": 0, "suggestion_share": None,
             "top3_share": None, "unranked": 0}  # fmt: skip
    if not len(latest):
        return empty
    position = pd.Series(np.arange(len(samples)), index=sample_keys(samples).to_numpy())
    position = position[~position.index.duplicated()]
    rows = latest[latest["decision"].isin(("accept", "relabel")) & latest["label"].notna()]
    at = rows["sample"].astype(str).map(position)
    rows, at = rows[at.notna()], at[at.notna()].astype(int).to_numpy()
    given = samples["given_label"].to_numpy().astype(np.int64)[at]
    label = rows["label"].astype("int64").to_numpy()
    fix = label != given
    rows, at, label = rows[fix], at[fix], label[fix]
    if "candidate_rank" in rows:
        rank = pd.to_numeric(rows["candidate_rank"], errors="coerce").to_numpy(dtype=np.float64)
    else:
        rank = np.full(len(rows), np.nan)
    missing = np.isnan(rank)
    rank[missing & (rows["decision"].to_numpy() == "accept")] = 1
    if candidates is not None and len(rows):
        cands = np.asarray(candidates)[at]
        hit = cands == label[:, None]
        inferred = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
        missing = np.isnan(rank)
        rank[missing] = inferred[missing]
    known = rank[~np.isnan(rank)]
    ranked = len(known)
    first, top3 = int((known == 1).sum()), int(((known >= 1) & (known <= 3)).sum())
    return {"fixes": len(rows), "ranked": ranked, "suggestion": first, "top3": top3,
            "suggestion_share": first / ranked if ranked else None, "top3_share": top3 / ranked if ranked else None,
            "unranked": len(rows) - ranked}  # fmt: skip


def candidate_line(shares: dict) -> str:
    """`candidate_shares` as a sentence, for the Team and Export pages."""
    if not shares["ranked"]:
        return "No fix yet: the share of fixes that took the suggestion shows once labels are changed."
    line = (f"The suggestion was taken for {100 * shares['suggestion_share']:.0f}% of fixes, the top 3 for "
            f"{100 * shares['top3_share']:.0f}% (of {shares['ranked']:,} fixes")  # fmt: skip
    if shares["unranked"]:
        line += f"; {shares['unranked']:,} older ones recorded no candidate"
    return line + ")."
