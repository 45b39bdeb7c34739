"""``dynacor detect``: one run written into a run directory (the contract in docs/outputs.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynacor.cli.options import recorded_flags, settings_file, source_spec, user_settings
from dynacor.errors import CorruptError, InputError, MissingError, RunExistsError
from dynacor.runs import store as runstore
from dynacor.runs.request import Prepared, prepare, prepare_recorded, reads_now

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130
INPUT_ERRORS = {cls.__name__ for cls in (InputError, MissingError, CorruptError, RunExistsError)}


class EpochTable:
    """Prints one aligned row per epoch to stderr."""

    def __init__(self, stream=None):
        self.stream = stream

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        out = self.stream or sys.stderr
        if kind == "stage_start" and event["stage"] == "classifier":
            print(f"{'classifier':>10} {'epoch':>7} {'loss':>8} {'acc':>7} {'test':>7} {'sec':>6}", file=out)
        elif kind == "classifier_epoch":
            # Recorded epochs (--dynamics) carry whatever the training loop logged: any may be absent.
            loss, seconds = _number(event, "loss", 1, "8.4f"), _number(event, "seconds", 1, "6.2f")
            acc, test = _number(event, "accuracy", 100, "6.1f", "%"), _number(event, "test_accuracy", 100, "6.1f", "%")
            print(f"{'':>10} {event['epoch']:>3}/{event['of']:<3} {loss} {acc} {test} {seconds}", file=out)
        elif kind == "stage_start" and event["stage"] == "encoder":
            print(f"{'encoder':>10} {'epoch':>7} {'L_clu':>8} {'L_align':>8} {'V':>9} {'flagged':>8} {'F1':>6}", file=out)
        elif kind == "progress" and event.get("stage") == "features":
            if event["done"] == event["total"] or event["done"] % 256 < 32:
                eta = event.get("eta_s")
                eta_text = f", {eta:.0f} s left" if eta is not None else ""
                print(f"  features {event['done']}/{event['total']} images ({event.get('images_per_s') or 0:.1f}/s{eta_text})",
                      file=out)  # fmt: skip
        elif kind in ("runtime", "runtime_export"):
            from dynacor.data.runtimes import describe

            print(f"  features: {describe(event)}", file=out)
        elif kind == "warning":
            print(f"warning: {event['message']}", file=out)
        elif kind == "skipped":
            files = [f["path"] if isinstance(f, dict) else f for f in event.get("files", [])]
            more = f" and {len(files) - 10} more" if len(files) > 10 else ""
            print(f"warning: skipped {len(files)} unreadable file(s): {', '.join(files[:10])}{more}", file=out)
        elif kind == "encoder_epoch":
            f1 = f"{100 * event['f1']:5.1f}" if "f1" in event else f"{'-':>5}"
            print(f"{'':>10} {event['epoch']:>3}/{event['of']:<3} {event['cluster_loss']:8.5f} {event['align_loss']:8.5f} "
                  f"{event['val_metric']:9.6f} {100 * event['flagged_fraction']:7.1f}% {f1:>6}", file=out)  # fmt: skip
        elif kind == "info" and event.get("recorded"):
            classes = f", {event['num_classes']} classes" if event.get("num_classes") else ""
            print(f"{event['num_samples']} samples + {event['num_copies']} corrupted copies{classes}, "
                  f"{event['num_epochs']} recorded epochs", file=out)  # fmt: skip
        elif kind == "info" and event.get("num_samples"):
            noise = event.get("noise_rate")
            noise_text = f", noise rate {100 * noise:.1f}%" if noise is not None else ""
            print(f"{event['num_samples']} samples + {event['num_copies']} corrupted copies, {event['num_classes']} classes"
                  f"{noise_text}, {event['device']} x{event['threads']}", file=out)  # fmt: skip
        out.flush()


def _number(event: dict, key: str, scale: float, spec: str, unit: str = "") -> str:
    """``event[key]`` formatted to the width of ``spec``, or a dash when absent or not a number."""
    width = int(spec.split(".")[0]) + len(unit)
    value = event.get(key)
    if not isinstance(value, (int, float)) or value != value:
        return f"{'-':>{width}}"
    return f"{scale * value:{spec}}{unit}"


def prepare_dynamics(args: argparse.Namespace) -> Prepared:
    """The request of ``detect --dynamics``: the recording is read and checked here, before any
    run directory exists, so a bad file writes nothing."""
    from dynacor.record.files import load_dynamics

    if args.method != "dynacor":
        raise InputError("command line", "--method", "dynacor with --dynamics (the baselines need features)",
                         repr(args.method))  # fmt: skip
    given = recorded_flags(args)
    if given:
        raise InputError("command line", given[0], "unset with --dynamics (the classifier was trained where "
                         "the dynamics were recorded; only encoder settings apply)", "given")  # fmt: skip
    dynamics = load_dynamics(args.dynamics)
    source = {"kind": "recorded", **dynamics.source, "dynamics": str(args.dynamics)}
    if not any(key in source for key in ("path", "file", "root")):
        source["path"] = str(args.dynamics)  # what the run list shows for this run's data
    return prepare_recorded(dynamics, source, user_settings(args), settings_file(args))


def relabel_from_review(args: argparse.Namespace, request: Prepared) -> None:
    """``--labels-from-review RUN_DIR``: the request's data gets the labels the review of RUN_DIR
    decided (`dynacor.review.reviewed.relabel_request`)."""
    from dynacor.cli.export import load_reviewed_run
    from dynacor.review.reviewed import relabel_request

    if getattr(args, "dynamics", None):
        raise InputError("command line", "--labels-from-review", "used with a data source, not --dynamics "
                         "(recorded dynamics were trained on their own labels)", "--dynamics")  # fmt: skip
    if request.config.noise is not None:
        raise InputError("command line", "--noise", "unset with --labels-from-review (the review's labels are the "
                         "labels to judge)", repr(request.config.noise))  # fmt: skip
    relabel_request(request, load_reviewed_run(args.labels_from_review, args.review_db), read_now=reads_now(request))


def cmd_detect(args: argparse.Namespace) -> int:
    """Run ``detect``; returns the exit code."""
    from dynacor.runs.jobs import Job

    if getattr(args, "dynamics", None):
        request = prepare_dynamics(args)
    else:
        request = prepare(source_spec(args), user_settings(args), settings_file(args))
    if getattr(args, "labels_from_review", None):
        relabel_from_review(args, request)
    if args.method != "dynacor":
        from dynacor.runs.baseline import run_baseline

        return run_baseline(args.method, request.loader, request.source, request.config, Path(args.out),
                            args.overwrite, quiet=args.quiet)  # fmt: skip
    job = Job(Path(args.out), request.config, request.loader, request.source, overwrite=args.overwrite,
              listener=None if args.quiet else EpochTable())  # fmt: skip
    job.start()
    try:
        while not job.wait(0.2):
            pass
    except KeyboardInterrupt:
        job.cancel()
        job.wait()
    state = job.snapshot()
    if state.status == runstore.FINISHED:
        print(f"dynacor: {state.summary} -> {args.out}")
        return EXIT_OK
    if state.status == runstore.CANCELLED:
        print(f"dynacor: cancelled; {args.out} is marked cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    print(f"dynacor: error: {state.error}", file=sys.stderr)
    print(f"dynacor: the run failed; details in {Path(args.out) / 'error.txt'}", file=sys.stderr)
    return EXIT_BAD_INPUT if state.error_type in INPUT_ERRORS else EXIT_FAILED
