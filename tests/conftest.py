"""Shared fixtures: small generated data sets, so tests never need the shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_blobs(n: int = 300, d: int = 16, c: int = 3, noise: float = 0.2, seed: int = 0) -> dict:
    """Gaussian blobs with a known fraction of flipped labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3.0, size=(c, d))
    clean = rng.integers(0, c, size=n)
    features = centres[clean] + rng.normal(0, 1.0, size=(n, d))
    flip = rng.random(n) < noise
    labels = np.where(flip, (clean + rng.integers(1, c, size=n)) % c, clean)
    return {
        "features": features.astype(np.float32),
        "features_aug": (features + rng.normal(0, 0.1, size=(n, d))).astype(np.float32),
        "labels": labels.astype(np.int64),
        "clean_labels": clean.astype(np.int64),
        "ids": np.arange(1000, 1000 + n),
        "class_names": np.array([f"class{i}" for i in range(c)]),
    }


@pytest.fixture
def blobs() -> dict:
    return make_blobs()


@pytest.fixture
def blobs_npz(tmp_path: Path, blobs: dict) -> Path:
    path = tmp_path / "blobs.npz"
    np.savez(path, **blobs)
    return path


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test, restored after: small heads train faster and the same
    way beside other jobs than on threads that fight for two cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar10_effl0_dev.npz").exists():
        pytest.skip(f"needs the shared dev data at {SHARED_DATA} (not present on this machine)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on loopback for the test session (tests/postgres_server.py);
    skipped, with the reason, where PostgreSQL or psycopg is absent."""
    from tests.postgres_server import missing, postgres_server

    reason = missing()
    if reason:
        pytest.skip(reason)
    # fsync off: the tests kill clients, never the server, and the session's databases go at
    # the end (with fsync, the shutdown checkpoint alone took half a minute).
    with postgres_server({"fsync": "off"}) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database on that server, as an SQLAlchemy URL."""
    return postgres_server.create_database()
