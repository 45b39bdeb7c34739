"""Image data sources: folder, manifest, CIFAR + CIFAR-N, built-in sample, and their bad inputs."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dynacor.data import sources
from dynacor.data.sources import (
    ImageDataset,
    images_array,
    load_builtin_sample,
    load_cifar,
    load_cifar_n,
    load_image_folder,
    load_manifest,
    read_label_file,
)
from dynacor.errors import InputError, MissingError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def save_image(path: Path, size=(20, 16), mode="RGB", seed=0, fmt=None) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    im.save(path, format=fmt)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three classes of images of assorted sizes and modes, plus broken files."""
    root = tmp_path / "photos"
    save_image(root / "cat" / "a.jpg", (40, 30))
    save_image(root / "cat" / "b.png", (12, 50), mode="RGBA", seed=1)
    save_image(root / "cat" / "c.png", (16, 16), mode="L", seed=2)
    save_image(root / "dog" / "a.png", (32, 32), mode="P", seed=3)
    save_image(root / "dog" / "b.bmp", (8, 8), seed=4)
    save_image(root / "dog" / "big.jpg", (300, 200), mode="CMYK", seed=5)
    save_image(root / "owl" / "x.gif", (10, 10), mode="P", seed=6)
    good = save_image(root / "owl" / "y.jpg", (64, 48), seed=7)
    # Broken: truncated JPEG, random bytes with an image name, a text file, an empty file.
    data = good.read_bytes()
    (root / "owl" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "dog" / "noise.png").write_bytes(np.random.default_rng(0).bytes(300))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (root / "empty_class").mkdir()
    return root


def test_folder_reads_every_mode_and_skips_broken_files(folder: Path) -> None:
    with pytest.warns(UserWarning, match=r"skipped 5 file") as record:
        data = load_image_folder(folder)
    message = str(record[0].message)
    for name in ("truncated.jpg", "noise.png", "notes.txt", "empty.jpg", "empty_class"):
        assert name in message
    assert ".DS_Store" not in message
    assert data.class_names == ["cat", "dog", "owl"]
    assert len(data) == 8
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert data.labels.dtype == np.int64
    assert {Path(s.path).name for s in data.skipped} == {"truncated.jpg", "noise.png", "notes.txt", "empty.jpg", "empty_class"}
    for i in range(len(data)):
        im = data.image(i)
        assert im.mode == "RGB"
        assert Path(data.paths[i]).is_absolute()
    assert data.source == {"kind": "images", "root": str(folder.resolve())}
    # Transparent pixels become white, not black.
    rgba = data.image(1)
    assert np.asarray(rgba).shape == (50, 12, 3)


def test_folder_with_nothing_readable_fails_clearly(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "x.jpg").write_bytes(b"garbage")
    (root / "b" / "y.txt").write_text("text")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match=r"bad: field `images` must be at least one readable image, got none \(4 skipped\)"):
            load_image_folder(root)


def test_folder_needs_two_classes_and_sub_folders(tmp_path: Path) -> None:
    save_image(tmp_path / "one" / "only" / "a.png")
    with pytest.raises(InputError, match="at least 2 class folders"):
        load_image_folder(tmp_path / "one")
    save_image(tmp_path / "flat" / "a.png")
    with pytest.raises(InputError, match=r"one sub-folder per class"):
        load_image_folder(tmp_path / "flat")
    with pytest.raises(MissingError, match="no such directory"):
        load_image_folder(tmp_path / "nowhere")


def test_unreadable_directory_is_a_clear_error(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may run as root, for whom chmod 000 changes nothing: simulate the OS refusing.
    real = os.scandir
    blocked = str(folder / "dog")

    def scandir(path):
        if str(path) == blocked:
            raise PermissionError(13, "Permission denied", blocked)
        return real(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    with pytest.raises(InputError, match=r"dog: must be a readable directory, got permission denied"):
        load_image_folder(folder)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads unreadable directories")
def test_unreadable_directory_real_permissions(folder: Path) -> None:
    target = folder / "dog"
    target.chmod(0)
    try:
        with pytest.raises(InputError, match="readable directory"):
            load_image_folder(folder)
    finally:
        target.chmod(0o755)


# --------------------------------------------------------------------------------------------
# Manifest


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    for i in range(6):
        save_image(root / "img" / f"{i}.png", seed=i)
    return root


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_manifest_with_names_ids_and_clean_labels(manifest_dir: Path) -> None:
    rows = [{"path": f"img/{i}.png", "label": ["cat", "dog", "owl"][i % 3], "id": f"s{i}", "clean_label": ["cat", "dog", "owl"][(i + (i == 4)) % 3]} for i in range(6)]
    data = load_manifest(write_csv(manifest_dir / "m.csv", rows))
    assert data.class_names == ["cat", "dog", "owl"]
    assert data.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert data.clean_labels.tolist() == [0, 1, 2, 0, 2, 2]
    assert data.ids.tolist() == [f"s{i}" for i in range(6)]
    assert data.source["kind"] == "manifest"
    assert all(Path(p).parent == manifest_dir.resolve() / "img" for p in data.paths)


def test_manifest_integer_labels_and_parquet(manifest_dir: Path) -> None:
    frame = pd.DataFrame({"path": [f"img/{i}.png" for i in range(6)], "label": [0, 1, 2, 3, 0, 1]})
    frame.to_parquet(manifest_dir / "m.parquet")
    data = load_manifest(manifest_dir / "m.parquet")
    assert data.class_names == ["0", "1", "2", "3"]
    assert data.labels.tolist() == [0, 1, 2, 3, 0, 1]
    assert data.ids.tolist() == list(range(6))
    named = load_manifest(manifest_dir / "m.parquet", class_names=["a", "b", "c", "d", "e"])
    assert named.class_names == ["a", "b", "c", "d", "e"]
    assert named.labels.tolist() == [0, 1, 2, 3, 0, 1]


def test_manifest_missing_file_is_skipped_and_recorded(manifest_dir: Path) -> None:
    rows = [{"path": f"img/{i}.png", "label": i % 2} for i in range(6)] + [{"path": "img/gone.png", "label": 1}]
    (manifest_dir / "img" / "3.png").write_bytes(b"broken")
    with pytest.warns(UserWarning, match=r"(?s)skipped 2 file.*gone\.png: row 8: file not found"):
        data = load_manifest(write_csv(manifest_dir / "m.csv", rows))
    assert len(data) == 5
    assert data.ids.tolist() == [0, 1, 2, 4, 5]
    reasons = {Path(s.path).name: s.reason for s in data.skipped}
    assert reasons["gone.png"] == "row 8: file not found"
    assert reasons["3.png"].startswith("row 5: not a readable image")


def test_manifest_label_not_in_class_list(manifest_dir: Path) -> None:
    rows = [{"path": f"img/{i}.png", "label": ["cat", "dog", "emu"][i % 3]} for i in range(6)]
    path = write_csv(manifest_dir / "m.csv", rows)
    with pytest.raises(InputError, match=r"m\.csv: field `label` must be one of the classes \['cat', 'dog'\], got 'emu' on row 4"):
        load_manifest(path, class_names=["cat", "dog"])
    ints = write_csv(manifest_dir / "i.csv", [{"path": "img/0.png", "label": 0}, {"path": "img/1.png", "label": 7}])
    with pytest.raises(InputError, match=r"field `label` must be a class index in \[0, 2\) or a class name, got 7 on row 3"):
        load_manifest(ints, class_names=["cat", "dog"])


@pytest.mark.parametrize("bad", ["../outside.png", "img/../../outside.png", "ABS", "LINK"])
def test_manifest_paths_may_not_escape_the_root(manifest_dir: Path, bad: str) -> None:
    outside = save_image(manifest_dir.parent / "outside.png")
    if bad == "ABS":
        bad = str(outside)
    if bad == "LINK":
        (manifest_dir / "img" / "link.png").symlink_to(outside)
        bad = "img/link.png"
    path = write_csv(manifest_dir / "m.csv", [{"path": "img/0.png", "label": 0}, {"path": bad, "label": 1}])
    with pytest.raises(InputError, match=r"field `path` must be a path inside the manifest root .*, got .* on row 3"):
        load_manifest(path)


def test_manifest_structural_errors(manifest_dir: Path) -> None:
    with pytest.raises(InputError, match=r"field `label` must be a column"):
        load_manifest(write_csv(manifest_dir / "a.csv", [{"path": "img/0.png", "class": 0}]))
    with pytest.raises(InputError, match=r"field `id` must be unique per row"):
        load_manifest(write_csv(manifest_dir / "b.csv", [{"path": "img/0.png", "label": 0, "id": 1}, {"path": "img/1.png", "label": 1, "id": 1}]))
    with pytest.raises(InputError, match=r"field `label` must be a label on every row, got an empty cell on row 3"):
        load_manifest(write_csv(manifest_dir / "c.csv", [{"path": "img/0.png", "label": "a"}, {"path": "img/1.png", "label": ""}]))
    (manifest_dir / "d.csv").write_text("path,label\n")
    with pytest.raises(InputError, match="at least one row"):
        load_manifest(manifest_dir / "d.csv")
    with pytest.raises(MissingError):
        load_manifest(manifest_dir / "none.csv")
    (manifest_dir / "e.json").write_text("{}")
    with pytest.raises(InputError, match=r"must be a \.csv or \.parquet manifest"):
        load_manifest(manifest_dir / "e.json")


# --------------------------------------------------------------------------------------------
# CIFAR and CIFAR-N


def test_cifar_root_without_data_and_no_download(tmp_path: Path) -> None:
    with pytest.raises(MissingError, match=r"no cifar10 data found \(pass download=True"):
        load_cifar(tmp_path, "cifar10", download=False)


class _FakeCIFAR:
    """Stands in for torchvision's CIFAR10 (the real data is 170 MB and not available offline)."""

    def __init__(self, root, train=True, download=False):
        rng = np.random.default_rng(0)
        self.data = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(20)]
        self.classes = [f"c{i}" for i in range(10)]


def test_cifar_with_human_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd, "CIFAR10", _FakeCIFAR)
    clean = np.array([i % 10 for i in range(20)], dtype=np.int64)
    worse = (clean + (np.arange(20) % 3 == 0)) % 10
    label_file = tmp_path / "CIFAR-10_human.pt"
    torch.save({"clean_label": clean, "worse_label": worse, "aggre_label": clean.copy()}, label_file)
    data = load_cifar(tmp_path, "cifar10", human_file=label_file, human="worse")
    assert data.images.shape == (20, 32, 32, 3)
    assert data.labels.tolist() == worse.tolist()
    assert data.clean_labels.tolist() == clean.tolist()
    assert data.source["human"] == "worse"
    assert np.asarray(data.image(3)).shape == (32, 32, 3)
    with pytest.raises(InputError, match=r"field `human` must be a label set in this file \(\['aggre', 'worse'\]\), got 'random1'"):
        load_cifar(tmp_path, "cifar10", human_file=label_file, human="random1")
    other = tmp_path / "other.pt"
    torch.save({"clean_label": (clean + 1) % 10, "worse_label": worse}, other)
    with pytest.raises(InputError, match="field `clean_label` must be equal to the data set's ground truth"):
        load_cifar(tmp_path, "cifar10", human_file=other, human="worse")


_CALLED: list[str] = []


def _side_effect(message: str) -> str:
    _CALLED.append(message)
    return message


class _Payload:
    def __reduce__(self):
        return (_side_effect, ("unpickled!",))


def test_cifar_n_file_with_another_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"worse_label": np.zeros(3, dtype=np.int64), "extra": _Payload()}, path)
    with pytest.raises(InputError, match=r"evil\.pt: must be a label file holding only arrays of labels .*, got a reference to .*_side_effect"):
        read_label_file(path)
    assert _CALLED == []  # refused before anything ran
    import pickle

    path2 = tmp_path / "class.pt"
    torch.save({"worse_label": os.path.join}, path2)
    with pytest.raises(InputError, match="only arrays of labels"):
        read_label_file(path2)
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"worse_label": [1, 2]}) + b"junk")
    with pytest.raises(InputError):
        read_label_file(tmp_path / "plain.pt")
    with pytest.raises(MissingError):
        read_label_file(tmp_path / "missing.pt")


def test_real_cifar_n_files() -> None:
    if not (SHARED / "CIFAR-10_human.pt").exists():
        pytest.skip(f"needs the CIFAR-N label files in {SHARED} (not present on this machine)")
    table = pd.read_csv(SHARED / "cifar10n_train.csv")
    worse = load_cifar_n(SHARED / "CIFAR-10_human.pt", "worse")
    assert worse.shape == (50000,) and worse.dtype == np.int64
    assert np.array_equal(worse[table["cifar_index"].to_numpy()], table["worse_label"].to_numpy())
    aggre = load_cifar_n(SHARED / "CIFAR-10_human.pt", "aggre")
    assert np.array_equal(aggre[table["cifar_index"].to_numpy()], table["aggre_label"].to_numpy())
    noisy100 = load_cifar_n(SHARED / "CIFAR-100_human.pt", "noisy100")
    assert noisy100.shape == (50000,) and noisy100.max() == 99
    with pytest.raises(InputError, match=r"field `human` must be a label set in this file \(\['noisy100'\]\)"):
        load_cifar_n(SHARED / "CIFAR-100_human.pt", "worse")
    with pytest.raises(InputError, match=r"field `human` must be one of"):
        load_cifar_n(SHARED / "CIFAR-10_human.pt", "best")


# --------------------------------------------------------------------------------------------
# Built-in sample


def test_builtin_sample_has_clean_labels_and_injected_noise() -> None:
    data = load_builtin_sample()
    assert len(data) == 2000
    assert data.images.shape == (2000, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.class_names[:3] == ["airplane", "automobile", "bird"]
    assert np.bincount(data.clean_labels).tolist() == [200] * 10
    rate = float(np.mean(data.labels != data.clean_labels))
    assert 0.17 < rate < 0.23
    assert data.source["noise"] == "sym:0.2"
    assert len(np.unique(data.ids)) == 2000
    again = load_builtin_sample()
    assert np.array_equal(again.labels, data.labels)  # seeded
    clean = load_builtin_sample(noise=None, per_class=5)
    assert len(clean) == 50 and np.array_equal(clean.labels, clean.clean_labels)
    with pytest.raises(InputError, match="field `noise`"):
        load_builtin_sample(noise="inst:0.4")


def test_builtin_sample_matches_the_dev_images() -> None:
    if not (SHARED / "cifar10n_train.csv").exists():
        pytest.skip(f"needs {SHARED}/cifar10n_train.csv (not present on this machine)")
    table = pd.read_csv(SHARED / "cifar10n_train.csv").set_index("cifar_index")
    data = load_builtin_sample(noise=None)
    assert np.array_equal(table.loc[data.ids, "clean_label"].to_numpy(), data.clean_labels)
    assert list(table.loc[data.ids, "path"]) == list(data.paths)


def test_subset_and_images_array(folder: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_image_folder(folder)
    arr = images_array(data, size=16)
    assert arr.shape == (8, 16, 16, 3) and arr.dtype == np.uint8
    sub = data.subset([0, 6])
    assert isinstance(sub, ImageDataset) and sub.labels.tolist() == [0, 2] and len(sub.skipped) == 5
    sample = load_builtin_sample(per_class=2)
    assert images_array(sample) is sample.images
