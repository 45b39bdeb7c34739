"""A 2-D map of a run's dynamics representations (originals and copies), for the Clusters page.

`embed` is pure; `run_map` computes it once per run and caches it in the run directory
(``umap.npz``, atomic write), so reopening a run draws at once.

Speed (55,000 x 512 on a 2-core CPU): PCA to 50 dimensions first, then UMAP on the *distinct*
rows only. Sign trajectories repeat a lot (most clean samples are +1 from the first epochs on),
so their representations do too; duplicates add no information to the neighbour graph and would
all collapse on one point anyway.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from dynacor import atomic
from dynacor.method.knn import nearest_neighbours
from dynacor.runs import store as runstore

CACHE_FILE = "umap.npz"
# Bump when the recipe below changes, so old caches are recomputed rather than trusted.
RECIPE = 1
MIN_UMAP_POINTS = 64


def embed(
    representations: np.ndarray,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    pca_dims: int = 50,
    n_epochs: int | None = None,
) -> np.ndarray:
    """UMAP of ``representations`` (S, K) to (S, 2) float32, deterministic for a given seed.

    n_epochs : None picks fewer optimisation epochs for large inputs (the layout settles early
        and the epochs dominate the time there)
    """
    x = np.asarray(representations, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"representations must be a non-empty (S, K) array, got shape {x.shape}")
    unique, inverse = np.unique(x, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    coords = np.zeros((unique.shape[0], 2), dtype=np.float32)
    if unique.shape[0] >= MIN_UMAP_POINTS:
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
    centred = x - x.mean(axis=0, keepdims=True)
    cov = (centred.T @ centred).astype(np.float64)
    _, vectors = np.linalg.eigh(cov)
    top = vectors[:, ::-1][:, :dims].astype(np.float32)
    return centred @ top


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


def _npy_rows(path: Path) -> int:
    # A memory map reads only the header: checking the cache must stay instant on big runs.
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
    except (OSError, ValueError):
        return -1
