"""Where a frozen backbone's forward pass runs: eager torch, ONNX Runtime or OpenVINO.

On a 2-core CPU eager PyTorch runs EfficientNet-Lite0 at a fraction of what the cores can do;
the same network exported to ONNX runs several times faster in ONNX Runtime and faster still in
OpenVINO (docs/large-data.md#throughput). So a backbone loaded by `dynacor.data.backbones` can
have its ``embed`` replaced by one of these runtimes (`with_runtime`); everything around it
(decoding, views, shards, the cache) stays the same.

- **The export.** The backbone's whole ``embed`` (for effnet-lite0: uint8 pixels in, their
  normalisation in the graph, features out) through ``torch.onnx.export`` at opset 17, the
  TorchScript exporter (``dynamo=False``: the dynamo exporter needs onnxscript, which nothing else
  here needs), batch dimension dynamic. One ONNX file serves both runtimes. It is cached under
  the feature cache (``FEATURE_CACHE/exported/``), keyed by the backbone's identity, the weights'
  digest, the input's shape and dtype, the torch version and the opset, and written atomically.
- **The check.** The first time a runtime (at a given version and precision) runs an exported
  model, its features on a seeded probe batch are compared with torch's; the verdict (the largest
  difference relative to the largest feature) is cached beside the model. ``auto`` takes the first
  runtime, in `AUTO_ORDER`, that is installed and within `TOLERANCE`; a runtime named explicitly
  is used whatever its verdict (a warning says when it is off).
- **The key.** A runtime other than torch, or a reduced precision, enters the backbone's
  ``identity`` (``runtime``, ``precision``), so the feature cache and the shards' plan never mix
  features of different runtimes. Torch at float32 keeps the identity it always had: features
  cached before runtimes existed are still found.

Reduced precision (``bf16``: OpenVINO's ``INFERENCE_PRECISION_HINT``) runs only when asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import os
import re
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dynacor import atomic
from dynacor.data.backbones import (
    DEFAULT_DECODE,
    Backbone,
    describe_effnet,
    load_backbone,
    with_decode,
)
from dynacor.data.feature_cache import default_cache_dir, weights_digest
from dynacor.errors import CorruptError, InputError, MissingError
from dynacor.method.device import pick_device

# The one registry of runtimes, read by the CLI's --help and the app.
RUNTIMES = {
    "auto": "the fastest installed runtime whose features equal torch's within 1e-4: OpenVINO, then "
    "ONNX Runtime, on the CPU; torch on a GPU",
    "torch": "eager PyTorch (channels-last; float16 autocast on CUDA)",
    "onnxruntime": "ONNX Runtime on the CPU, the backbone exported once with torch.onnx",
    "openvino": "OpenVINO on the CPU, from the same export",
}
DEFAULT_RUNTIME = "auto"
# Arithmetic of the forward pass (the stored features are float16 whatever it is).
COMPUTE_PRECISIONS = {
    "float32": "float32 arithmetic (float16 autocast with torch on CUDA, unless --no-amp)",
    "bf16": "OpenVINO's bfloat16 inference: about twice as fast on CPUs with AVX-512 BF16 or AMX, "
    "features about 1% from float32's (cached apart)",
}
DEFAULT_COMPUTE_PRECISION = "float32"
# Fastest first, as measured on EfficientNet-Lite0 (docs/large-data.md#throughput).
AUTO_ORDER = ("openvino", "onnxruntime")
EXPORTED_RUNTIMES = AUTO_ORDER
# Largest |runtime - torch| over the largest |torch| on the probe batch that `auto` accepts.
TOLERANCE = 1e-4
ONNX_OPSET = 17
# Bump when the export changes, so models exported the old way are not reused.
EXPORT_VERSION = 1
EXPORTED = "exported"
# Bump when how a runtime runs the model changes, so its checks are made again.
CHECK_VERSION = 3
PROBE_IMAGES = 4
INSTALL_HINT = "pip install 'dynacor[runtimes]'"
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}

Forward = Callable[[np.ndarray], np.ndarray]
Builder = Callable[[], Backbone]
EventHandler = Callable[[dict], None]


# --------------------------------------------------------------------------------------------
# What is installed


def installed(runtime: str) -> bool:
    """Whether ``runtime`` can run here (torch always can; the others when their package is)."""
    if runtime == "torch":
        return True
    return runtime in _PACKAGES and importlib.util.find_spec(_PACKAGES[runtime]) is not None


def runtime_version(runtime: str) -> str:
    """The installed version of ``runtime``'s package (torch's for torch)."""
    if runtime == "torch":
        return torch.__version__
    return str(_require(runtime).__version__)


def _require(runtime: str) -> Any:
    """The runtime's module, or MissingError saying what to install."""
    if importlib.util.find_spec(_PACKAGES[runtime]) is None:
        raise MissingError(
            f"--runtime {runtime} needs {_NAMES[runtime]}, which is not installed: "
            f"{INSTALL_HINT} (or --runtime torch)"
        )
    return importlib.import_module(_PACKAGES[runtime])


def check_choice(runtime: str, precision: str, file: str = "command line") -> None:
    """InputError for an unknown runtime or precision, or a precision its runtime cannot run."""
    if runtime not in RUNTIMES:
        raise InputError(file, "runtime", f"one of {tuple(RUNTIMES)}", repr(runtime))
    if precision not in COMPUTE_PRECISIONS:
        raise InputError(file, "compute_precision", f"one of {tuple(COMPUTE_PRECISIONS)}", repr(precision))
    if precision == "bf16" and runtime not in ("auto", "openvino"):
        raise InputError(file, "compute_precision", "float32 with --runtime " + runtime + " (bf16 runs on OpenVINO)", repr(precision))


def candidates(runtime: str, precision: str, device: torch.device) -> list[str]:
    """The runtimes to try, in order, for a request; the last one is used if all others fail.

    ``auto``: on the CPU, the installed exported runtimes in `AUTO_ORDER`, then torch; on a GPU
    or MPS, torch (the exported runtimes run on the CPU here). bf16 needs OpenVINO.
    """
    check_choice(runtime, precision)
    if runtime == "auto":
        if precision == "bf16":
            _require("openvino")
            return ["openvino"]
        if device.type != "cpu":
            return ["torch"]
        return [r for r in AUTO_ORDER if installed(r)] + ["torch"]
    if runtime != "torch":
        _require(runtime)
        if device.type != "cpu":
            raise InputError("command line", "device", f"cpu with --runtime {runtime} (it runs on the CPU; "
                             "--runtime torch runs on a GPU)", repr(device.type))  # fmt: skip
    return [runtime]


# --------------------------------------------------------------------------------------------
# The exported model


def export_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where exported models live: ``exported/`` in the feature cache (``cache_dir`` or the default)."""
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / EXPORTED


def probe_batch(backbone: Backbone) -> torch.Tensor:
    """A seeded batch of `PROBE_IMAGES` random images of several sizes through the backbone's
    preprocessing: what the exports are traced on and checked with."""
    rng = np.random.default_rng(12345)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((32, 32), (48, 64), (300, 200), (224, 224))]
    return torch.stack([backbone.preprocess(im) for im in images[:PROBE_IMAGES]])


def base_identity(backbone: Backbone) -> dict[str, Any]:
    """The backbone's identity without the runtime's entries: what its exported model depends on."""
    return {k: v for k, v in backbone.identity.items() if k not in ("runtime", "precision")}


def export_key(backbone: Backbone, probe: torch.Tensor) -> str:
    """The exported model's name: backbone, weights, input, exporter."""
    blob = json.dumps(
        {
            "v": EXPORT_VERSION,
            "backbone": base_identity(backbone),
            "weights": weights_digest(backbone.weights_file),
            "input": [list(probe.shape[1:]), str(probe.dtype)],
            "torch": torch.__version__,
            "opset": ONNX_OPSET,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


class _Embed(torch.nn.Module):
    """The backbone's ``embed`` as a module, so the tracer sees its weights as the model's."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.model = backbone.model
        self._embed = backbone.embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._embed(x)


def exported_model(backbone: Backbone, cache_dir: str | os.PathLike[str] | None = None,
                   on_event: EventHandler | None = None, build: Builder | None = None) -> Path:  # fmt: skip
    """The backbone exported to ONNX, from the cache or exported now (a few seconds, once).

    build : gives the backbone with its network, when ``backbone`` is only described
        (`dynacor.data.backbones.describe_effnet`) and the model is not cached yet

    Raises CorruptError when torch cannot export the model (the message says why).
    """
    if backbone.device.type != "cpu":
        raise InputError(None, "device", "cpu for an exported runtime", repr(backbone.device.type))
    probe = probe_batch(backbone)
    folder = export_dir(cache_dir)
    path = folder / f"{export_key(backbone, probe)}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    module = _Embed(build() if build is not None else backbone).eval()
    started = time.perf_counter()

    def write(handle: Any) -> None:
        # nn.MultiheadAttention (CLIP) would take its fused fast path, an operator the exporter
        # does not know: traced with the fast path off (and gradients on, which also rules it out).
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
                # The TorchScript exporter announces its own deprecation on every call.
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (probe[:2],), handle, opset_version=ONNX_OPSET, dynamo=False,
                                  input_names=["pixels"], output_names=["features"],
                                  dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}})  # fmt: skip
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)

    try:
        atomic.write_with(path, write)
    except Exception as exc:  # the exporter raises many types for unsupported operators
        raise CorruptError(f"{backbone.name}: could not export to ONNX ({type(exc).__name__}: {str(exc)[:300]}); "
                           "use --runtime torch") from None  # fmt: skip
    seconds = time.perf_counter() - started
    atomic.write_json(path.with_suffix(".json"), {
        "backbone": base_identity(backbone), "weights_file": backbone.weights_file,
        "weights_sha256": weights_digest(backbone.weights_file), "input": list(probe.shape[1:]),
        "dtype": str(probe.dtype), "torch": torch.__version__, "opset": ONNX_OPSET,
        "export_version": EXPORT_VERSION, "seconds": seconds, "written": time.time(),
    })  # fmt: skip
    if on_event is not None:
        on_event({"type": "runtime_export", "path": str(path), "seconds": seconds})
    return path


# --------------------------------------------------------------------------------------------
# Running an exported model


def compile_model(path: str | os.PathLike[str], runtime: str, precision: str = DEFAULT_COMPUTE_PRECISION,
                  threads: int | None = None) -> Forward:  # fmt: skip
    """An exported model ready to run: ``(B, ...) array -> (B, D) float32``.

    threads : the runtime's intra-op threads (default torch's, which ``--threads`` sets)
    """
    check_choice(runtime, precision)
    n = int(threads or torch.get_num_threads())
    module = _require(runtime)
    lock = threading.Lock()  # one request object: calls from two threads take turns
    if runtime == "openvino":
        core = module.Core()
        # Streams of a thread or two, each running a part of the batch, keep the cores busier
        # than one stream over all of them (about 5% more passes/s on 2 cores). Threads not
        # pinned to cores: a pinned thread waits while a decoding worker (or anything else) runs
        # on its core, and its stream with it (half the images/s on a shared 2-core machine).
        # The precision hint is set for float32 too: OpenVINO would choose bf16 by itself on
        # CPUs with AMX.
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_NUM_THREADS": n, "PERFORMANCE_HINT": "THROUGHPUT", "ENABLE_CPU_PINNING": False,
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        })  # fmt: skip
        requests = [compiled.create_infer_request() for _ in range(int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))]

        def forward(x: np.ndarray) -> np.ndarray:
            parts = np.array_split(np.ascontiguousarray(x), min(len(requests), max(1, len(x))))
            with lock:
                for request, part in zip(requests, parts, strict=False):
                    request.start_async({0: part})
                # Each output buffer is its request's own, overwritten by the next call: copied.
                out = []
                for request in requests[: len(parts)]:
                    request.wait()
                    out.append(np.array(request.get_output_tensor(0).data, dtype=np.float32))
            return np.concatenate(out)

        return forward
    options = module.SessionOptions()
    options.intra_op_num_threads = n
    options.inter_op_num_threads = 1
    # Spinning threads would take the cores the decoding workers need between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = module.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def forward(x: np.ndarray) -> np.ndarray:
        with lock:
            return np.asarray(session.run(None, {name: np.ascontiguousarray(x)})[0], dtype=np.float32)

    return forward


def relative_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max |expected|: the measure `TOLERANCE` bounds."""
    scale = float(np.abs(expected).max()) or 1.0
    return float(np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64)).max() / scale)


def verdict(backbone: Backbone, path: Path, runtime: str, precision: str, forward: Forward,
            build: Builder | None = None) -> dict[str, Any]:  # fmt: skip
    """How far ``forward`` (the exported model in ``runtime``) is from torch on the probe batch:
    ``{"max_rel_diff", "ok", ...}``, cached beside the model per runtime version and precision
    (``build``: as in `exported_model`, for torch's side when it is not cached)."""
    version = re.sub(r"[^A-Za-z0-9.]+", "_", runtime_version(runtime))  # OpenVINO's holds slashes
    note = path.with_name(f"{path.stem}.{runtime}-{version}-{precision}-v{CHECK_VERSION}.json")
    try:
        found = json.loads(note.read_text())
        if isinstance(found.get("max_rel_diff"), float):
            return found
    except (OSError, ValueError):
        pass
    probe = probe_batch(backbone)
    with torch.inference_mode():
        expected = (build() if build is not None else backbone).embed(probe).float().numpy()
    diff = relative_difference(forward(probe.numpy()), expected)
    result = {"runtime": runtime, "version": runtime_version(runtime), "precision": precision,
              "max_rel_diff": diff, "ok": diff <= TOLERANCE, "tolerance": TOLERANCE}  # fmt: skip
    atomic.write_json(note, result)
    return result


def with_runtime(
    backbone: Backbone,
    runtime: str = DEFAULT_RUNTIME,
    precision: str = DEFAULT_COMPUTE_PRECISION,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    on_event: EventHandler | None = None,
    build: Builder | None = None,
) -> Backbone:
    """``backbone`` with its forward pass in ``runtime`` (see the module's docstring).

    Parameters
    ----------
    backbone : from `dynacor.data.backbones.load_backbone` (torch)
    runtime : one of `RUNTIMES`
    precision : one of `COMPUTE_PRECISIONS`
    cache_dir : the feature cache whose ``exported/`` holds the exported models (default
        ``$DYNACOR_CACHE`` or ``~/.cache/dynacor/features``)
    threads : the runtime's threads (default torch's)
    on_event : receives ``runtime_export`` (a model exported: ``path``, ``seconds``) and
        ``runtime`` (the choice: ``runtime``, ``precision``, ``max_rel_diff``, ``tried``) events
    build : when ``backbone`` is only described (no network): gives the loaded one, called only
        if torch runs, or the model or a verdict is not cached yet

    Returns
    -------
    The same backbone (torch) or a copy whose ``embed`` runs the exported model, whose
    ``runtime`` and ``precision`` say so and whose ``identity`` carries them.

    Raises
    ------
    InputError : unknown runtime or precision, or an exported runtime on a GPU
    MissingError : a runtime asked for by name that is not installed
    CorruptError : a runtime asked for by name whose export failed
    """
    order = candidates(runtime, precision, backbone.device)
    full = _once(build) if build is not None else None
    tried: dict[str, str] = {}
    for name in order:
        if name == "torch":
            if on_event is not None:
                on_event({"type": "runtime", "runtime": "torch", "precision": precision, "tried": tried})
            return full() if full is not None else backbone
        try:
            path = exported_model(backbone, cache_dir, on_event, full)
            forward = compile_model(path, name, precision, threads)
            check = verdict(backbone, path, name, precision, forward, full)
        except Exception as exc:  # the runtimes raise their own types (ONNX Runtime's derive from Exception)
            if runtime != "auto":
                raise
            # auto never fails where torch works: the failure is reported and the next one tried.
            tried[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        if runtime == "auto" and precision == "float32" and not check["ok"]:
            tried[name] = f"features {check['max_rel_diff']:.2g} from torch's (over {TOLERANCE:g})"
            continue
        if precision == "float32" and not check["ok"]:
            warnings.warn(f"--runtime {name}: features {check['max_rel_diff']:.2g} from torch's (relative), "
                          f"over the {TOLERANCE:g} that --runtime auto accepts", stacklevel=2)  # fmt: skip
        if on_event is not None:
            on_event({"type": "runtime", "runtime": name, "precision": precision, "version": check["version"],
                      "max_rel_diff": check["max_rel_diff"], "model": str(path), "tried": tried})  # fmt: skip
        return _running(backbone, name, precision, forward)
    raise AssertionError("candidates always end in torch or a named runtime")  # pragma: no cover


def describe(event: dict) -> str:
    """One line for a ``runtime`` or ``runtime_export`` event, as the CLI prints it."""
    if event["type"] == "runtime_export":
        return f"backbone exported in {event['seconds']:.1f} s -> {event['path']}"
    if event["runtime"] == "torch":
        tried = "; ".join(f"{k}: {v}" for k, v in event["tried"].items())
        return "backbone on torch" + (f" ({tried})" if tried else "")
    return (f"backbone on {event['runtime']} {event['version'].split('-')[0]} ({event['precision']}; "
            f"{event['max_rel_diff']:.1e} from torch on a probe batch)")  # fmt: skip


def _once(build: Builder) -> Builder:
    """``build``, called at most once."""
    done: list[Backbone] = []

    def get() -> Backbone:
        if not done:
            done.append(build())
        return done[0]

    return get


def _running(backbone: Backbone, runtime: str, precision: str, forward: Forward) -> Backbone:
    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(forward(x.numpy()))

    identity = {**base_identity(backbone), "runtime": runtime, "precision": precision}
    return dataclasses.replace(backbone, embed=embed, runtime=runtime, precision=precision, identity=identity)


def load(
    name: str,
    *,
    runtime: str = DEFAULT_RUNTIME,
    precision: str = DEFAULT_COMPUTE_PRECISION,
    device: str | torch.device = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    on_event: EventHandler | None = None,
    **backbone_options: Any,
) -> Backbone:
    """`load_backbone` then `with_runtime`: a frozen backbone running where asked.

    An exported runtime named explicitly runs on the CPU, so ``device="auto"`` means the CPU
    for it; ``backbone_options`` go to `load_backbone` (``clip_model``, ``clip_pretrained``,
    ``weights``, ``decode``, ...).
    """
    if runtime in EXPORTED_RUNTIMES and device == "auto":
        device = "cpu"
    device = pick_device(device) if not isinstance(device, torch.device) else device
    order = candidates(runtime, precision, device)  # a runtime that is missing fails before the weights load
    options = {"cache_dir": cache_dir, "threads": threads, "on_event": on_event}
    if name == "effnet-lite0" and order[0] != "torch":
        # Described without its network: built only if the exported model or a check is missing.
        shell = with_decode(describe_effnet(backbone_options.get("weights"), device),
                            backbone_options.get("decode", DEFAULT_DECODE))  # fmt: skip
        return with_runtime(shell, runtime, precision, **options,
                            build=lambda: load_backbone(name, device=device, **backbone_options))  # fmt: skip
    return with_runtime(load_backbone(name, device=device, **backbone_options), runtime, precision, **options)
