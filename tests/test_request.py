"""One path from a request to a run: config from (source, user-set values), the same synthetic
labels for every method, and run identity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dynacor.cli.main import main
from dynacor.data.spec import SourceSpec
from dynacor.errors import InputError
from dynacor.method.config import DynaCorConfig
from dynacor.method.noise import synthetic_labels
from dynacor.review.store import ReviewStore
from dynacor.runs import store as runstore
from dynacor.runs import umap_map
from dynacor.runs.request import SCRATCH_DEFAULTS, build_config

FAST = ["--epochs", "6", "--encoder-epochs", "2", "--lr", "0.05"]
SCRATCH = SourceSpec(kind="images", path="/somewhere", backbone="scratch")


def test_scratch_source_gets_the_paper_settings_where_the_user_set_none():
    config = build_config(SCRATCH, {})
    for key, value in SCRATCH_DEFAULTS.items():
        assert getattr(config, key) == value
    assert build_config(SourceSpec(kind="builtin"), {}) == DynaCorConfig()


def test_user_values_are_never_overridden_even_when_they_equal_the_defaults():
    defaults = DynaCorConfig()
    config = build_config(SCRATCH, {"lr": defaults.lr, "epochs": defaults.epochs, "schedule": "cosine"})
    assert (config.lr, config.epochs, config.schedule) == (defaults.lr, defaults.epochs, "cosine")
    assert config.classifier == SCRATCH_DEFAULTS["classifier"]  # not set by the user: the source's default


def test_pixels_with_the_mlp_head_and_scratch_nets_on_features_are_refused():
    with pytest.raises(InputError, match="classifier.*raw pixels"):
        build_config(SCRATCH, {"classifier": "mlp"})
    with pytest.raises(InputError, match="classifier.*mlp for frozen features"):
        build_config(SourceSpec(kind="features", path="x.npz"), {"classifier": "scratch-cnn"})
    with pytest.raises(InputError, match="Run page: field `lr`"):
        build_config(SCRATCH, {"lr": -1.0}, "Run page")


def test_synthetic_labels_depend_on_seed_and_spec_only():
    clean = np.arange(1000) % 10
    a = synthetic_labels("sym:0.6", clean, 10, 3)
    assert np.array_equal(a, synthetic_labels("sym:0.6", clean, 10, 3))
    assert not np.array_equal(a, synthetic_labels("sym:0.6", clean, 10, 4))
    assert not np.array_equal(a, synthetic_labels("asym:0.6", clean, 10, 3))
    assert 0.5 < np.mean(a != clean) < 0.7


def test_every_method_of_detect_judges_the_same_labels(blobs_npz, tmp_path):
    given = {}
    for method in ("dynacor", "aum", "cl"):
        out = tmp_path / method
        assert main(["detect", "--features", str(blobs_npz), "--method", method, "--noise", "sym:0.6", "--seed", "3",
                     "--out", str(out), "--quiet", *FAST]) == 0  # fmt: skip
        given[method] = pd.read_csv(out / "samples.csv")["given_label"].to_numpy()
    clean = np.load(blobs_npz)["clean_labels"]
    assert np.array_equal(given["dynacor"], synthetic_labels("sym:0.6", clean, 3, 3))
    assert np.array_equal(given["dynacor"], given["aum"]) and np.array_equal(given["dynacor"], given["cl"])


def test_overwrite_leaves_nothing_of_the_old_run_visible(blobs_npz, tmp_path, monkeypatch):
    out = tmp_path / "runs" / "run"
    args = ["detect", "--features", str(blobs_npz), "--out", str(out), "--quiet", *FAST]
    assert main(args) == 0
    old_id = runstore.run_id(out)
    assert json.loads((out / "run.json").read_text())["run_id"] == old_id != "run"
    umap_map.run_map(out)
    (out / "notes-of-the-old-run.txt").write_text("stale")
    store = ReviewStore(runs_root=tmp_path / "runs")
    store.record_decision(old_id, 1000, "remove", None, "ann")

    assert main([*args, "--overwrite"]) == 0
    new_id = runstore.run_id(out)
    assert new_id != old_id
    assert not (out / "umap.npz").exists() and not (out / "notes-of-the-old-run.txt").exists()
    assert len(store.latest_decisions(new_id)) == 0  # the new run starts with no decisions
    assert store.latest_decisions(old_id)["decision"].tolist() == ["remove"]  # kept, not shown


def test_a_map_cached_for_another_run_is_not_reused(blobs_npz, tmp_path):
    out = tmp_path / "run"
    assert main(["detect", "--features", str(blobs_npz), "--out", str(out), "--quiet", *FAST]) == 0
    umap_map.run_map(out)
    assert umap_map.load_cached(out) is not None
    status = json.loads((out / "status.json").read_text())
    (out / "status.json").write_text(json.dumps({**status, "run_id": "another-run"}))
    assert umap_map.load_cached(out) is None


def test_scratch_on_images_keeps_an_explicit_lr(tmp_path):
    from tests.test_cli_images import image_folder

    root = image_folder(tmp_path / "imgs", per_class=4, broken=False)
    out = tmp_path / "run"
    assert main(["detect", "--images", str(root), "--backbone", "scratch", "--classifier", "scratch-cnn", "--lr", "0.02",
                 "--epochs", "2", "--encoder-epochs", "1", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["lr"] == 0.02 and config["schedule"] == "multistep" and config["alpha"] == 0.05
    lrs = pd.read_csv(out / "classifier_epochs.csv")["lr"].tolist()
    assert lrs[0] == pytest.approx(0.02)


def test_pixels_with_an_explicit_mlp_head_fail_with_exit_2(tmp_path, capsys):
    from tests.test_cli_images import image_folder

    root = image_folder(tmp_path / "imgs", per_class=2, broken=False)
    code = main(["detect", "--images", str(root), "--backbone", "scratch", "--classifier", "mlp",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2 and "raw pixels" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
