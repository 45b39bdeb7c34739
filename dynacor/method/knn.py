"""Exact k nearest neighbours and label votes among them: the one kNN of the package.

Used by SimiFeat (votes in feature space), the label suggestions of baselines run through
``detect --method`` and the UMAP map (its neighbour graph). Blocked matrix products in torch:
exact, and fast enough on CPU for the sizes the app maps.
"""

from __future__ import annotations

import numpy as np
import torch


def nearest_neighbours(
    x: np.ndarray, k: int, metric: str = "euclidean", block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every row of ``x``, itself excluded, nearest first.

    Parameters
    ----------
    x : (N, D) float
    k : neighbours per row, at most N - 1
    metric : ``"euclidean"`` or ``"cosine"`` (rows are normalised; ranks by cosine similarity)
    block : rows per matrix product (bounds memory to ``block x N``)

    Returns
    -------
    index : (N, k) int64
    distance : (N, k) float32, Euclidean distance or cosine similarity (for ``"cosine"``)
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    n = data.shape[0]
    k = min(k, n - 1)
    if metric == "cosine":
        data = torch.nn.functional.normalize(data, dim=1)
    norms = (data * data).sum(dim=1)
    index = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, n, block):
            stop = min(start + block, n)
            rows = torch.arange(stop - start)
            if metric == "cosine":
                sim = data[start:stop] @ data.T
                sim[rows, rows + start] = -float("inf")
                values, idx = sim.topk(k, dim=1)
            else:
                # |a|^2 is the same along a row, so ranking needs only |b|^2 - 2ab: one fused product.
                partial = torch.addmm(norms.unsqueeze(0), data[start:stop], data.T, beta=1.0, alpha=-2.0)
                partial[rows, rows + start] = float("inf")
                values, idx = torch.topk(partial, k, dim=1, largest=False, sorted=True)
                values = (values + norms[start:stop, None]).clamp_min(0.0).sqrt()
            index[start:stop] = idx.numpy()
            dist[start:stop] = values.numpy()
    return index, dist


def neighbours_of(
    x: np.ndarray, rows: np.ndarray, k: int, metric: str = "cosine", block: int = 1024, db_block: int = 16384,
    among: np.ndarray | None = None,
) -> np.ndarray:
    """The ``k`` nearest neighbours among all rows of ``x`` of the rows listed in ``rows``, each
    itself excluded, nearest first: what a reviewer is shown beside a flagged sample.

    ``among`` (N,) bool keeps the neighbours to the rows where it is True (at least ``k`` of
    them). One request of `neighbour_lists`, which says how ``x`` is read.

    x (N, D), rows (R,) int -> (R, k) int64 indices into ``x``.
    """
    return neighbour_lists(x, rows, [(k, among)], metric, block, db_block)[0]


def neighbour_lists(
    x: np.ndarray, rows: np.ndarray, requests: list[tuple[int, np.ndarray | None]], metric: str = "cosine",
    block: int = 1024, db_block: int = 16384, query_block: int = 16384,
) -> list[np.ndarray]:
    """Several neighbour lists of the same rows from one pass of matrix products: for each request
    ``(k, among)`` the ``k`` nearest rows of ``x`` (itself excluded, nearest first), among the rows
    where ``among`` (N,) bool is True (None: all rows; at least ``k`` of them).

    ``x`` is read ``db_block`` rows at a time, each block once per ``query_block`` listed rows (a
    float16 memory map of a million rows is never converted whole); its products with ``block``
    listed rows at a time feed a running top-k per request, so requests share the products, the
    expensive part.

    x (N, D), rows (R,) int -> one (R, k) int64 array of indices into ``x`` per request.
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    rows = np.asarray(rows, dtype=np.int64)
    n = int(x.shape[0])
    ks = [min(k, n - 1 if among is None else int(np.sum(among)) - 1) for k, among in requests]
    outs = [np.empty((len(rows), max(k, 0)), dtype=np.int64) for k in ks]
    live = [r for r, k in enumerate(ks) if k > 0]
    if len(rows) == 0 or not live:
        return outs
    excluded = [None if among is None else torch.from_numpy(~np.asarray(among, dtype=bool)) for _, among in requests]

    def prepared(values: np.ndarray) -> torch.Tensor:
        data = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        return torch.nn.functional.normalize(data, dim=1) if metric == "cosine" else data

    with torch.no_grad():
        for q_start in range(0, len(rows), query_block):
            listed = rows[q_start : q_start + query_block]
            queries = prepared(x[np.sort(listed)])[np.argsort(np.argsort(listed))]
            best = {r: (torch.full((len(listed), ks[r]), float("inf")), torch.zeros((len(listed), ks[r]), dtype=torch.int64))
                    for r in live}  # fmt: skip
            for db_start in range(0, n, db_block):
                data = prepared(x[db_start : db_start + db_block])
                norms = (data * data).sum(dim=1) if metric == "euclidean" else None
                for start in range(0, len(listed), block):
                    chunk = listed[start : start + block]
                    if metric == "cosine":
                        score = -(queries[start : start + block] @ data.T)
                    else:
                        score = torch.addmm(norms.unsqueeze(0), queries[start : start + block], data.T, beta=1.0, alpha=-2.0)
                    local = torch.from_numpy(chunk - db_start)
                    inside = (local >= 0) & (local < data.shape[0])
                    score[torch.nonzero(inside).flatten(), local[inside]] = float("inf")
                    for r in live:
                        masked = score
                        if excluded[r] is not None:
                            masked = score.clone()
                            masked[:, excluded[r][db_start : db_start + data.shape[0]]] = float("inf")
                        # The block's own top k first: merging then touches (R, 2k), not (R, block).
                        block_score, block_index = torch.topk(masked, min(ks[r], masked.shape[1]), dim=1, largest=False,
                                                              sorted=True)  # fmt: skip
                        best_score, best_index = best[r]
                        merged_score = torch.cat([best_score[start : start + block], block_score], dim=1)
                        merged_index = torch.cat([best_index[start : start + block], block_index + db_start], dim=1)
                        top = torch.topk(merged_score, ks[r], dim=1, largest=False, sorted=True).indices
                        best_score[start : start + block] = merged_score.gather(1, top)
                        best_index[start : start + block] = merged_index.gather(1, top)
            for r in live:
                outs[r][q_start : q_start + len(listed)] = best[r][1].numpy()
    return outs


def label_votes(neighbours: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of each row's neighbours carrying each label. (N, k) indices, (N,) labels -> (N, C)."""
    labels = np.asarray(labels, dtype=np.int64)
    neighbour_labels = labels[neighbours]
    votes = np.zeros((neighbours.shape[0], num_classes))
    rows = np.repeat(np.arange(neighbours.shape[0]), neighbours.shape[1])
    np.add.at(votes, (rows, neighbour_labels.ravel()), 1.0)
    return votes / max(neighbours.shape[1], 1)
