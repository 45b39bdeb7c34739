"""A copy of the dev feature file with the labels of CIFAR-10N's three single annotators added, the
human noise no default of dynacor was ever chosen on (issue 10: "on data you never saw").

    python benchmarks/annotator_labels.py --out /tmp/dev_annotators.npz
    dynacor bench --features /tmp/dev_annotators.npz --methods dynacor,cl,aum \
        --settings human:random1_labels,human:random2_labels,human:random3_labels --seeds 0,1,2

The dev file carries ``random1_labels`` only; ``random_label2`` and ``random_label3`` come from
``cifar10n_train.csv`` beside it, matched on the CIFAR-10 training index (the file's ``ids``).
Writes a new file (never into ../shared/data, which is read-only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from dynacor.atomic import save_npz
from dynacor.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
COLUMNS = {"random1_labels": "random_label1", "random2_labels": "random_label2", "random3_labels": "random_label3"}


def annotator_arrays(features_path: Path, csv_path: Path) -> dict[str, np.ndarray]:
    """Every array of the feature file plus the three annotators' labels in its row order."""
    with np.load(features_path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    table = pd.read_csv(csv_path)
    for column in ("cifar_index", *COLUMNS.values()):
        if column not in table.columns:
            raise InputError(csv_path, column, "a column of the CIFAR-10N table", f"columns {list(table.columns)}")
    row_of = pd.Series(np.arange(len(table)), index=table["cifar_index"].to_numpy())
    ids = arrays["ids"]
    missing = np.setdiff1d(ids, row_of.index.to_numpy())
    if len(missing):
        raise InputError(csv_path, "cifar_index", f"every id of {features_path.name}", f"{len(missing)} missing")
    rows = row_of.loc[ids].to_numpy()
    for key, column in COLUMNS.items():
        labels = table[column].to_numpy(dtype=np.int64)[rows]
        if "random1_labels" in arrays and key == "random1_labels" and not np.array_equal(labels, arrays[key]):
            raise InputError(csv_path, column, f"equal to {features_path.name}'s random1_labels", "different labels")
        arrays[key] = labels
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=str(SHARED / "cifar10_effl0_dev.npz"))
    parser.add_argument("--csv", default=str(SHARED / "cifar10n_train.csv"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    arrays = annotator_arrays(Path(args.features), Path(args.csv))
    save_npz(args.out, **arrays)
    clean = arrays["clean_labels"]
    for key in COLUMNS:
        print(f"{key}: {100 * np.mean(arrays[key] != clean):.1f}% wrong")


if __name__ == "__main__":
    main()
