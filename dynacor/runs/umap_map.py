"""A 2-D map of a run's dynamics representations (originals and copies), for the Clusters page.

`embed` is pure; `run_map` computes it once per run and caches it in the run directory
(``umap.npz``, atomic write), so reopening a run draws at once.

Speed (55,000 x 512 on a 2-core CPU): PCA to 50 dimensions first, then UMAP on the *distinct*
rows only. Sign trajectories repeat a lot (most clean samples are +1 from the first epochs on),
so their representations do too; duplicates add no information to the neighbour graph and would
all collapse on one point anyway.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np

from dynacor import atomic
from dynacor.method.knn import nearest_neighbours
from dynacor.runs import store as runstore

CACHE_FILE = "umap.npz"
# Bump when the recipe below changes, so old caches are recomputed rather than trusted.
RECIPE = 2
MIN_UMAP_POINTS = 64
# Distinct rows UMAP is fitted on; beyond, rows are placed among their fitted neighbours. 30,000
# fit in about a minute on 2 cores; a million placed in another.
FIT_POINTS = 30_000


def embed(
    representations: np.ndarray,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    pca_dims: int = 50,
    n_epochs: int | None = None,
    fit_points: int = FIT_POINTS,
) -> np.ndarray:
    """UMAP of ``representations`` (S, K) to (S, 2) float32, deterministic for a given seed.

    n_epochs : None picks fewer optimisation epochs for large inputs (the layout settles early
        and the epochs dominate the time there)
    fit_points : above this many distinct rows, UMAP is fitted on a seeded sample of this size and
        every other row is placed among its nearest fitted neighbours (`place`)
    """
    x = np.asarray(representations)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"representations must be a non-empty (S, K) array, got shape {x.shape}")
    first, inverse = distinct_rows(x)
    unique = np.asarray(x[first], dtype=np.float32)
    coords = np.zeros((unique.shape[0], 2), dtype=np.float32)
    if unique.shape[0] > fit_points:
        coords = _umap_and_place(unique, seed, n_neighbors, min_dist, pca_dims, n_epochs, fit_points)
    elif unique.shape[0] >= MIN_UMAP_POINTS:
        coords = _umap(unique, seed, n_neighbors, min_dist, pca_dims, n_epochs)
    elif unique.shape[0] > 2:
        # A neighbour graph of a few dozen distinct points says nothing PCA does not.
        coords = pca(unique, 2)
    elif unique.shape[0] == 2:
        coords[1, 0] = 1.0
    out = coords[inverse]
    # Identical representations would draw as one dot; a small seeded jitter shows how many there are.
    counts = np.bincount(inverse)
    repeated = counts[inverse] > 1
    if repeated.any():
        span = float(np.ptp(out, axis=0).max()) or 1.0
        rng = np.random.default_rng(seed)
        out[repeated] += rng.normal(0.0, 0.01 * span, size=(int(repeated.sum()), 2)).astype(np.float32)
    return out.astype(np.float32)


def distinct_rows(x: np.ndarray, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``x`` (S, K): ``first`` (U,) the index of each one's first occurrence,
    ``inverse`` (S,) which distinct row each row is.

    Rows are grouped by a 64-bit hash of their bytes computed a block at a time, then every row is
    checked against its group's first row (np.unique(axis=0) would sort copies of the whole
    matrix: gigabytes at a million rows); a collision, never seen, falls back to np.unique.
    """
    width = x.shape[1] * x.dtype.itemsize
    word = np.uint64 if width % 8 == 0 else np.uint8  # 8 bytes at a time where the rows allow it
    words = width // np.dtype(word).itemsize
    multipliers = np.random.default_rng(0x5EED).integers(1, 2**63, size=words, dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(x.shape[0], dtype=np.uint64)
    step = max(1, (block * 8) // words)  # about `block` x 8 words of scratch per step
    with np.errstate(over="ignore"):
        for start in range(0, x.shape[0], step):
            chunk = np.ascontiguousarray(x[start : start + step])
            raw = chunk.view(word).reshape(len(chunk), words).astype(np.uint64)
            hashes[start : start + len(chunk)] = ((raw + np.uint64(1)) * multipliers).sum(axis=1, dtype=np.uint64)
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    for start in range(0, x.shape[0], block):
        chunk = slice(start, start + block)
        if not np.array_equal(np.asarray(x[chunk]), np.asarray(x[first[inverse[chunk]]])):
            _, first, inverse = np.unique(np.asarray(x), axis=0, return_index=True, return_inverse=True)
            return first, inverse.reshape(-1)
    return first, inverse


def _umap_and_place(x, seed, n_neighbors, min_dist, pca_dims, n_epochs, fit_points) -> np.ndarray:
    """UMAP fitted on ``fit_points`` rows of ``x`` (U, K) drawn with ``seed``; the others placed."""
    rng = np.random.default_rng(seed)
    fitted = np.sort(rng.choice(x.shape[0], fit_points, replace=False))
    mean, top = pca_basis(x[fitted], min(pca_dims, x.shape[1]))
    low = np.concatenate([(x[i : i + 65536] - mean) @ top for i in range(0, x.shape[0], 65536)])
    coords = np.empty((x.shape[0], 2), dtype=np.float32)
    coords[fitted] = _umap(low[fitted], seed, n_neighbors, min_dist, pca_dims, n_epochs)
    rest = np.setdiff1d(np.arange(x.shape[0]), fitted)
    coords[rest] = place(low[rest], low[fitted], coords[fitted])
    return coords


def place(queries: np.ndarray, reference: np.ndarray, reference_coords: np.ndarray, k: int = 8,
          block: int = 4096) -> np.ndarray:  # fmt: skip
    """2-D positions of ``queries`` (Q, K): the inverse-distance-weighted mean of the map positions
    of their ``k`` nearest ``reference`` rows (R, K) -> (Q, 2). What UMAP's own ``transform`` starts
    from, without its optimisation epochs (minutes at a million points on 2 cores)."""
    import torch

    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    ref_coords = torch.from_numpy(np.ascontiguousarray(reference_coords, dtype=np.float32))
    k = min(k, ref.shape[0])
    out = np.empty((queries.shape[0], 2), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, queries.shape[0], block):
            q = torch.from_numpy(np.ascontiguousarray(queries[start : start + block], dtype=np.float32))
            dist, idx = torch.topk(torch.cdist(q, ref), k, dim=1, largest=False)
            weight = 1.0 / (dist + 1e-6)
            weight /= weight.sum(dim=1, keepdim=True)
            out[start : start + len(q)] = (weight[:, :, None] * ref_coords[idx]).sum(dim=1).numpy()
    return out


def _umap(x: np.ndarray, seed: int, n_neighbors: int, min_dist: float, pca_dims: int, n_epochs: int | None) -> np.ndarray:
    import warnings

    import umap  # slow to import (numba): only here

    s, k = x.shape
    if k > pca_dims and s > pca_dims:
        x = pca(x, pca_dims)
    n_neighbors = min(n_neighbors, s - 1)
    if n_epochs is None:
        n_epochs = 200 if s <= 10_000 else 60
    # Exact neighbours by blocked matrix products (torch, already loaded by the engine) instead of
    # UMAP's NN-descent: on 2 cores NN-descent's numba compilation alone takes longer than this.
    others, others_dist = nearest_neighbours(x, n_neighbors - 1)
    # UMAP's precomputed graph lists each point first, at distance 0.
    knn_index = np.concatenate([np.arange(x.shape[0])[:, None], others], axis=1)
    knn_dist = np.concatenate([np.zeros((x.shape[0], 1), np.float32), others_dist], axis=1)
    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        n_epochs=n_epochs,
        metric="euclidean",
        init="spectral" if s <= 20_000 else "pca",  # spectral init dominates the time on big inputs
        random_state=seed,
        low_memory=True,
        precomputed_knn=(knn_index, knn_dist, None),
        # random_state makes the optimiser single-threaded; that is the price of reproducible maps.
        n_jobs=1,
        verbose=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", no search index, ...
        return reducer.fit_transform(x).astype(np.float32)


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """Project onto the top ``dims`` principal components (eigenvectors of the D x D covariance:
    one pass over the data, much faster than an SVD of the S x D matrix when S >> D)."""
    x = np.asarray(x, dtype=np.float32)
    mean, top = pca_basis(x, dims)
    return (x - mean) @ top


def pca_basis(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean (1, K) and top ``dims`` principal directions (K, dims) of ``x`` (S, K)."""
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=0, keepdims=True)
    centred = x - mean
    cov = (centred.T @ centred).astype(np.float64)
    _, vectors = np.linalg.eigh(cov)
    return mean, vectors[:, ::-1][:, :dims].astype(np.float32)


def run_map(run_dir: str | os.PathLike[str], seed: int = 0) -> tuple[np.ndarray, dict]:
    """The map of a finished run: (S, 2) coordinates for originals then copies, and info
    (``seconds``, ``cached``). Computed on first use and cached in ``run_dir/umap.npz``."""
    run_dir = Path(run_dir)
    cached = load_cached(run_dir, seed)
    if cached is not None:
        return cached, {"cached": True, "seconds": 0.0}
    reps = runstore.load_array(run_dir, "representations")
    started = time.perf_counter()
    coords = embed(reps, seed=seed)
    seconds = time.perf_counter() - started
    atomic.save_npz(run_dir / CACHE_FILE, coords=coords, seed=np.int64(seed), rows=np.int64(reps.shape[0]),
                    recipe=np.int64(RECIPE), seconds=np.float64(seconds), run_id=np.str_(runstore.run_id(run_dir)))  # fmt: skip
    return coords, {"cached": False, "seconds": seconds}


def load_cached(run_dir: str | os.PathLike[str], seed: int = 0) -> np.ndarray | None:
    """The cached map when it matches this run and recipe; None otherwise (also when unreadable)."""
    path = Path(run_dir) / CACHE_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if int(archive["seed"]) != seed or int(archive["recipe"]) != RECIPE:
                return None
            # A map of another run written into this folder is never shown on this one.
            if "run_id" not in archive.files or str(archive["run_id"]) != runstore.run_id(run_dir):
                return None
            coords = archive["coords"]
            rows = int(archive["rows"])
    except (OSError, KeyError, ValueError, EOFError):
        return None
    reps = Path(run_dir) / "representations.npy"
    if reps.exists() and _npy_rows(reps) != rows:
        return None
    return coords


def run_points(run_dir: str | os.PathLike[str], n: int) -> tuple[np.ndarray | None, str]:
    """The run's 2-D map of its N originals, and a note on where it came from (for exports).

    The map the Clusters page cached; when none is cached and umap-learn is installed it is
    computed now (and cached for the app). Runs without representations (baselines) have none.
    """
    run_dir = Path(run_dir)
    points = load_cached(run_dir)
    if points is not None:
        return points[:n], "the run's cached map"
    if not (run_dir / "representations.npy").exists():
        return None, "no map (the run has no representations)"
    if importlib.util.find_spec("umap") is None:
        return None, "no map (none cached, and umap-learn is not installed: pip install 'dynacor[app]')"
    points, _ = run_map(run_dir)
    return points[:n], "the run's map (computed now, cached for the app)"


def _npy_rows(path: Path) -> int:
    # A memory map reads only the header: checking the cache must stay instant on big runs.
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
    except (OSError, ValueError):
        return -1


def drawn_subset(total: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``total`` map points to draw (all when they fit):
    a browser draws a few tens of thousands of WebGL points fluidly, not a million."""
    if total <= limit:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))


def inside_selection(coords: np.ndarray, boxes: list[dict], lassos: list[dict]) -> np.ndarray:
    """Which of ``coords`` (P, 2) lie in any selected box (``x``: [x0, x1], ``y``: [y0, y1]) or
    lasso (``x``, ``y``: the polygon's vertices), as the map's selection event reports them ->
    (P,) bool. Lets a selection on a subsampled drawing select every point, drawn or not."""
    x, y = coords[:, 0], coords[:, 1]
    hit = np.zeros(len(coords), dtype=bool)
    for box in boxes:
        (x0, x1), (y0, y1) = sorted(box["x"][:2]), sorted(box["y"][:2])
        hit |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    for lasso in lassos:
        px, py = np.asarray(lasso["x"], dtype=np.float64), np.asarray(lasso["y"], dtype=np.float64)
        if len(px) < 3:
            continue
        inside = np.zeros(len(coords), dtype=bool)
        # Even-odd rule: count the polygon edges a horizontal ray from each point crosses.
        for ax, ay, bx, by in zip(px, py, np.roll(px, 1), np.roll(py, 1), strict=True):
            crosses = (ay > y) != (by > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                at = ax + (y - ay) * (bx - ax) / (by - ay)
            inside ^= crosses & (x < at)
        hit |= inside
    return hit
