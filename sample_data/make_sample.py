"""Build the built-in sample: 200 CIFAR-10 training images per class, 32x32 JPEG.

Usage (from the repository root)::

    python sample_data/make_sample.py [--source ../shared/data] [--per-class 200]

Reads ``cifar10-jpg.tar`` (CIFAR-10 training images as JPEG) and ``cifar10n_train.csv`` (only
its ``path``, ``cifar_index`` and ``clean_label`` columns: CIFAR-10 facts; no CIFAR-10N human
label is copied) and writes, next to this script:

- ``cifar10_sample.tar``: the first ``per-class`` images of each class (by file name), their JPEG
  bytes copied unchanged, so features computed from them equal those of the source images;
- ``manifest.csv``: ``path,label,id,clean_label`` with ``label`` = ``clean_label`` = the CIFAR-10
  class name and ``id`` the index in the CIFAR-10 training set (noise is injected at load time);
- ``classes.txt``: the ten class names in CIFAR-10 order.

The output is byte-for-byte reproducible (sorted members, fixed metadata).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import tarfile
import tempfile
from pathlib import Path

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
HERE = Path(__file__).resolve().parent


def build(source: Path, per_class: int, out_dir: Path) -> tuple[int, int]:
    """Write the sample into ``out_dir``; returns (number of images, tar size in bytes)."""
    with open(source / "cifar10n_train.csv", newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    chosen: list[str] = []
    for name in CLASSES:
        members = sorted(p for p in rows if p.split("/")[-2] == name)
        if len(members) < per_class:
            raise SystemExit(f"{source}: only {len(members)} images of class {name}, need {per_class}")
        chosen.extend(members[:per_class])

    payload: dict[str, bytes] = {}
    with tarfile.open(source / "cifar10-jpg.tar", "r:*") as src:
        wanted = set(chosen)
        for info in src:
            if info.name in wanted:
                handle = src.extractfile(info)
                assert handle is not None
                payload[info.name] = handle.read()
    missing = [p for p in chosen if p not in payload]
    if missing:
        raise SystemExit(f"{source}/cifar10-jpg.tar lacks {len(missing)} image(s), e.g. {missing[0]}")

    out_dir.mkdir(parents=True, exist_ok=True)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as dst:
        for name in chosen:
            info = tarfile.TarInfo(name)
            info.size = len(payload[name])
            info.mtime = 0
            info.mode = 0o644
            dst.addfile(info, io.BytesIO(payload[name]))
    _atomic_write(out_dir / "cifar10_sample.tar", tar_bytes.getvalue())

    lines = io.StringIO()
    writer = csv.writer(lines, lineterminator="\n")
    writer.writerow(["path", "label", "id", "clean_label"])
    for name in chosen:
        row = rows[name]
        label = CLASSES[int(row["clean_label"])]
        if label != name.split("/")[-2]:
            raise SystemExit(f"{name}: clean label {label} differs from its folder")
        writer.writerow([name, label, int(row["cifar_index"]), label])
    _atomic_write(out_dir / "manifest.csv", lines.getvalue().encode())
    _atomic_write(out_dir / "classes.txt", ("\n".join(CLASSES) + "\n").encode())
    return len(chosen), len(tar_bytes.getvalue())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600 files; these are shipped data
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    n, size = build(args.source, args.per_class, args.out)
    print(f"wrote {n} images ({size / 2**20:.2f} MiB tar) to {args.out}")


if __name__ == "__main__":
    main()
