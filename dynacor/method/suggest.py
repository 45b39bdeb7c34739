"""The label a reviewer is offered: the classes other than the given one that the classifier found
most likely early in training, before it memorised the wrong labels (issue 22; docs/benchmarks.md
"Suggestions").

Late in training the head has learned each given label, wrong ones included, so its late softmax
mostly names the given class back. Early on it still behaves like a held-out classifier: leaving
out the given class, its most likely class is the true one for about three flagged errors in four
on the dev file. The softmax is averaged over the ``suggest_window`` of epochs
(`dynacor.method.config.DynaCorConfig`) for every original, and only the few most likely other
classes are kept, so memory stays O(N x slots) at any number of classes.

``N`` originals, ``C`` classes, ``K`` candidates (at most ``min(3, C - 1)``).
"""

from __future__ import annotations

import numpy as np
import torch

NUM_CANDIDATES = 3
# Classes per row a run keeps until the neighbours' votes have been weighed in (`with_votes`).
WIDE = 8
# Classes kept per row while the window is summed, when C - 1 is larger: a class that falls out of
# them and comes back restarts its sum. On 100 classes with noisy per-epoch softmax (tests) 16
# slots give the dense top 3 exactly where 8 miss 6% of them; the merge costs B x 32 x 32 a batch.
SLOTS = 16

SOURCE_EARLY = "early softmax"
SOURCE_LATE = "late softmax"
SOURCE_SAVED = "saved suggestions"
SOURCE_NONE = "none"


def top_candidates(probs: np.ndarray, given: np.ndarray, k: int = NUM_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely classes of each row other than its given class.

    Parameters
    ----------
    probs : (N, C) float, a softmax (or any non-negative score) per row
    given : (N,) int64, the given labels
    k : candidates per row (at most C - 1 are returned)

    Returns
    -------
    candidates : (N, K) int64, most likely first, never the given label
    candidate_probs : (N, K) float32, their values in ``probs``
    """
    probs = np.asarray(probs, dtype=np.float32)
    n, c = probs.shape
    k = min(k, c - 1)
    masked = probs.copy()
    masked[np.arange(n), np.asarray(given, dtype=np.int64)] = -np.inf
    # argsort of the negated row, stable: equal probabilities keep class order
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(probs, order, axis=1).astype(np.float32)


class CandidateSums:
    """The softmax of N originals summed over the epochs of a window, for the classes other than
    each row's given one, in O(N x slots) memory (dense, exact, when C - 1 <= ``slots``).

    Parameters
    ----------
    given : (N,) int64 tensor of given labels, on ``device``
    num_classes : C
    device : where the sums live (the training device: adding never synchronises)
    slots : classes kept per row when C - 1 > slots

    Notes
    -----
    Call `add` with each batch while the window is open, then `candidates` with the number of
    epochs summed. Each original must be added at most once per epoch. Rows >= N (copies) land
    on a spare row and are dropped, so a batch needs no boolean mask (which would wait for a GPU).
    """

    def __init__(self, given: torch.Tensor, num_classes: int, device: torch.device, slots: int = SLOTS):
        given = torch.as_tensor(given, dtype=torch.int64)
        self.n = n = int(given.shape[0])
        self.given = torch.cat([given, given.new_zeros(1)]).to(device)  # + the spare row
        self.num_classes = int(num_classes)
        n += 1
        self.dense = num_classes - 1 <= slots
        if self.dense:
            self.sums = torch.zeros((n, num_classes), dtype=torch.float32, device=device)
        else:
            self.slots = slots
            self.classes = torch.full((n, slots), -1, dtype=torch.int64, device=device)
            self.sums = torch.zeros((n, slots), dtype=torch.float32, device=device)

    def add(self, rows: torch.Tensor, probs: torch.Tensor) -> None:
        """Add one batch: ``rows`` (B,) int64 training rows (>= N: a copy, dropped), ``probs`` (B, C)."""
        rows = rows.to(self.given.device).clamp_max(self.n)
        probs = probs.detach().float().to(self.given.device)
        if self.dense:
            self.sums[rows] += probs
            return
        # Leave out the given class, then merge the batch's top classes into the row's slots.
        probs = probs.scatter(1, self.given[rows][:, None], 0.0)
        new_sums, new_classes = probs.topk(self.slots, dim=1)
        classes = torch.cat([self.classes[rows], new_classes], dim=1)  # (B, 2 slots)
        sums = torch.cat([self.sums[rows], new_sums], dim=1)
        same = classes[:, :, None] == classes[:, None, :]  # (B, 2 slots, 2 slots)
        merged = (same * sums[:, None, :]).sum(dim=2)
        earlier = torch.ones(same.shape[1:], dtype=torch.bool, device=same.device).tril(-1)
        repeated = (same & earlier).any(dim=2)  # a class already counted at an earlier slot
        merged = torch.where(repeated | (classes < 0), torch.full_like(merged, -1.0), merged)
        kept_sums, at = merged.topk(self.slots, dim=1)
        kept_classes = classes.gather(1, at)
        self.classes[rows] = torch.where(kept_sums >= 0, kept_classes, torch.full_like(kept_classes, -1))
        self.sums[rows] = kept_sums.clamp_min(0.0)

    def candidates(self, epochs: int, k: int = NUM_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
        """The window's averaged softmax as candidates: (N, K) int64 and (N, K) float32 (see
        `top_candidates`); ``epochs`` is how many epochs were summed."""
        scale = 1.0 / max(1, int(epochs))
        given = self.given[: self.n].cpu().numpy()
        if self.dense:
            return top_candidates(self.sums[: self.n].cpu().numpy() * scale, given, k)
        k = min(k, self.num_classes - 1)
        sums = self.sums[: self.n].cpu().numpy() * scale
        classes = self.classes[: self.n].cpu().numpy()
        sums = np.where(classes < 0, -1.0, sums)  # an empty slot never outranks a class
        order = np.argsort(-sums, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(classes, order, axis=1).astype(np.int64),
                np.take_along_axis(sums, order, axis=1).clip(0.0).astype(np.float32))  # fmt: skip


def with_votes(candidates: np.ndarray, probs: np.ndarray, given: np.ndarray, votes: np.ndarray, weight: float,
               k: int = NUM_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Candidates ranked by the early softmax plus ``weight`` x the share of neighbours' votes.

    A sample's nearest unflagged neighbours in feature space mostly carry its true class; their
    votes, weighed in lightly, mend some of the early classifier's confusions (tuning half:
    +1.1 points top 1, +1.0 top 3; docs/benchmarks.md "Suggestions").

    Parameters
    ----------
    candidates : (R, W) int64 classes (-1 pads) and probs (R, W) their early probabilities
    given : (R,) int64; votes : (R, C) float, each class's share of the neighbours' labels
    weight : how much a full vote counts against a probability of 1

    Returns
    -------
    (R, K) int64 candidates, most likely first, never the given label, and (R, K) float32 their
    probabilities under the mixture ``(p + weight x votes) / (1 + weight)`` (a distribution when
    ``p`` and ``votes`` are: what the card shows agrees with the order it shows)
    """
    r, c = votes.shape
    early = np.zeros((r, c), dtype=np.float64)
    kept = candidates >= 0
    rows = np.repeat(np.arange(r), candidates.shape[1]).reshape(candidates.shape)
    early[rows[kept], candidates[kept]] = np.nan_to_num(probs[kept])
    mixture = (early + weight * np.asarray(votes, dtype=np.float64)) / (1.0 + weight)
    return top_candidates(mixture, given, k)


def saved_candidates(suggested: np.ndarray, prob: np.ndarray | None, given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One candidate per row from a saved suggestion (a run from before candidates were kept):
    the suggestion where it is another class than the given one, else none (-1).

    Returns (N, 1) int64 and (N, 1) float32 (NaN where unknown)."""
    suggested = np.asarray(suggested, dtype=np.int64)
    other = suggested != np.asarray(given, dtype=np.int64)
    values = np.full(len(suggested), np.nan, dtype=np.float32) if prob is None else np.asarray(prob, dtype=np.float32)
    return (np.where(other, suggested, -1)[:, None].astype(np.int64),
            np.where(other, values, np.nan)[:, None].astype(np.float32))  # fmt: skip


def candidate_matrix(frame, width: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The candidate classes of each row of a samples table, as fixed-width arrays.

    Reads the ``candidates`` / ``candidate_probs`` columns in either form (Parquet lists, or
    the CSV's space-separated text); a table without them (a run from before they existed, or
    a baseline without probabilities) gives no candidates.

    Returns
    -------
    candidates : (N, width) int64, most likely first, -1 where a row has fewer
    probs : (N, width) float64, their probabilities, NaN where a row has fewer or none recorded
    """
    n = len(frame)
    candidates = np.full((n, width), -1, dtype=np.int64)
    probs = np.full((n, width), np.nan, dtype=np.float64)
    if "candidates" not in frame.columns:
        return candidates, probs
    # One pass over flat values, not a Python loop per row: the app reads a million rows of it.
    lengths, classes = _flat(frame["candidates"])
    rows, place = _places(lengths)
    keep = place < width
    candidates[rows[keep], place[keep]] = classes[keep].astype(np.int64)
    if "candidate_probs" in frame.columns:
        prob_lengths, values = _flat(frame["candidate_probs"])
        prob_rows, prob_place = _places(prob_lengths)
        # a probability without its class (a shorter candidates cell) is left out
        keep = (prob_place < np.minimum(lengths, width)[prob_rows])
        probs[prob_rows[keep], prob_place[keep]] = values[keep]
    return candidates, probs


def _flat(column) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (N,) lengths and the values of all its cells, in row order."""
    cells = list(column)
    if not all(isinstance(cell, np.ndarray) for cell in cells):  # Parquet's cells already are arrays
        cells = [np.asarray(cells_of(cell), dtype=np.float64).reshape(-1) if _present(cell) else np.zeros(0)
                 for cell in cells]  # fmt: skip
    lengths = np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))
    values = np.concatenate(cells).astype(np.float64) if cells else np.zeros(0)
    return lengths, values


def _places(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For flat values of cells of ``lengths``: each value's row and its place in the row."""
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    return rows, np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def _present(cell) -> bool:
    return cell is not None and not (isinstance(cell, float) and np.isnan(cell))


def cells_of(cell) -> list:
    """One cell of a list column: a list/array (Parquet), space-separated text (CSV), or missing."""
    if cell is None:
        return []
    if isinstance(cell, str):
        return cell.split()
    if isinstance(cell, float) and np.isnan(cell):
        return []
    if np.ndim(cell) == 0:  # a CSV column of single candidates reads as numbers
        return [cell]
    return list(cell)
