"""The combined detector: DynaCor's cluster score with two views of the labels that see the data
before anything memorises it, cut per given class at class-pair counts (issue 23).

- ``q_noisy``: DynaCor's probability of the noisy cluster (the encoder, `dynacor.method.clustering`);
- the probe (`dynacor.method.probe`): a cross-fitted linear model's normalised margin (``probe_c``
  = 1e-4, more regularised than confident learning's own 3e-4);
- the early softmax: the head's softmax averaged over its noise window (epochs 2-7 of 30), before
  it memorises the wrong labels, its normalised margin.

Each is turned into ranks and the ranks are summed (no scale to tune); within each given class
the top ``count`` are flagged, ``count`` being cleanlab's calibrated class-pair count (Northcutt et
al., 2021) on the mean of the probe's and the early probabilities. Chosen on the dev file's tuning
half (`benchmarks/studies/probe_study.py`, `rank_sum_study.py`, docs/studies/combined.md): 75.3
average F1 against 70.9 for DynaCor's clusters alone and 72.3 for tuned confident learning. Without the probe (no
features: ``--dynamics``, a Recorder) the rank sum and the counts use the early softmax alone
(73.5 there).

`combined_score` returns one score per original with the cut at 0.5, so the cut, the targets, the
self-estimates and the review queue treat it as they treat a cluster probability.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

COMBINE_CHOICES = ("probe+early", "early", "none")


def normalised_margin(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(N,) the best other class's probability minus the given class's: higher = more likely wrong.

    probs : (N, C) class probabilities; given : (N,) int labels
    """
    rows = np.arange(len(given))
    other = np.array(probs, dtype=np.float64)
    own = other[rows, given].copy()
    other[rows, given] = -np.inf
    return other.max(axis=1) - own


def class_counts(probs: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) int64: cleanlab's calibrated count of wrong labels among each given class.

    The off-diagonal mass of each row of the calibrated confident joint
    (`cleanlab.count.calibrate_confident_joint`), rounded, as `cleanlab.filter.find_label_issues`
    counts per class for ``prune_by_noise_rate``. probs : (N, C); given : (N,) int.
    """
    from cleanlab.count import calibrate_confident_joint, compute_confident_joint

    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    present = np.bincount(given, minlength=num_classes) > 0
    counts = np.zeros(num_classes, dtype=np.int64)
    if present.sum() < 2:  # cleanlab needs two classes to count pairs
        return counts
    joint = calibrate_confident_joint(compute_confident_joint(given, probs), given)
    counts[: joint.shape[0]] = np.rint(joint.sum(axis=1) - np.diag(joint)).astype(np.int64)
    return np.where(present, counts, 0)


def scores_at_counts(summed: np.ndarray, given: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(N,) float in [0, 1], the cut at 0.5: within each given class j exactly its top
    ``counts[j]`` of ``summed`` (N,) in (0, 1] score above 0.5 (fewer only on a tie at the edge).

    ``0.5 + (summed - t_j) / 2``, where ``t_j`` lies between class j's ``counts[j]``-th and next
    score: monotone within a class; across classes, how far each sample is above or below its own
    class's cut.
    """
    score = np.empty(len(summed), dtype=np.float64)
    for j, count in enumerate(counts):
        members = np.flatnonzero(given == j)
        if len(members) == 0:
            continue
        ordered = np.sort(summed[members])[::-1]
        count = int(min(max(count, 0), len(members)))
        if count == 0:
            edge = ordered[0] + 1e-9
        elif count == len(members):
            edge = ordered[-1] - 1e-9
        else:
            edge = 0.5 * (ordered[count - 1] + ordered[count])
        score[members] = 0.5 + 0.5 * (summed[members] - edge)
    return np.clip(score, 0.0, 1.0)


def combined_score(
    q_noisy: np.ndarray, given: np.ndarray, num_classes: int, early: np.ndarray, probe: np.ndarray | None = None,
    *, cap_at_clusters: bool = False,
) -> np.ndarray:
    """The combined detector's score (N,) float in [0, 1]; flagged = score > 0.5.

    Parameters
    ----------
    q_noisy : (N,) DynaCor's noisy-cluster probability
    given : (N,) int given labels
    num_classes : C
    early : (N, C) the early softmax (the noise window)
    probe : (N, C) the cross-fitted probe's probabilities, or None (the early softmax alone)
    cap_at_clusters : flag no more of a class than DynaCor's clusters do (``q_noisy > 0.5``). On
        few samples per class the early classifier is wrong about many clean samples and the
        class-pair counts overshoot (tuning half, 40 per class: 43% counted against 26% wrong;
        F1 60.0 uncapped, 63.5 capped, 62.3 for the clusters alone); the pipeline caps where it
        withholds the self-estimates for the same reason.
    """
    early = np.asarray(early, dtype=np.float64)
    early = early / early.sum(axis=1, keepdims=True)
    parts = [rankdata(q_noisy), rankdata(normalised_margin(early, given))]
    counted = early
    if probe is not None:
        parts.append(rankdata(normalised_margin(probe, given)))
        counted = 0.5 * (early + np.asarray(probe, dtype=np.float64))
    summed = np.sum(parts, axis=0) / (len(parts) * len(given))
    counts = class_counts(counted, given, num_classes)
    if cap_at_clusters:
        counts = np.minimum(counts, np.bincount(given[np.asarray(q_noisy) > 0.5], minlength=num_classes))
    return scores_at_counts(summed, given, counts)


def describe_detector(combine: str, capped: bool = False) -> str:
    """What run.json's ``info["detector"]`` says the flags came from (``capped``: the class counts
    capped at the clusters', `combined_score`)."""
    cap = "; no class flagged more than DynaCor's clusters flag (few samples per class)" if capped else ""
    if combine == "probe+early":
        return ("combined: ranks of DynaCor's cluster score, a cross-fitted linear probe's and the early softmax's "
                "normalised margins, summed; cut per given class at cleanlab's counts" + cap)  # fmt: skip
    if combine == "early":
        return ("combined: ranks of DynaCor's cluster score and the early softmax's normalised margin, summed; "
                "cut per given class at cleanlab's counts on the early softmax" + cap)  # fmt: skip
    return "dynacor: the noisy cluster's probability, cut at 0.5"
