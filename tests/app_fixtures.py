"""A finished run produced by the real engine on tiny data, with small images, for the app tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dynacor.data.spec import SourceSpec
from dynacor.runs.jobs import JobRunner
from dynacor.runs.request import prepare
from tests.conftest import make_blobs

FAST = dict(epochs=5, encoder_epochs=2)
MISSING_IMAGES = 5  # the first few images are deleted after the run: the app must show placeholders


def write_features(folder: Path, n: int = 300, with_images: bool = True) -> Path:
    """Blobs (3 classes, 20% flipped labels) as a feature file, each sample with a 32x32 PNG whose
    colour says its true class."""
    folder.mkdir(parents=True, exist_ok=True)
    data = make_blobs(n=n)
    if with_images:
        images = folder / "images"
        images.mkdir(exist_ok=True)
        colours = [(200, 40, 40), (40, 160, 40), (40, 60, 200)]
        paths = []
        for i, truth in enumerate(data["clean_labels"]):
            path = images / f"{i:04d}.png"
            Image.new("RGB", (32, 32), colours[int(truth) % 3]).save(path)
            paths.append(str(path))
        data["paths"] = np.asarray(paths)
    path = folder / "blobs.npz"
    np.savez(path, **data)
    return path


def finished_run(runs_root: Path, data_dir: Path, name: str = "fixture-run", n: int = 300) -> Path:
    """Run the real engine (a second or two) on ``n`` samples and return the finished run directory."""
    features = write_features(data_dir, n=n)
    request = prepare(SourceSpec(kind="features", path=str(features)), FAST, "fixture")  # as the Run page does
    job = JobRunner().start(runs_root / name, request.config, request.loader, request.source)
    assert job.wait(120), "the fixture run did not finish"
    state = job.snapshot()
    assert state.status == "finished", state.error
    for i in range(MISSING_IMAGES):
        (data_dir / "images" / f"{i:04d}.png").unlink(missing_ok=True)
    return runs_root / name
