"""``dynacor detect --method aum|cl|avg-gmm|simifeat|cores``: a baseline written as a run directory
with the same contract as DynaCor's (samples.csv columns, run.json, status)."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import numpy as np

from dynacor.errors import DynacorError
from dynacor.method.config import DynaCorConfig
from dynacor.method.dynamics import margin_signs
from dynacor.method.featureset import FeatureSet
from dynacor.method.knn import label_votes, nearest_neighbours
from dynacor.method.metrics import detection_metrics
from dynacor.runs import store as runstore


def knn_suggestions(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A label suggestion for every sample without training: the vote of its k nearest neighbours.

    Parameters
    ----------
    features : (N, D); labels : (N,) given labels; num_classes : C

    Returns
    -------
    suggested : (N,) int64, the most voted class; share : (N,) float, the fraction of votes it got
    """
    neighbours, _ = nearest_neighbours(features, k, metric="cosine")
    votes = label_votes(neighbours, labels, num_classes)
    suggested = votes.argmax(axis=1)
    return suggested.astype(np.int64), votes[np.arange(len(labels)), suggested]


def baseline_frame(data: FeatureSet, given: np.ndarray, flagged: np.ndarray, score: np.ndarray):
    """The per-sample table of a baseline, with the columns of `dynacor.method.pipeline.Result.samples_frame`."""
    import pandas as pd

    suggested, share = knn_suggestions(np.asarray(data.features, np.float32), given, data.num_classes)
    frame = pd.DataFrame({
        "index": np.arange(len(given)), "id": data.sample_ids(), "given_label": given,
        "suggested_label": suggested, "suggested_prob": share.round(6),
        "noisy_score": np.asarray(score, np.float64).round(6), "flagged": np.asarray(flagged).astype(np.int8),
        "cluster": np.where(flagged, "noisy", "clean"),
    })  # fmt: skip
    if data.class_names is not None:
        names = np.asarray(data.class_names, dtype=object)
        frame["given_name"], frame["suggested_name"] = names[given], names[suggested]
    if data.clean_labels is not None:
        frame["clean_label"] = data.clean_labels
        frame["is_noisy"] = (data.clean_labels != given).astype(np.int8)
    if data.paths is not None:
        frame["path"] = data.paths
    return frame


def run_baseline(method: str, loader, source: dict, config: DynaCorConfig, out: Path, overwrite: bool,
                 quiet: bool = False) -> int:  # fmt: skip
    """Run ``method`` and write ``out``; returns the CLI's exit code."""
    from dynacor.runs.bench import run_method

    runstore.create_run(out, config.to_dict(), {**source, "method": method}, overwrite=overwrite)
    try:
        data = loader(lambda event: None, lambda: False)
        flagged, score, seconds, extra = run_method(method, data, config, config.seed)
        given = np.asarray(extra.get("given_labels", data.labels))
        metrics = None
        if data.clean_labels is not None:
            metrics = detection_metrics(flagged, data.clean_labels != given, score)
        margins = extra.get("margins")
        summary = f"{method}: {len(given)} samples, {int(np.sum(flagged))} flagged"
        if metrics is not None:
            summary += f", F1 {100 * metrics['f1']:.1f} (P {100 * metrics['precision']:.1f}, R {100 * metrics['recall']:.1f})"
        summary += f", {seconds:.1f} s"
        runstore.write_table_result(
            out, baseline_frame(data, given, flagged, score),
            {"method": method, "config": config.to_dict(), "source": {**data.source, "method": method},
             "class_names": data.class_names, "chosen_epoch": None, "timings": {"total": seconds},
             "metrics": metrics, "summary": summary, "num_samples": len(given), "num_flagged": int(np.sum(flagged))},
            None if margins is None else margin_signs(np.asarray(margins)),
        )  # fmt: skip
    except DynacorError as exc:
        runstore.mark_failed(out, str(exc), traceback.format_exc())
        raise
    except Exception as exc:
        runstore.mark_failed(out, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        print(f"dynacor: error: {type(exc).__name__}: {exc}; details in {out / 'error.txt'}", file=sys.stderr)
        return 1
    print(f"dynacor: {summary} -> {out}")
    return 0
