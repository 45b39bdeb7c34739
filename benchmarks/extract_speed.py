"""Image feature extraction throughput: the in-process pipeline against the raw backbone.

Usage (from the repository root)::

    python benchmarks/extract_speed.py [--n 1000] [--batch-size 128] [--device cpu|cuda]
        [--threads 0] [--workers W] [--raw-batches 3] [--data ../shared/data] [--out FILE.json]

Extracts the first ``n`` images of ``cifar10-jpg.tar`` (listed in ``cifar10n_train.csv``) to a
temporary folder, never into the repository, and measures in images per second (each image is two
forward inputs: itself and its horizontal flip):

- ``raw``: effnet-lite0's forward pass alone on random (2B, 3, 224, 224) tensors, B = batch size,
  in inference mode (float16 autocast on CUDA, as the pipeline): the ceiling;
- ``pipeline``: ``dynacor features`` in-process (`dynacor.data.extract.extract_to_dir`): files
  decoded and preprocessed in worker processes, forward passes, shards written, consolidated.
  ``steady`` counts from the first finished batch to the last (no start-up), ``end_to_end``
  everything from loading the backbone to the finished feature directory.

The raw pass is timed before and after the pipeline and averaged, since other processes on the
machine change what a core delivers over minutes. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from dynacor.data.backbones import default_batch_size, default_workers, load_backbone
from dynacor.data.extract import extract_to_dir
from dynacor.data.sources import load_image_folder
from dynacor.method.device import pick_device, set_threads

ROOT = Path(__file__).resolve().parents[1]


def raw_rate(backbone, batch_size: int, batches: int, amp: bool) -> float:
    """Images per second of the forward pass alone, two views per image, on random tensors."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * batch_size, 3, 224, 224, generator=generator).to(backbone.device)
    cuda = backbone.device.type == "cuda"
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp and cuda):
        backbone.embed(x).float().cpu()  # warm-up: kernels chosen, memory allocated
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(batches):
            # .cpu() as the pipeline does: the features come back to the host every batch.
            backbone.embed(x).float().cpu()
        seconds = time.perf_counter() - started
    return batches * batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--raw-batches", type=int, default=3, help="timed raw batches, before and after")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    threads = set_threads(args.threads)
    device = pick_device(args.device)
    batch = args.batch_size or default_batch_size(device)
    backbone = load_backbone("effnet-lite0", device=device)
    table = pd.read_csv(args.data / "cifar10n_train.csv").iloc[: args.n]
    with tempfile.TemporaryDirectory(prefix="dynacor-speed-") as tmp:
        with tarfile.open(args.data / "cifar10-jpg.tar") as tar:
            wanted = set(table["path"])
            tar.extractall(tmp, members=[m for m in tar.getmembers() if m.name in wanted], filter="data")
        dataset = load_image_folder(Path(tmp) / "cifar10" / "train", check="none")
        raw_before = raw_rate(backbone, batch, args.raw_batches, amp=True)
        marks: list[tuple[float, int]] = []

        def on_event(event: dict) -> None:
            if event["type"] == "progress":
                marks.append((time.perf_counter(), event["done"]))

        started = time.perf_counter()
        summary = extract_to_dir(dataset, Path(tmp) / "features", device=str(device), batch_size=batch,
                                 num_workers=args.workers, on_event=on_event)  # fmt: skip
        end_to_end = time.perf_counter() - started
        raw_after = raw_rate(backbone, batch, args.raw_batches, amp=True)
    (t0, d0), (t1, d1) = marks[0], marks[-1]
    steady = (d1 - d0) / (t1 - t0)
    raw = (raw_before + raw_after) / 2
    report = {
        "images": summary["num_samples"],
        "batch_size": batch,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else _cpu_name(),
        "torch_threads": threads,
        "decode_workers": default_workers() if args.workers is None else args.workers,
        "precision": summary["precision"],
        "raw_images_per_s": round(raw, 2),
        "raw_before_after": [round(raw_before, 2), round(raw_after, 2)],
        "pipeline_steady_images_per_s": round(steady, 2),
        "pipeline_end_to_end_images_per_s": round(summary["num_samples"] / end_to_end, 2),
        "steady_over_raw": round(steady / raw, 3),
        "end_to_end_over_raw": round(summary["num_samples"] / end_to_end / raw, 3),
        "end_to_end_seconds": round(end_to_end, 1),
        "torch": torch.__version__,
    }
    line = json.dumps(report)
    print(line)
    if args.out is not None:
        args.out.write_text(line + "\n")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


if __name__ == "__main__":
    main()
