"""Recording dynamics in a user's own training loop (`dynacor.record`) and `detect --dynamics`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from dynacor.cli.main import main
from dynacor.errors import InputError
from dynacor.method.config import DynaCorConfig
from dynacor.method.corruption import make_copies
from dynacor.method.dynamics import logit_margin
from dynacor.method.pipeline import Dynamics, detect
from dynacor.record import Recorder, WithCopies, load_dynamics, save_dynamics
from tests.conftest import make_blobs

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--encoder-epochs", "2"]


def blobs_dataset(n: int = 300, seed: int = 0) -> tuple[dict, WithCopies]:
    blobs = make_blobs(n=n, seed=seed)
    base = TensorDataset(torch.from_numpy(blobs["features"]), torch.from_numpy(blobs["labels"]))
    return blobs, WithCopies(base, blobs["labels"], 3, gamma=0.1, seed=seed)


def train_and_record(
    epochs: int = 6, num_epochs: int | None = -1, seed: int = 0, config: DynaCorConfig | None = None,
    softmax_seen: np.ndarray | None = None,
) -> tuple[dict, WithCopies, Recorder]:  # fmt: skip
    """A small MLP trained on blobs plus copies, batches drawn from a seeded generator.

    ``config`` goes to the recorder; ``softmax_seen`` (epochs, S, C), when given, receives every
    row's softmax as the training loop saw it (before each step)."""
    blobs, data = blobs_dataset(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # inside fork_rng: the process's RNG is restored afterwards
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    recorder = Recorder.for_dataset(data, num_epochs=epochs if num_epochs == -1 else num_epochs,
                                    clean_labels=blobs["clean_labels"], ids=blobs["ids"],
                                    class_names=list(blobs["class_names"]),
                                    **({} if config is None else {"config": config}))  # fmt: skip
    x_all = torch.stack([data[i][0] for i in range(len(data))])
    y_all = torch.as_tensor(data.labels_all)
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), 64):
            idx = order[start : start + 64]
            logits = model(x_all[idx])
            if softmax_seen is not None:
                softmax_seen[epoch, idx.numpy()] = torch.softmax(logits.detach(), dim=1).numpy()
            loss = torch.nn.functional.cross_entropy(logits, y_all[idx])
            recorder.update(logits, y_all[idx], idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        recorder.end_epoch()
    return blobs, data, recorder


@pytest.fixture(scope="module")
def recorded() -> tuple[dict, WithCopies, Recorder]:
    return train_and_record()


@pytest.fixture(scope="module")
def dynamics_file(tmp_path_factory, recorded) -> Path:
    path = tmp_path_factory.mktemp("dyn") / "dynamics.npz"
    return recorded[2].save_dynamics(path)


# ---- WithCopies


def test_with_copies_is_deterministic_per_seed_and_never_keeps_the_label():
    blobs, a = blobs_dataset()
    _, b = blobs_dataset()
    c = WithCopies(a.dataset, blobs["labels"], 3, seed=1)
    assert np.array_equal(a.copy_pair, b.copy_pair) and np.array_equal(a.copy_labels, b.copy_labels)
    assert not np.array_equal(a.copy_pair, c.copy_pair) or not np.array_equal(a.copy_labels, c.copy_labels)
    for data in (a, c):
        assert len(data) == 300 + 30 and data.num_copies == 30
        assert np.all(data.copy_labels != blobs["labels"][data.copy_pair])
    # The same copies the engine draws for this seed (dynacor.method.pipeline.run).
    engine = make_copies(blobs["labels"], 3, 0.1, np.random.default_rng(np.random.SeedSequence(0).spawn(4)[1]))
    assert np.array_equal(engine.pair, a.copy_pair) and np.array_equal(engine.labels, a.copy_labels)


def test_with_copies_items_are_originals_then_copies():
    blobs, _ = blobs_dataset()
    base = TensorDataset(torch.from_numpy(blobs["features"]), torch.from_numpy(blobs["labels"]))
    data = WithCopies(base, blobs["labels"], 3, seed=0, copy_transform=lambda x: -x)
    x, y, i = data[5]
    assert i == 5 and y == blobs["labels"][5] and torch.equal(x, base[5][0])
    x, y, i = data[300 + 2]
    assert i == 302 and y == data.copy_labels[2] and torch.equal(x, -base[int(data.copy_pair[2])][0])
    with pytest.raises(IndexError):
        data[len(data)]


@pytest.mark.parametrize(
    "labels, num_classes, kwargs, field",
    [
        (np.zeros(300, dtype=np.int64), 1, {}, "num_classes"),
        (np.full(300, 5), 3, {}, "labels"),
        (np.zeros(299, dtype=np.int64), 3, {}, "labels"),
        (np.zeros(300, dtype=np.int64), 3, {"gamma": 0.0}, "gamma"),
        (np.linspace(0, 1, 300), 3, {}, "labels"),
    ],
)
def test_with_copies_refuses_bad_arguments(labels, num_classes, kwargs, field):
    blobs, data = blobs_dataset()
    with pytest.raises(InputError) as err:
        WithCopies(data.dataset, labels, num_classes, **kwargs)
    assert err.value.field == field and f"`{field}`" in str(err.value)


# ---- Recorder


def test_recorder_margins_equal_the_engines_logit_margin():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=gen)
    labels = torch.randint(0, 4, (40,), generator=gen)
    weight = torch.randn(5, 4, generator=gen, requires_grad=True)
    recorder = Recorder(40, num_epochs=3, num_classes=4)
    expected = []
    for epoch in range(3):
        logits = x @ weight * (epoch + 1)
        order = torch.randperm(40, generator=gen)
        for start in range(0, 40, 16):  # shuffled batches, as in training
            idx = order[start : start + 16]
            recorder.update(logits[idx], labels[idx], idx)
        recorder.end_epoch()
        expected.append(logit_margin(logits.detach(), labels).numpy())
    np.testing.assert_array_equal(recorder.margins(), np.stack(expected, axis=1))


def test_update_never_leaves_the_logits_device():
    """Logits on the meta device have no data: any host copy, .item() or .tolist() per batch fails."""
    recorder = Recorder(20, num_epochs=4, num_classes=3)
    for start in range(0, 20, 8):
        logits = torch.empty((min(8, 20 - start), 3), device="meta")
        targets = torch.empty((logits.shape[0],), dtype=torch.int64, device="meta")
        recorder.update(logits, targets, torch.arange(start, start + logits.shape[0], device="meta"))
    assert all(t.device.type == "meta" for t in recorder._buffers.values())
    assert recorder.num_recorded == 0


def test_update_on_cpu_makes_no_host_transfer(monkeypatch):
    recorder = Recorder(20, num_epochs=2, num_classes=3)
    logits = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(20) % 3

    def boom(*args, **kwargs):
        raise AssertionError("a host transfer during update")

    for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    for start in range(0, 20, 8):
        recorder.update(logits[start : start + 8], targets[start : start + 8], torch.arange(start, min(20, start + 8)))
    monkeypatch.undo()
    assert recorder.end_epoch()["epoch"] == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_update_on_cuda_never_synchronises():
    recorder = Recorder(4096, num_epochs=2, num_classes=10)
    logits = torch.randn(4096, 10, device="cuda")
    targets = torch.randint(0, 10, (4096,), device="cuda")
    indices = torch.randperm(4096).pin_memory()  # as a DataLoader with pin_memory=True hands them over
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for start in range(0, 4096, 256):
            idx = indices[start : start + 256]
            recorder.update(logits[idx.cuda(non_blocking=True)], targets[idx.cuda(non_blocking=True)], idx)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    recorder.end_epoch()
    expected = logit_margin(logits, targets).cpu().numpy()
    np.testing.assert_allclose(recorder.margins()[:, 0], expected, rtol=0, atol=0)


def test_candidates_come_from_the_early_window_with_known_epochs_else_from_the_late_softmax():
    _, _, known = train_and_record(epochs=7, num_epochs=7)
    _, _, growing = train_and_record(epochs=7, num_epochs=None)
    np.testing.assert_array_equal(known.margins(), growing.margins())
    early, late = known.dynamics(), growing.dynamics()
    given = early.given_labels
    # Known epochs: every original's other classes from the window, never its given label.
    assert early.candidates.shape == (300, 2) and early.late_probs is None
    assert not (early.candidates == given[:, None]).any()
    assert early.suggestion_source.startswith("early softmax")
    assert np.all(early.candidate_probs[:, 0] >= early.candidate_probs[:, 1])
    # Epochs not known in advance: the late softmax, named as the source.
    assert late.candidates is None and late.late_probs.shape == (300, 3)
    np.testing.assert_allclose(late.late_probs.sum(axis=1), 1.0, atol=1e-5)
    assert late.suggestion_source.startswith("late softmax")
    result = growing.detect(encoder_epochs=1)
    assert not (result.suggested_labels == given).any()
    assert result.info["suggestion_source"].startswith("late softmax")


def test_a_sample_missing_from_an_epoch_is_an_error_naming_it():
    blobs, data = blobs_dataset()
    recorder = Recorder.for_dataset(data, num_epochs=2)
    logits = torch.zeros(len(data), 3)
    y = torch.as_tensor(data.labels_all)
    for _ in range(2):
        recorder.update(logits[:-5], y[:-5], torch.arange(len(data) - 5))  # drop_last-like
        with pytest.warns(UserWarning, match="5 of 330 samples got no margin"):
            recorder.end_epoch()
    with pytest.raises(InputError, match="5 samples missing in epoch 1") as err:
        recorder.dynamics()
    assert err.value.field == "margins"


def test_targets_other_than_the_trained_labels_are_refused():
    blobs, data = blobs_dataset()
    recorder = Recorder.for_dataset(data, num_epochs=2)
    wrong = torch.as_tensor(np.concatenate([data.given_labels, data.given_labels[data.copy_pair]]))
    recorder.update(torch.zeros(len(data), 3), wrong, torch.arange(len(data)))
    with pytest.raises(InputError, match="30 samples with another label") as err:
        recorder.end_epoch()
    assert err.value.field == "targets"


def test_detect_and_save_write_a_run_the_app_opens(recorded, tmp_path):
    from dynacor.runs import store as runstore

    blobs, data, recorder = recorded
    result = recorder.detect(encoder_epochs=2)
    assert result.num_samples == 300 and result.config["epochs"] == 6 and result.config["gamma"] == 0.1
    assert result.metrics is not None and result.metrics["f1"] > 0.8
    run_dir = recorder.save(tmp_path / "run")
    assert runstore.read_status(run_dir)["status"] == runstore.FINISHED
    samples = pd.read_csv(run_dir / "samples.csv")
    assert len(samples) == 300 and list(samples["id"]) == list(blobs["ids"])
    assert np.load(run_dir / "margins.npy").shape == (330, 6)
    pair, labels = runstore.load_copies(run_dir)
    assert np.array_equal(pair, data.copy_pair) and np.array_equal(labels, data.copy_labels)
    epochs = [e for e in runstore.read_events(run_dir) if e["type"] == "classifier_epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 7))


# ---- the dynamics file


def test_dynamics_file_round_trip(recorded, dynamics_file):
    original = recorded[2].dynamics()
    loaded = load_dynamics(dynamics_file)
    for name in ("margins_all", "copy_pair", "copy_labels", "given_labels", "prob_given_all", "candidates",
                 "candidate_probs", "clean_labels", "ids"):  # fmt: skip
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name), err_msg=name)
    assert loaded.class_names == original.class_names
    assert loaded.suggestion_source == original.suggestion_source
    assert loaded.classifier_epochs == original.classifier_epochs
    assert loaded.source["dynamics"] == str(dynamics_file) and loaded.source["kind"] == "recorded"


def test_a_run_directory_reads_back_as_the_same_dynamics(recorded, tmp_path):
    recorder = recorded[2]
    result = recorder.detect(encoder_epochs=1)
    run_dir = recorder.save(tmp_path / "run", result=result)
    loaded = load_dynamics(run_dir)
    original = recorder.dynamics()
    np.testing.assert_allclose(loaded.margins_all, original.margins_all, rtol=1e-3, atol=1e-3)  # float16
    assert np.array_equal(loaded.margins_all >= 0, original.margins_all >= 0)
    assert np.array_equal(loaded.given_labels, original.given_labels)
    assert np.array_equal(loaded.copy_pair, original.copy_pair)
    # A Recorder's run carries the engine's columns: candidates never offering the given label.
    table = pd.read_csv(run_dir / "samples.csv")
    assert {"suggested_label", "suggested_prob", "candidates", "candidate_probs"} <= set(table.columns)
    assert not (result.candidates == result.given_labels[:, None]).any()
    # The run's candidates survive, and a re-run on them offers the same ones.
    assert np.array_equal(loaded.candidates, result.candidates)
    np.testing.assert_allclose(loaded.candidate_probs, result.candidate_probs, atol=1e-6)
    assert loaded.suggestion_source == result.info["suggestion_source"]
    again = detect(DynaCorConfig(encoder_epochs=1), loaded)
    assert np.array_equal(again.suggested_labels, result.suggested_labels)
    assert again.info["suggestion_source"] == result.info["suggestion_source"]


def test_detect_dynamics_on_a_file_writes_a_run(dynamics_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["detect", "--dynamics", str(dynamics_file), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip().splitlines()[-1].startswith("dynacor: 300 samples")
    assert "recorded epochs" in printed.err
    samples = pd.read_csv(out / "samples.csv")
    assert len(samples) == 300 and {"noisy_score", "flagged", "suggested_label"} <= set(samples.columns)
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["epochs"] == 6 and info["config"]["encoder_epochs"] == 2
    assert json.loads((out / "config.json").read_text())["source"]["dynamics"] == str(dynamics_file)
    assert json.loads((out / "status.json").read_text())["status"] == "finished"


def test_detect_dynamics_on_a_run_directory_gives_the_same_flags(dynamics_file, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["detect", "--dynamics", str(dynamics_file), "--out", str(first), "--quiet", *FAST]) == 0
    assert main(["detect", "--dynamics", str(first), "--out", str(second), "--quiet", *FAST]) == 0
    a, b = pd.read_csv(first / "samples.csv"), pd.read_csv(second / "samples.csv")
    for column in ("id", "given_label", "suggested_label", "suggested_prob", "flagged", "clean_label"):
        assert a[column].equals(b[column]), column


def bad_dynamics(tmp_path: Path, recorded, **changes) -> Path:
    d = recorded[2].dynamics()
    fields = {"margins": d.margins_all, "pair": d.copy_pair, "labels": d.copy_labels, "given_labels": d.given_labels}
    fields.update(changes)
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in fields.items() if v is not None})
    return path


@pytest.mark.parametrize(
    "changes, field, expected",
    [
        ({"margins": None}, "margins", "must be present"),
        ({"given_labels": None}, "given_labels", "must be present"),
        ({"margins": np.zeros((330, 1), dtype=np.float32)}, "margins", "at least 2 epochs"),
        ({"margins": np.full((330, 6), np.nan, dtype=np.float32)}, "margins", "finite numbers"),
        ({"pair": np.full(30, 400)}, "pair", "integer indices of originals"),
        ({"labels": "same as original"}, "labels", "different from its original's given label"),
        ({"given_labels": np.zeros(299, dtype=np.int64)}, "given_labels", "length 300"),
        ({"late_probs": np.zeros((10, 3), dtype=np.float32)}, "late_probs", "300 rows"),
    ],
)
def test_bad_dynamics_files_exit_2_naming_the_field_and_write_nothing(tmp_path, capsys, recorded, changes, field, expected):
    if changes.get("labels") == "same as original":
        d = recorded[2].dynamics()
        changes = {"labels": d.given_labels[d.copy_pair]}
    path = bad_dynamics(tmp_path, recorded, **changes)
    out = tmp_path / "run"
    assert main(["detect", "--dynamics", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"`{field}`" in err and expected in err, err
    assert not out.exists()


def test_not_a_dynamics_file_and_classifier_flags_exit_2(tmp_path, capsys, dynamics_file):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    assert main(["detect", "--dynamics", str(junk), "--out", str(tmp_path / "a")]) == 2
    assert str(junk) in capsys.readouterr().err
    assert main(["detect", "--dynamics", str(tmp_path / "nothing"), "--out", str(tmp_path / "b")]) == 2
    assert main(["detect", "--dynamics", str(dynamics_file), "--epochs", "3", "--out", str(tmp_path / "c")]) == 2
    assert "`--epochs`" in capsys.readouterr().err
    assert main(["detect", "--dynamics", str(dynamics_file), "--method", "aum", "--out", str(tmp_path / "d")]) == 2
    assert not any((tmp_path / name).exists() for name in "abcd")
    with pytest.raises(SystemExit):  # one data source at a time
        main(["detect", "--dynamics", str(dynamics_file), "--features", str(junk), "--out", str(tmp_path / "e")])


def test_save_dynamics_checks_what_it_writes(tmp_path):
    bad = Dynamics(margins_all=np.zeros((10, 3)), copy_pair=np.array([0]), copy_labels=np.array([1]),
                   given_labels=np.ones(9, dtype=np.int64))  # fmt: skip
    with pytest.raises(InputError) as err:
        save_dynamics(tmp_path / "d.npz", bad)
    assert err.value.field == "labels" and not (tmp_path / "d.npz").exists()


# ---- Lightning


def test_lightning_callback_records_every_epoch():
    L = pytest.importorskip("lightning")
    from dynacor.record.lightning import DynacorCallback

    blobs, data = blobs_dataset(n=120)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.net = torch.nn.Linear(16, 3)

        def training_step(self, batch, batch_idx):
            x, y, index = batch
            logits = self.net(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, y), "logits": logits.detach()}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    recorder = Recorder.for_dataset(data, num_epochs=3)
    trainer = L.Trainer(max_epochs=3, callbacks=[DynacorCallback(recorder)], logger=False, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    trainer.fit(Module(), loader)
    assert recorder.num_recorded == 3 and [e["lr"] for e in recorder.epochs] == [0.05] * 3
    dynamics = recorder.dynamics()
    assert dynamics.margins_all.shape == (132, 3) and np.isfinite(dynamics.margins_all).all()


# ---- the example


def test_example_trains_records_and_writes_a_run(tmp_path):
    out = tmp_path / "runs" / "resnet"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_resnet_with_recorder.py"), "--epochs", "2", "--per-class", "2",
         "--size", "16", "--encoder-epochs", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "dynacor: 20 samples" in done.stdout and f"DYNACOR_RUNS={out.parent}" in done.stdout
    samples = pd.read_csv(out / "samples.csv")
    assert len(samples) == 20 and samples["path"].str.endswith(".jpg").all()
    assert json.loads((out / "status.json").read_text())["status"] == "finished"
    assert json.loads((out / "run.json").read_text())["source"]["kind"] == "builtin"


def test_more_epochs_than_announced_are_refused():
    recorder = Recorder(4, num_epochs=2, num_classes=2)
    for _ in range(2):
        recorder.update(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), torch.arange(4))
        recorder.end_epoch()
    with pytest.raises(InputError, match="epoch 3") as err:
        recorder.update(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), torch.arange(4))
    assert err.value.field == "num_epochs"


# ---- Hugging Face Trainer


def test_hf_trainer_records_training_batches_only(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # the Trainer needs it on PyTorch
    from dynacor.record.hf import DynacorTrainer, collate_with_copies

    blobs, data = blobs_dataset(n=120)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.net = torch.nn.Linear(16, 3)

        def forward(self, pixel_values, labels=None):
            logits = self.net(pixel_values)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    recorder = Recorder.for_dataset(data, num_epochs=3)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=32,
                                          per_device_eval_batch_size=32, learning_rate=0.05, use_cpu=True,
                                          report_to=[], save_strategy="no", logging_strategy="no",
                                          eval_strategy="epoch", disable_tqdm=True, seed=0)  # fmt: skip
    trainer = DynacorTrainer(model=Model(), args=args, train_dataset=data, eval_dataset=data,
                             data_collator=collate_with_copies, recorder=recorder)  # fmt: skip
    trainer.train()
    assert recorder.num_recorded == 3  # evaluation passes were not recorded as epochs
    dynamics = recorder.dynamics()
    assert dynamics.margins_all.shape == (132, 3) and np.isfinite(dynamics.margins_all).all()
