"""The one path from a request to a run, shared by the CLI, the app and scripts.

A request is a data source (`SourceSpec`) plus the settings the user set (a dict of
`DynaCorConfig` fields; what is absent was not set). `build_config` turns it into the run's
config: defaults, then the source's own defaults (a network trained from scratch on pixels has
the paper's from-scratch settings), then the user's values, which are never overridden.
`prepare` adds the data loader, so the CLI and the app start identical runs from identical
requests. `prepare_recorded` does the same for dynamics recorded by another training loop
(`dynacor.record`): only the encoder, clustering and report run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynacor.data.spec import SourceSpec, make_loader
from dynacor.errors import InputError
from dynacor.method.config import DynaCorConfig
from dynacor.method.pipeline import Dynamics
from dynacor.method.validate import check_config
from dynacor.runs import store as runstore
from dynacor.runs.jobs import DataLoader

# The paper's from-scratch setting (METHOD.md): ResNet-18, lr 0.1 with a multi-step schedule,
# 100 epochs, alpha 0.05.
SCRATCH_DEFAULTS: dict[str, Any] = {
    "classifier": "scratch-resnet18", "lr": 0.1, "epochs": 100, "alpha": 0.05, "schedule": "multistep",
}  # fmt: skip


def source_defaults(spec: SourceSpec) -> dict[str, Any]:
    """Config values that this source changes from `DynaCorConfig`'s defaults."""
    return dict(SCRATCH_DEFAULTS) if trains_on_pixels(spec) else {}


def trains_on_pixels(spec: SourceSpec) -> bool:
    return spec.kind != "features" and spec.backbone == "scratch"


def build_config(spec: SourceSpec, user: Mapping[str, Any] | None = None, file: str = "command line") -> DynaCorConfig:
    """The config of a run of ``spec`` with the settings the user set (``user``; absent = not set).

    Raises `InputError` for an unknown or invalid field, and for a classifier that cannot read
    the source: pixels with the ``mlp`` head, or a from-scratch network on feature vectors.
    """
    user = {k: v for k, v in (user or {}).items() if v is not None}
    values = {**source_defaults(spec), **user}
    config = check_config(DynaCorConfig.from_dict(values), file)
    if trains_on_pixels(spec) and not config.classifier.startswith("scratch-"):
        raise InputError(file, "classifier", "a from-scratch network (scratch-cnn, scratch-resnet18, scratch-resnet34) "
                         "with the scratch backbone: the features are raw pixels", repr(config.classifier))  # fmt: skip
    if not trains_on_pixels(spec) and config.classifier != "mlp":
        raise InputError(file, "classifier", "mlp for frozen features (from-scratch networks need --backbone scratch "
                         "and an image source)", repr(config.classifier))  # fmt: skip
    return config


@dataclass
class Prepared:
    """What a run needs: its config, the loader its worker calls, and the source it records."""

    config: DynaCorConfig
    loader: DataLoader
    source: dict


def prepare(spec: SourceSpec, user: Mapping[str, Any] | None = None, file: str = "command line") -> Prepared:
    """`build_config` plus the data loader. Feature files are read here, before any run directory
    exists, so bad input writes nothing; image sources are read by the run's worker."""
    config = build_config(spec, user, file)
    loader = make_loader(spec, needs_clean=config.noise is not None, device=config.device, seed=config.seed)
    if spec.kind == "features":
        data = loader(lambda event: None, lambda: False)
        return Prepared(config, lambda on_event, should_stop: data, {**data.source, "spec": spec.to_dict()})
    return Prepared(config, loader, {"kind": spec.kind, "path": spec.path, "spec": spec.to_dict()})


def rerun_of(run_dir: str | Path, file: str = "re-run") -> Prepared:
    """A new run of the data the run at ``run_dir`` was made from, with its settings and synthetic
    noise off (`dynacor.review.reviewed.relabel_request` then gives it the review's labels).
    Raises `InputError` for a run whose data source cannot be read again (recorded dynamics)."""
    saved = runstore.read_config(run_dir)
    spec = (saved.get("source") or {}).get("spec")
    if not spec:
        raise InputError(Path(run_dir) / "config.json", "source.spec", "the data source of a run made from "
                         "images or features (recorded dynamics were trained on their own labels)", "none")  # fmt: skip
    user = {**saved.get("config", {}), "noise": None}
    return prepare(SourceSpec.from_dict(spec), user, file)


def reads_now(request: Prepared) -> bool:
    """Whether ``request``'s data was read when it was prepared (a feature source), not by the
    run's worker."""
    return (request.source.get("spec") or {}).get("kind") == "features"


# Settings of the classifier stage, which ran where the dynamics were recorded.
CLASSIFIER_FIELDS = ("classifier", "epochs", "lr", "momentum", "weight_decay", "batch_size", "hidden",
                     "schedule", "record", "suggest_window", "gamma", "noise")  # fmt: skip


def recorded_config(dynamics: Dynamics, user: Mapping[str, Any] | None = None, file: str = "command line") -> DynaCorConfig:
    """The config of a run on recorded ``dynamics`` with the settings the user set.

    ``epochs`` and ``gamma`` are what the recording holds (E, and M / N when in (0, 1]), so the
    run's config.json says what was trained rather than the defaults of a classifier that never
    ran here. Raises `InputError` for an unknown or invalid field.
    """
    values = {k: v for k, v in (user or {}).items() if v is not None}
    n, m = len(dynamics.given_labels), len(dynamics.copy_pair)
    values["epochs"] = int(dynamics.margins_all.shape[1])
    if 0 < m <= n:
        values["gamma"] = m / n
    return check_config(DynaCorConfig.from_dict(values), file)


def prepare_recorded(
    dynamics: Dynamics, source: dict, user: Mapping[str, Any] | None = None, file: str = "command line"
) -> Prepared:
    """`recorded_config` plus a loader that hands ``dynamics`` (already read and checked, so bad
    input writes nothing) to the job, which then runs `dynacor.method.pipeline.detect` on it."""
    config = recorded_config(dynamics, user, file)
    return Prepared(config, lambda on_event, should_stop: dynamics, dict(source))
