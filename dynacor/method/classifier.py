"""The classifier on frozen features and the recording of its training dynamics (METHOD.md, section 2)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dynacor.errors import Cancelled
from dynacor.method.dynamics import logit_margin
from dynacor.method.estimates import open_windows, window_means
from dynacor.method.nets import make_sgd, mlp_head
from dynacor.method.suggest import WIDE, CandidateSums

CHUNK_ROWS = 8192  # rows gathered at once: 42 MB of float32 at 1,280 dimensions


@dataclass
class HeadDynamics:
    """What training the head recorded.

    Attributes
    ----------
    margins : (S, E) float32, logit margin of each sample (originals then copies) for its own label
    prob_given : (S, E) float32, softmax probability of its own label
    candidates : (N, K) int64 or None, each original's K = min(C - 1, `WIDE`) most likely classes
        other than its given one in the softmax averaged over ``suggest_window``
        (`dynacor.method.suggest`; the run keeps the top 3 once neighbours have voted)
    candidate_probs : (N, K) float32 or None, their averaged probabilities
    epochs : one dict per epoch: loss, accuracy, test accuracy when a test split exists, seconds
    predicted : (T, C) float32 or None, softmax of the trained head on `train_head`'s ``predict``
    window_probs : (W, R, C) float32 or None, softmax of the ``estimate_rows`` originals averaged
        over each of the ``estimate_windows`` (the self-estimates read them)
    """

    margins: np.ndarray
    prob_given: np.ndarray
    candidates: np.ndarray | None = None
    candidate_probs: np.ndarray | None = None
    epochs: list[dict] = field(default_factory=list)
    predicted: np.ndarray | None = None
    window_probs: np.ndarray | None = None


class RowSource:
    """The S = N + M training rows without materialising them: row i < N is ``features[i]``, row
    N + j is ``features_aug[copy_pair[j]]`` (the copy's view of its original).

    The matrices stay in their own dtype and storage (float16 memory maps of a feature directory
    included) and only the rows of a mini-batch are gathered and converted to float32, so memory
    does not grow with N beyond the (S,) index vectors. On CUDA the matrices are moved to the
    device once when they fit in a quarter of its free memory.

    features : (N, D) float; features_aug : (N, D) float or None (copies reuse ``features``);
    copy_pair : (M,) int64 or None (no copies: S = N).
    """

    def __init__(self, features: np.ndarray, features_aug: np.ndarray | None, copy_pair: np.ndarray | None,
                 device: torch.device):  # fmt: skip
        self.n = int(features.shape[0])
        self.dim = int(features.shape[1])
        pair = np.zeros(0, dtype=np.int64) if copy_pair is None else np.asarray(copy_pair, dtype=np.int64)
        self.size = self.n + len(pair)
        self.device = device
        views = [features] if features_aug is None else [features, features_aug]
        tensors = [_as_tensor(v) for v in views]
        if device.type == "cuda":
            free = torch.cuda.mem_get_info(device)[0]
            if sum(t.numel() * t.element_size() for t in tensors) < free // 4:
                tensors = [t.to(device) for t in tensors]
        # For every training row: which view (0 plain, 1 flip) and which row of it.
        self.source_row = torch.cat([torch.arange(self.n), torch.from_numpy(pair)]).to(tensors[0].device)
        self.view = torch.cat([torch.zeros(self.n, dtype=torch.bool),
                               torch.full((len(pair),), features_aug is not None)]).to(tensors[0].device)  # fmt: skip
        if len(tensors) == 2 and tensors[0].device.type == "cuda":
            # On the GPU both views in one matrix: one gather per batch, and no boolean masks
            # (each would wait for the GPU to count its True entries).
            tensors = [torch.cat(tensors)]
            self.source_row = self.source_row + self.view.long() * self.n
        self.tensors = tensors

    def gather(self, idx: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) row indices in [0, S) -> (B, D) float32 on the device, written into ``out`` (at least
        (B, D) float32 on the device: its first B rows are returned) when given: a buffer reused for
        every chunk spares the page faults of a fresh 42 MB allocation each time."""
        idx = idx.to(self.source_row.device)
        rows = self.source_row[idx]
        on_source = rows.device.type == self.device.type  # "cuda:0" and "cuda" are the same place here
        if out is None or not on_source:
            out = torch.empty((len(idx), self.dim), dtype=torch.float32, device=rows.device)
        out = out[: len(idx)]
        self._select(0, rows, out)
        if len(self.tensors) == 2:
            # Every row from the plain view first (a copy's row there is its original's), then the
            # copies trained on the flipped view are overwritten: no boolean-masked temporaries.
            flip = torch.nonzero(self.view[idx]).squeeze(1)
            if len(flip):
                out.index_copy_(0, flip, self._select(1, rows[flip]))
        return out if on_source else out.to(self.device, non_blocking=True)

    def _select(self, view: int, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        source = self.tensors[view]
        if source.dtype == torch.float32:
            return torch.index_select(source, 0, rows, out=out) if out is not None else torch.index_select(source, 0, rows)
        picked = torch.index_select(source, 0, rows)
        return out.copy_(picked) if out is not None else picked.float()


def _as_tensor(matrix: np.ndarray) -> torch.Tensor:
    """A CPU tensor on the same memory as ``matrix`` (float16 and float32 kept as they are)."""
    array = np.asarray(matrix)
    if array.dtype not in (np.float16, np.float32):
        array = array.astype(np.float32)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # Read-only memory maps: torch warns that writes would be undefined; we never write.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    hidden: int,
    schedule: str = "cosine",
    record: str = "train",
    suggest_window: tuple[int, int] | None = None,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    features_aug: np.ndarray | None = None,
    copy_pair: np.ndarray | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    predict: np.ndarray | None = None,
    estimate_rows: np.ndarray | None = None,
    estimate_windows: tuple[tuple[int, int], ...] = (),
) -> HeadDynamics:
    """Train the MLP head with SGD and record each sample's margin every epoch.

    Parameters
    ----------
    features : (N, D) float, the originals (any array: a read-only memory map is never copied)
    labels : (S,) int64, the label each training row is trained on: the N originals' given labels,
        then the M copies' corrupted labels
    num_classes : C
    features_aug : (N, D) float or None, the view the copies are trained on (default ``features``)
    copy_pair : (M,) int64 or None, the original of each copy (None: no copies, S = N)
    record : ``"train"`` records each mini-batch's logits before its update, as the authors'
        code does (no extra cost); ``"eval"`` runs a separate no-grad pass after each epoch
    generator : seeds initialisation and shuffling (CPU generator)
    test : optional (features (T, D), labels (T,)) for test accuracy per epoch
    on_epoch : called with each epoch's dict
    should_stop : polled every few batches; when it returns True, `Cancelled` is raised
    predict : optional (T, D) float, rows to classify with the head after its last epoch (held-out
        samples, for out-of-sample probabilities); training is the same with or without them
    estimate_rows : (R,) int64 originals whose softmax is averaged over each of
        ``estimate_windows`` (``[first, stop)`` epochs) into ``window_probs``
    suggest_window : ``[first, stop)`` epochs whose softmax of every original gives its candidate
        labels (None: no candidates)

    Returns
    -------
    HeadDynamics with margins and probabilities of shape (S, E) and candidates (N, K).
    """
    device = torch.device(device)
    rows = RowSource(features, features_aug, copy_pair, device)
    s, n = rows.size, rows.n
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64).to(device)
    if y.shape[0] != s:
        raise ValueError(f"labels must have one entry per training row ({s}), got {y.shape[0]}")
    head = mlp_head(rows.dim, num_classes, hidden, generator).to(device)
    optimiser, scheduler = make_sgd(head.parameters(), lr, momentum, weight_decay, schedule, epochs)
    loss_fn = nn.CrossEntropyLoss()
    margins = torch.empty((s, epochs), dtype=torch.float32, device=device)
    prob_given = torch.empty((s, epochs), dtype=torch.float32, device=device)
    suggest = None
    if suggest_window is not None:
        suggest = CandidateSums(y[:n], num_classes, device)
    log: list[dict] = []
    windows = [(a, b) for a, b in estimate_windows] if estimate_rows is not None else []
    if windows:
        # position of each original among the estimate rows, -1 for the others
        estimate_pos = torch.full((n,), -1, dtype=torch.int64)
        estimate_pos[torch.as_tensor(np.asarray(estimate_rows, dtype=np.int64))] = torch.arange(len(estimate_rows))
        estimate_pos = estimate_pos.to(device)
        window_sums = torch.zeros((len(windows), len(estimate_rows), num_classes), dtype=torch.float32, device=device)

    def store(idx: torch.Tensor, logits: torch.Tensor, epoch: int) -> None:
        logits = logits.detach()
        target = y[idx]
        margins[idx, epoch] = logit_margin(logits, target)
        probs = torch.softmax(logits, dim=1)
        prob_given[idx, epoch] = probs.gather(1, target[:, None]).squeeze(1)
        if suggest is not None and suggest_window[0] <= epoch < suggest_window[1]:
            suggest.add(idx, probs)  # the copies' rows are dropped there
        in_windows = open_windows(windows, epoch)
        if in_windows:
            pos = estimate_pos[idx.clamp_max(n - 1)]
            keep = (idx < n) & (pos >= 0)
            for w in in_windows:
                window_sums[w, pos[keep]] += probs[keep]

    chunk_rows = max(1, CHUNK_ROWS // batch_size) * batch_size
    buffer = torch.empty((min(chunk_rows, s), rows.dim), dtype=torch.float32, device=device)
    for epoch in range(epochs):
        started = time.perf_counter()
        head.train()
        order = torch.randperm(s, generator=generator).to(device)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        # Rows are gathered and recorded a chunk of batches at a time: per-batch gathers from two
        # views and per-batch bookkeeping cost about 1.5 s of a 20 s run on the dev file; the
        # same rows in the same order, so training and records are unchanged.
        for chunk_start in range(0, s, chunk_rows):
            chunk = order[chunk_start : chunk_start + chunk_rows]
            x_chunk, y_chunk = rows.gather(chunk, buffer), y[chunk]
            chunk_logits = []
            for start in range(0, len(chunk), batch_size):
                if should_stop is not None and (start // batch_size) % 16 == 0 and should_stop():
                    raise Cancelled("cancelled during classifier training")
                logits = head(x_chunk[start : start + batch_size])
                loss = loss_fn(logits, y_chunk[start : start + batch_size])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                chunk_logits.append(logits.detach())
                total_loss += loss.detach() * len(chunk_logits[-1])
            chunk_logits = torch.cat(chunk_logits)
            if record == "train":
                store(chunk, chunk_logits, epoch)
            correct += (chunk_logits.argmax(1) == y_chunk).sum()
        scheduler.step()
        if record == "eval":
            with torch.no_grad():
                head.eval()
                for start in range(0, s, 8192):
                    idx = torch.arange(start, min(s, start + 8192), device=device)
                    store(idx, head(rows.gather(idx)), epoch)
        entry = {
            "epoch": epoch + 1,
            "loss": float(total_loss) / s,
            "accuracy": float(correct) / s,
            "lr": optimiser.param_groups[0]["lr"],
        }
        if test is not None:
            entry["test_accuracy"] = test_accuracy(head, test[0], test[1], device)
        entry["seconds"] = time.perf_counter() - started
        log.append(entry)
        if on_epoch is not None:
            on_epoch(entry)

    candidates = candidate_probs = None
    if suggest is not None:
        candidates, candidate_probs = suggest.candidates(min(epochs, suggest_window[1]) - suggest_window[0], WIDE)
    window_probs = None
    if windows:
        window_probs = window_means(window_sums.cpu().numpy(), windows)
    return HeadDynamics(
        margins=margins.cpu().numpy(),
        prob_given=prob_given.cpu().numpy(),
        candidates=candidates,
        candidate_probs=candidate_probs,
        epochs=log,
        predicted=None if predict is None else softmax_of(head, predict, device),
        window_probs=window_probs,
    )


def softmax_of(head: nn.Module, features: np.ndarray, device: torch.device) -> np.ndarray:
    """Softmax (T, C) float32 of ``head`` on features (T, D), in eval mode."""
    was_training = head.training
    head.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(features), 8192):
            xb = torch.as_tensor(np.asarray(features[start : start + 8192]), dtype=torch.float32, device=device)
            out.append(torch.softmax(head(xb), dim=1).cpu().numpy())
    head.train(was_training)
    return np.concatenate(out)


def test_accuracy(head: nn.Module, features: np.ndarray, labels: np.ndarray, device: torch.device) -> float:
    """Accuracy of ``head`` on a held-out split. features (T, D), labels (T,)."""
    was_training = head.training
    head.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), 8192):
            xb = torch.as_tensor(np.asarray(features[start : start + 8192]), dtype=torch.float32, device=device)
            yb = torch.as_tensor(np.asarray(labels[start : start + 8192]), dtype=torch.int64, device=device)
            correct += int((head(xb).argmax(1) == yb).sum())
    head.train(was_training)
    return correct / max(1, len(labels))
