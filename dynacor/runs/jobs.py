"""Running a detection in a background thread, with progress any reader can poll.

The worker never touches a UI: it appends events to the run store and to an in-memory list;
readers (the app's pages, tests) call `Job.snapshot()` or read the run directory.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynacor.errors import Cancelled, DynacorError
from dynacor.method.config import DynaCorConfig
from dynacor.method.featureset import FeatureSet
from dynacor.method.pipeline import Dynamics, Result, detect, run
from dynacor.runs import store as runstore

# Loads the data for a job; gets the job's event handler (for extraction progress) and stop check.
# A `FeatureSet` gets the whole method (`run`); `Dynamics` recorded by another training loop get
# the encoder, clustering and report only (`detect`).
DataLoader = Callable[[Callable[[dict], None], Callable[[], bool]], FeatureSet | Dynamics]


class JobBusy(DynacorError):
    """A run is already working in this process."""


@dataclass
class JobState:
    """What a reader sees: the latest value of everything, plus the event history."""

    run_dir: str
    status: str = runstore.RUNNING
    stage: str | None = None
    stage_progress: dict[str, tuple[int, int]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    error_type: str | None = None
    summary: str | None = None
    events: list[dict] = field(default_factory=list)


class Job:
    """One run in a background thread. Create through `JobRunner.start`."""

    def __init__(
        self,
        run_dir: Path,
        config: DynaCorConfig,
        load_data: DataLoader,
        source: dict,
        overwrite: bool = False,
        listener: Callable[[dict], None] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.config = config
        self._load_data = load_data
        self._source = source
        self._overwrite = overwrite
        self._listener = listener
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state = JobState(run_dir=str(self.run_dir))
        self.result: Result | None = None
        self._thread = threading.Thread(target=self._work, name=f"dynacor-run-{self.run_dir.name}", daemon=True)

    def start(self) -> Job:
        runstore.create_run(self.run_dir, self.config.to_dict(), self._source, overwrite=self._overwrite)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self) -> JobState:
        """A consistent copy of the state (events list copied too)."""
        with self._lock:
            state = self._state
            return JobState(**{**state.__dict__, "events": list(state.events),
                               "stage_progress": dict(state.stage_progress),
                               "stage_seconds": dict(state.stage_seconds)})  # fmt: skip

    def _on_event(self, event: dict) -> None:
        event = {"time": time.time(), **event}
        with self._lock:
            state = self._state
            state.events.append(event)
            kind = event.get("type")
            if kind == "stage_start":
                state.stage = event["stage"]
                if "total" in event:
                    state.stage_progress[event["stage"]] = (0, int(event["total"]))
            elif kind == "stage_end":
                state.stage_seconds[event["stage"]] = float(event["seconds"])
            elif kind in ("classifier_epoch", "encoder_epoch"):
                stage = kind.split("_")[0]
                state.stage_progress[stage] = (int(event["epoch"]), int(event.get("of", event["epoch"])))
            elif kind == "progress":
                state.stage_progress[event.get("stage", "features")] = (int(event["done"]), int(event["total"]))
        runstore.append_event(self.run_dir, event)
        if self._listener is not None:
            self._listener(event)

    def _work(self) -> None:
        try:
            self._on_event({"type": "stage_start", "stage": "features"})
            started = time.perf_counter()
            data = self._load_data(self._on_event, self._stop.is_set)
            self._on_event({"type": "stage_end", "stage": "features", "seconds": time.perf_counter() - started})
            if isinstance(data, Dynamics):
                self._replay_classifier(data)
                result = detect(self.config, data, on_event=self._on_event, should_stop=self._stop.is_set)
            else:
                result = run(self.config, data, on_event=self._on_event, should_stop=self._stop.is_set)
            result.timings["features"] = time.perf_counter() - started - result.timings["total"]
            runstore.write_result(self.run_dir, result)
            self.result = result
            self._finish(runstore.FINISHED, summary=result.summary())
        except Cancelled:
            runstore.mark_cancelled(self.run_dir)
            self._finish(runstore.CANCELLED)
        except Exception as exc:  # the worker must record every failure, whatever it is
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DynacorError) else str(exc)
            runstore.mark_failed(self.run_dir, message, traceback.format_exc())
            self._finish(runstore.FAILED, error=message, error_type=type(exc).__name__)

    def _replay_classifier(self, dynamics: Dynamics) -> None:
        """The recorded classifier's epochs as events, so readers draw its curves as for any run."""
        epochs = dynamics.classifier_epochs
        n, m = len(dynamics.given_labels), len(dynamics.copy_pair)
        self._on_event({"type": "info", "num_samples": n, "num_copies": m, "num_epochs": int(dynamics.margins_all.shape[1]),
                        "num_classes": len(dynamics.class_names) if dynamics.class_names is not None else None,
                        "recorded": True})  # fmt: skip
        if not epochs:
            return
        self._on_event({"type": "stage_start", "stage": "classifier", "total": len(epochs), "recorded": True})
        for entry in epochs:
            self._on_event({"type": "classifier_epoch", "of": len(epochs), **entry})
        seconds = sum(float(e.get("seconds", 0.0) or 0.0) for e in epochs)
        self._on_event({"type": "stage_end", "stage": "classifier", "seconds": seconds, "recorded": True})

    def _finish(self, status: str, **fields: Any) -> None:
        with self._lock:
            self._state.status = status
            self._state.finished = time.time()
            for key, value in fields.items():
                setattr(self._state, key, value)


class JobRunner:
    """Holds at most one working job per process (one app server runs one detection at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job: Job | None = None

    def start(
        self,
        run_dir: str | Path,
        config: DynaCorConfig,
        load_data: DataLoader,
        source: dict,
        overwrite: bool = False,
    ) -> Job:
        with self._lock:
            if self._job is not None and self._job.is_alive():
                raise JobBusy(f"a run is already working ({self._job.run_dir}); wait for it or cancel it")
            self._job = Job(Path(run_dir), config, load_data, source, overwrite).start()
            return self._job

    @property
    def job(self) -> Job | None:
        return self._job
