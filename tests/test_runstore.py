"""Run store and background jobs: states, crash safety, readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from dynacor import DynaCorConfig
from dynacor.errors import CorruptError, MissingError, RunExistsError
from dynacor.runs import store as runstore
from dynacor.runs.jobs import JobBusy, JobRunner
from tests.test_pipeline import featureset

FAST = dict(epochs=6, encoder_epochs=2, lr=0.05)


def loader_for(data):
    return lambda on_event, should_stop: featureset(data)


def test_job_runs_in_background_and_writes_a_finished_run(blobs, tmp_path):
    runner = JobRunner()
    job = runner.start(tmp_path / "run", DynaCorConfig(**FAST), loader_for(blobs), {"kind": "test"})
    assert job.wait(120)
    state = job.snapshot()
    assert state.status == "finished", state.error
    assert state.stage_progress["classifier"] == (6, 6)
    assert state.stage_progress["encoder"] == (2, 2)
    assert runstore.read_status(tmp_path / "run")["status"] == "finished"
    samples = runstore.load_samples(tmp_path / "run")
    assert len(samples) == 300
    assert runstore.load_array(tmp_path / "run", "dynamics").shape == (330, 6)
    assert runstore.load_array(tmp_path / "run", "representations").dtype == np.float16
    events = runstore.read_events(tmp_path / "run")
    assert [e["type"] for e in events].count("classifier_epoch") == 6
    runs = runstore.list_runs(tmp_path)
    assert len(runs) == 1 and runs[0].status == "finished" and runs[0].metrics["f1"] > 0.5


def test_one_job_at_a_time(blobs, tmp_path):
    started = []

    def slow_loader(on_event, should_stop):
        started.append(1)
        while not should_stop():
            time.sleep(0.01)
        return featureset(blobs)

    runner = JobRunner()
    job = runner.start(tmp_path / "a", DynaCorConfig(**FAST), slow_loader, {})
    with pytest.raises(JobBusy):
        runner.start(tmp_path / "b", DynaCorConfig(**FAST), loader_for(blobs), {})
    job.cancel()
    assert job.wait(30)
    assert job.snapshot().status == "cancelled"
    assert runstore.read_status(tmp_path / "a")["status"] == "cancelled"


def test_failed_run_records_error_and_never_looks_finished(tmp_path):
    def broken_loader(on_event, should_stop):
        raise RuntimeError("disk on fire")

    job = JobRunner().start(tmp_path / "run", DynaCorConfig(**FAST), broken_loader, {})
    job.wait(30)
    state = job.snapshot()
    assert state.status == "failed" and "disk on fire" in state.error
    status = runstore.read_status(tmp_path / "run")
    assert status["status"] == "failed"
    assert "disk on fire" in (tmp_path / "run" / "error.txt").read_text()
    assert not (tmp_path / "run" / "run.json").exists()
    with pytest.raises(MissingError):
        runstore.load_samples(tmp_path / "run")


def test_killed_process_leaves_an_interrupted_run(blobs_npz, tmp_path):
    """A crash mid-run: status stays 'running' on disk and reads as interrupted, never finished."""
    out = tmp_path / "run"
    code = (
        "import sys; from dynacor.cli.main import main; "
        f"sys.exit(main(['detect', '--features', {str(blobs_npz)!r}, '--out', {str(out)!r}, '--epochs', '400', '--lr', '0.05']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "events.jsonl").exists():
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    status = runstore.read_status(out)
    assert status["status"] == "interrupted"
    assert not (out / "run.json").exists()
    # an interrupted run may be replaced without --overwrite
    runstore.create_run(out, {}, {})


def test_finished_run_is_protected(tmp_path):
    run_dir = runstore.create_run(tmp_path / "r", {}, {})
    runstore._write_status(run_dir, runstore.FINISHED)
    with pytest.raises(RunExistsError):
        runstore.create_run(run_dir, {}, {})
    runstore.create_run(run_dir, {}, {}, overwrite=True)
    assert runstore.read_status(run_dir)["status"] == "running"


def test_missing_and_corrupt_files_are_told_apart(tmp_path):
    with pytest.raises(MissingError):
        runstore.read_status(tmp_path)
    (tmp_path / "status.json").write_text("{not json")
    with pytest.raises(CorruptError):
        runstore.read_status(tmp_path)
    (tmp_path / "dynamics.npy").write_bytes(b"garbage")
    with pytest.raises(CorruptError):
        runstore.load_array(tmp_path, "dynamics")


def test_partial_event_line_is_skipped(tmp_path):
    runstore.append_event(tmp_path, {"type": "a"})
    with open(tmp_path / "events.jsonl", "a") as handle:
        handle.write('{"type": "b", "unfinished')
    assert runstore.read_events(tmp_path) == [{"type": "a"}]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    from dynacor import atomic

    atomic.write_json(tmp_path / "x.json", {"a": np.float32(1.5)})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1.5}
    with pytest.raises(TypeError):
        atomic.write_json(tmp_path / "y.json", {"a": object()})
    assert sorted(os.listdir(tmp_path)) == ["x.json"]
