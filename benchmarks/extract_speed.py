"""Image feature extraction throughput: where the time goes, the runtimes' raw forward passes, and
`dynacor features` end to end, side by side in one run.

Usage (from the repository root)::

    python benchmarks/extract_speed.py [--n 10000] [--runtime auto] [--compute-precision float32]
        [--decode exact] [--batch-size B] [--device cpu|cuda] [--threads 0] [--workers W]
        [--raw-batches 3] [--profile 256] [--data ../shared/data] [--out FILE.json]

Extracts the first ``n`` images of ``cifar10-jpg.tar`` (listed in ``cifar10n_train.csv``) to a
temporary folder, never into the repository, and reports (each image is two forward inputs: itself
and its horizontal flip):

- ``stages``: milliseconds per image of each step, on ``--profile`` images in this process, the
  decoding steps on one thread as a decoding worker runs them: ``decode`` (file -> RGB image),
  ``resize`` (the backbone's preprocessing: the bicubic resize to 224 px, as uint8 pixels),
  ``flip`` (the flip view mirrored from the resized pixels, both views stacked), ``collate`` (a
  batch stacked), ``forward`` (the chosen runtime's forward pass on both views, all threads);
- ``raw``: forward passes per second (rows of a batch of 2B random uint8 images, B the batch size,
  normalisation included) of eager torch as dynacor runs it (``--runtime torch``: channels-last),
  of eager torch in its plain layout (NCHW, what "eager" meant in issue 24), and of the chosen
  runtime; each timed before and after the pipeline and averaged, since other processes on the
  machine change what a core delivers over minutes;
- ``pipeline``: ``dynacor features`` in-process (`dynacor.data.extract.extract_to_dir`) with the
  chosen runtime: ``end_to_end`` from loading the backbone (its exported model from the cache,
  exported first if missing) to the finished feature directory, ``steady`` from the first
  finished batch to the last;
- the ratios the issue asks for: end-to-end images/s over what eager torch can embed (its raw
  passes/s over two views).

Prints a table, the machine's load average before and after, and one JSON line (``--out`` too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dynacor.data import runtimes
from dynacor.data.backbones import (
    _collate,
    decode_views,
    default_batch_size,
    default_workers,
    load_backbone,
)
from dynacor.data.extract import BackboneSpec, extract_to_dir
from dynacor.data.sources import load_image_folder
from dynacor.method.device import pick_device, set_threads

ROOT = Path(__file__).resolve().parents[1]


def random_pixels(backbone, rows: int) -> torch.Tensor:
    """(rows, 3, H, W) seeded random input of the backbone's dtype (uint8 pixels for effnet-lite0)."""
    generator = torch.Generator().manual_seed(0)
    probe = runtimes.probe_batch(backbone)
    if probe.dtype == torch.uint8:
        return torch.randint(0, 256, (rows, *probe.shape[1:]), dtype=torch.uint8, generator=generator)
    return torch.randn(rows, *probe.shape[1:], generator=generator)


def raw_rate(backbone, batch_size: int, batches: int, amp: bool) -> float:
    """Forward passes per second (rows) of a batch of 2 x ``batch_size`` random inputs."""
    x = random_pixels(backbone, 2 * batch_size).to(backbone.device)
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
    return batches * 2 * batch_size / seconds


def plain_layout(backbone):
    """The torch backbone with its weights in the default (NCHW) layout: eager torch as it comes."""
    import dataclasses

    model = backbone.model.to(memory_format=torch.contiguous_format)

    def embed(x: torch.Tensor) -> torch.Tensor:
        x = (x.float() * (1.0 / 255.0) - 0.5) / 0.5 if x.dtype == torch.uint8 else x
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return dataclasses.replace(backbone, embed=embed)


def stage_times(dataset, backbone, batch_size: int, count: int) -> dict[str, float]:
    """Milliseconds per image of each step on the first ``count`` images (see the docstring)."""
    count = min(count, len(dataset))
    threads = torch.get_num_threads()
    times = dict.fromkeys(("decode", "resize", "flip", "collate", "forward"), 0.0)
    torch.set_num_threads(1)  # as a decoding worker
    items = []
    for i in range(count):
        t0 = time.perf_counter()
        image = dataset.image(i) if backbone.draft is None else dataset.image(i, draft=backbone.draft)
        t1 = time.perf_counter()
        plain = backbone.preprocess(image)
        t2 = time.perf_counter()
        if backbone.mirror_exact:  # what `decode_views` does with the resized pixels
            views = torch.stack([plain, torch.flip(plain, dims=[-1])])
        else:
            views = decode_views(image, backbone.preprocess, ("flip",), False)
        t3 = time.perf_counter()
        times["decode"] += t1 - t0
        times["resize"] += t2 - t1
        times["flip"] += t3 - t2
        items.append((i, views, None))
    batches = []
    started = time.perf_counter()
    for k in range(0, count, batch_size):
        batches.append(_collate(items[k : k + batch_size])[1])
    times["collate"] = time.perf_counter() - started
    torch.set_num_threads(threads)
    with torch.inference_mode():
        backbone.embed(batches[0].reshape(-1, *batches[0].shape[2:]))  # warm-up at the batch's shape
        started = time.perf_counter()
        for batch in batches:
            backbone.embed(batch.reshape(-1, *batch.shape[2:])).float().numpy().astype(np.float16)
        times["forward"] = time.perf_counter() - started
    return {k: round(1000 * v / count, 3) for k, v in times.items()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--n", type=int, default=10000, help="images (default all 10,000)")
    parser.add_argument("--runtime", default=runtimes.DEFAULT_RUNTIME, choices=tuple(runtimes.RUNTIMES))
    parser.add_argument("--compute-precision", default=runtimes.DEFAULT_COMPUTE_PRECISION,
                        choices=tuple(runtimes.COMPUTE_PRECISIONS))  # fmt: skip
    parser.add_argument("--decode", default="exact", choices=("exact", "draft"))
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: the pipeline's)")
    parser.add_argument("--raw-batches", type=int, default=3, help="timed raw batches, before and after")
    parser.add_argument("--profile", type=int, default=256, help="images timed step by step")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    load_before = load_average()
    threads = set_threads(args.threads)
    device = pick_device(args.device)
    batch = args.batch_size or default_batch_size(device)
    eager = load_backbone("effnet-lite0", device=device, decode=args.decode)
    started = time.perf_counter()
    chosen = runtimes.with_runtime(eager, args.runtime, args.compute_precision)
    prepare_runtime = time.perf_counter() - started
    nchw = plain_layout(load_backbone("effnet-lite0", device=device))
    table = pd.read_csv(args.data / "cifar10n_train.csv").iloc[: args.n]
    with tempfile.TemporaryDirectory(prefix="dynacor-speed-") as tmp:
        with tarfile.open(args.data / "cifar10-jpg.tar") as tar:
            wanted = set(table["path"])
            tar.extractall(tmp, members=[m for m in tar.getmembers() if m.name in wanted], filter="data")
        dataset = load_image_folder(Path(tmp) / "cifar10" / "train", check="none")
        stages = stage_times(dataset, chosen, batch, args.profile)
        raw = {"torch": [raw_rate(eager, batch, args.raw_batches, amp=True)],
               "torch_nchw": [raw_rate(nchw, batch, args.raw_batches, amp=True)],
               "runtime": [raw_rate(chosen, batch, args.raw_batches, amp=True)]}  # fmt: skip
        marks: list[tuple[float, int]] = []

        def on_event(event: dict) -> None:
            if event["type"] == "progress":
                marks.append((time.perf_counter(), event["done"]))

        spec = BackboneSpec(runtime=args.runtime, compute_precision=args.compute_precision, decode=args.decode)
        started = time.perf_counter()
        summary = extract_to_dir(dataset, Path(tmp) / "features", spec, device=str(device), batch_size=batch,
                                 num_workers=args.workers, on_event=on_event)  # fmt: skip
        end_to_end = time.perf_counter() - started
        raw["runtime"].append(raw_rate(chosen, batch, args.raw_batches, amp=True))
        raw["torch_nchw"].append(raw_rate(nchw, batch, args.raw_batches, amp=True))
        raw["torch"].append(raw_rate(eager, batch, args.raw_batches, amp=True))
    (t0, d0), (t1, d1) = marks[0], marks[-1]
    steady = (d1 - d0) / (t1 - t0)
    rates = {k: sum(v) / len(v) for k, v in raw.items()}
    images = summary["num_samples"]
    e2e = images / end_to_end
    workers = default_workers(device) if args.workers is None else args.workers
    report = {
        "images": images,
        "batch_size": batch,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else _cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "threads": threads,
        "decode_workers": workers,
        "runtime": chosen.runtime,
        "runtime_version": runtimes.runtime_version(chosen.runtime),
        "precision": summary["precision"],
        "decode": args.decode,
        "runtime_ready_seconds": round(prepare_runtime, 2),
        "stages_ms_per_image": stages,
        "raw_passes_per_s": {k: round(v, 1) for k, v in rates.items()},
        "raw_before_after": {k: [round(x, 1) for x in v] for k, v in raw.items()},
        "pipeline_steady_images_per_s": round(steady, 2),
        "pipeline_end_to_end_images_per_s": round(e2e, 2),
        "end_to_end_seconds": round(end_to_end, 1),
        "steady_over_runtime_raw": round(steady / (rates["runtime"] / 2), 3),
        "end_to_end_over_eager_torch": round(e2e / (rates["torch_nchw"] / 2), 2),
        "end_to_end_over_torch_channels_last": round(e2e / (rates["torch"] / 2), 2),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "torch": torch.__version__,
    }
    print_table(report)
    line = json.dumps(report)
    print(line)
    if args.out is not None:
        args.out.write_text(line + "\n")


def print_table(r: dict) -> None:
    s = r["stages_ms_per_image"]
    decoding = s["decode"] + s["resize"] + s["flip"] + s["collate"]
    raw = r["raw_passes_per_s"]
    print(f"{r['images']} images, batch {r['batch_size']}, {r['device']}, {r['cores']} cores, "
          f"{r['threads']} threads, {r['decode_workers']} decoding worker(s); load {r['load_average_before']} -> "
          f"{r['load_average_after']}")  # fmt: skip
    print(f"runtime {r['runtime']} {r['runtime_version'].split('-')[0]}, {r['precision']}, decode {r['decode']} "
          f"(ready in {r['runtime_ready_seconds']} s)")  # fmt: skip
    print("ms per image: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items())
          + f"; decoding side {decoding:.2f} on one core against forward {s['forward']:.2f} on all")  # fmt: skip
    print(f"raw forward passes/s: torch eager (channels-last, dynacor's torch path) {raw['torch']:.1f}, "
          f"torch eager NCHW {raw['torch_nchw']:.1f}, {r['runtime']} {raw['runtime']:.1f}")  # fmt: skip
    print(f"dynacor features: {r['pipeline_end_to_end_images_per_s']:.1f} images/s end to end "
          f"({r['end_to_end_seconds']} s), {r['pipeline_steady_images_per_s']:.1f} steady "
          f"({r['steady_over_runtime_raw']:.2f} of the runtime's raw)")  # fmt: skip
    print(f"end to end over what eager torch embeds (raw / 2 views): {r['end_to_end_over_eager_torch']:.2f}x "
          f"(NCHW), {r['end_to_end_over_torch_channels_last']:.2f}x (channels-last)")  # fmt: skip


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
