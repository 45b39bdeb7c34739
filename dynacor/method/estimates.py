"""How good is the flag list, without ground truth: noise rate, precision and recall, each with an
interval, and the estimated precision-recall curve of the score (derivation: docs/estimates.md).

Both estimates read the classifier's softmax over an early window of epochs, before it has
memorised the wrong labels, so its predictions there behave like held-out ones:

- noise rate: confident learning's calibrated confident joint (Northcutt et al., 2021) on the
  softmax averaged over the ``noise`` window, ``eta = 1 - trace(joint)``;
- recall of a cut: the share of the samples the early classifier confidently puts in another
  class (``off``, from the ``recall`` window) that the cut flags; precision then follows from
  ``flagged x precision = eta x N x recall``.

When the score itself reads the early softmax (the combined detector), the samples the early
classifier calls wrong are the ones it flags most readily, and their recall overstates the
recall of all wrong labels. A second view then joins: the samples whose nearest neighbours in
feature space confidently carry another label, which the score does not read,
and which holds more clean look-alikes (so alone it understates). ``off`` becomes (V, R), recall
the mean of the views' recalls, and each interval spans every view's own value.

Pure functions on numpy arrays. ``R`` rows (the originals the classifier recorded the windows
for, at most ``estimate_rows`` of the N), ``C`` classes.
"""

from __future__ import annotations

import numpy as np

QUANTITIES = ("noise_rate", "precision", "recall")


def window_epochs(window: tuple[float, float], epochs: int) -> tuple[int, int]:
    """The epochs ``[first, stop)`` of a window given as fractions of training, at least one epoch.

    >>> window_epochs((0.07, 0.27), 30)
    (2, 8)
    """
    first = min(epochs - 1, int(round(window[0] * epochs)))
    return first, max(first + 1, min(epochs, int(round(window[1] * epochs))))


def choose_rows(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """The originals the estimates read: all ``n`` up to ``limit``, else ``limit`` drawn at random.

    Returns
    -------
    (R,) int64, sorted, R = min(n, limit)
    """
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, limit, replace=False)).astype(np.int64)


def open_windows(windows: tuple[tuple[int, int], ...] | list[tuple[int, int]], epoch: int) -> list[int]:
    """Indices of the ``[first, stop)`` windows that ``epoch`` (from 0) falls in."""
    return [w for w, (first, stop) in enumerate(windows) if first <= epoch < stop]


def window_means(sums: np.ndarray, windows: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> np.ndarray:
    """(W, R, C) softmax summed over each window's epochs -> averaged (divided by its length)."""
    lengths = np.array([stop - first for first, stop in windows], dtype=np.float32)
    return sums / lengths[:, None, None]


def _thresholds(given: np.ndarray, self_prob: np.ndarray, weights: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) each class's mean probability of itself over the samples given that class."""
    total = np.bincount(given, weights=weights, minlength=num_classes)
    summed = np.bincount(given, weights=weights * self_prob, minlength=num_classes)
    return np.where(total > 0, summed / np.maximum(total, 1e-12), 1.0)


def confident_labels(given: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Confident learning's guess of each sample's true class, -1 where no class is confident.

    A class ``j`` is confident for a sample when its probability reaches the class's threshold
    (the mean ``p_j`` over the samples given ``j``); among confident classes the most probable
    wins.

    Parameters
    ----------
    given : (R,) int64 given labels
    probs : (R, C) float softmax (rows sum to 1)
    weights : (R,) float or None, sample weights of the thresholds (a bootstrap's counts)

    Returns
    -------
    (R,) int64 in [-1, C)
    """
    r, c = probs.shape
    weights = np.ones(r) if weights is None else weights
    thresholds = _thresholds(given, probs[np.arange(r), given], weights, c)
    confident = probs >= thresholds[None, :] - 1e-6  # cleanlab's tolerance
    guess = np.where(confident, probs, -1.0).argmax(axis=1)
    return np.where(confident.any(axis=1), guess, -1)


def noise_rate_from_probs(given: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Confident learning's noise rate: ``1 - trace`` of the calibrated confident joint.

    The confident joint counts (given, guessed) pairs of the confident samples; each given-label
    row is rescaled to the number of samples given that label (the unconfident ones are assumed
    to split like the confident ones), as cleanlab's ``estimate_joint`` does.

    Parameters
    ----------
    given : (R,) int64; probs : (R, C); weights : (R,) or None

    Returns
    -------
    float in [0, 1]
    """
    r, c = probs.shape
    weights = np.ones(r) if weights is None else weights
    guess = confident_labels(given, probs, weights)
    sure = guess >= 0
    joint = np.bincount(given[sure] * c + guess[sure], weights=weights[sure], minlength=c * c).reshape(c, c)
    # cleanlab keeps at least one correctly labelled sample per class on the diagonal
    diagonal = np.diag(joint).copy()
    joint[np.diag_indices(c)] = np.where(diagonal == 0, 1.0, diagonal)
    given_counts = np.bincount(given, weights=weights, minlength=c)
    row_sums = joint.sum(axis=1)
    calibrated = joint * (given_counts / np.maximum(row_sums, 1e-12))[:, None]
    total = calibrated.sum()
    return float(1.0 - np.trace(calibrated) / total) if total > 0 else float("nan")


def off_diagonal(given: np.ndarray, probs_recall: np.ndarray) -> np.ndarray:
    """(R,) bool: the early classifier confidently puts the sample in a class other than its given one.

    Any (R, C) distribution over the classes works: the second view of the recall passes the
    shares of the labels among each sample's nearest neighbours (`dynacor.method.knn.label_votes`).
    """
    guess = confident_labels(np.asarray(given, dtype=np.int64), np.asarray(probs_recall, dtype=np.float64))
    return (guess >= 0) & (guess != given)


def noise_rate_draws(given: np.ndarray, probs_noise: np.ndarray, rng: np.random.Generator, bootstrap: int = 200) -> tuple[float, np.ndarray]:
    """The noise rate and its bootstrap draws (rows resampled with replacement).

    Parameters
    ----------
    given : (R,) int64; probs_noise : (R, C) softmax over the noise window
    rng : draws the resamples; bootstrap : how many (B)

    Returns
    -------
    eta, and (B,) float64 draws
    """
    given = np.asarray(given, dtype=np.int64)
    probs_noise = np.asarray(probs_noise, dtype=np.float64)
    r = len(given)
    eta = noise_rate_from_probs(given, probs_noise)
    draws = [noise_rate_from_probs(given, probs_noise, rng.multinomial(r, np.full(r, 1.0 / r)).astype(np.float64))
             for _ in range(bootstrap)]  # fmt: skip
    return eta, np.asarray(draws, dtype=np.float64)


def views_of(off: np.ndarray) -> np.ndarray:
    """``off`` as (V, R) bool: one view (R,) or several (V, R)."""
    return np.atleast_2d(np.asarray(off, dtype=bool))


def view_recalls(flagged: np.ndarray, off: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(V,) each view's recall of the cut: the weighted share of its ``off`` rows that are flagged.

    flagged : (R,) bool; off : (V, R) bool; weights : (R,) (a bootstrap's counts). NaN for a view
    with no weight on its off rows.
    """
    off_total = off.astype(np.float64) @ weights
    hits = (off & flagged[None, :]).astype(np.float64) @ weights
    return np.where(off_total > 0, hits / np.maximum(off_total, 1e-12), np.nan)


def quality_at_cut(
    q_noisy: np.ndarray,
    off: np.ndarray,
    eta: float,
    eta_draws: np.ndarray,
    threshold: float,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    margin: float = 0.08,
) -> dict:
    """Estimated noise rate, precision and recall of the cut ``q_noisy > threshold``, with intervals.

    Recall is the share of the ``off`` rows the cut flags (the mean over the views when there are
    several); precision follows from ``flagged share x precision = eta x recall``. Each interval is
    the bootstrap percentile interval (rows resampled; the noise rate's draws paired by index),
    stretched to hold every view's own value, and widened by ``margin``.

    Parameters
    ----------
    q_noisy : (R,) scores of the rows
    off : (R,) bool from `off_diagonal`, or (V, R) bool, V views of which rows are probably wrong
    eta, eta_draws : from `noise_rate_draws` (B draws: B resamples here too)
    threshold : the cut; rng : draws the resamples
    confidence : of the percentile interval
    margin : added on both sides: the systematic error the estimates showed on the tuning half of
        the dev benchmark (docs/benchmarks.md), which resampling cannot see

    Returns
    -------
    ``{"noise_rate"|"precision"|"recall": {"value", "low", "high"}, "rows", "threshold",
    "confidence", "margin", "bootstrap", "views"}``; fractions (NaN when undefined)
    """
    q_noisy = np.asarray(q_noisy, dtype=np.float64)
    off = views_of(off)
    flagged = q_noisy > threshold
    r = len(q_noisy)

    def point(weights: np.ndarray, eta_value: float) -> np.ndarray:
        """(3, V + 1): noise rate, precision, recall; of the views' mean, then of each view."""
        recalls = view_recalls(flagged, off, weights)
        recalls = np.r_[np.nanmean(recalls) if np.isfinite(recalls).any() else np.nan, recalls]
        share = float(weights[flagged].sum()) / float(weights.sum())
        precision = np.minimum(1.0, eta_value * recalls / share) if share > 0 else np.full_like(recalls, np.nan)
        return np.stack([np.full_like(recalls, eta_value), precision, recalls])

    values = point(np.ones(r), eta)
    bootstrap = len(eta_draws)
    draws = np.array([point(rng.multinomial(r, np.full(r, 1.0 / r)).astype(np.float64), float(e))[:, 0]
                      for e in eta_draws]).reshape(bootstrap, 3)  # fmt: skip
    tail = (1.0 - confidence) / 2.0
    out: dict = {"rows": r, "threshold": float(threshold), "confidence": confidence, "margin": margin,
                 "bootstrap": bootstrap, "views": len(off)}  # fmt: skip
    for k, name in enumerate(QUANTITIES):
        value = float(values[k, 0])
        finite = draws[:, k][np.isfinite(draws[:, k])]
        low, high = np.quantile(finite, [tail, 1.0 - tail]) if len(finite) else (value, value)
        own = values[k][np.isfinite(values[k])]
        low, high = (min(low, own.min()), max(high, own.max())) if len(own) else (low, high)
        out[name] = {"value": value, "low": float(np.clip(low - margin, 0.0, 1.0)),
                     "high": float(np.clip(high + margin, 0.0, 1.0))}  # fmt: skip
    return out


def systematic_margin(originals: int, num_classes: int, floor: float, scale: float) -> float:
    """What to add to both sides of each bootstrap interval for the error resampling cannot see.

    The estimates trust the early classifier's confident predictions. Trained on few samples per
    class it is still wrong about many clean ones: they land in ``off`` and in the confident
    joint, so the noise rate comes out high and the recall low (tuning half, 400 samples of 10
    classes: recall 30 points under the truth on average). Measured on the tuning half at 40 to
    400 samples per class, the error the bootstrap leaves uncovered falls like one over the square
    root of the samples per class (docs/estimates.md, "Small data"), down to ``floor``, the
    allowance measured at 500 per class.

    Parameters
    ----------
    originals : N, the samples the classifier trained on; num_classes : C
    floor : the smallest margin (the largest error at the tuning half's full size)
    scale : the margin at one sample per class: ``scale / sqrt(N / C)``

    Returns
    -------
    the margin, a fraction

    >>> round(systematic_margin(400, 10, 0.08, 1.9), 3), systematic_margin(50_000, 10, 0.08, 1.9)
    (0.3, 0.08)
    """
    per_class = originals / max(num_classes, 1)
    return float(max(floor, scale / np.sqrt(max(per_class, 1.0))))


def withheld_warning(originals: int, num_classes: int, margin: float, largest: float) -> str:
    """Why a run shows no self-estimates: the data is too small for them to say anything."""
    return (f"no self-estimates of the noise rate, precision and recall: with {originals / max(num_classes, 1):.0f} "
            f"samples per class the early classifier is still wrong about many clean samples, and the estimates "
            f"can be off by {100 * margin:.0f} points (more than the {100 * largest:.0f} a run shows); the flags "
            "themselves are unaffected. Review a few dozen flagged samples to measure their precision "
            "(docs/estimates.md, 'Small data')")  # fmt: skip


def estimated_curve(q_noisy: np.ndarray, off: np.ndarray, eta: float, points: int = 200) -> dict:
    """Estimated precision and recall of every cut ``q_noisy > t``, on at most ``points`` cuts.

    Parameters
    ----------
    q_noisy : (R,); off : (R,) bool from `off_diagonal`, or (V, R) bool (recall: the views' mean,
        as in `quality_at_cut`); eta : the estimated noise rate
    points : how many cuts to keep (evenly spaced in the number flagged)

    Returns
    -------
    ``{"threshold", "flagged_share", "precision", "recall"}``: lists of equal length, thresholds
    decreasing (more flagged along the list); ``flagged_share`` is the fraction of rows above;
    and ``noise_rate``
    """
    q_noisy = np.asarray(q_noisy, dtype=np.float64)
    off = views_of(off)
    order = np.argsort(-q_noisy, kind="stable")
    r = len(order)
    found = np.cumsum(off[:, order], axis=1)
    # one cut per distinct score: ties are flagged together
    last_of_tie = np.r_[q_noisy[order][1:] != q_noisy[order][:-1], True]
    ends = np.flatnonzero(last_of_tie)
    if len(ends) > points:
        ends = ends[np.unique(np.linspace(0, len(ends) - 1, points).round().astype(int))]
    count = ends + 1
    seen = off.sum(axis=1) > 0
    recall = (found[seen][:, ends] / off[seen].sum(axis=1, keepdims=True)).mean(axis=0) if seen.any() \
        else np.zeros(len(ends))
    precision = np.minimum(1.0, eta * recall * r / count)
    # the cut flags q > t: t is the next lower score (or just below the lowest)
    below = np.r_[q_noisy[order][1:], q_noisy[order][-1] - 1e-6]
    return {"threshold": below[ends].tolist(), "flagged_share": (count / r).tolist(),
            "precision": precision.tolist(), "recall": recall.tolist(), "noise_rate": float(eta)}  # fmt: skip


def threshold_for_target(curve: dict, target_precision: float | None = None, target_recall: float | None = None) -> tuple[float, str | None]:
    """The cut that meets a target on the estimated curve.

    Precision: the cut flagging the most samples whose estimated precision is at least the
    target. Recall: the cut flagging the fewest samples whose estimated recall reaches it.

    Parameters
    ----------
    curve : from `estimated_curve`
    target_precision, target_recall : fractions in (0, 1]; exactly one is given

    Returns
    -------
    threshold, and None or a warning when no cut meets the target (the closest one is used)
    """
    if (target_precision is None) == (target_recall is None):
        raise ValueError("give exactly one of target_precision and target_recall")
    thresholds = np.asarray(curve["threshold"])
    if target_precision is not None:
        precision = np.asarray(curve["precision"])
        ok = np.flatnonzero(precision >= target_precision)
        if len(ok):
            return float(thresholds[ok[-1]]), None
        best = int(np.nanargmax(precision))
        return float(thresholds[best]), (f"no cut reaches an estimated precision of {100 * target_precision:.0f}%: "
                                         f"the highest is {100 * precision[best]:.0f}%, which was used")  # fmt: skip
    recall = np.asarray(curve["recall"])
    ok = np.flatnonzero(recall >= target_recall)
    if len(ok):
        return float(thresholds[ok[0]]), None
    return float(thresholds[-1]), (f"no cut reaches an estimated recall of {100 * target_recall:.0f}%: "
                                   "every sample is flagged")  # fmt: skip


def low_precision_warning(estimates: dict, floor: float) -> str | None:
    """A warning when the estimated precision of the cut is below ``floor`` (a fraction).

    Either most flags are false alarms, or the estimates missed the errors: a classifier that
    learns the wrong labels before the early windows (near-duplicates repeating a wrong label)
    makes the noise rate, and the precision with it, come out near zero (docs/estimates.md).

    Parameters
    ----------
    estimates : from `quality_at_cut`
    floor : the precision below which to warn

    Returns
    -------
    None, or the message for the user
    """
    precision = float(estimates["precision"]["value"])
    if not np.isfinite(precision) or precision >= floor:
        return None
    eta = float(estimates["noise_rate"]["value"])
    return (f"the self-estimates put the flags' precision at {100 * precision:.0f}% (noise rate {100 * eta:.0f}%): "
            "either most flags are false alarms, or the classifier learned the wrong labels before the estimates' "
            "window (many near-duplicates sharing a wrong label do this) and the estimates undercount them; "
            "see docs/estimates.md, 'Repeated wrong labels'")  # fmt: skip
