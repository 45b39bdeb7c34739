"""The loop from review back to detection: ``detect --labels-from-review RUN_DIR``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dynacor.cli.main import main
from dynacor.method.featureset import FeatureSet
from dynacor.review.relabel import apply_review
from dynacor.review.store import ReviewStore
from dynacor.runs import store as runstore

FAST = ["--epochs", "6", "--encoder-epochs", "2", "--lr", "0.05"]


def test_a_rerun_trains_on_the_reviewed_labels(blobs_npz, blobs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    first = tmp_path / "runs" / "first"
    assert main(["detect", "--features", str(blobs_npz), "--out", str(first), *FAST]) == 0
    samples = runstore.load_samples(first)
    flagged = samples[samples["flagged"] == 1]
    assert len(flagged) >= 4
    accepted, removed = flagged.iloc[0], flagged.iloc[1]
    relabelled = flagged.iloc[2]
    new_class = (int(relabelled["given_label"]) + 1) % 3
    store = ReviewStore(runs_root=tmp_path / "runs")
    run_id = runstore.run_id(first)
    store.record_decision(run_id, accepted["id"], "accept", int(accepted["suggested_label"]))
    store.record_decision(run_id, removed["id"], "remove")
    store.record_decision(run_id, relabelled["id"], "relabel", new_class)
    store.record_decision(run_id, flagged.iloc[3]["id"], "keep", int(flagged.iloc[3]["given_label"]))

    second = tmp_path / "runs" / "second"
    assert main(["detect", "--features", str(blobs_npz), "--out", str(second), "--labels-from-review", str(first),
                 *FAST]) == 0  # fmt: skip
    again = runstore.load_samples(second).set_index(runstore.load_samples(second)["id"].astype(str))
    assert len(again) == len(samples) - 1 and str(removed["id"]) not in again.index
    assert again.loc[str(accepted["id"]), "given_label"] == accepted["suggested_label"]
    assert again.loc[str(relabelled["id"]), "given_label"] == new_class
    untouched = samples[~samples["id"].isin(flagged["id"].iloc[:3])]
    assert (again.loc[untouched["id"].astype(str), "given_label"].to_numpy() == untouched["given_label"].to_numpy()).all()
    source = json.loads((second / "run.json").read_text())["source"]
    assert source["labels_from_review"]["run_id"] == run_id and source["labels_from_review"]["decisions"] == 4


def test_labels_from_review_refuses_other_data_and_noise(blobs_npz, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    first = tmp_path / "runs" / "first"
    assert main(["detect", "--features", str(blobs_npz), "--out", str(first), *FAST]) == 0
    other = tmp_path / "other.npz"
    data = dict(np.load(blobs_npz))
    data["ids"] = data["ids"] + 10_000
    np.savez(other, **data)
    out = tmp_path / "runs" / "second"
    assert main(["detect", "--features", str(other), "--out", str(out), "--labels-from-review", str(first), *FAST]) == 2
    assert "field `id` must be the same samples" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written
    assert main(["detect", "--features", str(blobs_npz), "--out", str(out), "--labels-from-review", str(first),
                 "--noise", "sym:0.2", *FAST]) == 2  # fmt: skip
    assert "--noise" in capsys.readouterr().err
    assert main(["detect", "--features", str(blobs_npz), "--out", str(out), "--labels-from-review",
                 str(tmp_path / "nothing"), *FAST]) == 2  # fmt: skip


def test_apply_review_keeps_order_and_counts(blobs):
    data = FeatureSet(features=blobs["features"], labels=blobs["labels"], ids=blobs["ids"])
    final = pd.DataFrame({"id": blobs["ids"][::-1].astype(str), "given_label": blobs["labels"][::-1],
                          "final_label": pd.array(blobs["labels"][::-1], dtype="Int64")})  # fmt: skip
    final.loc[0, "final_label"] = pd.NA  # the last sample removed
    final.loc[1, "final_label"] = (int(blobs["labels"][-2]) + 1) % 3
    relabelled, counts = apply_review(data, final, "run")
    assert counts == {"relabelled": 1, "removed": 1, "kept": 299}
    assert list(relabelled.ids) == list(blobs["ids"][:-1])
    np.testing.assert_array_equal(relabelled.features, blobs["features"][:-1])
    with pytest.raises(Exception, match="every sample removed"):
        apply_review(data, final.assign(final_label=pd.array([pd.NA] * 300, dtype="Int64")), "run")
