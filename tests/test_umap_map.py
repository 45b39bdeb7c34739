"""The cluster map: exact neighbours, deterministic embedding, computed once and cached per run."""

from __future__ import annotations

import numpy as np
import pytest

from dynacor import atomic
from dynacor.method.knn import nearest_neighbours
from dynacor.runs import umap_map


def fake_run(tmp_path, reps: np.ndarray):
    atomic.save_npy(tmp_path / "representations.npy", reps.astype(np.float16))
    return tmp_path


def test_nearest_neighbours_are_exact_and_exclude_the_point():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    index, dist = nearest_neighbours(x, 5, block=64)
    full = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    expected = np.argsort(full, axis=1)[:, 1:6]
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(full, expected, 1), atol=1e-3)


def test_pca_keeps_the_main_directions():
    rng = np.random.default_rng(1)
    x = np.zeros((200, 10), np.float32)
    x[:, 3] = rng.normal(0, 10, 200)
    out = umap_map.pca(x, 2)
    assert out.shape == (200, 2)
    assert abs(np.corrcoef(out[:, 0], x[:, 3])[0, 1]) > 0.99


def test_duplicates_share_one_place_and_small_inputs_skip_umap():
    reps = np.repeat(np.eye(4, 16, dtype=np.float32), [50, 30, 10, 1], axis=0)
    coords = umap_map.embed(reps, seed=0)
    assert coords.shape == (91, 2) and np.isfinite(coords).all()
    # jittered copies of one representation stay far closer to each other than to another one
    assert np.linalg.norm(coords[:50].mean(0) - coords[50:80].mean(0)) > 5 * coords[:50].std(0).max()


def test_map_is_cached_in_the_run_and_reused(tmp_path, monkeypatch):
    reps = np.repeat(np.eye(6, 32), 20, axis=0)
    run = fake_run(tmp_path, reps)
    first, info = umap_map.run_map(run)
    assert not info["cached"] and (run / umap_map.CACHE_FILE).exists()

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(umap_map, "embed", boom)
    second, info = umap_map.run_map(run)
    assert info["cached"]
    np.testing.assert_array_equal(first, second)
    # A rewritten run (different number of rows) must not reuse a stale map.
    fake_run(tmp_path, np.repeat(np.eye(6, 32), 21, axis=0))
    assert umap_map.load_cached(run) is None


def test_umap_is_deterministic_for_a_seed():
    pytest.importorskip("umap")
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, size=(3, 24))
    x = (centres[rng.integers(0, 3, 150)] + rng.normal(0, 1, size=(150, 24))).astype(np.float32)
    a = umap_map.embed(x, seed=3, n_epochs=30)
    b = umap_map.embed(x, seed=3, n_epochs=30)
    assert a.shape == (150, 2)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_big_maps_fit_a_sample_and_place_the_rest_near_their_twins():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 5, size=(4, 32)).astype(np.float32)
    group = rng.integers(0, 4, 3000)
    reps = (centres[group] + rng.normal(0, 0.3, size=(3000, 32))).astype(np.float16)
    coords = umap_map.embed(reps, seed=0, fit_points=800, n_epochs=30)
    assert coords.shape == (3000, 2) and np.isfinite(coords).all()
    # Placed points land with their group: each group's points sit closer to their own centre
    # than to any other group's.
    means = np.stack([coords[group == g].mean(axis=0) for g in range(4)])
    nearest = np.argmin(((coords[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == group).mean() > 0.95


def test_distinct_rows_match_numpy_unique():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(50, 7)).astype(np.float16)  # 14-byte rows: hashed byte by byte
    x = base[rng.integers(0, 50, 2000)]
    first, inverse = umap_map.distinct_rows(x, block=64)
    np.testing.assert_array_equal(x[first][inverse], x)
    assert len(first) == len(np.unique(x, axis=0))


def test_a_selection_on_a_sampled_drawing_selects_every_point_inside():
    coords = np.array([[0.2, 0.2], [2.0, 2.0], [0.6, 0.6], [0.05, 0.5], [1.5, 0.5]])
    lasso = {"x": [0, 1, 0], "y": [0, 0, 1]}  # the triangle under x + y = 1
    box = {"x": [1.2, 1.8], "y": [0.2, 0.8]}
    assert umap_map.inside_selection(coords, [], [lasso]).tolist() == [True, False, False, True, False]
    assert umap_map.inside_selection(coords, [box], [lasso]).tolist() == [True, False, False, True, True]
    drawn = umap_map.drawn_subset(1_000_000, 60_000)
    assert len(drawn) == 60_000 and np.all(np.diff(drawn) > 0)
    assert np.array_equal(umap_map.drawn_subset(10, 60_000), np.arange(10))
