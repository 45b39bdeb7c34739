"""Scale goal of issue 11: ``dynacor detect`` on 100k, 300k and 1M feature rows with bounded memory.

    python benchmarks/scale.py make --rows 1000000 --out /tmp/scale/1m      # a synthetic feature directory
    python benchmarks/scale.py detect --features /tmp/scale/1m [--epochs 30]  # time and peak memory

``make`` writes distinct rows, never replicas (which a head memorises N times faster): each row is
a random convex combination of two dev-file features of the same clean class, plain and flip views
with the same weights; its clean label is that class and its given label is the `worse` human
label of the first parent (so the noise has the human structure, about 40%). Written block by
block into a feature directory (float16, memory-mapped when read); never commit the output.

``detect`` runs the real CLI in a child process and samples, every 0.2 s, its resident memory
split as the kernel reports it: ``RssAnon`` (the process's own memory: the figure the goal
bounds) and ``RssFile`` (pages of memory-mapped files, i.e. the page cache of the features,
which the kernel can drop at will). Prints one JSON line: wall seconds, peak anonymous and peak
total RSS (GiB), seconds per classifier epoch, stage timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"
BLOCK = 50_000


def make(rows: int, out: Path, seed: int = 0) -> Path:
    from dynacor.data.feature_dir import FeatureDirBuilder

    rng = np.random.default_rng(seed)
    dev = np.load(DEV)
    plain, flip = dev["features"].astype(np.float32), dev["features_aug"].astype(np.float32)
    clean, worse = dev["clean_labels"], dev["worse_labels"]
    by_class = [np.flatnonzero(clean == c) for c in range(int(clean.max()) + 1)]
    builder = FeatureDirBuilder(out, rows, plain.shape[1], views=("plain", "flip"))
    labels = np.empty(rows, dtype=np.int64)
    clean_out = np.empty(rows, dtype=np.int64)
    for start in range(0, rows, BLOCK):
        size = min(BLOCK, rows - start)
        classes = rng.integers(0, len(by_class), size)
        a = np.array([rng.choice(by_class[c]) for c in classes])
        b = np.array([rng.choice(by_class[c]) for c in classes])
        w = rng.uniform(0.5, 1.0, size)[:, None].astype(np.float32)  # closer to the first parent
        builder.array("plain")[start : start + size] = w * plain[a] + (1 - w) * plain[b]
        builder.array("flip")[start : start + size] = w * flip[a] + (1 - w) * flip[b]
        labels[start : start + size] = worse[a]
        clean_out[start : start + size] = classes
    samples = pd.DataFrame({"id": np.arange(rows).astype(str), "label": labels, "clean_label": clean_out})
    names = [str(c) for c in dev["class_names"]]
    return builder.commit(samples, source={"synthetic": "convex combinations of the dev file", "seed": seed}, class_names=names)


def _memory(pid: int) -> tuple[int, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0]) * 1024
    return fields.get("RssAnon", 0), sum(fields.values())


def detect(features: Path, epochs: int, extra: list[str]) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix="dynacor-scale-")) / "run"
    command = [sys.executable, "-c", "import sys; from dynacor.cli.main import main; sys.exit(main())", "detect", "--features", str(features),
               "--out", str(run_dir), "--epochs", str(epochs), "--quiet", *extra]  # fmt: skip
    peak = {"anon": 0, "total": 0}
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)

    def sample() -> None:
        while child.poll() is None:
            try:
                anon, total = _memory(child.pid)
            except OSError:
                break
            peak["anon"], peak["total"] = max(peak["anon"], anon), max(peak["total"], total)
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    summary, _ = child.communicate()
    wall = time.perf_counter() - started
    watcher.join()
    if child.returncode != 0:
        raise SystemExit(f"detect failed with exit code {child.returncode}")
    info = json.loads((run_dir / "run.json").read_text())
    epochs_log = pd.read_csv(run_dir / "classifier_epochs.csv")
    return {
        "rows": info["num_samples"],
        "epochs": epochs,
        "wall_s": round(wall, 1),
        "peak_anon_gib": round(peak["anon"] / 2**30, 2),
        "peak_rss_gib": round(peak["total"] / 2**30, 2),
        "s_per_epoch": round(float(epochs_log["seconds"].median()), 2),
        "timings": {k: round(v, 1) for k, v in info["timings"].items()},
        "summary": summary.strip(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "run_dir": str(run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write a synthetic feature directory")
    m.add_argument("--rows", type=int, required=True)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--seed", type=int, default=0)
    d = sub.add_parser("detect", help="time dynacor detect on a feature directory and sample its memory")
    d.add_argument("--features", type=Path, required=True)
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("extra", nargs="*", help="more detect options, after --")
    args = parser.parse_args()
    if args.command == "make":
        started = time.perf_counter()
        print(make(args.rows, args.out, args.seed), f"{time.perf_counter() - started:.0f} s")
    else:
        print(json.dumps(detect(args.features, args.epochs, args.extra)))


if __name__ == "__main__":
    main()
