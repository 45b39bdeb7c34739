"""Every default of a detection run lives here, and is saved with each run.

The defaults are the ones that meet the project's quality and speed goals on the dev benchmark
(see docs/benchmarks.md); where they differ from the paper (METHOD.md), the field's comment says why.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

SIGNALS = ("sign", "margin", "prob")
CLASSIFIERS = ("mlp", "scratch-cnn", "scratch-resnet18", "scratch-resnet34")
RECORD_MODES = ("train", "eval")
SELECTIONS = ("validation", "last", "init")
VAL_ORIGINALS = ("all", "paired")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Fields of earlier versions that a saved config may still hold; read and ignored.
RETIRED = ("late_epochs",)


@dataclass
class DynaCorConfig:
    """Settings of one DynaCor run (engine only: where the features come from is the source's job).

    Parameters mirror METHOD.md; the names say which stage they belong to.
    """

    seed: int = 0
    device: str = "auto"
    num_threads: int = 0  # 0: one per available core, at most 8

    # Synthetic noise for benchmarking, applied to `clean_labels`: "sym:0.6", "asym:0.3", "inst:0.4".
    noise: str | None = None

    # 1. Corrupted copies.
    gamma: float = 0.1

    # 2. Classifier and dynamics recording. "mlp": a head on frozen features (paper Table 5);
    # "scratch-cnn" / "scratch-resnet18" / "scratch-resnet34": a network trained from scratch on
    # the images (the features are then the flattened images, see `dynacor.data.spec`); a run of
    # the scratch backbone gets the paper's from-scratch settings (`dynacor.runs.request`).
    classifier: str = "mlp"
    epochs: int = 30
    lr: float = 0.02  # authors' preset; paper 0.1 memorises the noise within a few epochs on 10k samples
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    hidden: int = 512
    schedule: str = "cosine"  # "cosine", "multistep" (from-scratch runs, see dynacor.runs.request) or "constant"
    # "train": margins of each mini-batch before its update (authors' code, free);
    # "eval": a separate forward pass over all samples after each epoch (one more pass per epoch).
    record: str = "train"
    # The reviewer's candidate labels (dynacor.method.suggest): the most likely other classes in the
    # softmax averaged over this early window of training (fractions of the epochs), before the
    # classifier memorises the wrong labels. Chosen on the tuning half (docs/benchmarks.md "Suggestions").
    suggest_window: tuple[float, float] = (0.07, 0.27)
    # Where features exist, a flagged sample's candidates also weigh the labels of its nearest
    # unflagged originals (cosine): score = early probability + weight x share of their votes.
    # For the flagged samples the reviewer starts from (`explain_limit`); 0 neighbours: off.
    suggest_neighbours: int = 20
    suggest_vote_weight: float = 0.25

    # 3-4. Encoder and clustering.
    encoder_epochs: int = 10
    encoder_lr: float = 1e-5
    encoder_weight_decay: float = 5e-4
    encoder_batch_size: int = 1024
    rep_dim: int = 512
    alpha: float = 0.5
    signal: str = "sign"  # what the encoder reads: sign of the margin (paper), raw margin, probability
    # Ours, not the paper's (docs/method.md): closed-form
    # centroid updates after the paper's initialisation, and several encoder initialisations of
    # which the one with the largest validation metric is kept. 0 and 1 give the paper exactly.
    refine_steps: int = 20
    restarts: int = 1
    cluster_loss: bool = True  # ablation switches (paper Table 4)
    align_loss: bool = True

    # 5. Model selection.
    selection: str = "validation"  # "validation" metric (paper), "last" epoch, or "init" (untrained)
    val_originals: str = "paired"
    # Distance in the scores and V: "cosine" (paper) or "euclidean" (authors' code at evaluation).
    eval_distance: str = "cosine"  # originals in V: "paired" (those with a copy, authors' code) or "all"

    # 6. For the reviewer: each flagged sample's nearest neighbours in feature space (0: none).
    explain_neighbours: int = 8
    # ...for the most confidently noisy flagged samples only: the search costs this many x N
    # dot products, which must stay linear in N at a million samples (5,000 x 1M: a few minutes
    # on 2 cores); a reviewer starts from the top of the queue.
    explain_limit: int = 5000

    # 7. Self-estimates of the noise rate, precision and recall (docs/estimates.md): read the
    # classifier's softmax over early windows of training (fractions of the epochs), before it
    # memorises the wrong labels. Windows chosen on the tuning half of the dev file (docs/benchmarks.md).
    estimate_rows: int = 100_000  # originals the estimates read (a random subset above this; 0: none)
    noise_window: tuple[float, float] = (0.07, 0.27)  # epochs 2-7 of 30; the combined score (8.) reads it too
    recall_window: tuple[float, float] = (0.0, 0.17)  # epochs 0-4 of 30
    estimate_bootstrap: int = 200  # resamples for the sampling part of each interval
    # When the score reads the early softmax (combine, 8.), the recall has a second view: the rows
    # whose estimate_neighbours nearest originals in feature space confidently carry another label,
    # queried for at most estimate_neighbour_rows of the rows (the search costs that many x N dot
    # products). The estimates take the mean of both views (docs/estimates.md); 0 neighbours: off.
    # 2,500 rows estimate as well as 5,000 on the tuning half (mean errors within 0.4 points, every
    # interval holding the truth in both) at half the search (0.6 s on the dev file).
    estimate_neighbours: int = 20
    estimate_neighbour_rows: int = 2500
    # Added to both sides of each interval for the error resampling cannot see: the largest error of
    # the estimates on the tuning half (7.9 points) at its 500 samples per class, and on fewer
    # samples per class scale / sqrt(N / C) (estimates.systematic_margin; fitted on the tuning half
    # at 40-400 per class). Above estimate_withhold the run shows no estimates, with a warning.
    estimate_margin: float = 0.08
    estimate_margin_scale: float = 1.9
    estimate_withhold: float = 0.2
    # Below this estimated precision at the cut the run warns: either most flags are false alarms or
    # the classifier learned the wrong labels before the windows (many near-duplicates sharing a
    # wrong label: docs/estimates.md). The dev settings and annotators estimate 37-93%; the 1M
    # synthetic scale rows 4%.
    estimate_precision_floor: float = 0.25

    # 8. The score the cut reads (dynacor.method.combine, issue 23). "probe+early": the ranks of
    # DynaCor's cluster score, a cross-fitted linear probe's normalised margin (probe_c, probe_folds:
    # confident learning's tuned logistic regression) and the early softmax's, summed, each given
    # class cut at cleanlab's class-pair counts; "early": without the probe (what runs without
    # features fall back to); "none": DynaCor's cluster probability alone, the paper's score.
    # Chosen on the dev file's tuning half (docs/studies/combined.md). probe_c is stronger than
    # confident learning's own 3e-4: as one part of three a smoother probe ranks better (tuning
    # half: 75.3 against 75.1, every seed; 1e-4 to 2e-4 alike) and converges sooner.
    combine: str = "probe+early"
    probe_c: float = 1e-4
    probe_folds: int = 5

    # 9. The cut: flagged = q_noisy > threshold. The paper's 0.5 unless one target is set, then
    # the cut whose estimated precision (or recall) meets it.
    target_precision: float | None = None
    target_recall: float | None = None

    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DynaCorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        # Runs saved before the suggestions read an early window named the late one they read.
        data = {k: v for k, v in data.items() if k not in RETIRED}
        unknown = sorted(set(data) - known)
        if unknown:
            from dynacor.errors import InputError

            raise InputError("config", unknown[0], f"one of {sorted(known)}", repr(unknown[0]))
        for name in ("noise_window", "recall_window", "suggest_window"):
            if isinstance(data.get(name), list):  # JSON has no tuples
                data = {**data, name: tuple(data[name])}
        return cls(**data)

    def replace(self, **changes: Any) -> DynaCorConfig:
        return dataclasses.replace(self, **changes)
