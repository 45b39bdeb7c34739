"""Where a run's data comes from, as a plain value the app and CLI can build, save and reopen.

`make_loader(spec)` turns a spec into the loader a `dynacor.jobs.Job` calls in its worker thread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from dynacor.errors import InputError
from dynacor.featureset import FeatureSet

KINDS = ("builtin", "features", "images", "manifest", "cifar10", "cifar100")
BACKBONES = ("effnet-lite0", "clip", "scratch")


@dataclass
class SourceSpec:
    """A data source and, for images, the backbone that turns them into features.

    kind : one of ``KINDS``; ``path`` is the file or directory (unused for ``builtin``)
    labels_key : feature files: which array holds the given labels
    backbone, clip_model, clip_pretrained : image sources: how features are computed
    cifar_n, human : CIFAR: a CIFAR-N label file and which human label set to use
    """

    kind: str = "builtin"
    path: str | None = None
    labels_key: str = "labels"
    backbone: str = "effnet-lite0"
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = None
    cifar_n: str | None = None
    human: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_loader(spec: SourceSpec, needs_clean: bool = False):
    """A callable ``(on_event, should_stop) -> FeatureSet`` for ``spec``."""
    if spec.kind not in KINDS:
        raise InputError("source", "kind", f"one of {KINDS}", repr(spec.kind))
    if spec.kind == "features":
        from dynacor.featurefile import load_features

        if not spec.path:
            raise InputError("source", "path", "a feature file path", "nothing")
        path = Path(spec.path)

        def load_feature_file(on_event, should_stop) -> FeatureSet:
            return load_features(path, spec.labels_key, needs_clean)

        return load_feature_file
    raise InputError("source", "kind", "a kind this build can load (image sources are being wired)", repr(spec.kind))
