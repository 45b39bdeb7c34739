"""Where a run's data comes from, as a plain value the app and CLI build, save and reopen.

`make_loader(spec)` turns a spec into the loader a `dynacor.runs.jobs.Job` calls in its worker thread:
feature files are read as they are; image sources go through a frozen backbone (features cached)
or, for ``scratch``, are handed over as flattened images for a network trained from scratch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from dynacor.data.backbones import BACKBONES, DECODES, DEFAULT_DECODE
from dynacor.data.runtimes import DEFAULT_COMPUTE_PRECISION, DEFAULT_RUNTIME, check_choice
from dynacor.errors import InputError
from dynacor.method.featureset import FeatureSet

# The one registry of data sources, read by the CLI and the app: what each is, and what its path is.
SOURCES = {
    "builtin": ("Built-in sample (CIFAR-10 images, 10 classes)", None),
    "features": ("Feature file (.npz or .parquet)", "file"),
    "images": ("Image folder (one sub-folder per class)", "dir"),
    "manifest": ("Manifest (CSV or Parquet: path,label)", "file"),
    "cifar10": ("CIFAR-10 root (torchvision layout)", "dir"),
    "cifar100": ("CIFAR-100 root (torchvision layout)", "dir"),
}
KINDS = tuple(SOURCES)


@dataclass
class SourceSpec:
    """A data source and, for images, the backbone that turns them into features.

    kind : one of ``KINDS``; ``path`` is the file or directory (unused for ``builtin``)
    labels_key : feature files: which array holds the given labels
    backbone : image sources: ``effnet-lite0`` (offline default), ``clip`` or ``scratch``
    clip_model, clip_pretrained : CLIP: model name and a pretrained tag or local checkpoint path
    runtime, compute_precision : frozen backbones: where the forward pass runs and its arithmetic
        (`dynacor.data.runtimes.RUNTIMES`, ``COMPUTE_PRECISIONS``)
    decode : frozen backbones: how image files are decoded (`dynacor.data.backbones.DECODES`)
    cifar_n, human : CIFAR: a CIFAR-N label file and which human label set to use
    download : CIFAR: download the data set when it is missing (needs the network)
    sample_per_class, sample_noise : the built-in sample: images kept per class (40 of 200 keep
        a first run, feature extraction included, within a minute on a 2-core CPU) and the noise
        injected into its clean labels (a run's own ``noise`` setting replaces it)
    """

    kind: str = "builtin"
    path: str | None = None
    labels_key: str = "labels"
    backbone: str = "effnet-lite0"
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = None
    runtime: str = DEFAULT_RUNTIME
    compute_precision: str = DEFAULT_COMPUTE_PRECISION
    decode: str = DEFAULT_DECODE
    cifar_n: str | None = None
    human: str | None = None
    download: bool = False
    sample_per_class: int | None = 40
    sample_noise: str | None = "sym:0.2"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SourceSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def describe(self) -> str:
        if self.kind == "builtin":
            return f"built-in sample ({self.backbone})"
        if self.kind == "features":
            return f"features {self.path}"
        return f"{self.kind} {self.path} ({self.backbone})"


def make_loader(spec: SourceSpec, needs_clean: bool = False, device: str = "auto", seed: int = 0):
    """A callable ``(on_event, should_stop) -> FeatureSet`` for ``spec``; checks the spec first."""
    if spec.kind not in KINDS:
        raise InputError("source", "kind", f"one of {KINDS}", repr(spec.kind))
    if spec.kind != "builtin" and not spec.path:
        raise InputError("source", "path", f"a path for the {spec.kind} source", "nothing")
    if spec.kind == "features":
        from dynacor.data.featurefile import load_features

        def load_feature_file(on_event, should_stop) -> FeatureSet:
            return load_features(spec.path, spec.labels_key, needs_clean)

        return load_feature_file
    if spec.backbone not in BACKBONES:
        raise InputError("source", "backbone", f"one of {tuple(BACKBONES)}", repr(spec.backbone))
    if spec.decode not in DECODES:
        raise InputError("source", "decode", f"one of {tuple(DECODES)}", repr(spec.decode))
    check_choice(spec.runtime, spec.compute_precision, "source")

    def load_images(on_event, should_stop) -> FeatureSet:
        from dynacor.data.images import featureset_from_images, open_images

        dataset = open_images(
            spec.kind, spec.path, cifar_n=spec.cifar_n, human=spec.human, download=spec.download,
            sample_noise=spec.sample_noise, sample_per_class=spec.sample_per_class, seed=seed,
        )  # fmt: skip
        if spec.backbone == "scratch":
            if dataset.skipped:  # featureset_from_images reports these itself for frozen backbones
                on_event({"type": "skipped", "count": len(dataset.skipped),
                          "files": [{"path": s.path, "reason": s.reason} for s in dataset.skipped]})  # fmt: skip
            return scratch_featureset(dataset)
        return featureset_from_images(
            dataset, spec.backbone, clip_model=spec.clip_model, clip_pretrained=spec.clip_pretrained,
            device=device, runtime=spec.runtime, compute_precision=spec.compute_precision,
            decode=spec.decode, on_event=on_event, should_stop=should_stop,
        )  # fmt: skip

    return load_images


def scratch_featureset(dataset) -> FeatureSet:
    """The images themselves, flattened, for a classifier trained from scratch."""
    from dynacor.data.images import to_featureset
    from dynacor.data.sources import images_array

    images = images_array(dataset, size=32)
    flat = images.reshape(images.shape[0], -1)
    data = to_featureset(dataset, flat.astype(np.float32), None)
    data.source = {**data.source, "backbone": {"backbone": "scratch"}, "image_shape": list(images.shape[1:])}
    return data
