"""Where does tuned confident learning beat DynaCor, and why? (issue 10) A study on the dev file's
tuning half only (`dynacor.runs.bench.split_halves`), never on the half reported.

    python benchmarks/studies/cl_gap_study.py [--seeds 0] [--read-epochs 10,12]

Per setting and seed, F1 (%) of:

- ``dynacor``: the defaults;
- ``read=K``: the same run's dynamics cut to their first K epochs before the encoder and the
  clustering (does the late, memorising part of training blur the clusters?);
- ``cl-early``: cleanlab's ``find_label_issues`` on DynaCor's own early-window softmax (the noise
  window the self-estimates read; no extra training), and ``dynacor or cl-early``, the union of both;
- ``cl``: the `cl` baseline (logistic regression at the tuned C, cross-fitted), and the best F1 any
  single threshold of its self-confidence or of its normalised margin reaches: how much of CL's
  result comes from cleanlab's per class-pair counting (``prune_by_noise_rate``) and not from the
  ranking;
- ``dynacor + cl``: the rank sum of DynaCor's score and CL's normalised margin, cut per given
  class at CL's calibrated joint (an ensemble of the two detectors);
- ``ceiling on signs`` / ``on raw margins``: ORACLE (ground truth): the supervised classifier of
  `dynacor.baselines.ceiling` trained on half of the samples' dynamics (the signs DynaCor reads, or
  the standardised raw margins) with the true flags, its best cut on the other half, beside
  ``cl (same half)`` and ``dynacor (same half)`` on those samples: can any detector that reads
  these dynamics reach tuned CL?
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from dynacor.baselines.ceiling import supervised_ceiling
from dynacor.baselines.confident_learning import cross_val_probs
from dynacor.method.config import DynaCorConfig
from dynacor.method.metrics import detection_metrics
from dynacor.method.pipeline import Dynamics, detect, run
from dynacor.runs.bench import DEFAULT_SETTINGS, f1_by_setting, load_half, setting_labels

ROOT = Path(__file__).resolve().parents[2]


def f1(flagged: np.ndarray, noisy: np.ndarray) -> float:
    return 100.0 * detection_metrics(flagged, noisy)["f1"]


def best_f1(score: np.ndarray, noisy: np.ndarray) -> float:
    """The largest F1 (%) of any cut ``score >= t``."""
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(noisy[order])
    return float((200.0 * hits / (np.arange(1, len(order) + 1) + noisy.sum())).max())


def top_per_class(score: np.ndarray, given: np.ndarray, probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Flag, within each given class, as many samples as confident learning's calibrated joint on
    ``probs`` puts off its diagonal in that row, taking them by ``score`` (highest first)."""
    from cleanlab.count import calibrate_confident_joint, compute_confident_joint

    joint = calibrate_confident_joint(compute_confident_joint(given, probs / probs.sum(axis=1, keepdims=True)), given)
    flagged = np.zeros(len(given), dtype=bool)
    for j in range(num_classes):
        members = np.flatnonzero(given == j)
        count = int(round(joint[j].sum() - joint[j, j]))
        flagged[members[np.argsort(-score[members], kind="stable")[:count]]] = True
    return flagged


def main() -> None:
    from cleanlab.filter import find_label_issues

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--read-epochs", default="10,12")
    args = parser.parse_args()
    settings = DEFAULT_SETTINGS.split(",")
    data, extra = load_half(Path(args.features), settings, "tune")
    table: dict[str, dict[str, list[float]]] = {}
    for setting in settings:
        for seed in (int(s) for s in args.seeds.split(",")):
            given = setting_labels(data, setting, seed, extra)
            noisy = given != data.clean_labels
            config = DynaCorConfig(seed=seed, explain_neighbours=0)
            result = run(config, data.with_labels(given))
            row = {"dynacor": f1(result.flagged, noisy)}
            for k in (int(k) for k in args.read_epochs.split(",")):
                dynamics = Dynamics(margins_all=np.ascontiguousarray(result.margins_all[:, :k]),
                                    copy_pair=result.copy_pair, copy_labels=result.copy_labels, given_labels=given)  # fmt: skip
                row[f"read={k}"] = f1(detect(config.replace(estimate_rows=0), dynamics).flagged, noisy)
            rows = result.estimate_parts["rows"]
            early = result.estimate_parts["window_probs"][0].astype(np.float64)
            cl_early = np.zeros(len(given), dtype=bool)
            cl_early[rows] = find_label_issues(given[rows], early / early.sum(axis=1, keepdims=True))
            row["cl-early"] = f1(cl_early, noisy)
            row["dynacor or cl-early"] = f1(cl_early | result.flagged, noisy)
            row["dynacor ranked, cl-early counts per class"] = f1(
                top_per_class(result.q_noisy[rows], given[rows], early, data.num_classes), noisy[rows])
            probs = cross_val_probs(data.features, given, data.num_classes, seed=seed)
            own = probs[np.arange(len(given)), given]
            cl_flags = np.asarray(find_label_issues(given, probs), dtype=bool)
            row["cl"] = f1(cl_flags, noisy)
            row["cl: best cut of self-confidence"] = best_f1(1.0 - own, noisy)
            row["cl: best cut of normalised margin"] = best_f1(probs.max(axis=1) - own, noisy)
            ensemble = rankdata(result.q_noisy) + rankdata(probs.max(axis=1) - own)
            row["dynacor + cl (rank sum, cl's counts per class)"] = f1(
                top_per_class(ensemble, given, probs, data.num_classes), noisy)
            n = len(given)
            margins = result.margins_all[:n]
            for name, signals in (("signs", result.signs_all[:n]), ("raw margins", (margins - margins.mean()) / margins.std())):
                oracle = supervised_ceiling(signals, noisy, seed=seed)
                row[f"ORACLE ceiling on {name}, best cut (held-out half)"] = best_f1(oracle.score, noisy[oracle.test_index])
            held = oracle.test_index  # both oracles split alike: the split depends only on seed and truth
            row["cl (same held-out half)"] = f1(cl_flags[held], noisy[held])
            row["dynacor (same held-out half)"] = f1(result.flagged[held], noisy[held])
            for name, value in row.items():
                table.setdefault(name, {}).setdefault(setting, []).append(value)
            print(json.dumps({"setting": setting, "seed": seed, **{k: round(v, 2) for k, v in row.items()}}), flush=True)
    print("\n" + f1_by_setting(table, settings, "detector"))


if __name__ == "__main__":
    main()
