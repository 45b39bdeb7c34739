"""One DynaCor run: features in, per-sample noisy scores out. ``run(config, data, on_event) -> Result``."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dynacor.errors import Cancelled
from dynacor.method.classifier import HeadDynamics, train_head
from dynacor.method.clustering import flagged_share_warning
from dynacor.method.combine import combined_score, describe_detector
from dynacor.method.config import DynaCorConfig
from dynacor.method.corruption import make_copies
from dynacor.method.device import pick_device, set_threads
from dynacor.method.dynamics import encoder_input, margin_signs
from dynacor.method.encoder import fit_encoder
from dynacor.method.estimates import (
    choose_rows,
    estimated_curve,
    low_precision_warning,
    noise_rate_draws,
    off_diagonal,
    quality_at_cut,
    systematic_margin,
    threshold_for_target,
    window_epochs,
    withheld_warning,
)
from dynacor.method.featureset import FeatureSet
from dynacor.method.knn import label_votes, neighbour_lists, neighbours_of
from dynacor.method.metrics import detection_metrics
from dynacor.method.noise import noise_rate, synthetic_labels
from dynacor.method.probe import cross_fitted_probe
from dynacor.method.suggest import (
    NUM_CANDIDATES,
    SOURCE_EARLY,
    SOURCE_LATE,
    SOURCE_NONE,
    top_candidates,
    with_votes,
)
from dynacor.method.validate import check_config, check_dynamics, check_featureset

EventHandler = Callable[[dict], None]
STAGES = ("prepare", "classifier", "encoder", "report")


@dataclass
class Result:
    """Everything a run produced. Per-sample arrays cover the N originals in input order unless
    they say ``_all`` (S = N + M rows: originals, then the M copies).

    Attributes
    ----------
    ids : (N,) sample ids
    given_labels : (N,) int64, labels the detector judged (after synthetic noise, if any)
    suggested_labels : (N,) int64, the most likely class other than the given one, read before the
        classifier memorises (`dynacor.method.suggest`); -1 where nothing was recorded to read
    suggested_prob : (N,) float32, its probability (NaN where unknown)
    candidates : (N, K) int64, the K most likely other classes, most likely first (the first is
        the suggestion; -1 pads); candidate_probs : (N, K) float32 (NaN pads), the early softmax's,
        or for flagged rows mixed with their neighbours' votes (`dynacor.method.suggest.with_votes`)
    q_noisy : (N,) float32, noisy score: the combined detector's (`dynacor.method.combine`, named in
        ``info["detector"]``), or DynaCor's cluster probability when ``config.combine`` is "none"
    cluster_score : (N,) float32 or None, DynaCor's noisy-cluster probability where ``q_noisy`` is
        the combined score
    flagged : (N,) bool, ``q_noisy > threshold``
    threshold : the cut: 0.5 (the paper's) unless a target precision or recall chose another
    estimates : the self-estimates of the cut (`dynacor.method.estimates.quality_at_cut`:
        ``noise_rate``, ``precision``, ``recall``, each ``{value, low, high}``) and
        ``curve`` (`estimated_curve`), or None when the classifier recorded no early softmax
    estimate_parts : what another cut's estimates need (`dynacor.method.estimates.quality_at_cut`):
        ``rows`` (R,) the originals read, ``off`` (R,) bool, ``eta_draws`` (B,); and
        ``window_probs`` (2, R, C), the early softmax itself, so the run's dynamics can be judged
        again (``dynacor detect --dynamics RUN_DIR``)
    clean_labels : (N,) int64 or None
    copy_pair : (M,) int64, the original of each copy; copy_labels : (M,) int64
    margins_all : (S, E) float32 raw margins; q_noisy_all : (S,); representations_all : (S, K) float16
    classifier_epochs, encoder_epochs : per-epoch logs; chosen_epoch : the encoder state kept
    metrics : detection metrics when clean labels are known, else None
    warnings : what a user must know before trusting the flags
    neighbour_rows : (F,) the flagged originals; neighbours : (F, k) their nearest originals in
        feature space (cosine), for the reviewer; None for dynamics recorded elsewhere
    """

    config: dict[str, Any]
    ids: np.ndarray
    given_labels: np.ndarray
    suggested_labels: np.ndarray
    suggested_prob: np.ndarray
    q_noisy: np.ndarray
    flagged: np.ndarray
    clean_labels: np.ndarray | None
    copy_pair: np.ndarray
    copy_labels: np.ndarray
    margins_all: np.ndarray
    q_noisy_all: np.ndarray
    representations_all: np.ndarray
    classifier_epochs: list[dict]
    encoder_epochs: list[dict]
    chosen_epoch: int
    metrics: dict[str, float] | None
    timings: dict[str, float]
    info: dict[str, Any]
    class_names: list[str] | None = None
    paths: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    neighbour_rows: np.ndarray | None = None
    neighbours: np.ndarray | None = None
    threshold: float = 0.5
    estimates: dict[str, Any] | None = None
    estimate_parts: dict[str, np.ndarray] | None = None
    candidates: np.ndarray | None = None
    candidate_probs: np.ndarray | None = None
    cluster_score: np.ndarray | None = None

    @property
    def num_samples(self) -> int:
        return int(self.q_noisy.shape[0])

    @property
    def signs_all(self) -> np.ndarray:
        """(S, E) int8 signs of the margins: the dynamics the paper's encoder reads."""
        return margin_signs(self.margins_all)

    @property
    def is_copy_all(self) -> np.ndarray:
        return np.arange(self.margins_all.shape[0]) >= self.num_samples

    def samples_frame(self):
        """The per-sample table (pandas DataFrame), one row per original in input order."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "index": np.arange(self.num_samples),
                "id": self.ids,
                "given_label": self.given_labels,
                "suggested_label": self.suggested_labels,
                "suggested_prob": self.suggested_prob.astype(np.float64).round(6),
                "noisy_score": self.q_noisy.astype(np.float64).round(6),
                "flagged": self.flagged.astype(np.int8),
                "cluster": np.where(self.flagged, "noisy", "clean"),
            }
        )
        if self.cluster_score is not None:
            frame["cluster_score"] = self.cluster_score.astype(np.float64).round(6)
        if self.candidates is not None:
            # Parquet keeps lists; the run store writes them to CSV as space-separated text.
            keep = self.candidates >= 0
            frame["candidates"] = [row[k].tolist() for row, k in zip(self.candidates, keep, strict=True)]
            frame["candidate_probs"] = [row[k].astype(np.float64).round(6).tolist()
                                        for row, k in zip(self.candidate_probs, keep, strict=True)]  # fmt: skip
        if self.class_names is not None:
            names = np.asarray([*self.class_names, ""], dtype=object)  # -1 (no suggestion) -> ""
            frame["given_name"] = names[self.given_labels]
            frame["suggested_name"] = names[self.suggested_labels]
        if self.clean_labels is not None:
            frame["clean_label"] = self.clean_labels
            frame["is_noisy"] = (self.clean_labels != self.given_labels).astype(np.int8)
        if self.paths is not None:
            frame["path"] = self.paths
        return frame

    def summary(self) -> str:
        """One line: counts, the cut, chosen epoch, estimates, F1 when known, time."""
        return summary_text(self.num_samples, int(self.flagged.sum()), self.threshold, self.chosen_epoch,
                            len(self.encoder_epochs), self.estimates, self.metrics,
                            self.timings.get("total", float("nan")))  # fmt: skip


def run(
    config: DynaCorConfig,
    data: FeatureSet,
    on_event: EventHandler | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Result:
    """Detect noisy labels in ``data`` with DynaCor.

    Parameters
    ----------
    config : all settings (see `DynaCorConfig`); checked here
    data : features and labels; checked here
    on_event : receives dicts ``{"type": ..., ...}``: ``stage_start``/``stage_end`` (with
        ``stage`` and ``seconds``), ``classifier_epoch``, ``encoder_epoch``, ``info``
    should_stop : polled during training; True cancels the run with `Cancelled`

    Returns
    -------
    Result
    """
    check_config(config)
    data = check_featureset(data, data.source.get("file", "<arrays>"), needs_clean=config.noise is not None)
    emit = _emitter(on_event)
    timings: dict[str, float] = {}
    started_total = time.perf_counter()
    threads = set_threads(config.num_threads)
    device = pick_device(config.device)
    seeds = _seed_streams(config.seed)
    copy_rng = np.random.default_rng(seeds[1])
    head_gen = _torch_generator(seeds[2])
    estimate_rng = np.random.default_rng(seeds[4])

    def stop_check() -> bool:
        return should_stop is not None and should_stop()

    # Prepare: noise, copies, the training set.
    t = _stage_start(emit, "prepare")
    num_classes = data.num_classes
    given = data.labels
    if config.noise is not None:
        given = synthetic_labels(config.noise, data.clean_labels, num_classes, config.seed, features=data.features)
    copies = make_copies(given, num_classes, config.gamma, copy_rng)
    n = data.num_samples
    labels_all = np.concatenate([given, copies.labels])
    realised = noise_rate(given, data.clean_labels) if data.clean_labels is not None else None
    emit("info", num_samples=n, num_copies=copies.size, num_classes=num_classes,
         noise_rate=realised, device=str(device), threads=threads)  # fmt: skip
    timings["prepare"] = _stage_end(emit, "prepare", t)
    if stop_check():
        raise Cancelled("cancelled before training")

    # Classifier and dynamics; the self-estimates read a random subset of the originals when N is large.
    estimate_rows = choose_rows(n, config.estimate_rows, estimate_rng) if config.estimate_rows > 0 else None
    windows = estimate_windows(config, config.epochs)
    suggest_window = window_epochs(config.suggest_window, config.epochs)
    t = _stage_start(emit, "classifier", total=config.epochs)
    on_epoch = lambda e: emit("classifier_epoch", of=config.epochs, **e)  # noqa: E731
    if config.classifier == "mlp":
        test = (data.test_features, data.test_labels) if data.test_features is not None else None
        head = train_head(
            data.features, labels_all, num_classes, features_aug=data.features_aug, copy_pair=copies.pair,
            epochs=config.epochs, lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay, batch_size=config.batch_size, hidden=config.hidden,
            schedule=config.schedule, record=config.record, suggest_window=suggest_window,
            generator=head_gen, device=device, test=test, on_epoch=on_epoch, should_stop=stop_check,
            estimate_rows=estimate_rows, estimate_windows=windows,
        )  # fmt: skip
    else:
        head = _train_from_scratch(config, data, labels_all, copies.pair, head_gen, device, on_epoch, stop_check,
                                   estimate_rows, windows, suggest_window)  # fmt: skip
    timings["classifier"] = _stage_end(emit, "classifier", t)
    probe_probs = None
    if config.combine == "probe+early" and config.classifier == "mlp" and _covers_all(estimate_rows, n) \
            and head.window_probs is not None:
        started = time.perf_counter()
        probe_probs = cross_fitted_probe(data.features, given, num_classes, folds=config.probe_folds,
                                         seed=config.seed, c=config.probe_c, device=device)  # fmt: skip
        timings["probe"] = time.perf_counter() - started
    neighbour_off = None
    if config.combine != "none" and config.classifier == "mlp" and config.estimate_neighbours > 0 \
            and _covers_all(estimate_rows, n) and head.window_probs is not None \
            and not _early_margin(config, n, num_classes)[1]:
        started = time.perf_counter()
        neighbour_off = _neighbour_off(data.features, given, num_classes, config, estimate_rng)
        timings["estimate_neighbours"] = time.perf_counter() - started

    dynamics = Dynamics(
        margins_all=head.margins, prob_given_all=head.prob_given, candidates=head.candidates,
        candidate_probs=head.candidate_probs, suggestion_source=suggestion_source(SOURCE_EARLY, suggest_window),
        copy_pair=copies.pair, copy_labels=copies.labels, given_labels=given, clean_labels=data.clean_labels,
        ids=data.sample_ids(), class_names=data.class_names, paths=data.paths, source=dict(data.source),
        classifier_epochs=head.epochs, estimate_rows=estimate_rows if head.window_probs is not None else None,
        window_probs=head.window_probs, probe_probs=probe_probs, neighbour_off=neighbour_off,
    )  # fmt: skip
    info = {"num_classes": num_classes, "num_epochs": config.epochs, "realised_noise_rate": realised,
            "device": str(device), "threads": threads}  # fmt: skip
    result = _detect(config, dynamics, emit, stop_check, device, timings, started_total, info, estimate_rng)
    if config.classifier == "mlp" and (config.explain_neighbours > 0 or config.suggest_neighbours > 0):
        started = time.perf_counter()
        rows = np.flatnonzero(result.flagged)
        rows = np.sort(rows[np.argsort(-result.q_noisy[rows], kind="stable")[: config.explain_limit]])
        # What the reviewer sees beside a flagged sample (its neighbours and their given labels), and
        # its nearest unflagged neighbours, whose votes weigh into its candidates: one search.
        explain = config.explain_neighbours > 0
        unflagged = ~result.flagged
        vote = (config.suggest_neighbours > 0 and result.info["suggestion_source"] != SOURCE_NONE
                and len(rows) > 0 and unflagged.sum() > config.suggest_neighbours)  # fmt: skip
        requests = ([(config.explain_neighbours, None)] if explain else []) + ([(config.suggest_neighbours, unflagged)] if vote else [])
        found = neighbour_lists(data.features, rows, requests) if requests else []
        if explain:
            result.neighbour_rows, result.neighbours = rows, found[0]
        if vote:
            _vote_candidates(result, rows, found[-1], config)
        result.timings["neighbours"] = time.perf_counter() - started
        result.timings["total"] = time.perf_counter() - started_total
    _keep_candidates(result)
    return result


def _neighbour_off(features: np.ndarray, given: np.ndarray, num_classes: int, config: DynaCorConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """(N,) bool, the recall's second view (`dynacor.method.estimates.quality_at_cut`): the rows
    whose nearest originals' labels confidently name another class, among at most
    ``estimate_neighbour_rows`` rows drawn at random (the others are never in it)."""
    n = len(given)
    queried = choose_rows(n, config.estimate_neighbour_rows, rng)
    near = neighbours_of(features, queried, config.estimate_neighbours)
    off = np.zeros(n, dtype=bool)
    off[queried] = off_diagonal(given[queried], label_votes(near, given, num_classes))
    return off


def _vote_candidates(result: Result, rows: np.ndarray, near: np.ndarray, config: DynaCorConfig) -> None:
    """Weigh the votes of each flagged row's nearest unflagged originals ``near`` (F, k) into its
    candidates (`dynacor.method.suggest.with_votes`); the other rows keep the early softmax's."""
    num_classes = result.info["num_classes"]
    votes = label_votes(near, result.given_labels, num_classes)
    chosen, probs = with_votes(result.candidates[rows], result.candidate_probs[rows], result.given_labels[rows],
                               votes, config.suggest_vote_weight)  # fmt: skip
    width = chosen.shape[1]
    result.candidates[rows, :width], result.candidate_probs[rows, :width] = chosen, probs
    result.info["suggestion_source"] += f", with the votes of {config.suggest_neighbours} unflagged neighbours"


def _keep_candidates(result: Result) -> None:
    """The top `NUM_CANDIDATES` of the candidates a run worked with; the first is the suggestion."""
    result.candidates = np.ascontiguousarray(result.candidates[:, :NUM_CANDIDATES])
    result.candidate_probs = np.ascontiguousarray(result.candidate_probs[:, :NUM_CANDIDATES])
    result.suggested_labels = result.candidates[:, 0].copy()
    result.suggested_prob = result.candidate_probs[:, 0].copy()


@dataclass
class Dynamics:
    """Training dynamics recorded by any classifier, with the corrupted copies that were trained on.

    Attributes
    ----------
    margins_all : (S, E) float, logit margin of each row for its own label per epoch; S = N + M
        rows, the N originals then the M copies
    copy_pair : (M,) int64, the original of each copy; copy_labels : (M,) int64, its corrupted label
    given_labels : (N,) int64, the labels judged
    prob_given_all : (S, E) float or None, softmax probability of the own label (``signal="prob"``)
    candidates : (N, K) int64 or None, each original's candidate labels, most likely first (never
        its given label; -1 pads), and candidate_probs (N, K) float their probabilities
        (`dynacor.method.suggest`); suggestion_source says what they were read from
    late_probs : (N, C) float or None, a softmax of the originals to take candidates from when
        ``candidates`` is None (a recording that never knew its early window)
    clean_labels : (N,) int64 or None, only to report metrics
    ids, class_names, paths, source, classifier_epochs : carried into the `Result`
    estimate_rows : (R,) int64 or None, originals ``window_probs`` covers
    window_probs : (2, R, C) float or None, their softmax averaged over the noise and the recall
        windows (`DynaCorConfig.noise_window`, ``recall_window``): the self-estimates read them
    probe_probs : (N, C) float or None, a cross-fitted linear probe's probabilities
        (`dynacor.method.probe`), which the combined score reads (`dynacor.method.combine`)
    neighbour_off : (N,) bool or None, the rows whose nearest neighbours' labels confidently name
        another class: the recall's second view when the score reads the early softmax
    """

    margins_all: np.ndarray
    copy_pair: np.ndarray
    copy_labels: np.ndarray
    given_labels: np.ndarray
    prob_given_all: np.ndarray | None = None
    candidates: np.ndarray | None = None
    candidate_probs: np.ndarray | None = None
    suggestion_source: str | None = None
    late_probs: np.ndarray | None = None
    clean_labels: np.ndarray | None = None
    ids: np.ndarray | None = None
    class_names: list[str] | None = None
    paths: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)
    classifier_epochs: list[dict] = field(default_factory=list)
    estimate_rows: np.ndarray | None = None
    window_probs: np.ndarray | None = None
    probe_probs: np.ndarray | None = None
    neighbour_off: np.ndarray | None = None


def detect(
    config: DynaCorConfig,
    dynamics: Dynamics,
    on_event: EventHandler | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Result:
    """The encoder, clustering and report of DynaCor on dynamics recorded elsewhere (any training
    loop that trained on the corrupted copies, see `dynacor.method.corruption.make_copies`).

    Parameters
    ----------
    config : encoder and selection settings are used (``signal``, ``encoder_*``, ``alpha``, ...)
    dynamics : margins of originals and copies, checked here
    on_event, should_stop : as in `run`

    Returns
    -------
    Result
    """
    check_config(config)
    dynamics = check_dynamics(dynamics, dynamics.source.get("file", "<arrays>"), needs_prob=config.signal == "prob")
    emit = _emitter(on_event)
    threads = set_threads(config.num_threads)
    device = pick_device(config.device)
    given, clean = dynamics.given_labels, dynamics.clean_labels
    realised = noise_rate(given, clean) if clean is not None else None
    info = {"num_epochs": int(dynamics.margins_all.shape[1]), "realised_noise_rate": realised,
            "device": str(device), "threads": threads}  # fmt: skip
    result = _detect(config, dynamics, emit, lambda: should_stop is not None and should_stop(), device, {},
                     time.perf_counter(), info, np.random.default_rng(_seed_streams(config.seed)[4]))  # fmt: skip
    _keep_candidates(result)
    return result


def cut_warnings(flagged: np.ndarray, estimates: dict | None, precision_floor: float) -> list[str]:
    """The warnings that depend on where the cut is, so that moving it (`dynacor.runs.store.set_cut`)
    can replace them: an estimated precision below ``precision_floor`` and a flagged share of
    (almost) nothing or everything. flagged (N,) bool; estimates from `quality_at_cut` or None."""
    found = [low_precision_warning(estimates, precision_floor) if estimates is not None else None,
             flagged_share_warning(flagged)]  # fmt: skip
    return [message for message in found if message is not None]


def _detect(config, dynamics: Dynamics, emit, stop_check, device, timings, started_total, info, estimate_rng) -> Result:
    n = len(dynamics.given_labels)
    m = len(dynamics.copy_pair)
    margins = np.asarray(dynamics.margins_all, dtype=np.float32)
    is_copy = np.arange(n + m) >= n
    enc_gen = _torch_generator(_seed_streams(config.seed)[3])

    # Encoder and clustering.
    t = _stage_start(emit, "encoder", total=config.encoder_epochs)
    truly_noisy = None
    if dynamics.clean_labels is not None:
        truly_noisy = dynamics.given_labels != dynamics.clean_labels

    def score_epoch(q_all: np.ndarray) -> dict:
        m = detection_metrics(q_all[:n] > 0.5, truly_noisy, q_all[:n])
        return {"f1": m["f1"], "auroc": m["auroc"]}

    in_reference = None
    if config.val_originals == "paired":
        in_reference = np.zeros(n + m, dtype=bool)
        in_reference[dynamics.copy_pair] = True
    fit = fit_encoder(
        encoder_input(margins, dynamics.prob_given_all, config.signal), is_copy,
        epochs=config.encoder_epochs, lr=config.encoder_lr, weight_decay=config.encoder_weight_decay,
        batch_size=config.encoder_batch_size, rep_dim=config.rep_dim, alpha=config.alpha,
        generator=enc_gen, use_cluster_loss=config.cluster_loss, use_align_loss=config.align_loss,
        selection=config.selection, in_reference=in_reference,
        eval_distance=config.eval_distance, refine_steps=config.refine_steps,
        restarts=config.restarts, device=device,
        score_epoch=score_epoch if truly_noisy is not None else None,
        on_epoch=lambda e: emit("encoder_epoch", of=config.encoder_epochs, **e),
        should_stop=stop_check,
    )  # fmt: skip
    timings["encoder"] = _stage_end(emit, "encoder", t)

    # Report.
    t = _stage_start(emit, "report")
    q_cluster = fit.q_noisy[:n]
    q, combined, capped = _combined_score(config, dynamics, q_cluster)
    info["detector"] = describe_detector(combined, capped)
    warnings = list(fit.warnings)
    threshold, estimates, estimate_parts = 0.5, None, None
    targeted = config.target_precision is not None or config.target_recall is not None
    recorded = dynamics.window_probs is not None and dynamics.estimate_rows is not None
    margin = None
    if recorded:
        num_classes = int(np.shape(dynamics.window_probs)[-1])
        margin, untrusted = _early_margin(config, n, num_classes)
        if untrusted:
            recorded = False
            warnings.append(withheld_warning(n, num_classes, margin, config.estimate_withhold))
            if targeted:
                warnings.append("the target precision or recall was not applied (it chooses the cut from the "
                                "self-estimates, withheld here): the cut is the paper's, 0.5")  # fmt: skip
    if recorded:
        rows = np.asarray(dynamics.estimate_rows)
        probs_noise, probs_recall = (np.asarray(w, dtype=np.float64) for w in dynamics.window_probs)
        given_rows = np.asarray(dynamics.given_labels)[rows]
        eta, eta_draws = noise_rate_draws(given_rows, probs_noise, estimate_rng, config.estimate_bootstrap)
        off = off_diagonal(given_rows, probs_recall)
        if combined != "none" and dynamics.neighbour_off is not None:
            # The score reads the early softmax, so its own off rows overstate the recall.
            off = np.stack([off, np.asarray(dynamics.neighbour_off, dtype=bool)[rows]])
        curve = estimated_curve(q[rows], off, eta)
        if targeted:
            threshold, target_warning = threshold_for_target(curve, config.target_precision, config.target_recall)
            if target_warning is not None:
                warnings.append(target_warning)
        estimates = quality_at_cut(q[rows], off, eta, eta_draws, threshold, rng=estimate_rng, margin=margin)
        estimates["curve"] = curve
        estimate_parts = {"rows": rows, "off": off, "eta_draws": eta_draws,
                          "window_probs": np.asarray(dynamics.window_probs)}  # fmt: skip
    elif targeted and margin is None:
        from dynacor.errors import InputError

        raise InputError(dynamics.source.get("file", "<arrays>"), "window_probs", "recorded (a target precision or "
                         "recall chooses the cut from the self-estimates, which read the early softmax)", "absent")  # fmt: skip
    flagged = q > threshold
    warnings += cut_warnings(flagged, estimates, config.estimate_precision_floor)
    for message in warnings:
        emit("warning", message=message)
    candidates, candidate_probs, source = run_candidates(dynamics)
    metrics = None
    if truly_noisy is not None:
        metrics = detection_metrics(flagged, truly_noisy, q)
    timings["report"] = _stage_end(emit, "report", t)
    timings["total"] = time.perf_counter() - started_total
    num_classes = (len(dynamics.class_names) if dynamics.class_names is not None
                   else int(max(dynamics.given_labels.max(), dynamics.copy_labels.max(initial=0))) + 1)  # fmt: skip
    info = {"num_samples": n, "num_copies": m, "num_classes": num_classes, **info,
            "unique_trajectories": fit.unique_count, "suggestion_source": source,
            "versions": library_versions()}  # fmt: skip
    return Result(
        config=config.to_dict(),
        ids=dynamics.ids if dynamics.ids is not None else np.arange(n),
        given_labels=dynamics.given_labels,
        suggested_labels=candidates[:, 0].copy(),
        suggested_prob=candidate_probs[:, 0].copy(),
        candidates=candidates,
        candidate_probs=candidate_probs,
        q_noisy=q,
        flagged=flagged,
        clean_labels=dynamics.clean_labels,
        copy_pair=dynamics.copy_pair,
        copy_labels=dynamics.copy_labels,
        margins_all=margins,
        q_noisy_all=np.concatenate([q, fit.q_noisy[n:]]).astype(np.float32),
        cluster_score=np.asarray(q_cluster, dtype=np.float32) if combined != "none" else None,
        representations_all=fit.representations,
        classifier_epochs=dynamics.classifier_epochs,
        encoder_epochs=fit.epochs,
        chosen_epoch=fit.chosen_epoch,
        metrics=metrics,
        timings=timings,
        info=info,
        class_names=dynamics.class_names,
        paths=dynamics.paths,
        source=dynamics.source,
        warnings=warnings,
        threshold=float(threshold),
        estimates=estimates,
        estimate_parts=estimate_parts,
    )


def _covers_all(rows: np.ndarray | None, n: int) -> bool:
    return rows is not None and len(rows) == n


def _early_margin(config: DynaCorConfig, n: int, num_classes: int) -> tuple[float, bool]:
    """The self-estimates' systematic margin at ``n`` originals of ``num_classes`` classes
    (`dynacor.method.estimates.systematic_margin`), and whether it is too wide to trust the early
    classifier at all: then the estimates are withheld and the class-pair counts capped."""
    margin = systematic_margin(n, num_classes, config.estimate_margin, config.estimate_margin_scale)
    return margin, margin > config.estimate_withhold


def _combined_score(config: DynaCorConfig, dynamics: Dynamics, q_cluster: np.ndarray) -> tuple[np.ndarray, str, bool]:
    """The score the cut reads (N,) and which combination made it (`dynacor.method.combine`): the
    configured one where its parts were recorded for every original, else the most that was: the
    early softmax without the probe (no features: ``--dynamics``, a Recorder), or the clusters alone
    (no early softmax, or one kept for a subset of the originals only); and whether the class
    counts were capped at the clusters' (`dynacor.method.combine.combined_score`)."""
    n = len(dynamics.given_labels)
    if config.combine == "none" or dynamics.window_probs is None or not _covers_all(dynamics.estimate_rows, n):
        return np.asarray(q_cluster, dtype=np.float32), "none", False
    order = np.argsort(np.asarray(dynamics.estimate_rows), kind="stable")
    early = np.asarray(dynamics.window_probs[0], dtype=np.float64)[order]
    probe = dynamics.probe_probs if config.combine == "probe+early" else None
    num_classes = early.shape[1]
    # Where the self-estimates are withheld (too few samples per class to trust the early
    # classifier), its class-pair counts are not trusted either: capped at the clusters' counts.
    capped = _early_margin(config, n, num_classes)[1]
    score = combined_score(q_cluster, dynamics.given_labels, num_classes, early, probe, cap_at_clusters=capped)
    return score.astype(np.float32), "probe+early" if probe is not None else "early", capped


def run_candidates(dynamics: Dynamics) -> tuple[np.ndarray, np.ndarray, str]:
    """The candidate labels of a run's originals and what they were read from: the recorded early
    window, else a recorded softmax (a recording whose epochs were not known in advance), else
    none. Returns (N, K >= 1) int64 (-1 pads), (N, K) float32 (NaN pads), the source's name."""
    n = len(dynamics.given_labels)
    if dynamics.candidates is not None:
        candidates = np.asarray(dynamics.candidates, dtype=np.int64).reshape(n, -1)
        probs = np.asarray(dynamics.candidate_probs, dtype=np.float32).reshape(n, -1)
        return candidates, probs, dynamics.suggestion_source or SOURCE_EARLY
    if dynamics.late_probs is not None:
        candidates, probs = top_candidates(np.asarray(dynamics.late_probs), dynamics.given_labels)
        return candidates, probs, dynamics.suggestion_source or SOURCE_LATE
    return np.full((n, 1), -1, dtype=np.int64), np.full((n, 1), np.nan, dtype=np.float32), SOURCE_NONE


def suggestion_source(kind: str, window: tuple[int, int]) -> str:
    """``"early softmax, epochs 3-8"`` (from 1, inclusive): what run.json names as the source."""
    return f"{kind}, epochs {window[0] + 1}-{window[1]}"


def summary_text(num_samples: int, num_flagged: int, threshold: float, chosen_epoch: int, encoder_epochs: int,
                 estimates: dict | None, metrics: dict | None, seconds: float) -> str:  # fmt: skip
    """A run's one-line summary (the CLI's last line; rebuilt from run.json when the cut moves)."""
    parts = [f"{num_samples} samples", f"{num_flagged} flagged ({100.0 * num_flagged / max(num_samples, 1):.1f}%)"]
    if threshold != 0.5:
        parts[-1] += f" at q > {threshold:.4f}"
    parts.append(f"encoder epoch {chosen_epoch}/{encoder_epochs - 1}")
    if estimates is not None:
        parts.append(estimates_text(estimates))
    if metrics is not None:
        m = metrics
        parts.append(f"F1 {100 * m['f1']:.1f} (P {100 * m['precision']:.1f}, R {100 * m['recall']:.1f}, "
                     f"AUROC {100 * m['auroc']:.1f}, noise {100 * m['noise_rate']:.1f}%)")  # fmt: skip
    parts.append(f"{seconds:.1f} s")
    return ", ".join(parts)


def estimates_text(estimates: dict) -> str:
    """The self-estimates in one phrase: ``estimated precision 81% (72-90), recall ...``."""

    def one(name: str) -> str:
        e = estimates[name]
        return f"{100 * e['value']:.0f}% ({100 * e['low']:.0f}-{100 * e['high']:.0f})"

    return f"estimated precision {one('precision')}, recall {one('recall')}, noise rate {one('noise_rate')}"


def estimate_windows(config: DynaCorConfig, epochs: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The noise and recall windows as epochs ``[first, stop)`` of ``epochs`` (the classifier's)."""
    return window_epochs(config.noise_window, epochs), window_epochs(config.recall_window, epochs)


def recorded_estimate_rows(num_originals: int, config: DynaCorConfig) -> np.ndarray | None:
    """(R,) int64 originals whose early softmax a training loop outside `run` keeps for the
    self-estimates (`dynacor.record.Recorder`), chosen as `run` chooses them but from the seed's
    stream [5]: `detect` draws the bootstrap from a fresh [4]. None when ``estimate_rows`` is 0."""
    if config.estimate_rows == 0:
        return None
    return choose_rows(num_originals, config.estimate_rows, np.random.default_rng(_seed_streams(config.seed)[5]))


def _seed_streams(seed: int) -> list[np.random.SeedSequence]:
    """The run's independent random streams: [0] unused (it drew the synthetic noise before
    `synthetic_labels` took that over; kept so the others draw what they always drew), [1] the
    copies, [2] the classifier, [3] the encoder, [4] the self-estimates' rows and bootstrap,
    [5] the rows of a recording's self-estimates (`recorded_estimate_rows`). `run` and `detect`
    both derive them here (a child is fixed by its index: adding [4] and [5] changed none of the
    others)."""
    return np.random.SeedSequence(seed).spawn(6)


def _torch_generator(stream: np.random.SeedSequence) -> torch.Generator:
    return torch.Generator().manual_seed(int(stream.generate_state(1)[0]))


def _train_from_scratch(config, data, labels_all, pair, generator, device, on_epoch, stop_check, estimate_rows,
                        windows, suggest_window) -> HeadDynamics:  # fmt: skip
    """Dynamics of a network trained from scratch on the images (copies: random crops, pad 4)."""
    from dynacor.errors import InputError
    from dynacor.method.scratch import train_scratch

    shape = data.source.get("image_shape")
    if not shape or int(np.prod(shape)) != data.features.shape[1]:
        raise InputError(data.source.get("file", "<arrays>"), "source.image_shape",
                         "the (H, W, 3) shape of the images behind the flattened features (scratch classifiers)",
                         shape)  # fmt: skip
    images = np.asarray(data.features).reshape(-1, *shape).astype(np.uint8)
    trained = train_scratch(
        images, labels_all, pair, data.num_classes,
        epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
        weight_decay=config.weight_decay, momentum=config.momentum, seed=generator,
        arch=config.classifier.removeprefix("scratch-"), schedule=config.schedule, record=config.record,
        suggest_window=suggest_window, on_epoch=lambda e: on_epoch({"accuracy": e.get("acc"), **e}),
        cancel=stop_check, device=device, estimate_rows=estimate_rows, estimate_windows=windows,
    )  # fmt: skip
    return HeadDynamics(margins=trained.margins, prob_given=trained.prob_given, candidates=trained.candidates,
                        candidate_probs=trained.candidate_probs, epochs=trained.log,
                        window_probs=trained.window_probs)  # fmt: skip


def library_versions() -> dict[str, str]:
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "dynacor": _own_version(),
    }


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dynacor")
    except PackageNotFoundError:
        return "unknown"


def _emitter(on_event: EventHandler | None) -> Callable[..., None]:
    def emit(kind: str, **fields: Any) -> None:
        if on_event is not None:
            on_event({"type": kind, "time": time.time(), **fields})

    return emit


def _stage_start(emit: Callable[..., None], stage: str, **fields: Any) -> float:
    emit("stage_start", stage=stage, **fields)
    return time.perf_counter()


def _stage_end(emit: Callable[..., None], stage: str, started: float) -> float:
    seconds = time.perf_counter() - started
    emit("stage_end", stage=stage, seconds=seconds)
    return seconds
