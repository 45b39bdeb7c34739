"""The scratch backbone: training from pixels records margins, deterministically, without global RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacor.errors import Cancelled, InputError
from dynacor.method.corruption import make_copies
from dynacor.method.scratch import build_network, crop_copies, random_crop, train_scratch


def easy_images(n: int = 120, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each class a distinct colour plus noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    colours = rng.integers(40, 216, size=(c, 3))
    imgs = colours[labels][:, None, None, :] + rng.normal(0, 25, size=(n, 32, 32, 3))
    return np.clip(imgs, 0, 255).astype(np.uint8), labels.astype(np.int64)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions gain nothing from a second thread and lose much when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup():
    images, labels = easy_images()
    copies = make_copies(labels, 4, 0.1, np.random.default_rng(0))
    return images, np.concatenate([labels, copies.labels]), copies


def run(setup, **kw):
    images, labels_all, copies = setup
    args = dict(epochs=3, lr=0.05, batch_size=64, arch="cnn", width=16, seed=0, schedule="cosine")
    args.update(kw)
    return train_scratch(images, labels_all, copies.pair, 4, **args)


def test_shapes_log_and_learning(setup) -> None:
    images, labels_all, copies = setup
    epochs_seen: list[dict] = []
    result = run(setup, on_epoch=epochs_seen.append)
    n, m = images.shape[0], copies.size
    assert result.margins.shape == (n + m, 3) and result.margins.dtype == np.float32
    assert result.prob_given.shape == (n + m, 3)
    assert result.candidates is None  # no suggest_window asked for
    assert [e["epoch"] for e in epochs_seen] == [1, 2, 3] and result.log == epochs_seen
    assert result.copy_images.shape == (m, 32, 32, 3)
    # Originals (mostly right labels) end with larger margins than copies (always wrong labels).
    assert result.margins[:n, -1].mean() > result.margins[n:, -1].mean()


def test_deterministic_and_no_global_rng(setup) -> None:
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    a = run(setup, epochs=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    b = run(setup, epochs=1)
    assert np.array_equal(a.margins, b.margins)
    c = run(setup, epochs=1, seed=1)
    assert not np.array_equal(a.margins, c.margins)


def test_eval_recording(setup) -> None:
    result = run(setup, epochs=2, record="eval", augment=False, schedule="multistep")
    assert np.isfinite(result.margins).all() and result.margins.shape[1] == 2


def test_cancel(setup) -> None:
    with pytest.raises(Cancelled, match="epoch 1"):
        run(setup, cancel=lambda: True)


def test_bad_arguments(setup) -> None:
    images, labels_all, copies = setup
    with pytest.raises(InputError, match="field `labels_all`"):
        train_scratch(images, labels_all[:-1], copies.pair, 4, epochs=1)
    with pytest.raises(InputError, match="field `images`"):
        train_scratch(images.astype(np.float32), labels_all, copies.pair, 4, epochs=1)
    with pytest.raises(InputError, match="field `arch`"):
        build_network("vgg", 4)


def test_crops_are_shifted_copies() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    assert torch.equal(random_crop(x, 0, g), x)
    images = np.random.default_rng(0).integers(1, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    crops = crop_copies(images, np.array([0, 4]), torch.Generator().manual_seed(1), pad=2)
    assert crops.shape == (2, 8, 8, 3)
    # Every non-zero pixel of a crop comes from its original, shifted by at most 2.
    for crop, src in zip(crops, images[[0, 4]], strict=True):
        found = any(
            np.array_equal(crop[max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)],
                           src[max(0, dy):8 + min(0, dy), max(0, dx):8 + min(0, dx)])
            for dy in range(-2, 3) for dx in range(-2, 3)
        )
        assert found


@pytest.mark.slow
def test_cifar_resnet18_one_epoch(setup) -> None:
    images, labels_all, copies = setup
    net = build_network("resnet18", 4)
    assert net.conv1.kernel_size == (3, 3) and isinstance(net.maxpool, torch.nn.Identity)
    result = train_scratch(images[:64], labels_all[:64 + 0], copies.pair[:0], 4, epochs=1, arch="resnet18", batch_size=32)
    assert result.margins.shape == (64, 1)
