"""The ``dynacor`` command: ``detect`` (one run) and ``bench`` (the benchmark grid).

The output files and columns of ``detect`` are a contract other tools rely on: see README.md.
Exit codes: 0 success, 2 bad input, 1 a failed run, 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dynacor.config import CLASSIFIERS, RECORD_MODES, SELECTIONS, SIGNALS, DynaCorConfig
from dynacor.errors import CorruptError, InputError, MissingError, RunExistsError
from dynacor.sourcespec import BACKBONES, SourceSpec, make_loader

DETECTOR_METHODS = ("dynacor", "aum", "cl", "avg-gmm", "simifeat", "cores")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynacor",
        description="Find wrongly labelled samples in an image classification data set (DynaCor, CVPR 2024).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    detect = sub.add_parser(
        "detect",
        help="run detection on one data set and write a run directory",
        description="Run DynaCor on one data set. Writes RUN_DIR/samples.csv (index,id,given_label,"
        "suggested_label,noisy_score,flagged,...), RUN_DIR/dynamics.npy, RUN_DIR/run.json and more; "
        "prints a table of epochs to stderr and a one-line summary to stdout.",
    )
    add_source_arguments(detect)
    detect.add_argument("--out", required=True, metavar="RUN_DIR", help="directory to write the run into")
    detect.add_argument("--overwrite", action="store_true", help="replace a finished run already in RUN_DIR")
    add_config_arguments(detect)
    detect.add_argument("--quiet", action="store_true", help="print only the summary line")

    bench = sub.add_parser(
        "bench",
        help="run the benchmark grid (methods x noise settings x seeds) and write a table",
        description="Run methods x noise settings x seeds on a feature file and write Markdown and CSV tables.",
    )
    from dynacor import bench as bench_module

    bench_module.add_arguments(bench)
    return parser


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data source (default: the built-in sample)")
    one = group.add_mutually_exclusive_group()
    one.add_argument("--features", metavar="FILE", help="feature file: .npz with features, labels[, features_aug, "
                     "clean_labels, ids, class_names, paths] or .parquet with features and label columns")
    one.add_argument("--images", metavar="DIR", help="image folder, one sub-folder per class")
    one.add_argument("--manifest", metavar="FILE", help="CSV or Parquet with path,label[,id][,clean_label]; "
                     "paths relative to the manifest")
    one.add_argument("--cifar10", metavar="ROOT", help="torchvision CIFAR-10 under ROOT")
    one.add_argument("--cifar100", metavar="ROOT", help="torchvision CIFAR-100 under ROOT")
    one.add_argument("--builtin", action="store_true", help="the built-in sample in sample_data/ (the default)")
    group.add_argument("--labels-key", default="labels", metavar="KEY",
                       help="feature files: array (npz) or column (parquet) holding the given labels, e.g. worse_labels")
    group.add_argument("--cifar-n", metavar="FILE", help="CIFAR-10N/100N label file (.pt) with human noisy labels")
    group.add_argument("--human", metavar="SET", help="which CIFAR-N labels: aggre, worse, random1, random2, random3, noisy100")
    group.add_argument("--download", action="store_true", help="download CIFAR when it is missing (needs the network)")
    group.add_argument("--backbone", choices=BACKBONES, default="effnet-lite0",
                       help="image sources: frozen EfficientNet-Lite0 (offline), frozen CLIP, or a network trained "
                       "from scratch on the images (default effnet-lite0)")
    group.add_argument("--clip-model", default="ViT-B-32", help="open_clip model name (default ViT-B-32)")
    group.add_argument("--clip-pretrained", metavar="TAG_OR_PATH",
                       help="open_clip pretrained tag (downloads when online) or a local checkpoint file")
    group.add_argument("--method", choices=DETECTOR_METHODS, default="dynacor",
                       help="detector: dynacor (default) or a baseline on the same data")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DynaCorConfig()
    group = parser.add_argument_group("method settings (defaults: DynaCorConfig)")
    group.add_argument("--config", metavar="FILE.json", help="read settings from a JSON file (flags below override it)")
    group.add_argument("--noise", metavar="KIND:RATE", help="apply synthetic noise to clean_labels for benchmarking: "
                       "sym:0.6 (symmetric), asym:0.3 (pair flip), inst:0.4 (instance-dependent)")
    group.add_argument("--seed", type=int, help=f"random seed (default {defaults.seed})")
    group.add_argument("--epochs", type=int, help=f"classifier epochs (default {defaults.epochs})")
    group.add_argument("--lr", type=float, help=f"classifier learning rate (default {defaults.lr})")
    group.add_argument("--encoder-epochs", type=int, help=f"encoder epochs (default {defaults.encoder_epochs})")
    group.add_argument("--encoder-lr", type=float, help=f"encoder learning rate (default {defaults.encoder_lr})")
    group.add_argument("--gamma", type=float, help=f"fraction of samples copied with a wrong label, in (0, 1] (default {defaults.gamma})")
    group.add_argument("--alpha", type=float, help=f"weight of the alignment loss (default {defaults.alpha})")
    group.add_argument("--classifier", choices=CLASSIFIERS, help="network whose dynamics are recorded: an MLP head on "
                       "frozen features, or a CNN/ResNet trained from scratch (default mlp; scratch-resnet18 with --backbone scratch)")
    group.add_argument("--record", choices=RECORD_MODES, help=f"when margins are recorded: in the training pass or a separate eval pass (default {defaults.record})")
    group.add_argument("--signal", choices=SIGNALS, help=f"what the encoder reads (default {defaults.signal})")
    group.add_argument("--selection", choices=SELECTIONS, help=f"how the encoder epoch is chosen (default {defaults.selection})")
    group.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="auto: CUDA, then MPS, then CPU (default auto)")
    group.add_argument("--threads", type=int, dest="num_threads", help="CPU threads (default: one per core, at most 8)")


CONFIG_FLAGS = ("classifier", "noise", "seed", "epochs", "lr", "encoder_epochs", "encoder_lr", "gamma", "alpha", "record",
                "signal", "selection", "device", "num_threads")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> DynaCorConfig:
    values: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.exists():
            raise MissingError(f"{path}: no such file")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(path, None, "valid JSON", str(exc)) from None
        if not isinstance(values, dict):
            raise InputError(path, None, "a JSON object of settings", type(values).__name__)
        values = values.get("config", values)
    for name in CONFIG_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    from dynacor.validate import check_config

    return check_config(DynaCorConfig.from_dict(values), args.config or "command line")


def source_spec(args: argparse.Namespace) -> SourceSpec:
    for kind in ("features", "images", "manifest", "cifar10", "cifar100"):
        if getattr(args, kind, None):
            path = getattr(args, kind)
            break
    else:
        kind, path = "builtin", None
    return SourceSpec(kind=kind, path=path, labels_key=args.labels_key, backbone=args.backbone,
                      clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                      cifar_n=args.cifar_n, human=args.human, download=args.download)  # fmt: skip


def load_source(spec: SourceSpec, config: DynaCorConfig):
    """The data loader for ``spec``: returns ``(loader, source_description)``."""
    loader = make_loader(spec, needs_clean=config.noise is not None, device=config.device, seed=config.seed)
    if spec.kind == "features":
        # Loaded here, before the run directory exists: bad input writes nothing.
        data = loader(lambda event: None, lambda: False)
        return (lambda on_event, should_stop: data), {**data.source, "spec": spec.to_dict()}
    return loader, {"kind": spec.kind, "path": spec.path, "spec": spec.to_dict()}


class EpochTable:
    """Prints one aligned row per epoch to stderr."""

    def __init__(self, stream=None):
        self.stream = stream

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        out = self.stream or sys.stderr
        if kind == "stage_start" and event["stage"] == "classifier":
            print(f"{'classifier':>10} {'epoch':>7} {'loss':>8} {'acc':>7} {'test':>7} {'sec':>6}", file=out)
        elif kind == "classifier_epoch":
            test = f"{100 * event['test_accuracy']:6.1f}%" if "test_accuracy" in event else f"{'-':>7}"
            print(f"{'':>10} {event['epoch']:>3}/{event['of']:<3} {event['loss']:8.4f} {100 * event['accuracy']:6.1f}% "
                  f"{test} {event['seconds']:6.2f}", file=out)  # fmt: skip
        elif kind == "stage_start" and event["stage"] == "encoder":
            print(f"{'encoder':>10} {'epoch':>7} {'L_clu':>8} {'L_align':>8} {'V':>9} {'flagged':>8} {'F1':>6}", file=out)
        elif kind == "progress" and event.get("stage") == "features":
            if event["done"] == event["total"] or event["done"] % 256 < 32:
                eta = event.get("eta_s")
                eta_text = f", {eta:.0f} s left" if eta is not None else ""
                print(f"  features {event['done']}/{event['total']} images ({event.get('images_per_s') or 0:.1f}/s{eta_text})",
                      file=out)  # fmt: skip
        elif kind == "skipped":
            files = [f["path"] if isinstance(f, dict) else f for f in event.get("files", [])]
            more = f" and {len(files) - 10} more" if len(files) > 10 else ""
            print(f"warning: skipped {len(files)} unreadable file(s): {', '.join(files[:10])}{more}", file=out)
        elif kind == "encoder_epoch":
            f1 = f"{100 * event['f1']:5.1f}" if "f1" in event else f"{'-':>5}"
            print(f"{'':>10} {event['epoch']:>3}/{event['of']:<3} {event['cluster_loss']:8.5f} {event['align_loss']:8.5f} "
                  f"{event['val_metric']:9.6f} {100 * event['flagged_fraction']:7.1f}% {f1:>6}", file=out)  # fmt: skip
        elif kind == "info" and event.get("num_samples"):
            noise = event.get("noise_rate")
            noise_text = f", noise rate {100 * noise:.1f}%" if noise is not None else ""
            print(f"{event['num_samples']} samples + {event['num_copies']} corrupted copies, {event['num_classes']} classes"
                  f"{noise_text}, {event['device']} x{event['threads']}", file=out)  # fmt: skip
        out.flush()


def cmd_detect(args: argparse.Namespace) -> int:
    from dynacor import runstore
    from dynacor.jobs import Job

    spec = source_spec(args)
    config = config_from_args(args)
    if spec.backbone == "scratch" and spec.kind != "features":
        config = config.for_scratch()
    loader, source = load_source(spec, config)
    if args.method != "dynacor":
        from dynacor.baseline_runs import run_baseline

        return run_baseline(args.method, loader, source, config, Path(args.out), args.overwrite, quiet=args.quiet)
    job = Job(Path(args.out), config, loader, source, overwrite=args.overwrite,
              listener=None if args.quiet else EpochTable())  # fmt: skip
    job.start()
    try:
        while not job.wait(0.2):
            pass
    except KeyboardInterrupt:
        job.cancel()
        job.wait()
    state = job.snapshot()
    if state.status == runstore.FINISHED:
        print(f"dynacor: {state.summary} -> {args.out}")
        return EXIT_OK
    if state.status == runstore.CANCELLED:
        print(f"dynacor: cancelled; {args.out} is marked cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    print(f"dynacor: error: {state.error}", file=sys.stderr)
    print(f"dynacor: the run failed; details in {Path(args.out) / 'error.txt'}", file=sys.stderr)
    return EXIT_BAD_INPUT if state.error_type in INPUT_ERRORS else EXIT_FAILED


INPUT_ERRORS = {cls.__name__ for cls in (InputError, MissingError, CorruptError, RunExistsError)}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "detect":
            return cmd_detect(args)
        from dynacor import bench

        return bench.main(args)
    except (InputError, MissingError, CorruptError, RunExistsError) as exc:
        print(f"dynacor: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
