"""``dynacor bench`` end to end on a tiny generated file, and `run_method`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dynacor.baselines.registry import run_method
from dynacor.cli.main import main
from dynacor.errors import InputError
from dynacor.method.config import DynaCorConfig
from dynacor.method.featureset import FeatureSet
from dynacor.runs import bench
from tests.conftest import make_blobs

TINY = DynaCorConfig(epochs=4, encoder_epochs=2, hidden=64, num_threads=1, device="cpu")


@pytest.fixture
def bench_npz(tmp_path):
    data = make_blobs(n=240, d=12, c=3, noise=0.2, seed=5)
    data["worse_labels"] = data["labels"]
    path = tmp_path / "tiny.npz"
    np.savez(path, **data)
    return path


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_bench_end_to_end_writes_markdown_and_csv(bench_npz, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--features", str(bench_npz), "--methods", "dynacor,avg-gmm,simifeat,ceiling",
                 "--settings", "sym:0.3,human:worse_labels", "--seeds", "0,1", "--epochs", "4",
                 "--encoder-epochs", "2", "--threads", "1", "--ablations", "selection", "--out", str(out)])  # fmt: skip
    assert code == 0
    runs = pd.read_csv(out / "runs.csv")
    # 4 methods + 3 selection rows (last, init, oracle-best), 2 settings, 2 seeds.
    assert len(runs) == 7 * 2 * 2
    assert set(runs["method"]) >= {"dynacor", "avg-gmm", "simifeat", "ceiling", "dynacor[sel=oracle-best]"}
    assert runs.loc[runs.method == "ceiling", "oracle"].all()
    uses_truth = runs.method.isin(["ceiling", "dynacor[sel=oracle-best]"])
    assert runs.loc[uses_truth, "oracle"].all() and not runs.loc[~uses_truth, "oracle"].any()
    assert runs["f1"].between(0, 1).all()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["seeds"]) == {2}
    table = (out / "table.md").read_text()
    assert "ceiling (ORACLE)" in table and "worse" in table and "dynacor bench --features" in table
    printed = capsys.readouterr().out
    assert "| method |" in printed and "avg F1" in printed


def test_every_method_sees_the_same_labels_per_cell(bench_npz):
    data = FeatureSet(**{k: v for k, v in np.load(bench_npz).items() if k in ("features", "labels", "clean_labels")})
    a = bench.setting_labels(data, "sym:0.5", 1, {})
    b = bench.setting_labels(data, "sym:0.5", 1, {})
    c = bench.setting_labels(data, "sym:0.5", 2, {})
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_run_method_baselines_and_refuses_the_oracle():
    blobs = make_blobs(n=150, d=8, c=3, noise=0.2, seed=1)
    data = FeatureSet(features=blobs["features"], labels=blobs["labels"], clean_labels=blobs["clean_labels"])
    for method in ("simifeat", "avg-gmm"):
        flagged, score, seconds, extra = run_method(method, data, TINY, seed=0)
        assert flagged.shape == score.shape == (150,) and seconds >= 0
        assert np.array_equal(extra["given_labels"], blobs["labels"])
    with pytest.raises(InputError, match="oracle"):
        run_method("ceiling", data, TINY, seed=0)
    with pytest.raises(InputError, match="--method"):
        run_method("nope", data, TINY, seed=0)


def test_run_method_applies_config_noise_to_clean_labels():
    blobs = make_blobs(n=150, d=8, c=3, noise=0.0, seed=2)
    data = FeatureSet(features=blobs["features"], labels=blobs["labels"], clean_labels=blobs["clean_labels"])
    _, _, _, extra = run_method("simifeat", data, TINY.replace(noise="sym:0.4"), seed=0)
    rate = np.mean(extra["given_labels"] != blobs["clean_labels"])
    assert 0.25 < rate < 0.55


def test_ablation_variants_name_the_config_fields():
    names = dict(bench.ablation_variants(["no-align", "no-cluster", "gamma", "signal", "selection"], DynaCorConfig()))
    assert names["dynacor[no-align]"].align_loss is False
    assert names["dynacor[no-cluster]"].cluster_loss is False
    assert {k for k in names if k.startswith("dynacor[gamma=")} == {
        f"dynacor[gamma={g}]" for g in bench.GAMMAS if g != DynaCorConfig().gamma
    }
    assert names["dynacor[signal=margin]"].signal == "margin" and names["dynacor[signal=prob]"].signal == "prob"
    assert names["dynacor[sel=last]"].selection == "last" and names["dynacor[sel=oracle-best]"] is None


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [("--methods", "dynacor,bogus", "--methods"), ("--settings", "sym:2", "--settings"),
     ("--settings", "human:missing_key", "missing_key"), ("--seeds", "a,b", "--seeds")],
)  # fmt: skip
def test_bad_options_exit_2_with_the_field(bench_npz, flag, value, field, capsys):
    args = ["bench", "--features", str(bench_npz), "--methods", "simifeat", "--settings", "sym:0.2", "--seeds", "0"]
    args[args.index(flag) + 1] = value
    assert main(args) == 2
    assert field in capsys.readouterr().err


def test_bench_margin_rows_carry_the_fnr_at_the_noise_rate(bench_npz, tmp_path):
    out = tmp_path / "bench"
    code = main(["bench", "--features", str(bench_npz), "--methods", "margin,simifeat", "--settings", "sym:0.3",
                 "--seeds", "0", "--epochs", "4", "--threads", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["method"]) == {"margin", "simifeat"}
    assert runs["fnr_at_noise_rate"].between(0, 1).all()
    assert "fnr_at_noise_rate" in pd.read_csv(out / "summary.csv").columns
    table = (out / "table.md").read_text()
    assert "avg FNR@k" in table and "| FNR@k |" in table and "| margin |" in table


def test_fnr_table_and_nan_rows():
    rows = [{"method": m, "half": "all", "setting": "sym:0.3", "seed": 0, "noise_rate": 0.3, "f1": 0.5,
             "precision": 0.5, "recall": 0.5, "auroc": 0.8, "fnr_at_noise_rate": fnr, "seconds": 1.0,
             "oracle": m.endswith("best]"), "note": ""}
            for m, fnr in (("margin", 0.25), ("dynacor[sel=oracle-best]", float("nan")))]  # fmt: skip
    text = bench.markdown_tables(bench.summarise(rows), ["sym:0.3"])
    fnr_part = text.split("FNR at a budget")[1]
    assert "| margin | 25.0 ± 0.0 | 25.0 |" in fnr_part
    assert "| dynacor[sel=oracle-best] (ORACLE) | - | - |" in fnr_part


def test_detect_method_margin_writes_a_run(tmp_path, capsys):
    import json

    path = tmp_path / "blobs.npz"
    np.savez(path, **make_blobs(n=240, d=12, c=3, noise=0.2, seed=5))
    out = tmp_path / "run"
    assert main(["detect", "--features", str(path), "--out", str(out), "--method", "margin", "--epochs", "6",
                 "--seed", "1"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip().startswith("dynacor: margin: 240 samples")
    samples = pd.read_csv(out / "samples.csv")
    assert len(samples) == 240 and set(samples["flagged"].unique()) <= {0, 1}
    # Flagged where the agreement is negative, i.e. the noisy score (rounded to 6 places) is positive.
    flagged, score = samples["flagged"].to_numpy() == 1, samples["noisy_score"].to_numpy()
    assert flagged.any() and (score[flagged] >= 0).all() and (score[~flagged] <= 0).all()
    info = json.loads((out / "run.json").read_text())
    assert info["method"] == "margin" and info["metrics"]["f1"] > 0.5
    assert json.loads((out / "status.json").read_text())["status"] == "finished"
