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


CANDIDATE_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog_*big*", "frog", "horse", "ship", "truck"]


def candidate_run(runs_root: Path, name: str = "candidate-run", n: int = 40) -> Path:
    """A finished run faked without the engine (a samples table and run.json, no dynamics, no
    images), whose samples carry ranked candidates: sample i has given class i % 10 and
    candidates (g+1, g+2, g+3) % 10 with probabilities 0.6, 0.25, 0.1, so every card offers three.
    Samples 0..n-11 are flagged, most noisy first; the last 10 are clean (the exemplars). A class
    name holds Markdown, which the pages must print as text."""
    import time

    import pandas as pd

    from dynacor import atomic
    from dynacor.runs import store as runstore

    index = np.arange(n)
    given = index % 10
    candidates = [[int((g + k) % 10) for k in (1, 2, 3)] for g in given]
    flagged = index < n - 10
    frame = pd.DataFrame({
        "index": index, "id": index + 1000, "given_label": given, "suggested_label": (given + 1) % 10,
        "suggested_prob": 0.6, "noisy_score": np.where(flagged, 0.99 - 0.01 * index, 0.1).round(6),
        "flagged": flagged.astype(np.int8), "cluster": np.where(flagged, "noisy", "clean"),
        "candidates": candidates, "candidate_probs": [[0.6, 0.25, 0.1]] * n,
    })  # fmt: skip
    run = runs_root / name
    runstore.create_run(run, {}, {"kind": "features", "path": "fake.npz"})
    atomic.write_with(run / "samples.parquet", lambda h: frame.to_parquet(h, index=False))
    atomic.write_json(run / "run.json", {"class_names": CANDIDATE_CLASSES, "source": {}, "chosen_epoch": 0})
    runstore._write_status(run, runstore.FINISHED, created=time.time())
    return run
