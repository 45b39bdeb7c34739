"""The `dynacor detect` contract: outputs, exit codes and clear errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynacor.cli.main import main
from tests.conftest import make_blobs

FAST = ["--epochs", "6", "--encoder-epochs", "2", "--lr", "0.05"]


def detect(*args: str) -> int:
    return main(["detect", *args])


def test_detect_writes_the_contract_files(blobs_npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert detect("--features", str(blobs_npz), "--out", str(out), *FAST) == 0
    printed = capsys.readouterr()
    last_line = printed.out.strip().splitlines()[-1]
    assert last_line.startswith("dynacor: 300 samples") and "F1" in last_line
    assert "epoch" in printed.err  # the table of epochs
    samples = pd.read_csv(out / "samples.csv")
    assert list(samples.columns[:5]) == ["index", "id", "given_label", "suggested_label", "suggested_prob"]
    for column in ("noisy_score", "flagged"):
        assert column in samples.columns
    assert len(samples) == 300 and list(samples["index"]) == list(range(300))
    assert set(samples["flagged"].unique()) <= {0, 1}
    dynamics = np.load(out / "dynamics.npy")
    assert dynamics.dtype == np.int8 and dynamics.shape == (330, 6)
    assert set(np.unique(dynamics)) <= {-1, 1}
    info = json.loads((out / "run.json").read_text())
    assert {"run_id", "config", "chosen_epoch", "timings", "metrics", "warnings"} <= set(info)
    assert info["config"]["epochs"] == 6
    assert json.loads((out / "status.json").read_text())["status"] == "finished"
    from dynacor.runs import store as runstore

    neighbours = runstore.load_neighbours(out)  # for the reviewer: every flagged sample's neighbours
    flagged_rows = set(np.flatnonzero(samples["flagged"].to_numpy()).tolist())
    assert set(neighbours) == flagged_rows and all(len(v) == 8 and 0 <= v.min() and v.max() < 300 for v in neighbours.values())


def test_finished_run_is_not_overwritten_without_flag(blobs_npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert detect("--features", str(blobs_npz), "--out", str(out), *FAST) == 0
    assert detect("--features", str(blobs_npz), "--out", str(out), *FAST) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert detect("--features", str(blobs_npz), "--out", str(out), "--overwrite", "--seed", "1", *FAST) == 0


def bad_file(tmp_path: Path, **changes) -> Path:
    data = make_blobs()
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **data)
    return path


@pytest.mark.parametrize(
    "changes, field, expected",
    [
        ({"features": None}, "features", "must be present"),
        ({"labels": None}, "labels", "must be present"),
        ({"labels": np.zeros(299, dtype=np.int64)}, "labels", "length 300"),
        ({"features": np.full((300, 16), np.nan, dtype=np.float32)}, "features", "finite numbers"),
        ({"labels": np.full(300, -1)}, "labels", "class indices >= 0"),
        ({"labels": np.full(300, 7)}, "labels", "class indices in [0, 3)"),
        ({"labels": np.zeros(300, dtype=np.int64)}, "labels", "at least 2 distinct classes"),
        ({"features_aug": np.zeros((300, 5), dtype=np.float32)}, "features_aug", "the same shape"),
        ({"labels": np.linspace(0, 1, 300)}, "labels", "integer class indices"),
    ],
)
def test_bad_feature_files_get_clear_errors_and_write_nothing(tmp_path, capsys, changes, field, expected):
    path = bad_file(tmp_path, **changes)
    out = tmp_path / "run"
    assert detect("--features", str(path), "--out", str(out), *FAST) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"field `{field}`" in err and expected in err
    assert not out.exists()


def test_fewer_samples_than_classes(tmp_path, capsys):
    path = tmp_path / "tiny.npz"
    np.savez(path, features=np.eye(3, dtype=np.float32), labels=np.array([0, 1, 0]), class_names=np.array(list("abcde")))
    assert detect("--features", str(path), "--out", str(tmp_path / "run")) == 2
    assert "at least as many samples as classes" in capsys.readouterr().err


def test_empty_missing_and_garbage_files(tmp_path, capsys):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    assert detect("--features", str(empty), "--out", str(tmp_path / "a")) == 2
    assert "empty file" in capsys.readouterr().err
    assert detect("--features", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "b")) == 2
    assert "no such file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive at all")
    assert detect("--features", str(garbage), "--out", str(tmp_path / "c")) == 2
    assert "a valid .npz archive" in capsys.readouterr().err


@pytest.mark.parametrize("gamma", ["0", "1.5", "-0.1"])
def test_gamma_outside_range(blobs_npz, tmp_path, capsys, gamma):
    assert detect("--features", str(blobs_npz), "--out", str(tmp_path / "run"), "--gamma", gamma) == 2
    assert "field `gamma` must be a number in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_directory(blobs_npz, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert detect("--features", str(blobs_npz), "--out", str(locked / "run")) == 2
        assert "writable directory" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc, which no one can write into")
def test_unwritable_output_directory_even_for_root(blobs_npz, capsys):
    assert detect("--features", str(blobs_npz), "--out", "/proc/dynacor-test/run") == 2
    err = capsys.readouterr().err
    assert "/proc/dynacor-test/run" in err and "field `--out` must be a writable directory" in err


def test_output_path_that_is_a_file(blobs_npz, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert detect("--features", str(blobs_npz), "--out", str(target)) == 2
    assert "field `--out` must be a directory" in capsys.readouterr().err


def test_noise_without_clean_labels(tmp_path, capsys):
    path = bad_file(tmp_path, clean_labels=None)
    assert detect("--features", str(path), "--out", str(tmp_path / "run"), "--noise", "sym:0.3") == 2
    assert "field `clean_labels` must be present" in capsys.readouterr().err


def test_python_dash_m_works_like_the_script(blobs_npz, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "dynacor", "detect", "--features", str(blobs_npz), "--out", str(out), "--quiet", *FAST],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("dynacor: 300 samples")
    assert (out / "samples.csv").exists()
    # The command skips the interpreter's teardown (dynacor.cli.main.entry): everything is written
    # and complete by then, and a bad input still exits with its own code and message.
    assert json.loads((out / "status.json").read_text())["status"] == "finished"
    assert (out / "events.jsonl").read_text().endswith("\n")
    bad = subprocess.run([sys.executable, "-m", "dynacor", "detect", "--features", str(tmp_path / "absent.npz"),
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "absent.npz" in bad.stderr
    help_text = subprocess.run([sys.executable, "-m", "dynacor", "detect", "--help"], capture_output=True, text=True)
    for option in ("--features", "--noise", "--gamma", "--alpha", "--encoder-epochs", "--device", "--overwrite"):
        assert option in help_text.stdout


@pytest.mark.parametrize("method", ["cl", "simifeat", "avg-gmm"])
def test_baselines_write_the_same_contract(blobs_npz, tmp_path, capsys, method):
    out = tmp_path / method
    assert detect("--features", str(blobs_npz), "--out", str(out), "--method", method, *FAST) == 0
    assert capsys.readouterr().out.strip().startswith(f"dynacor: {method}: 300 samples")
    samples = pd.read_csv(out / "samples.csv")
    for column in ("index", "given_label", "suggested_label", "noisy_score", "flagged"):
        assert column in samples.columns
    assert len(samples) == 300 and set(samples["flagged"].unique()) <= {0, 1}
    info = json.loads((out / "run.json").read_text())
    assert info["method"] == method and info["metrics"]["f1"] > 0.5
    assert json.loads((out / "status.json").read_text())["status"] == "finished"
