"""Which combination of DynaCor's flags with class-pair counting on its own early softmax leads?
(issue 23, item 3; tuning half only)

    python benchmarks/studies/combined_study.py [--half tune] [--seeds 0,1] [--out FILE.jsonl]

One DynaCor run (defaults) per setting and seed gives everything compared, with no extra training:
its flags (q > 0.5), its scores, and the softmax of every original averaged over the self-estimates'
two early windows (``noise``: epochs 2-7 of 30; ``recall``: 0-4), where the head has not yet
memorised the wrong labels. On each window's softmax, cleanlab's `find_label_issues` with three
filters (``prune_by_noise_rate``, its default; ``both``; ``confident_learning``) gives "CL on the
early softmax"; then the union and the intersection with DynaCor's flags, and a rank sum of
DynaCor's score with the early self-confidence (1 - p_given) cut at DynaCor's count, CL's count
and the union's count. Prints one JSON line per run and the mean F1 (%) per setting.
"""

from __future__ import annotations

import numpy as np
from cleanlab.filter import find_label_issues
from flag_grid import early_softmax, main, top

FILTERS = ("prune_by_noise_rate", "both", "confident_learning")


def ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values, kind="stable"), kind="stable")


def variants(flagged: np.ndarray, q_noisy: np.ndarray, given: np.ndarray, window_probs: np.ndarray) -> dict[str, np.ndarray]:
    """Every compared flag set, by name. window_probs (2, N, C): the noise and recall windows."""
    out = {"dynacor": flagged}
    for probs, window in zip(window_probs, ("noise", "recall"), strict=True):
        probs = probs / probs.sum(axis=1, keepdims=True)
        for name in FILTERS:
            cl = find_label_issues(given, probs, filter_by=name)
            out[f"cl on {window} window ({name})"] = cl
            out[f"dynacor or cl ({window}, {name})"] = cl | flagged
            out[f"dynacor and cl ({window}, {name})"] = cl & flagged
        summed = ranks(q_noisy) + ranks(1.0 - probs[np.arange(len(given)), given])
        default_cl = out[f"cl on {window} window (prune_by_noise_rate)"]
        for at, count in (("dynacor's", flagged.sum()), ("cl's", default_cl.sum()), ("the union's", (default_cl | flagged).sum())):
            out[f"rank sum ({window}) at {at} count"] = top(summed.astype(np.float64), int(count))
    return out


def flag_sets(data, given: np.ndarray, result, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    window_probs = np.stack([early_softmax(result, 0), early_softmax(result, 1)])
    return variants(result.flagged, result.q_noisy, given, window_probs), {}


if __name__ == "__main__":
    main(__doc__, flag_sets, seeds="0,1")
