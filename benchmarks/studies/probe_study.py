"""DynaCor combined with CL's cross-fitted probe and class-pair counting (issue 23, item 3; tuning half only)

    python benchmarks/studies/probe_study.py [--half tune] [--seeds 0,1,2] [--out FILE.jsonl]

One DynaCor run (defaults) and one cross-fitted logistic regression (`cross_val_probs`, the tuned
C of `--method cl`) per setting and seed give every compared flag set:

- ``dynacor``, ``cl`` (cleanlab `find_label_issues` on the probe), ``cl-early`` (the same on
  DynaCor's early softmax, the noise window: no extra training);
- unions and majority votes of those flag sets;
- rank sums of DynaCor's score with the probe's normalised margin (best other class's probability
  minus the given one's) and the early softmax's, cut per given class at cleanlab's calibrated
  counts (of the probe, or of the early softmax), or globally at a flag set's size.

Prints one JSON line per run and the mean F1 (%) per setting.
"""

from __future__ import annotations

import time

import numpy as np
from cleanlab.filter import find_label_issues
from flag_grid import early_softmax, main, top
from scipy.stats import rankdata

from dynacor.baselines.confident_learning import cross_val_probs
from dynacor.method.combine import class_counts, normalised_margin


def top_per_class(score: np.ndarray, given: np.ndarray, counts: np.ndarray) -> np.ndarray:
    flagged = np.zeros(len(given), dtype=bool)
    for j, count in enumerate(counts):
        members = np.flatnonzero(given == j)
        flagged[members[np.argsort(-score[members], kind="stable")[: int(count)]]] = True
    return flagged


def variants(dyn: np.ndarray, q_noisy: np.ndarray, given: np.ndarray, probe: np.ndarray, early: np.ndarray) -> dict[str, np.ndarray]:
    early = early / early.sum(axis=1, keepdims=True)
    cl = np.asarray(find_label_issues(given, probe), dtype=bool)
    cl_early = np.asarray(find_label_issues(given, early), dtype=bool)
    r_dyn, r_probe, r_early = (rankdata(v) for v in (q_noisy, normalised_margin(probe, given), normalised_margin(early, given)))
    c = probe.shape[1]
    counts, counts_early = class_counts(probe, given, c), class_counts(early, given, c)
    counts_mixed = class_counts(0.5 * (probe + early), given, c)
    out = {"dynacor": dyn, "cl": cl, "cl-early": cl_early,
           "dynacor | cl-early": dyn | cl_early, "dynacor | cl": dyn | cl,
           "vote 2 of 3 (dynacor, cl, cl-early)": (dyn.astype(int) + cl + cl_early) >= 2,
           "dynacor | (cl & cl-early)": dyn | (cl & cl_early)}  # fmt: skip
    sums = {"rs(dyn, probe)": r_dyn + r_probe, "rs(2 dyn, probe)": 2 * r_dyn + r_probe,
            "rs(dyn, 2 probe)": r_dyn + 2 * r_probe, "rs(dyn, probe, early)": r_dyn + r_probe + r_early,
            "rs(dyn, early)": r_dyn + r_early}  # fmt: skip
    for name, summed in sums.items():
        out[f"{name} @ cl counts"] = top_per_class(summed, given, counts)
        out[f"{name} @ early counts"] = top_per_class(summed, given, counts_early)
        out[f"{name} @ mixed counts"] = top_per_class(summed, given, counts_mixed)
        out[f"{name} @ |dyn|"] = top(summed, int(dyn.sum()))
        out[f"{name} @ |dyn or cl|"] = top(summed, int((dyn | cl).sum()))
    out["rs(dyn, probe) @ cl counts | cl-early"] = out["rs(dyn, probe) @ cl counts"] | cl_early
    out["rs(dyn, probe) @ cl counts | dyn"] = out["rs(dyn, probe) @ cl counts"] | dyn
    return out


def flag_sets(data, given: np.ndarray, result, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    started = time.perf_counter()
    probe = cross_val_probs(data.features, given, data.num_classes, seed=seed)
    seconds = round(time.perf_counter() - started, 1)
    return variants(result.flagged, result.q_noisy, given, probe, early_softmax(result)), {"probe_seconds": seconds}


if __name__ == "__main__":
    main(__doc__, flag_sets, seeds="0,1,2")
