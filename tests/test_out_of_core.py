"""The out-of-core path: feature directories (memory-mapped float16), npz streamed into them, and
the same flags as the in-memory path for the same seed."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from dynacor.data import featurefile
from dynacor.data.feature_dir import FeatureDirBuilder, load_feature_dir, npz_to_feature_dir
from dynacor.errors import CorruptError, InputError, MissingError
from dynacor.method.config import DynaCorConfig
from dynacor.method.knn import neighbour_lists, neighbours_of
from dynacor.method.pipeline import run


def half_precision(blobs: dict) -> dict:
    out = dict(blobs)
    out["features"] = blobs["features"].astype(np.float16)
    out["features_aug"] = blobs["features_aug"].astype(np.float16)
    return out


def is_mapped(array: np.ndarray) -> bool:
    """True when ``array`` views a memory map (np.asarray drops the memmap subclass, not the map)."""
    while array is not None:
        if isinstance(array, np.memmap) or type(array).__name__ == "mmap":
            return True
        array = getattr(array, "base", None)
    return False


def test_npz_streams_into_a_feature_dir_in_small_blocks(tmp_path, blobs, monkeypatch):
    monkeypatch.setattr("dynacor.data.feature_dir.BLOCK_ROWS", 7)  # many blocks, a ragged last one
    data = half_precision(blobs)
    np.savez(tmp_path / "f.npz", worse_labels=data["labels"][::-1].copy(), **data)
    out = npz_to_feature_dir(tmp_path / "f.npz", tmp_path / "dir")
    loaded = load_feature_dir(out, labels_key="worse_labels")
    assert is_mapped(loaded.features) and loaded.features.dtype == np.float16
    np.testing.assert_array_equal(loaded.features, data["features"])
    np.testing.assert_array_equal(loaded.features_aug, data["features_aug"])
    np.testing.assert_array_equal(loaded.labels, data["labels"][::-1])
    np.testing.assert_array_equal(loaded.clean_labels, data["clean_labels"])
    assert list(loaded.ids) == [str(i) for i in data["ids"]]
    assert loaded.class_names == list(data["class_names"])
    assert load_feature_dir(out).labels.tolist() == data["labels"].tolist()


def test_same_flags_in_memory_and_out_of_core(tmp_path, blobs, monkeypatch):
    data = half_precision(blobs)
    np.savez(tmp_path / "f.npz", **data)
    # On the CPU, where runs are bit-reproducible (CUDA kernels may sum in any order).
    config = DynaCorConfig(seed=3, epochs=8, encoder_epochs=2, rep_dim=32, hidden=32, device="cpu")
    in_memory = run(config, featurefile.load_features(tmp_path / "f.npz"))
    monkeypatch.setattr(featurefile, "STREAM_BYTES", 0)
    monkeypatch.setenv("DYNACOR_CACHE", str(tmp_path / "cache"))
    streamed = featurefile.load_features(tmp_path / "f.npz")
    assert is_mapped(streamed.features) and is_mapped(streamed.features_aug)
    out_of_core = run(config, streamed)
    np.testing.assert_array_equal(out_of_core.margins_all, in_memory.margins_all)
    np.testing.assert_array_equal(out_of_core.q_noisy, in_memory.q_noisy)
    np.testing.assert_array_equal(out_of_core.flagged, in_memory.flagged)
    np.testing.assert_array_equal(out_of_core.suggested_labels, in_memory.suggested_labels)
    np.testing.assert_array_equal(out_of_core.neighbours, in_memory.neighbours)
    # The streamed copy is reused, not made again.
    (made,) = (tmp_path / "cache" / "feature_dirs").iterdir()
    before = (made / "features.npy").stat().st_mtime_ns
    featurefile.load_features(tmp_path / "f.npz")
    assert (made / "features.npy").stat().st_mtime_ns == before


@pytest.mark.data
@pytest.mark.slow
def test_dev_file_flags_identical_in_memory_and_out_of_core(shared_data, tmp_path, monkeypatch):
    config = DynaCorConfig(seed=0, epochs=10, encoder_epochs=3, device="cpu")
    file = shared_data / "cifar10_effl0_dev.npz"
    in_memory = run(config, featurefile.load_features(file, labels_key="worse_labels"))
    monkeypatch.setattr(featurefile, "STREAM_BYTES", 0)
    monkeypatch.setenv("DYNACOR_CACHE", str(tmp_path / "cache"))
    out_of_core = run(config, featurefile.load_features(file, labels_key="worse_labels"))
    np.testing.assert_array_equal(out_of_core.flagged, in_memory.flagged)
    np.testing.assert_array_equal(out_of_core.q_noisy, in_memory.q_noisy)


def test_neighbours_in_blocks_equal_one_block():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((900, 24)).astype(np.float16)
    rows = rng.choice(900, 120, replace=False)
    whole = neighbours_of(x, rows, 6, db_block=10_000)
    np.testing.assert_array_equal(neighbours_of(x, rows, 6, db_block=97, block=13), whole)
    assert not np.any(whole == rows[:, None])  # a sample is never its own neighbour
    # Several lists from one pass (shared products, queries in blocks too) equal separate searches.
    among = rng.random(900) < 0.4
    for metric in ("cosine", "euclidean"):
        both = neighbour_lists(x, rows, [(6, None), (9, among)], metric=metric, db_block=97, block=13, query_block=50)
        np.testing.assert_array_equal(both[0], neighbours_of(x, rows, 6, metric=metric))
        np.testing.assert_array_equal(both[1], neighbours_of(x, rows, 9, metric=metric, among=among))
        assert among[both[1]].all()


def test_a_crash_before_commit_leaves_no_complete_directory(tmp_path):
    builder = FeatureDirBuilder(tmp_path / "d", 4, 3, views=("plain",))
    builder.array("plain")[:] = 1.0
    del builder  # a crash: commit never ran
    with pytest.raises(MissingError, match="not a complete feature directory"):
        load_feature_dir(tmp_path / "d")
    with pytest.raises(InputError, match="feature directory"):
        featurefile.load_features(tmp_path / "d")


def test_corrupt_feature_dirs_are_named(tmp_path):
    builder = FeatureDirBuilder(tmp_path / "d", 4, 3, views=("plain",))
    builder.array("plain")[:] = 1.0
    builder.commit(pd.DataFrame({"label": [0, 1, 0, 1]}))
    assert load_feature_dir(tmp_path / "d").num_samples == 4
    with pytest.raises(InputError, match="samples.parquet: field `worse_label`"):
        load_feature_dir(tmp_path / "d", labels_key="worse_labels")
    manifest = tmp_path / "d" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "num_samples": 5}))
    with pytest.raises(CorruptError, match=r"features.npy: shape must be \(5, 3\)"):
        load_feature_dir(tmp_path / "d")
    manifest.write_text("{not json")
    with pytest.raises(CorruptError, match="unreadable manifest"):
        load_feature_dir(tmp_path / "d")


def test_bad_npz_is_refused_by_name(tmp_path, blobs):
    data = half_precision(blobs)
    data["features"][5, 2] = np.nan
    np.savez(tmp_path / "nan.npz", **data)
    with pytest.raises(InputError, match="nan.npz: field `features` must be finite"):
        npz_to_feature_dir(tmp_path / "nan.npz", tmp_path / "out")
    np.savez(tmp_path / "nolabels.npz", features=half_precision(blobs)["features"])
    with pytest.raises(InputError, match="nolabels.npz: field `labels` must be present"):
        npz_to_feature_dir(tmp_path / "nolabels.npz", tmp_path / "out2")
    assert not (tmp_path / "out2" / "manifest.json").exists()
    # A truncated archive member: the header promises more rows than the data holds.
    good = tmp_path / "good.npz"
    np.savez(good, **half_precision(blobs))
    raw = zipfile.ZipFile(good).read("features.npy")
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as z:
        z.writestr("features.npy", raw[: len(raw) // 2])
        z.writestr("labels.npy", zipfile.ZipFile(good).read("labels.npy"))
    with pytest.raises(InputError, match="short.npz: field `features` must be as many bytes"):
        npz_to_feature_dir(tmp_path / "short.npz", tmp_path / "out3")
