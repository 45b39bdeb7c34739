"""Recording DynaCor's training dynamics inside any PyTorch training loop (METHOD.md, section 2).

Usage::

    data = WithCopies(train_set, train_set.targets, num_classes=10)
    recorder = Recorder.for_dataset(data, num_epochs=epochs)
    for epoch in range(epochs):
        for x, y, index in DataLoader(data, batch_size=128, shuffle=True):
            logits = model(x.to(device))
            loss = F.cross_entropy(logits, y.to(device))
            recorder.update(logits, y, index)  # train mode, before optimizer.step()
            optimizer.zero_grad(); loss.backward(); optimizer.step()
        recorder.end_epoch()
    result = recorder.detect()
    recorder.save("runs/my-run")  # opens in the app

The per-batch work stays on the logits' device: margins are written into preallocated tensors
by index, and nothing is copied to the host until `Recorder.end_epoch`, so recording never
stalls a GPU pipeline.

With ``num_epochs`` known the recorder also keeps, for up to ``config.estimate_rows`` originals,
the softmax averaged over the early windows the self-estimates read (noise rate, precision,
recall: docs/estimates.md), so `Recorder.detect` reports them as a run of the MLP head does.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacor.errors import InputError
from dynacor.method.config import DynaCorConfig
from dynacor.method.dynamics import logit_margin
from dynacor.method.estimates import open_windows, window_epochs, window_means
from dynacor.method.pipeline import (
    Dynamics,
    Result,
    detect,
    estimate_windows,
    recorded_estimate_rows,
    suggestion_source,
)
from dynacor.method.suggest import SOURCE_EARLY, SOURCE_LATE, CandidateSums
from dynacor.method.validate import check_config, check_dynamics

WHERE = "Recorder"


def batch_signals(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The margin and the log-softmax of one batch, exactly as the engine computes them.

    Parameters
    ----------
    logits : (B, C), any float dtype and device
    targets : (B,) int64, each row's own label (given for originals, corrupted for copies)

    Returns
    -------
    margins : (B,) float32, ``f_y(x) - max_{c != y} f_c(x)`` (`dynacor.method.dynamics.logit_margin`)
    log_probs : (B, C) float32
    """
    logits = logits.detach().float()
    return logit_margin(logits, targets), torch.log_softmax(logits, dim=1)


class Recorder:
    """Collects the per-epoch margins of S = N + M samples (originals then corrupted copies).

    Parameters
    ----------
    num_samples : S, every index `update` may receive is in [0, S)
    num_epochs : E when known (late-epoch probabilities are then only computed in the last
        ``late_epochs`` epochs and summed, not kept per epoch); None: epochs are counted as
        `end_epoch` is called
    num_classes : C; None: taken from the first batch's logits
    device : where the per-epoch buffers live; None: the device of the first batch's logits
    late_epochs : without ``num_epochs`` the early window of the candidate labels is unknown, so
        they are read from the softmax averaged over this many last epochs instead (run.json
        names the source); 0: no candidates then. With ``num_epochs`` the candidates come from
        ``config.suggest_window`` (`dynacor.method.suggest`), as in the engine
    copy_pair, copy_labels, given_labels : (M,), (M,), (N,) int, the copies that were trained on
        (see `WithCopies`, or `Recorder.for_dataset`); needed by `dynamics`, `detect` and `save`
    class_names, ids, clean_labels, paths, source : carried into the result (clean labels only
        for metrics; ``source`` tells the app where the images are)
    config : the `DynaCorConfig` `detect` uses by default; while training, its ``noise_window``
        and ``recall_window`` (fractions of ``num_epochs``) and ``estimate_rows`` say which
        softmax the self-estimates keep: that of min(N, estimate_rows) originals (a random subset
        drawn from ``config.seed``), averaged over each window. None: `DynaCorConfig()`

    Notes
    -----
    Call `update` for every training batch, in train mode, before the optimiser's step (as the
    authors' code records: each sample's margin before the update it takes part in). Every
    index must be seen once per epoch (use ``drop_last=False``); a sample missing from an epoch
    makes `dynamics` fail with the epoch and the count. With several processes (DDP), gather the
    logits, targets and indices onto one recorder first.

    The self-estimates (``result.estimates``) need the windows in epochs before training, so
    they are recorded only when ``num_epochs`` is given, the copies are known by the first batch
    (`for_dataset`, or ``copy_pair``/``copy_labels``/``given_labels`` here) and all
    ``num_epochs`` epochs are recorded; otherwise ``estimates`` is None and a target precision or
    recall is refused. ``config.estimate_rows = 0`` turns them off. The windows were chosen for
    the MLP head's schedule (docs/estimates.md): read them with another schedule in mind.
    """

    def __init__(
        self,
        num_samples: int,
        num_epochs: int | None = None,
        num_classes: int | None = None,
        *,
        device: torch.device | str | None = None,
        late_epochs: int = 5,
        copy_pair: Any = None,
        copy_labels: Any = None,
        given_labels: Any = None,
        class_names: list[str] | None = None,
        ids: Any = None,
        clean_labels: Any = None,
        paths: Any = None,
        source: dict | None = None,
        config: DynaCorConfig | None = None,
    ):
        def positive(name: str, value: Any, allow_none: bool = False, minimum: int = 1) -> None:
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise InputError(WHERE, name, f"an integer >= {minimum}", repr(value))

        positive("num_samples", num_samples, minimum=2)
        positive("num_epochs", num_epochs, allow_none=True, minimum=2)
        positive("num_classes", num_classes, allow_none=True, minimum=2)
        positive("late_epochs", late_epochs, minimum=0)
        self.num_samples = int(num_samples)
        self.num_epochs = None if num_epochs is None else int(num_epochs)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.late_epochs = int(late_epochs)
        self.device = None if device is None else torch.device(device)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.ids, self.clean_labels, self.paths = ids, clean_labels, paths
        self.source = dict(source or {})
        self.config = check_config(config if config is not None else DynaCorConfig(), WHERE)
        # [first, stop) epochs of the noise and the recall window; None: no self-estimates
        self.estimate_windows = None
        if self.num_epochs is not None and self.config.estimate_rows > 0:
            self.estimate_windows = estimate_windows(self.config, self.num_epochs)
        self.copy_pair = self.copy_labels = self.given_labels = None
        if copy_pair is not None or copy_labels is not None or given_labels is not None:
            self.set_copies(copy_pair, copy_labels, given_labels)
        self.epochs: list[dict] = []
        self.result: Result | None = None
        self._margins: list[np.ndarray] = []  # one (S,) float32 column per finished epoch
        self._probs: list[np.ndarray] = []
        self._late: deque[np.ndarray] = deque(maxlen=max(1, self.late_epochs))
        self._late_sum: np.ndarray | None = None
        self._late_count = 0
        self._buffers: dict[str, torch.Tensor] | None = None
        self._estimate_rows: np.ndarray | None = None  # (R,) originals the estimates follow
        self._estimate_pos: torch.Tensor | None = None  # (S,) each row's place among them, R if none
        self._window_sums: np.ndarray | None = None  # (2, R, C) summed softmax per window
        self._suggest: CandidateSums | None = None  # the candidate labels' early window, when known
        self._suggest_window: tuple[int, int] | None = None
        self._suggest_open = False  # this epoch is in the candidates' window
        self._epoch_started: float | None = None
        self._seen = 0

    @classmethod
    def for_dataset(cls, dataset: Any, num_epochs: int | None = None, **kwargs: Any) -> Recorder:
        """A recorder for a `WithCopies` data set (its size, classes and copies)."""
        for name in ("copy_pair", "copy_labels", "given_labels", "num_classes"):
            if not hasattr(dataset, name):
                raise InputError(WHERE, "dataset", "a WithCopies data set (copy_pair, copy_labels, given_labels)",
                                 type(dataset).__name__)  # fmt: skip
        return cls(len(dataset), num_epochs, dataset.num_classes, copy_pair=dataset.copy_pair,
                   copy_labels=dataset.copy_labels, given_labels=dataset.given_labels, **kwargs)  # fmt: skip

    def set_copies(self, copy_pair: Any, copy_labels: Any, given_labels: Any) -> None:
        """Which copies were trained on: (M,) originals, (M,) labels, and (N,) given labels, N + M = S."""
        arrays = {}
        for name, value in (("copy_pair", copy_pair), ("copy_labels", copy_labels), ("given_labels", given_labels)):
            if value is None:
                raise InputError(WHERE, name, "given together with copy_pair, copy_labels and given_labels", "None")
            arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise InputError(WHERE, name, "a 1-D array of integers", f"{arr.dtype} of shape {arr.shape}")
            arrays[name] = arr.astype(np.int64)
        n, m = arrays["given_labels"].shape[0], arrays["copy_pair"].shape[0]
        if n + m != self.num_samples or arrays["copy_labels"].shape[0] != m:
            raise InputError(WHERE, "copy_pair", f"M copies and M labels with N + M = num_samples ({self.num_samples})",
                             f"N = {n}, {m} copies, {arrays['copy_labels'].shape[0]} copy labels")  # fmt: skip
        self.copy_pair, self.copy_labels, self.given_labels = arrays["copy_pair"], arrays["copy_labels"], arrays["given_labels"]

    @property
    def num_recorded(self) -> int:
        """Epochs finished with `end_epoch`."""
        return len(self._margins)

    # ---- per batch

    def update(self, logits: torch.Tensor, targets: Any, indices: Any) -> None:
        """Record one training batch. Never synchronises with the device.

        Parameters
        ----------
        logits : (B, C), the model's output for the batch, before the optimiser's step
        targets : (B,) int, the labels the batch was trained on (``y`` from `WithCopies`)
        indices : (B,) int in [0, S), the samples' indices (``index`` from `WithCopies`)
        """
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise InputError(WHERE, "logits", "a (B, C) tensor", getattr(logits, "shape", type(logits).__name__))
        with torch.no_grad():
            buffers = self._epoch_buffers(logits)
            device = buffers["margin"].device
            targets = torch.as_tensor(targets).to(device, non_blocking=True).long().reshape(-1)
            indices = torch.as_tensor(indices).to(device, non_blocking=True).long().reshape(-1)
            if targets.shape[0] != logits.shape[0] or indices.shape[0] != logits.shape[0]:
                raise InputError(WHERE, "indices", f"one target and one index per row of logits ({logits.shape[0]})",
                                 f"{targets.shape[0]} targets, {indices.shape[0]} indices")  # fmt: skip
            margins, log_probs = batch_signals(logits.to(device, non_blocking=True), targets)
            own = log_probs.gather(1, targets[:, None]).squeeze(1)
            buffers["margin"][indices] = margins
            buffers["prob"][indices] = own.exp()
            buffers["target"][indices] = targets
            buffers["loss"] -= own.sum()
            buffers["correct"] += (log_probs.argmax(dim=1) == targets).sum()
            if "late" in buffers or "window" in buffers or self._suggest_open:
                probs = log_probs.exp()
                if self._suggest_open:
                    self._suggest.add(indices, probs)  # copies land on its spare row: no mask, no sync
                if "late" in buffers:
                    buffers["late"][indices] = probs
                if "window" in buffers:
                    # every row not followed lands on the spare last row: no mask, no sync
                    buffers["window"][self._estimate_pos[indices]] = probs
            self._seen += int(logits.shape[0])  # shapes are host metadata: no sync

    def _epoch_buffers(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._buffers is not None:
            return self._buffers
        if self.num_epochs is not None and self.num_recorded >= self.num_epochs:
            # The late-epoch average was taken over what was announced as the last epochs.
            raise InputError(WHERE, "num_epochs", f"the number of epochs trained ({self.num_epochs} recorded so "
                             "far), or None to count them", f"a batch of epoch {self.num_recorded + 1}")  # fmt: skip
        if self.num_classes is None:
            self.num_classes = int(logits.shape[1])
        if logits.shape[1] != self.num_classes:
            raise InputError(WHERE, "logits", f"{self.num_classes} columns (num_classes)", f"shape {tuple(logits.shape)}")
        device = self.device or logits.device
        s = self.num_samples
        self._buffers = {
            "margin": torch.full((s,), float("nan"), dtype=torch.float32, device=device),
            "prob": torch.full((s,), float("nan"), dtype=torch.float32, device=device),
            "target": torch.full((s,), -1, dtype=torch.int64, device=device),
            "loss": torch.zeros((), dtype=torch.float32, device=device),
            "correct": torch.zeros((), dtype=torch.int64, device=device),
        }
        if self.num_recorded == 0:
            self._start_estimates(device)
            self._start_suggestions(device)
        self._suggest_open = self._suggest is not None and (
            self._suggest_window[0] <= self.num_recorded < self._suggest_window[1])
        if self._suggest is None and self._is_late(self.num_recorded):
            self._buffers["late"] = torch.zeros((s, self.num_classes), dtype=torch.float32, device=device)
        if self._open_windows(self.num_recorded):
            r = len(self._estimate_rows)
            self._buffers["window"] = torch.zeros((r + 1, self.num_classes), dtype=torch.float32, device=device)
        self._epoch_started = time.perf_counter()
        self._seen = 0
        return self._buffers

    def _start_estimates(self, device: torch.device) -> None:
        """Choose the originals whose early softmax the self-estimates keep (N is known from the copies)."""
        if self.estimate_windows is None or self.given_labels is None:
            return
        rows = recorded_estimate_rows(self.given_labels.shape[0], self.config)
        position = torch.full((self.num_samples,), len(rows), dtype=torch.int64)
        position[torch.from_numpy(rows)] = torch.arange(len(rows))
        self._estimate_rows, self._estimate_pos = rows, position.to(device)
        self._window_sums = np.zeros((len(self.estimate_windows), len(rows), self.num_classes), dtype=np.float32)

    def _start_suggestions(self, device: torch.device) -> None:
        """With the epochs known, sum every original's softmax over the early window the candidate
        labels are read from (`dynacor.method.suggest`); otherwise the late epochs' softmax is kept."""
        if self.num_epochs is None or self.given_labels is None:
            return
        self._suggest_window = window_epochs(self.config.suggest_window, self.num_epochs)
        self._suggest = CandidateSums(torch.from_numpy(self.given_labels), self.num_classes, device)

    def _open_windows(self, epoch: int) -> list[int]:
        """The windows (0 noise, 1 recall) that ``epoch`` (from 0) falls in, when estimates are kept."""
        if self._estimate_rows is None:
            return []
        return open_windows(self.estimate_windows, epoch)

    def _is_late(self, epoch: int) -> bool:
        if self.late_epochs == 0:
            return False
        return self.num_epochs is None or epoch >= self.num_epochs - self.late_epochs

    # ---- per epoch

    def end_epoch(self, **metrics: Any) -> dict:
        """Close the epoch: move its margins to the host and log it.

        Parameters
        ----------
        metrics : extra numbers to log for the epoch (``lr=...``, ``test_accuracy=...``); they
            override the recorder's own ``loss`` (cross-entropy of the recorded logits) and
            ``accuracy`` (of the recorded logits on their own labels)

        Returns
        -------
        The epoch's log entry (``epoch`` counts from 1).
        """
        if self._buffers is None:
            raise InputError(WHERE, "update", "called for the batches of an epoch before end_epoch", "no batch")
        buffers, self._buffers = self._buffers, None
        target = buffers["target"].cpu().numpy()
        missing = int((target < 0).sum())
        if missing:
            warnings.warn(f"Recorder: {missing} of {self.num_samples} samples got no margin in epoch "
                          f"{self.num_recorded + 1} (every index must be seen once per epoch: drop_last=False, "
                          f"one process)", stacklevel=2)  # fmt: skip
        expected = self._labels_all()
        if expected is not None:
            wrong = np.flatnonzero((target >= 0) & (target != expected))
            if wrong.size:
                raise InputError(WHERE, "targets", "each sample's own label (the given label for originals, the "
                                 "corrupted label for copies, as WithCopies returns them)",
                                 f"{wrong.size} samples with another label in epoch {self.num_recorded + 1}, "
                                 f"e.g. index {int(wrong[0])}: {int(target[wrong[0]])} instead of "
                                 f"{int(expected[wrong[0]])}")  # fmt: skip
        if "window" in buffers:
            probs = buffers["window"][:-1].cpu().numpy()
            for w in self._open_windows(self.num_recorded):
                self._window_sums[w] += probs
        self._margins.append(buffers["margin"].cpu().numpy())
        self._probs.append(buffers["prob"].cpu().numpy())
        if "late" in buffers:
            late = buffers["late"].cpu().numpy()
            if self.num_epochs is None:
                self._late.append(late)
            else:
                self._late_sum = late.astype(np.float64) if self._late_sum is None else self._late_sum + late
                self._late_count += 1
        seen = max(self._seen, 1)
        entry = {
            "epoch": self.num_recorded,
            "loss": float(buffers["loss"]) / seen,
            "accuracy": float(buffers["correct"]) / seen,
            "seconds": time.perf_counter() - (self._epoch_started or time.perf_counter()),
            **{k: (float(v) if isinstance(v, (int, float, np.number, torch.Tensor)) else v) for k, v in metrics.items()},
        }
        self.epochs.append(entry)
        return entry

    # ---- results

    def margins(self) -> np.ndarray:
        """(S, E) float32 margins of the finished epochs (NaN where a sample was not seen)."""
        if not self._margins:
            return np.zeros((self.num_samples, 0), dtype=np.float32)
        return np.stack(self._margins, axis=1)

    def late_probs(self) -> np.ndarray | None:
        """(N, C) softmax of the originals averaged over the last epochs, or None."""
        n = self.num_samples if self.given_labels is None else self.given_labels.shape[0]
        if self.num_epochs is None and self._late:
            return (np.sum(np.stack(list(self._late)), axis=0) / len(self._late))[:n].astype(np.float32)
        if self._late_sum is not None and self._late_count:
            return (self._late_sum / self._late_count)[:n].astype(np.float32)
        return None

    def window_probs(self) -> np.ndarray | None:
        """(2, R, C) float32 softmax of the estimate rows averaged over the noise and the recall
        window, or None (no windows, or not every announced epoch recorded)."""
        if self._window_sums is None or self.num_recorded != self.num_epochs:
            return None
        return window_means(self._window_sums, self.estimate_windows)

    def dynamics(self) -> Dynamics:
        """The recorded `Dynamics`, checked (`InputError` naming the field when incomplete)."""
        if self.given_labels is None:
            raise InputError(WHERE, "copy_pair", "set (Recorder.for_dataset(WithCopies(...)) or set_copies)", "None")
        if self._buffers is not None:
            raise InputError(WHERE, "end_epoch", "called after the last epoch's batches", "an epoch still open")
        margins = self.margins()
        if margins.shape[1] < 2:
            raise InputError(WHERE, "margins", "at least 2 recorded epochs (call end_epoch after each)",
                             f"{margins.shape[1]} epoch(s)")  # fmt: skip
        holes = ~np.isfinite(margins)
        if holes.any():
            epoch = int(np.flatnonzero(holes.any(axis=0))[0]) + 1
            raise InputError(WHERE, "margins", "one margin per sample and epoch (every index seen once per "
                             "epoch: drop_last=False, one process)",
                             f"{int(holes[:, epoch - 1].sum())} samples missing in epoch {epoch}")  # fmt: skip
        window_probs = self.window_probs()
        candidates = candidate_probs = source = None
        if self._suggest is not None and self.num_recorded >= self._suggest_window[1]:
            first, stop = self._suggest_window
            candidates, candidate_probs = self._suggest.candidates(stop - first)
            source = suggestion_source(SOURCE_EARLY, self._suggest_window)
        elif self.late_probs() is not None:
            source = f"{SOURCE_LATE}, the last {min(self.late_epochs, self.num_recorded)} epochs"
        dynamics = Dynamics(
            candidates=candidates, candidate_probs=candidate_probs, suggestion_source=source,
            margins_all=margins, copy_pair=self.copy_pair, copy_labels=self.copy_labels,
            given_labels=self.given_labels, prob_given_all=np.stack(self._probs, axis=1),
            late_probs=self.late_probs(), clean_labels=_array(self.clean_labels), ids=_array(self.ids),
            class_names=self.class_names, paths=_array(self.paths),
            source={"kind": "recorded", "recorded_by": "dynacor.record.Recorder", **self.source}, classifier_epochs=list(self.epochs),
            estimate_rows=None if window_probs is None else self._estimate_rows, window_probs=window_probs,
        )  # fmt: skip
        return check_dynamics(dynamics, WHERE)

    def detect(
        self,
        config: DynaCorConfig | None = None,
        on_event: Callable[[dict], None] | None = None,
        **settings: Any,
    ) -> Result:
        """Run DynaCor's encoder and clustering on the recorded dynamics.

        Parameters
        ----------
        config : settings (default: the recorder's ``config``); the classifier's fields are set
            from the recording (epochs = E, gamma = M / N), and so are the self-estimates' windows
            and ``estimate_rows`` when they were recorded (the recorder's ``config``'s)
        on_event : receives the engine's events (see `dynacor.method.pipeline.run`)
        settings : `DynaCorConfig` fields that replace the config's, e.g. ``seed=1``

        Returns
        -------
        Result (also kept as ``self.result`` for `save`).
        """
        from dynacor.runs.request import recorded_config

        dynamics = self.dynamics()
        values = {**(config or self.config).to_dict(), **settings}
        if dynamics.window_probs is not None:
            recorded = self.config.to_dict()
            values.update({name: recorded[name] for name in ("noise_window", "recall_window", "estimate_rows", "suggest_window")})
        config = recorded_config(dynamics, values, WHERE)
        self.result = detect(config, dynamics, on_event=on_event)
        return self.result

    def save(self, run_dir: str | Path, result: Result | None = None, overwrite: bool = False) -> Path:
        """Write a run directory the app and ``dynacor detect`` readers open (docs/outputs.md).

        ``result`` defaults to the last `detect`'s, and `detect` runs when there was none.
        """
        from dynacor.runs import store as runstore

        result = result or self.result or self.detect()
        run_dir = runstore.create_run(run_dir, result.config, result.source, overwrite=overwrite)
        for entry in result.classifier_epochs:
            # The app draws the classifier's curves from these events.
            runstore.append_event(run_dir, {"type": "classifier_epoch", "of": len(result.classifier_epochs), **entry})
        runstore.write_result(run_dir, result)
        return run_dir

    def save_dynamics(self, path: str | Path) -> Path:
        """Write the recorded dynamics as a .npz file (`dynacor.record.files.save_dynamics`)."""
        from dynacor.record.files import save_dynamics

        return save_dynamics(path, self.dynamics())

    def _labels_all(self) -> np.ndarray | None:
        if self.given_labels is None:
            return None
        return np.concatenate([self.given_labels, self.copy_labels])


def _array(values: Any) -> np.ndarray | None:
    if values is None:
        return None
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)
