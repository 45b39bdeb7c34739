"""The options ``detect`` and ``bench`` share, and how they become a request (source + user settings)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynacor.baselines.registry import DETECTORS, methods_help
from dynacor.data.backbones import BACKBONES, DECODES, DEFAULT_DECODE
from dynacor.data.runtimes import (
    COMPUTE_PRECISIONS,
    DEFAULT_COMPUTE_PRECISION,
    DEFAULT_RUNTIME,
    RUNTIMES,
)
from dynacor.data.spec import SOURCES, SourceSpec
from dynacor.errors import InputError, MissingError
from dynacor.method.combine import COMBINE_CHOICES
from dynacor.method.config import (
    CLASSIFIERS,
    DEVICES,
    RECORD_MODES,
    SELECTIONS,
    SIGNALS,
    DynaCorConfig,
)
from dynacor.method.nets import SCHEDULES
from dynacor.runs.request import SCRATCH_DEFAULTS


def listed(registry: dict[str, str]) -> str:
    """A registry's choices and what each means, for an argparse help text (which formats ``%``)."""
    return "; ".join(f"{k}: {v}" for k, v in registry.items()).replace("%", "%%")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The data source options of ``detect``."""
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
    one.add_argument("--dynamics", metavar="FILE|RUN_DIR", help="training dynamics recorded elsewhere "
                     "(dynacor.record): a .npz dynamics file or a finished run directory; runs only the "
                     "encoder, clustering and report")
    group.add_argument("--sample-per-class", type=int, metavar="N",
                       help=f"the built-in sample: images per class, up to 200 (default {SourceSpec().sample_per_class})")
    group.add_argument("--labels-key", default="labels", metavar="KEY",
                       help="feature files: array (npz) or column (parquet) holding the given labels, e.g. worse_labels")
    group.add_argument("--cifar-n", metavar="FILE", help="CIFAR-10N/100N label file (.pt) with human noisy labels")
    group.add_argument("--human", metavar="SET", help="which CIFAR-N labels: aggre, worse, random1, random2, random3, noisy100")
    group.add_argument("--download", action="store_true", help="download CIFAR when it is missing (needs the network)")
    group.add_argument("--backbone", choices=tuple(BACKBONES), default="effnet-lite0",
                       help="image sources: " + "; ".join(f"{k}: {v}" for k, v in BACKBONES.items()) + " (default effnet-lite0)")
    group.add_argument("--clip-model", default="ViT-B-32", help="open_clip model name (default ViT-B-32)")
    group.add_argument("--clip-pretrained", metavar="TAG_OR_PATH",
                       help="open_clip pretrained tag (downloads when online) or a local checkpoint file")
    add_runtime_arguments(group)
    group.add_argument("--labels-from-review", metavar="RUN_DIR",
                       help="train on the labels a review of RUN_DIR decided (accepted and relabelled classes; "
                       "removed samples left out); the data source must be the one RUN_DIR was made from")
    group.add_argument("--review-db", metavar="URL", help="with --labels-from-review: SQLAlchemy URL of the review "
                       "store (default: DYNACOR_REVIEW_DB, else reviews.sqlite beside RUN_DIR, as the app)")
    group.add_argument("--method", choices=DETECTORS, default="dynacor",
                       help="detector (default dynacor), or a baseline on the same data: " + methods_help(DETECTORS))


def add_runtime_arguments(group: argparse._ActionsContainer) -> None:
    """Where a frozen backbone runs and how images are decoded (``detect`` and ``features``)."""
    group.add_argument("--runtime", choices=tuple(RUNTIMES), default=DEFAULT_RUNTIME,
                       help="image sources, frozen backbones: where the forward pass runs; "
                       + listed(RUNTIMES)
                       + f" (default {DEFAULT_RUNTIME}; features are cached per runtime; OpenVINO and "
                       "ONNX Runtime: pip install 'dynacor[runtimes]')")  # fmt: skip
    group.add_argument("--compute-precision", choices=tuple(COMPUTE_PRECISIONS), default=DEFAULT_COMPUTE_PRECISION,
                       help="the forward pass's arithmetic (features are stored as float16 either way); "
                       + listed(COMPUTE_PRECISIONS)
                       + f" (default {DEFAULT_COMPUTE_PRECISION})")  # fmt: skip
    group.add_argument("--decode", choices=tuple(DECODES), default=DEFAULT_DECODE,
                       help="how image files are decoded; " + listed(DECODES)
                       + f" (default {DEFAULT_DECODE})")  # fmt: skip


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The method settings of ``detect``; each defaults to unset (see `user_settings`)."""
    defaults = DynaCorConfig()
    group = parser.add_argument_group("method settings (defaults: DynaCorConfig)")
    group.add_argument("--config", metavar="FILE.json", help="read settings from a JSON file (flags below override it)")
    group.add_argument("--noise", metavar="KIND:RATE", help="apply synthetic noise to clean_labels for benchmarking: "
                       "sym:0.6 (symmetric), asym:0.3 (pair flip), inst:0.4 (instance-dependent)")
    group.add_argument("--seed", type=int, help=f"random seed (default {defaults.seed})")
    group.add_argument("--epochs", type=int, help=f"classifier epochs (default {defaults.epochs}; "
                       f"{SCRATCH_DEFAULTS['epochs']} with --backbone scratch)")
    group.add_argument("--lr", type=float, help=f"classifier learning rate (default {defaults.lr}; "
                       f"{SCRATCH_DEFAULTS['lr']} with --backbone scratch)")
    group.add_argument("--schedule", choices=SCHEDULES, help=f"classifier learning-rate schedule (default {defaults.schedule}; "
                       f"{SCRATCH_DEFAULTS['schedule']} with --backbone scratch)")
    group.add_argument("--encoder-epochs", type=int, help=f"encoder epochs (default {defaults.encoder_epochs})")
    group.add_argument("--encoder-lr", type=float, help=f"encoder learning rate (default {defaults.encoder_lr})")
    group.add_argument("--gamma", type=float, help=f"fraction of samples copied with a wrong label, in (0, 1] (default {defaults.gamma})")
    group.add_argument("--alpha", type=float, help=f"weight of the alignment loss (default {defaults.alpha}; "
                       f"{SCRATCH_DEFAULTS['alpha']} with --backbone scratch)")
    group.add_argument("--classifier", choices=CLASSIFIERS, help="network whose dynamics are recorded: an MLP head on "
                       "frozen features, or a CNN/ResNet trained from scratch (default mlp; with --backbone scratch: "
                       + ", ".join(f"{k} {v}" for k, v in SCRATCH_DEFAULTS.items()) + ")")
    group.add_argument("--record", choices=RECORD_MODES, help=f"when margins are recorded: in the training pass or a separate eval pass (default {defaults.record})")
    group.add_argument("--signal", choices=SIGNALS, help=f"what the encoder reads (default {defaults.signal})")
    group.add_argument("--combine", choices=COMBINE_CHOICES, help="what the cut reads: probe+early sums the ranks of "
                       "DynaCor's cluster score, a cross-fitted linear probe's and the early softmax's normalised margins "
                       "and flags each given class at cleanlab's counts; early leaves the probe out (runs without "
                       "features do); none is DynaCor's cluster probability alone, the paper's score "
                       f"(default {defaults.combine})")  # fmt: skip
    group.add_argument("--selection", choices=SELECTIONS, help=f"how the encoder epoch is chosen (default {defaults.selection})")
    group.add_argument("--device", choices=DEVICES, help="auto: CUDA, then MPS, then CPU (default auto)")
    group.add_argument("--threads", type=int, dest="num_threads", help="CPU threads (default: one per core, at most 8)")
    cut = group.add_mutually_exclusive_group()
    cut.add_argument("--target-precision", type=float, metavar="P",
                     help="flag the most samples whose estimated precision is at least P (a fraction, e.g. 0.9) "
                          "instead of the paper's cut q_noisy > 0.5; run.json records the cut and the estimates")  # fmt: skip
    cut.add_argument("--target-recall", type=float, metavar="R",
                     help="flag the fewest samples whose estimated recall reaches R (a fraction, e.g. 0.8)")


CONFIG_FLAGS = ("classifier", "noise", "seed", "epochs", "lr", "schedule", "encoder_epochs", "encoder_lr", "gamma", "alpha", "record",
                "signal", "combine", "selection", "device", "num_threads", "target_precision", "target_recall")  # fmt: skip


def user_settings(args: argparse.Namespace) -> dict:
    """The settings the user set: a ``--config`` JSON file (a run's config.json or run.json works),
    then the flags given on the command line. Unset flags are absent, never a default."""
    values: dict = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.exists():
            raise MissingError(f"{path}: no such file")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(path, None, "valid JSON", str(exc)) from None
        if not isinstance(values, dict):
            raise InputError(path, None, "a JSON object of settings", type(values).__name__)
        values = dict(values.get("config", values))
    for name in CONFIG_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    return values


def settings_file(args: argparse.Namespace) -> str:
    """What error messages about settings name: the --config file, else the command line."""
    return getattr(args, "config", None) or "command line"


# Flags of the classifier stage: with --dynamics the classifier was trained where they were
# recorded, so these would change nothing and are refused rather than ignored.
CLASSIFIER_FLAGS = ("classifier", "noise", "epochs", "lr", "schedule", "gamma", "record")


def recorded_flags(args: argparse.Namespace) -> list[str]:
    """The classifier-stage flags given on the command line (each refused with --dynamics)."""
    return ["--" + name.replace("_", "-") for name in CLASSIFIER_FLAGS if getattr(args, name, None) is not None]


def source_spec(args: argparse.Namespace) -> SourceSpec:
    """The data source named by the options (the built-in sample when none is)."""
    for kind in (k for k in SOURCES if k != "builtin"):
        if getattr(args, kind, None):
            path = getattr(args, kind)
            break
    else:
        kind, path = "builtin", None
    return SourceSpec(kind=kind, path=path, labels_key=args.labels_key, backbone=args.backbone,
                      clip_model=args.clip_model, clip_pretrained=args.clip_pretrained, runtime=args.runtime,
                      compute_precision=args.compute_precision, decode=args.decode,
                      cifar_n=args.cifar_n, human=args.human, download=args.download,
                      **({} if args.sample_per_class is None else {"sample_per_class": args.sample_per_class}))  # fmt: skip
