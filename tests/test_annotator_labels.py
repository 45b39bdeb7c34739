"""The single-annotator label sets (benchmarks/annotator_labels.py): the unseen human noise the
defaults are checked on must be matched to the feature rows by CIFAR-10 index, not by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.annotator_labels import COLUMNS, annotator_arrays
from dynacor.errors import InputError


def test_the_annotators_match_the_dev_file_row_by_row(shared_data: Path):
    arrays = annotator_arrays(shared_data / "cifar10_effl0_dev.npz", shared_data / "cifar10n_train.csv")
    table = pd.read_csv(shared_data / "cifar10n_train.csv").set_index("cifar_index")
    ids = arrays["ids"]
    for key, column in COLUMNS.items():
        np.testing.assert_array_equal(arrays[key], table.loc[ids, column].to_numpy())
        assert 0.15 < float(np.mean(arrays[key] != arrays["clean_labels"])) < 0.20  # ~17% wrong each (docs/benchmarks.md)
    np.testing.assert_array_equal(table.loc[ids, "clean_label"].to_numpy(), arrays["clean_labels"])


def _files(tmp_path: Path, table: pd.DataFrame) -> tuple[Path, Path]:
    features = tmp_path / "f.npz"
    np.savez(features, features=np.zeros((3, 2), np.float16), ids=np.array([30, 10, 20]),
             clean_labels=np.array([0, 1, 2]))  # fmt: skip
    csv = tmp_path / "t.csv"
    table.to_csv(csv, index=False)
    return features, csv


def test_rows_follow_the_ids_and_bad_tables_are_named(tmp_path: Path):
    table = pd.DataFrame({"cifar_index": [10, 20, 30], "random_label1": [1, 2, 0], "random_label2": [4, 5, 6],
                          "random_label3": [7, 8, 9]})  # fmt: skip
    features, csv = _files(tmp_path, table)
    arrays = annotator_arrays(features, csv)
    np.testing.assert_array_equal(arrays["random2_labels"], [6, 4, 5])  # ids 30, 10, 20
    features, csv = _files(tmp_path, table.drop(columns="random_label3"))
    with pytest.raises(InputError, match="random_label3"):
        annotator_arrays(features, csv)
    features, csv = _files(tmp_path, table[table.cifar_index != 20])
    with pytest.raises(InputError, match="cifar_index"):
        annotator_arrays(features, csv)
