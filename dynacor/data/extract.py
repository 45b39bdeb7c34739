"""Images -> a feature directory, in shards that survive a kill; in this process or on Ray.

While it works, ``FEATURES_DIR/shards/`` holds::

    plan.json              what the shards are of: the images' fingerprint (paths, sizes, mtimes),
                           the backbone (identity and weights digest), views, shard size, precision
    part-00000.plain.npy   (m, D) float16: the readable rows of input rows [0, S), in input order
    part-00000.flip.npy    the same rows' flip view
    part-00000.json        their input row numbers and the files that could not be decoded;
                           written last, so its presence means the shard is complete

A run extracts only the shards not yet complete under the same plan, so a killed extraction
resumes where it stopped. A folder holding shards of another plan (other images, backbone,
weights, views, shard size or precision) is refused unless ``overwrite``: a changed input is never
mixed silently with an old one. When every shard is complete they are consolidated into the
feature directory that ``dynacor detect --features`` reads (`dynacor.data.feature_dir`), and
removed.

Where things run:

- In this process (default): DataLoader workers (one thread each; on a GPU one per core, on the
  CPU the cores the backbone's threads leave, at least one) decode and preprocess images while
  the backbone runs (`dynacor.data.backbones.iter_features`), in torch or a runtime
  (`dynacor.data.runtimes`).
- On Ray (``ray="auto"`` or an address): the list of images becomes a Ray dataset, one block per
  shard, and the backbone runs in an actor pool (``map_batches`` with a class that loads it once
  per actor). With GPUs: one actor per GPU, images decoded in CPU tasks before it. Without: one
  actor per group of CPUs on a node, decoding in the actor (decoding is a few percent of a CPU
  forward pass, and a separate stage would compete with the actors for the same cores). The
  driver gathers the features by row number and writes the shards, so the files are the same
  either way. Every node must see the image files at the same paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dynacor import atomic
from dynacor.data import runtimes
from dynacor.data.backbones import (
    DEFAULT_DECODE,
    Backbone,
    decode_views,
    default_batch_size,
    embed_views,
    iter_features,
    load_backbone,
    read_views,
)
from dynacor.data.feature_cache import dataset_fingerprint, weights_digest
from dynacor.data.feature_dir import FeatureDirBuilder, is_feature_dir, read_manifest
from dynacor.data.sources import ImageDataset, open_rgb
from dynacor.errors import Cancelled, CorruptError, InputError, MissingError

SHARDS = "shards"
PLAN = "plan.json"
PLAN_FORMAT = "dynacor-feature-shards"
PLAN_VERSION = 1
DEFAULT_SHARD_SIZE = 10_000
# The feature directory's view names -> the backbones module's.
VIEWS = {"plain": "orig", "flip": "flip"}
# Threads of one CPU actor on Ray: torch's intra-op scaling flattens beyond a few cores, and
# more actors of fewer threads keep more of a large node busy.
DEFAULT_CPUS_PER_ACTOR = 4

EventHandler = Callable[[dict], None]


@dataclass
class BackboneSpec:
    """How to load a backbone anywhere (a Ray actor loads its own copy from this).

    runtime, compute_precision : where the forward pass runs (`dynacor.data.runtimes`); the
        driver resolves ``auto`` before the actors load theirs, so every node runs the same one
    decode : `dynacor.data.backbones.DECODES`
    cache_dir : the feature cache whose ``exported/`` keeps exported models (default
        ``$DYNACOR_CACHE`` or ``~/.cache/dynacor/features``, on each node)
    """

    name: str = "effnet-lite0"
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = None
    weights: str | None = None
    runtime: str = runtimes.DEFAULT_RUNTIME
    compute_precision: str = runtimes.DEFAULT_COMPUTE_PRECISION
    decode: str = DEFAULT_DECODE
    cache_dir: str | None = None

    def load(self, device: str = "cpu", on_event: EventHandler | None = None) -> Backbone:
        return runtimes.load(
            self.name,
            runtime=self.runtime,
            precision=self.compute_precision,
            device=device,
            cache_dir=self.cache_dir,
            on_event=on_event,
            clip_model=self.clip_model,
            clip_pretrained=self.clip_pretrained,
            weights=self.weights,
            decode=self.decode,
        )

    def torch_only(self, device: str = "cpu") -> Backbone:
        """The torch backbone alone (its preprocessing, identity and size), no runtime chosen."""
        return load_backbone(
            self.name,
            clip_model=self.clip_model,
            clip_pretrained=self.clip_pretrained,
            weights=self.weights,
            device=device,
            decode=self.decode,
        )


@dataclass
class Plan:
    """What a folder's shards hold; ``key`` digests all of it."""

    fields: dict[str, Any]
    key: str = field(init=False)

    def __post_init__(self) -> None:
        blob = json.dumps(self.fields, sort_keys=True, default=str)
        self.key = hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()

    @property
    def num_inputs(self) -> int:
        return int(self.fields["num_inputs"])

    @property
    def shard_size(self) -> int:
        return int(self.fields["shard_size"])

    @property
    def views(self) -> list[str]:
        return list(self.fields["views"])

    @property
    def dim(self) -> int:
        return int(self.fields["dim"])

    @property
    def num_shards(self) -> int:
        return -(-self.num_inputs // self.shard_size)

    def rows(self, shard: int) -> np.ndarray:
        """(m,) int64: the input rows of one shard."""
        start = shard * self.shard_size
        return np.arange(start, min(start + self.shard_size, self.num_inputs), dtype=np.int64)


def make_plan(
    dataset: ImageDataset, backbone: Backbone, views: Sequence[str], shard_size: int, precision: str
) -> Plan:
    """The plan of extracting ``dataset`` through ``backbone``.

    The images enter by fingerprint (paths relative to the source root, sizes and modification
    times, or the pixels of in-memory data), not by labels: relabelling the images keeps the
    shards valid, the labels are read when the shards are consolidated.
    """
    return Plan(
        {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "images": dataset_fingerprint(dataset),
            "num_inputs": len(dataset),
            "backbone": dict(backbone.identity),
            "weights_sha256": weights_digest(backbone.weights_file),
            "dim": int(backbone.dim),
            "views": list(views),
            "shard_size": int(shard_size),
            "precision": precision,
        }
    )


# --------------------------------------------------------------------------------------------
# Shard files


def shard_files(out: Path, shard: int, views: Sequence[str]) -> tuple[Path, dict[str, Path]]:
    """(the shard's json, {view: its .npy}) under ``out/shards``."""
    base = out / SHARDS / f"part-{shard:05d}"
    return base.with_suffix(".json"), {v: Path(f"{base}.{v}.npy") for v in views}


def is_shard_done(out: Path, plan: Plan, shard: int) -> bool:
    """True when the shard's json exists, names this plan, and its arrays are there."""
    note_path, arrays = shard_files(out, shard, plan.views)
    try:
        note = json.loads(note_path.read_text())
    except (OSError, ValueError):
        return False
    return note.get("plan") == plan.key and all(p.is_file() for p in arrays.values())


def write_shard(
    out: Path,
    plan: Plan,
    shard: int,
    rows: np.ndarray,
    features: np.ndarray,
    skipped: list[dict[str, Any]],
) -> None:
    """Write one shard: each view's (m, D) float16 array, then the json that marks it complete.

    rows : (m,) int64 input rows of ``features``, ascending
    features : (m, V, D) float16, views in ``plan.views`` order
    skipped : ``{"row", "path", "reason"}`` of the shard's rows that could not be decoded
    """
    note_path, arrays = shard_files(out, shard, plan.views)
    for j, view in enumerate(plan.views):
        atomic.save_npy(arrays[view], np.ascontiguousarray(features[:, j]))
    atomic.write_json(
        note_path, {"plan": plan.key, "shard": shard, "rows": rows.tolist(), "skipped": skipped}
    )


def read_shard_note(out: Path, plan: Plan, shard: int) -> dict[str, Any]:
    note_path, _ = shard_files(out, shard, plan.views)
    try:
        return json.loads(note_path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptError(f"{note_path}: unreadable shard record ({exc})") from None


class ShardCollector:
    """Gathers feature rows arriving in any order and writes each shard once all its rows came.

    Parameters
    ----------
    out : the feature directory
    plan : the shards' plan
    todo : the shards to fill
    paths : (N,) the input files, to name the ones that could not be decoded
    """

    def __init__(self, out: Path, plan: Plan, todo: Sequence[int], paths: np.ndarray):
        self.out = out
        self.plan = plan
        self.paths = paths
        self.todo = set(todo)
        self.features: dict[int, np.ndarray] = {}
        self.filled: dict[int, np.ndarray] = {}
        self.skipped: dict[int, dict[int, str]] = {}
        self.rows_seen = 0

    def _open(self, shard: int) -> None:
        m = self.plan.rows(shard).size
        self.features[shard] = np.zeros((m, len(self.plan.views), self.plan.dim), dtype=np.float16)
        self.filled[shard] = np.zeros(m, dtype=bool)
        self.skipped[shard] = {}

    def add(
        self, rows: np.ndarray, features: np.ndarray, skipped: Sequence[tuple[int, str]]
    ) -> list[int]:
        """Take (b,) rows with their (b, V, D) features, and the rows that failed; returns the
        shards written by this call. A row seen twice (a retried task) is counted once."""
        arrived = [(int(r), k) for k, r in enumerate(np.asarray(rows).tolist())] + [
            (int(r), -1) for r, _ in skipped
        ]
        reasons = {int(r): str(why) for r, why in skipped}
        touched: set[int] = set()
        for row, k in arrived:
            shard = row // self.plan.shard_size
            if shard not in self.todo:
                raise CorruptError(
                    f"row {row} arrived for shard {shard}, which is not being extracted"
                )
            if shard not in self.filled:
                self._open(shard)
            slot = row - shard * self.plan.shard_size
            if self.filled[shard][slot]:
                continue
            self.filled[shard][slot] = True
            self.rows_seen += 1
            if k >= 0:
                self.features[shard][slot] = features[k]
            else:
                self.skipped[shard][slot] = reasons[row]
            touched.add(shard)
        written = []
        for shard in sorted(touched):
            if self.filled[shard].all():
                self._write(shard)
                written.append(shard)
        return written

    def _write(self, shard: int) -> None:
        start = shard * self.plan.shard_size
        bad = self.skipped.pop(shard)
        keep = np.ones(self.filled.pop(shard).size, dtype=bool)
        keep[list(bad)] = False
        rows = np.flatnonzero(keep).astype(np.int64) + start
        notes = [
            {"row": start + s, "path": str(self.paths[start + s]), "reason": why}
            for s, why in sorted(bad.items())
        ]
        write_shard(self.out, self.plan, shard, rows, self.features.pop(shard)[keep], notes)
        self.todo.discard(shard)


# --------------------------------------------------------------------------------------------
# The folder: start, resume or refuse


def _prepare_folder(out: Path, plan: Plan, overwrite: bool) -> str:
    """Make ``out/shards`` hold ``plan``'s shards. Returns ``complete``, ``resume`` or ``new``.

    ``complete``: ``out`` already is the feature directory of this plan.
    """
    if is_feature_dir(out):
        manifest = read_manifest(out)
        if manifest.get("source", {}).get("plan") == plan.key and not overwrite:
            return "complete"
        if not overwrite:
            raise InputError(
                str(out),
                None,
                "a new folder, or the feature directory of these images through this "
                "backbone (pass --overwrite to replace it)",
                "the features of other images or another backbone",
            )
    elif (
        out.is_dir()
        and not (out / SHARDS / PLAN).is_file()
        and any(out.iterdir())
        and not overwrite
    ):
        raise InputError(
            str(out),
            None,
            "a new or empty folder, or an unfinished extraction's (pass --overwrite to "
            "write into it anyway)",
            f"a folder holding {sorted(p.name for p in out.iterdir())[:5]}",
        )
    shards = out / SHARDS
    plan_file = shards / PLAN
    if plan_file.is_file():
        try:
            old = json.loads(plan_file.read_text())
        except (OSError, ValueError) as exc:
            raise CorruptError(
                f"{plan_file}: unreadable ({exc}); remove {shards} to start again"
            ) from None
        if old.get("key") == plan.key:
            return "resume"
        if not overwrite:
            changed = [
                k for k in plan.fields if old.get("fields", {}).get(k) != plan.fields[k]
            ] or ["key"]
            raise InputError(
                str(plan_file),
                changed[0],
                "the same as the unfinished extraction's in this folder to "
                "resume it (pass --overwrite to discard its shards and start again)",
                f"a different one ({', '.join(changed)} changed)",
            )
        shutil.rmtree(shards)
    shards.mkdir(parents=True, exist_ok=True)
    atomic.write_json(plan_file, {"key": plan.key, "fields": plan.fields})
    return "new"


def consolidate(
    out: Path, plan: Plan, dataset: ImageDataset, source: dict[str, Any]
) -> dict[str, Any]:
    """Copy the complete shards into the feature directory, shard by shard; returns its counts.

    Rows are the readable images in input order; ``samples.parquet`` gets their ids, labels,
    paths (and clean labels when known); the manifest's ``source`` records the backbone, the
    plan and every skipped file.
    """
    import pandas as pd

    notes = [read_shard_note(out, plan, k) for k in range(plan.num_shards)]
    rows = (
        np.concatenate([np.asarray(n["rows"], dtype=np.int64) for n in notes])
        if notes
        else np.zeros(0, np.int64)
    )
    decode_skips = [s for n in notes for s in n["skipped"]]
    if rows.size == 0:
        raise InputError(
            str(out),
            "images",
            "at least one readable image",
            f"none ({len(decode_skips)} could not be decoded)",
        )
    views = plan.views
    builder = FeatureDirBuilder(out, rows.size, plan.dim, views=views)
    targets = {v: builder.array(v) for v in views}
    offset = 0
    for k, note in enumerate(notes):
        m = len(note["rows"])
        _, arrays = shard_files(out, k, views)
        for view in views:
            part = np.load(arrays[view], mmap_mode="r")
            if part.shape != (m, plan.dim):
                raise CorruptError(
                    f"{arrays[view]}: shape must be {(m, plan.dim)} as its record says, got {part.shape}"
                )
            targets[view][offset : offset + m] = part
        offset += m
    samples = pd.DataFrame(
        {
            "id": np.asarray(dataset.ids)[rows],
            "label": np.asarray(dataset.labels)[rows],
            "path": np.asarray(dataset.paths).astype(str)[rows],
        }
    )
    if dataset.clean_labels is not None:
        samples["clean_label"] = np.asarray(dataset.clean_labels)[rows]
    skipped = [{"path": s.path, "reason": s.reason} for s in dataset.skipped]
    skipped += [{"path": s["path"], "reason": s["reason"]} for s in decode_skips]
    builder.commit(
        samples,
        source={**source, "plan": plan.key, "skipped": skipped},
        class_names=dataset.class_names,
    )
    return {"num_samples": int(rows.size), "skipped": skipped}


# --------------------------------------------------------------------------------------------
# The whole extraction


@dataclass
class Progress:
    """Turns gathered rows into ``progress`` / ``shard`` / ``skipped`` events and polls for a stop."""

    total: int
    done_before: int
    on_event: EventHandler | None
    should_stop: Callable[[], bool] | None
    started: float = field(default_factory=time.perf_counter)

    def __call__(
        self, collector: ShardCollector, written: list[int], skipped: list[dict[str, str]]
    ) -> None:
        if self.on_event is not None:
            if skipped:
                self.on_event({"type": "skipped", "count": len(skipped), "files": skipped})
            for shard in written:
                self.on_event(
                    {
                        "type": "shard",
                        "shard": shard,
                        "of": -(-self.total // collector.plan.shard_size),
                    }
                )
            elapsed = time.perf_counter() - self.started
            rate = collector.rows_seen / elapsed if elapsed > 0 else None
            done = self.done_before + collector.rows_seen
            eta = (self.total - done) / rate if rate else None
            self.on_event(
                {
                    "type": "progress",
                    "stage": "features",
                    "done": done,
                    "total": self.total,
                    "images_per_s": rate,
                    "eta_s": eta,
                }
            )
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(
                f"feature extraction cancelled; {len(collector.todo)} shard(s) left to extract"
            )


def extract_to_dir(
    dataset: ImageDataset,
    out: str | os.PathLike[str],
    backbone: BackboneSpec | None = None,
    *,
    views: Sequence[str] = ("plain", "flip"),
    device: str = "auto",
    batch_size: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_workers: int | None = None,
    amp: bool = True,
    ray: str | None = None,
    cpus_per_actor: int = DEFAULT_CPUS_PER_ACTOR,
    overwrite: bool = False,
    keep_shards: bool = False,
    on_event: EventHandler | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Extract features of ``dataset`` into the feature directory ``out``, resuming if killed.

    Parameters
    ----------
    dataset : the images (`dynacor.data.sources`); open folders and manifests with
        ``check="none"``: files that cannot be decoded are skipped and reported here
    out : the feature directory (created)
    backbone : which frozen backbone (default effnet-lite0)
    views : ``("plain", "flip")`` or ``("plain",)``
    device : in-process only: ``auto``, ``cpu``, ``cuda`` or ``mps``
    batch_size : images per forward pass (default 128 on CPU, 256 on a GPU)
    shard_size : input rows per shard: the unit of resuming
    num_workers : in-process decoding processes (default `dynacor.data.backbones.default_workers`)
    amp : float16 autocast on CUDA (part of the plan: a run resumes only at the same precision)
    ray : None runs in this process; ``auto`` (a running cluster, else a local one) or a cluster
        address runs the backbone on Ray
    cpus_per_actor : Ray without GPUs: CPUs (torch threads) per backbone actor
    overwrite : discard shards or a feature directory of another plan instead of refusing
    keep_shards : leave ``out/shards`` after consolidating (default: removed)
    on_event : receives ``plan``, ``progress`` (``done``, ``total``, ``images_per_s``,
        ``eta_s``), ``shard`` (each written), ``skipped`` (``files``: path and reason) events
    should_stop : polled after each batch; True raises `dynacor.errors.Cancelled` (finished
        shards stay and a later run resumes from them)

    Returns
    -------
    ``{"out", "num_samples", "dim", "views", "skipped", "shards", "shards_before",
    "shards_extracted", "seconds", "images_per_s", "where", "runtime", "precision"}``

    Raises
    ------
    InputError : bad views / sizes, or ``out`` holds another plan's shards or features
    MissingError : Ray asked for but not installed
    """
    bad = [v for v in views if v not in VIEWS]
    if bad or "plain" not in views or len(set(views)) != len(views):
        raise InputError(None, "views", "plain, optionally with flip", ",".join(views))
    for name, value in (
        ("shard_size", shard_size),
        ("batch_size", batch_size or 1),
        ("cpus_per_actor", cpus_per_actor),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(None, name, "an integer >= 1", repr(value))
    spec = backbone or BackboneSpec()
    out_path = Path(out).expanduser().resolve()
    started = time.perf_counter()
    if ray is not None:
        ray_mod = require_ray()
        if dataset.images is not None:
            raise InputError(
                None,
                "ray",
                "used with image files (--images or --manifest) that every node can read",
                "an in-memory data set",
            )
        # The driver's copy gives the plan (identity, weights digest, dim) and the preprocessing;
        # its runtime is chosen once the cluster's GPUs are known.
        model = spec.torch_only("cpu")
        where = f"ray:{ray}"
    else:
        model = spec.load(device, on_event)
        where = f"in-process:{model.device.type}"
    backbone_views = [VIEWS[v] for v in views]

    own_ray = False
    try:
        if ray is not None:
            own_ray = not ray_mod.is_initialized()
            if own_ray:
                ray_mod.init(address=None if ray == "auto" else ray, logging_level=logging.WARNING)
            gpus = int(ray_mod.cluster_resources().get("GPU", 0))
            if gpus:  # the actors run torch on their GPUs
                runtimes.check_choice(spec.runtime, spec.compute_precision)
                if spec.runtime not in ("auto", "torch") or spec.compute_precision != "float32":
                    raise InputError("command line", "runtime", "auto or torch on a cluster with GPUs",
                                     f"{spec.runtime} at {spec.compute_precision}")  # fmt: skip
            else:
                model = runtimes.with_runtime(model, spec.runtime, spec.compute_precision,
                                              cache_dir=spec.cache_dir, on_event=on_event)  # fmt: skip
            # Every actor runs what the driver chose, never its own `auto`.
            spec = dataclasses.replace(spec, runtime=model.runtime)
            precision = "float16-autocast" if (gpus and amp) else model.precision
        else:
            precision = "float16-autocast" if (model.device.type == "cuda" and amp) else model.precision
        plan = make_plan(dataset, model, views, shard_size, precision)
        state = _prepare_folder(out_path, plan, overwrite)
        summary: dict[str, Any] = {
            "out": str(out_path),
            "dim": plan.dim,
            "views": list(views),
            "shards": plan.num_shards,
            "where": where,
            "runtime": model.runtime,
            "precision": precision,
        }
        if state == "complete":
            if not keep_shards:
                shutil.rmtree(out_path / SHARDS, ignore_errors=True)
            manifest = read_manifest(out_path)
            return {
                **summary,
                "num_samples": manifest["num_samples"],
                "skipped": manifest["source"].get("skipped", []),
                "shards_before": plan.num_shards,
                "shards_extracted": 0,
                "seconds": time.perf_counter() - started,
                "images_per_s": None,
            }
        todo = [k for k in range(plan.num_shards) if not is_shard_done(out_path, plan, k)]
        done_rows = plan.num_inputs - sum(plan.rows(k).size for k in todo)
        if on_event is not None:
            on_event(
                {
                    "type": "plan",
                    "total": plan.num_inputs,
                    "shards": plan.num_shards,
                    "shards_done": plan.num_shards - len(todo),
                    "shard_size": plan.shard_size,
                    "where": where,
                    "precision": precision,
                    "backbone": plan.fields["backbone"],
                }
            )
        collector = ShardCollector(out_path, plan, todo, np.asarray(dataset.paths))
        progress = Progress(plan.num_inputs, done_rows, on_event, should_stop)
        if todo and ray is not None:
            summary["ray_nodes"] = _run_on_ray(
                ray_mod,
                dataset,
                spec,
                model,
                plan,
                todo,
                collector,
                progress,
                batch_size=batch_size,
                cpus_per_actor=cpus_per_actor,
                amp=amp,
            )
        elif todo:
            rows = np.concatenate([plan.rows(k) for k in todo])
            for batch in iter_features(
                dataset,
                model,
                backbone_views,
                indices=rows,
                batch_size=batch_size,
                num_workers=num_workers,
                amp=amp,
            ):
                skipped = [(int(r), why) for r, why in batch.skipped]
                written = collector.add(batch.indices, batch.features, skipped)
                progress(
                    collector,
                    written,
                    [{"path": str(dataset.paths[r]), "reason": why} for r, why in skipped],
                )
        if collector.todo:
            raise CorruptError(
                f"{out_path}: the extraction ended with {len(collector.todo)} shard(s) incomplete"
            )
    finally:
        if own_ray:
            ray_mod.shutdown()

    identity = {
        **plan.fields["backbone"],
        "weights_file": model.weights_file,
        "weights_sha256": plan.fields["weights_sha256"],
    }
    source = {**dataset.source, "backbone": identity, "precision": precision, "extracted": where}
    counts = consolidate(out_path, plan, dataset, source)
    if not keep_shards:
        shutil.rmtree(out_path / SHARDS, ignore_errors=True)
    seconds = time.perf_counter() - started
    extracted = sum(plan.rows(k).size for k in todo)
    return {
        **summary,
        **counts,
        "shards_before": plan.num_shards - len(todo),
        "shards_extracted": len(todo),
        "seconds": seconds,
        "images_per_s": extracted / seconds if seconds > 0 else None,
    }


# --------------------------------------------------------------------------------------------
# Ray


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or MissingError saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingError(
            "--ray needs Ray Data: pip install 'dynacor[ray]' (ray[data]>=2.9)"
        ) from None
    return ray


class _PathImages:
    """Images read from files by position, what `iter_features` needs from a data set."""

    def __init__(self, paths: Sequence[str]):
        self.paths = np.asarray(paths, dtype=str)

    def __len__(self) -> int:
        return int(self.paths.size)

    def image(self, index: int, draft: tuple[int, int] | None = None):
        return open_rgb(self.paths[index], draft=draft)


def _decode_on_ray(
    batch: dict[str, np.ndarray],
    preprocess: Callable,
    views: Sequence[str],
    mirror_exact: bool,
    shape: tuple[int, ...],
    dtype: str,
    draft: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """Ray task (GPU clusters): decode a batch of files into their (b, V, 3, H, W) views.

    An unreadable file gets zeros and its reason. ``dtype``: what travels to the GPU actor (uint8
    pixels, or float16 views under autocast).
    """
    images = _PathImages(batch["path"])
    pixels = np.zeros((len(images), *shape), dtype=dtype)
    reasons = []
    for i in range(len(images)):
        tensor, reason = read_views(images, i, preprocess, views, mirror_exact, draft)
        if tensor is not None:
            pixels[i] = tensor.numpy()
        reasons.append(reason or "")
    return {"index": batch["index"], "pixels": pixels, "reason": np.asarray(reasons, dtype=str)}


class _EmbedActor:
    """Ray actor: loads the backbone once, then embeds batches of files (CPU) or of pixels (GPU)."""

    def __init__(
        self,
        spec: BackboneSpec,
        views: Sequence[str],
        weights_sha256: str | None,
        device: str,
        threads: int,
        amp: bool,
    ):
        torch.set_num_threads(threads)
        self.backbone = spec.load(device)
        found = weights_digest(self.backbone.weights_file)
        if found != weights_sha256:
            raise CorruptError(
                f"{self.backbone.weights_file}: this node's weights differ from the driver's "
                f"(sha256 {found} vs {weights_sha256}); install the same weights on every node"
            )
        self.views = list(views)
        self.amp = amp and self.backbone.device.type == "cuda"
        self.node = _node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = np.asarray(batch["index"], dtype=np.int64)
        features = np.zeros((index.size, len(self.views), self.backbone.dim), dtype=np.float16)
        if "pixels" in batch:
            reason = np.asarray(batch["reason"]).astype(str)
            ok = reason == ""
            if ok.any():
                with torch.inference_mode():
                    features[ok] = embed_views(
                        self.backbone,
                        torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])),
                        self.amp,
                    )
            return {
                "index": index,
                "features": features,
                "reason": reason,
                "node": self._nodes(index),
            }
        reason = np.full(index.size, "", dtype=object)
        for part in iter_features(
            _PathImages(batch["path"]),
            self.backbone,
            self.views,
            batch_size=index.size,
            num_workers=0,
            amp=self.amp,
        ):
            features[part.indices] = part.features
            for k, why in part.skipped:
                reason[k] = why
        return {
            "index": index,
            "features": features,
            "reason": reason.astype(str),
            "node": self._nodes(index),
        }

    def _nodes(self, index: np.ndarray) -> np.ndarray:
        # Which node did the work: the driver counts them.
        return np.full(index.size, self.node, dtype=object).astype(str)


def _node_id() -> str:
    """The Ray node this process runs on (``local`` outside a Ray cluster)."""
    try:
        import ray
    except ImportError:
        return "local"
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def _ray_layout(ray: Any, cpus_per_actor: int) -> tuple[int, int, int]:
    """(GPU actors, CPU actors, CPUs per CPU actor) for the live nodes of the cluster."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    gpus = sum(int(r.get("GPU", 0)) for r in nodes)
    if gpus:
        return gpus, 0, 1
    per_node = [int(r.get("CPU", 0)) for r in nodes]
    group = max(1, min(cpus_per_actor, max(per_node, default=1)))
    return 0, max(1, sum(c // group for c in per_node)), group


def _run_on_ray(
    ray: Any,
    dataset: ImageDataset,
    spec: BackboneSpec,
    model: Backbone,
    plan: Plan,
    todo: list[int],
    collector: ShardCollector,
    progress: Progress,
    *,
    batch_size: int | None,
    cpus_per_actor: int,
    amp: bool,
) -> int:
    """Extract the ``todo`` shards on the cluster; returns how many nodes ran the backbone."""
    import pandas as pd

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller reports progress
    paths = np.asarray(dataset.paths).astype(str)
    # One block per shard, and batches no larger than a shard (Ray Data bundles smaller blocks up
    # to a batch): each task is one shard, spread over the actors, finishing together.
    blocks = [pd.DataFrame({"index": plan.rows(k), "path": paths[plan.rows(k)]}) for k in todo]
    data = ray.data.from_pandas(blocks)
    gpu_actors, cpu_actors, group = _ray_layout(ray, cpus_per_actor)
    views = [VIEWS[v] for v in plan.views]
    common = {
        "spec": spec,
        "views": views,
        "weights_sha256": plan.fields["weights_sha256"],
        "amp": amp,
    }
    if gpu_actors:
        size = min(batch_size or default_batch_size(torch.device("cuda")), plan.shard_size)
        probe = decode_views(Image.new("RGB", (64, 48)), model.preprocess, views, model.mirror_exact)
        shape = tuple(probe.shape)
        # uint8 pixels (normalised by the actor's backbone) travel as they are; float views as
        # float16 under autocast, whose first layer casts its input to float16 anyway.
        dtype = "uint8" if probe.dtype == torch.uint8 else ("float16" if amp else "float32")
        data = data.map_batches(
            _decode_on_ray,
            batch_size=size,
            batch_format="numpy",
            num_cpus=1,
            fn_kwargs={
                "preprocess": model.preprocess,
                "views": views,
                "mirror_exact": model.mirror_exact,
                "draft": model.draft,
                "shape": shape,
                "dtype": dtype,
            },
        )
        data = data.map_batches(
            _EmbedActor,
            batch_size=size,
            batch_format="numpy",
            # Two batches in flight: the next one is on the GPU's side while one runs.
            compute=ray.data.ActorPoolStrategy(size=gpu_actors, max_tasks_in_flight_per_actor=2),
            num_gpus=1,
            fn_constructor_kwargs={**common, "device": "cuda", "threads": 1},
        )
    else:
        size = min(batch_size or default_batch_size(torch.device("cpu")), plan.shard_size)
        data = data.map_batches(
            _EmbedActor,
            batch_size=size,
            batch_format="numpy",
            # One batch at a time: a CPU actor gains nothing from a queue, and blocks queued on a
            # busy actor would wait while another sits idle.
            compute=ray.data.ActorPoolStrategy(size=cpu_actors, max_tasks_in_flight_per_actor=1),
            num_cpus=group,
            fn_constructor_kwargs={**common, "device": "cpu", "threads": group},
        )
    nodes: set[str] = set()
    for batch in data.iter_batches(batch_size=None, batch_format="numpy"):
        nodes.update(np.unique(np.asarray(batch["node"]).astype(str)).tolist())
        reason = np.asarray(batch["reason"]).astype(str)
        ok = reason == ""
        index = np.asarray(batch["index"], dtype=np.int64)
        skipped = [(int(r), str(why)) for r, why in zip(index[~ok], reason[~ok], strict=True)]
        written = collector.add(index[ok], np.asarray(batch["features"])[ok], skipped)
        progress(collector, written, [{"path": str(paths[r]), "reason": why} for r, why in skipped])
    return len(nodes)
