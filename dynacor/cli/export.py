"""``dynacor export`` (a reviewed run to cleanlab, FiftyOne or Label Studio) and ``dynacor
import-review`` (a Label Studio export back as review decisions).

Decisions are read from and written to the review store the app uses for the run: SQLite next
to the run's folder (``RUN_DIR/../reviews.sqlite``), or ``DYNACOR_REVIEW_DB``, or ``--review-db``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from dynacor import atomic
from dynacor.errors import InputError
from dynacor.review import exports
from dynacor.review.exports import CONFIG_FILE, TASKS_FILE
from dynacor.review.reviewed import ReviewedRun, image_files
from dynacor.review.store import ReviewStore
from dynacor.runs import store as runstore
from dynacor.runs.umap_map import run_points


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``dynacor export`` options (called by `dynacor.cli.main.build_parser`)."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    parser.add_argument("--to", required=True, choices=exports.FORMATS,
                        help="cleanlab: a table (is_label_issue, label_score, given_label, predicted_label, ..., "
                        "candidate_1..3 and their probabilities) "
                        "as .csv or .parquet; fiftyone: a FiftyOne dataset folder; labelstudio: a folder with "
                        f"{TASKS_FILE} and {CONFIG_FILE}")  # fmt: skip
    parser.add_argument(
        "--out", required=True, metavar="PATH", help="the file (cleanlab) or folder to write"
    )
    parser.add_argument("--image-root", metavar="DIR", help="labelstudio: give images as paths relative to DIR "
                        "under Label Studio's local-files URL (start Label Studio with "
                        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=DIR); default: the paths as they are")  # fmt: skip
    parser.add_argument("--image-url", metavar="PREFIX", help="labelstudio, with --image-root: put PREFIX "
                        "(e.g. a web server's URL) before each relative path instead")  # fmt: skip
    _add_store_argument(parser)


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``dynacor import-review`` options."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="the finished run the tasks were exported from"
    )
    parser.add_argument("--from", dest="source", required=True, choices=("labelstudio",),
                        help="labelstudio: Label Studio's JSON export of tasks made by `dynacor export --to labelstudio`")  # fmt: skip
    parser.add_argument("file", metavar="FILE", help="the exported file")
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be recorded, record nothing"
    )
    _add_store_argument(parser)


def _add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--review-db", metavar="URL", help="SQLAlchemy URL of the review store (default: "
                        "DYNACOR_REVIEW_DB, else reviews.sqlite in the run's parent folder, as the app)")  # fmt: skip


def load_reviewed_run(run_dir: str | Path, review_db: str | None = None) -> ReviewedRun:
    """The run's table, class names and latest decisions, from the review store the app uses for
    it. Raises `InputError` when ``run_dir`` is not a finished run."""
    run_dir = Path(run_dir)
    samples, run_id, info = runstore.read_finished(run_dir)
    store = ReviewStore(review_db, runs_root=run_dir.resolve().parent)
    return ReviewedRun.of(run_dir, run_id, samples, info, store)


def cmd_export(args: argparse.Namespace) -> int:
    run = load_reviewed_run(args.run_dir, args.review_db)
    out = Path(args.out)
    if args.image_url is not None and args.image_root is None:
        raise InputError(
            None,
            "--image-url",
            "used with --image-root (the folder the URLs are relative to)",
            "no --image-root",
        )
    if args.to == "cleanlab":
        table = exports.cleanlab_table(run.samples, run.latest)
        _parent(out)
        exports.write_table(table, out)
        print(
            f"dynacor: wrote {len(table)} rows ({int(table['is_label_issue'].sum())} label issues) to {out}"
        )
    elif args.to == "labelstudio":
        images = exports.image_urls(image_files(run), args.image_root, args.image_url)
        tasks = exports.tasks(run.samples, images, run.class_names, run.run_id)
        if out.exists() and not out.is_dir():
            raise InputError(
                out, "--out", "a folder for the Label Studio files", "an existing file"
            )
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(out / TASKS_FILE, tasks)
        atomic.write_text(out / CONFIG_FILE, exports.label_config(run.class_names))
        print(
            f"dynacor: wrote {len(tasks)} tasks to {out / TASKS_FILE} and the labelling config to {out / CONFIG_FILE}"
        )
    else:
        rows = exports.fiftyone_rows(run.samples, run.latest, run.class_names, image_files(run))
        points, note = run_points(run.path, len(rows))
        exports.write_dataset(rows, out, points)
        name = f"dynacor-{run.path.resolve().name}"
        print(f"dynacor: wrote a FiftyOne dataset of {len(rows)} samples to {out} ({note}); open it with:\n"
              f"  fiftyone datasets create --name {name} --dataset-dir {out} --type fiftyone.types.FiftyOneDataset\n"
              f"  fiftyone app launch {name}")  # fmt: skip
    return 0


def cmd_import_review(args: argparse.Namespace) -> int:
    run = load_reviewed_run(args.run_dir, args.review_db)
    exported = exports.read_export(args.file)
    items, counts = exports.decisions_from_export(
        exported, run.samples, run.class_names, run.run_id, args.file
    )
    fresh = new_decisions(items, run.latest)
    if not args.dry_run:
        run.store.record_decisions(run.run_id, fresh)
    by_decision = pd.Series([i["decision"] for i in fresh], dtype=object).value_counts().to_dict()
    summary = ", ".join(f"{n} {d}" for d, n in sorted(by_decision.items())) or "none"
    verb = "would record" if args.dry_run else "recorded"
    print(f"dynacor: {counts['tasks']} tasks, {counts['annotated']} annotated; {verb} {len(fresh)} decisions "
          f"({summary}); {counts['annotated'] - len(fresh)} already recorded", file=sys.stdout)  # fmt: skip
    return 0


def new_decisions(items: list[dict], latest: pd.DataFrame) -> list[dict]:
    """``items`` without those already in the store as the sample's latest decision (same
    decision, label, annotator and time), so importing the same export twice records nothing new."""
    if not len(latest):
        return list(items)
    current = {
        row.sample: (
            row.decision,
            None if pd.isna(row.label) else int(row.label),
            row.annotator,
            float(row.time),
        )
        for row in latest.itertuples(index=False)
    }
    return [
        item for item in items
        if current.get(item["sample"]) != (item["decision"], item["label"], item["annotator"], item.get("time"))
    ]  # fmt: skip


def _parent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
