"""Label Studio: tasks with the suggestion as a prediction, the labelling config that matches them,
and a Label Studio JSON export read back as review decisions.

A task per sample::

    {"data": {"image": URL, "dynacor_id": "17", "dynacor_run": RUN_ID, "given_label": "cat",
              "suggested_label": "dog", "noisy_score": 0.93, "flagged": true},
     "predictions": [{"model_version": "dynacor-RUN_ID", "score": 0.93,
                      "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                  "value": {"choices": ["dog"]}}]}]}

The annotator's choice becomes a decision: the given class -> keep, the suggested class ->
accept, any other class -> relabel; the annotator is Label Studio's ``completed_by``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import pandas as pd

from dynacor.errors import InputError
from dynacor.review.queue import sample_keys

FROM_NAME, TO_NAME = "label", "image"
# Label Studio serves files under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT at this URL (local storage).
LOCAL_FILES_URL = "/data/local-files/?d="


def label_config(class_names: Sequence[str]) -> str:
    """The labelling config: the image, its given and suggested labels as text, and one single
    choice among ``class_names``."""
    choices = "\n".join(f"    <Choice value={quoteattr(str(name))}/>" for name in class_names)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="${TO_NAME}"/>\n'
        '  <Header value="Given label: $given_label (dynacor suggests $suggested_label)"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInLine="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def image_urls(
    paths: Sequence[str], root: str | os.PathLike[str] | None = None, prefix: str | None = None
) -> list[str]:
    """What Label Studio loads each image from.

    No ``root``: the paths as they are (absolute paths, or URLs already). With ``root``: the path
    relative to it, URL-quoted, after ``prefix`` (default Label Studio's local-files URL, for
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=root). Raises `InputError` for a path outside ``root``.
    """
    if root is None:
        return [str(p) for p in paths]
    base = Path(root).expanduser().resolve()
    head = LOCAL_FILES_URL if prefix is None else prefix
    out = []
    for path in paths:
        full = Path(path).expanduser().resolve()
        try:
            relative = full.relative_to(base)
        except ValueError:
            raise InputError(
                str(path),
                "--image-root",
                f"a folder holding every image, {base}",
                "an image outside it",
            ) from None
        out.append(head + quote(relative.as_posix()))
    return out


def tasks(
    samples: pd.DataFrame, images: Sequence[str], class_names: Sequence[str], run_id: str
) -> list[dict]:
    """One Label Studio task per sample, input order (``images`` from `image_urls`)."""
    model_version = f"dynacor-{run_id}"
    out = []
    columns = zip(sample_keys(samples), images, samples["given_label"].astype(int), samples["suggested_label"].astype(int),
                  samples["noisy_score"].astype(float), samples["flagged"].astype(bool), strict=True)  # fmt: skip
    for key, image, given, suggested, score, flagged in columns:
        # Label Studio refuses prediction scores outside [0, 1]; a missing score is no score.
        score = None if math.isnan(score) else min(max(float(score), 0.0), 1.0)
        out.append(
            {
                "data": {
                    TO_NAME: image,
                    "dynacor_id": key,
                    "dynacor_run": run_id,
                    "given_label": class_names[given],
                    "suggested_label": class_names[suggested],
                    "noisy_score": score,
                    "flagged": bool(flagged),
                },
                "predictions": [
                    {
                        "model_version": model_version,
                        "score": score,
                        "result": [
                            {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                             "value": {"choices": [class_names[suggested]]}}
                        ],
                    }
                ],
            }
        )  # fmt: skip
    return out


def read_export(path: str | os.PathLike[str]) -> list:
    """A Label Studio JSON export (a list of tasks). Raises `InputError` naming the file when it
    cannot be read as one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(
            path, None, "an existing Label Studio JSON export", "no such file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, "a readable UTF-8 JSON file", exc) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, None, "valid JSON (Label Studio's JSON export)", exc) from None
    if not isinstance(value, list):
        raise InputError(path, None, "a JSON list of tasks (Label Studio's JSON export, not JSON-MIN or CSV)",
                         type(value).__name__)  # fmt: skip
    return value


def decisions_from_export(
    exported: list,
    samples: pd.DataFrame,
    class_names: Sequence[str],
    run_id: str,
    file: str = "labelstudio",
) -> tuple[list[dict], dict]:
    """The review decisions a Label Studio export holds, for `ReviewStore.record_decisions`.

    Each annotated task gives one decision: its latest annotation (by ``updated_at``, else
    ``created_at``, else order) that was not cancelled and chose a class. Returns the items
    (``sample``, ``decision``, ``label``, ``annotator``, ``time``) and counts (``tasks``,
    ``annotated``, ``unannotated``). Raises `InputError` naming ``file`` and the field (e.g.
    ``[3].annotations[0].result[0].value.choices``) for anything it cannot read.
    """
    index = {name: i for i, name in enumerate(class_names)}
    given_of = dict(zip(sample_keys(samples), samples["given_label"].astype(int), strict=True))
    suggested_of = dict(
        zip(sample_keys(samples), samples["suggested_label"].astype(int), strict=True)
    )
    items: dict[str, dict] = {}
    unannotated = 0
    for t, task in enumerate(exported):
        where = f"[{t}]"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise InputError(file, f"{where}.data", "an object (a Label Studio task)", _kind(task))
        data = task["data"]
        key = data.get("dynacor_id")
        if key is None:
            raise InputError(
                file,
                f"{where}.data.dynacor_id",
                "the sample id dynacor wrote into the task",
                "nothing",
            )
        key = str(key)
        if key not in given_of:
            raise InputError(file, f"{where}.data.dynacor_id", "a sample id of this run", repr(key))
        if data.get("dynacor_run") not in (None, run_id):
            raise InputError(file, f"{where}.data.dynacor_run", f"this run's id {run_id} (tasks exported from "
                             "another run)", repr(data["dynacor_run"]))  # fmt: skip
        annotations = task.get("annotations", [])
        if not isinstance(annotations, list):
            raise InputError(file, f"{where}.annotations", "a list", _kind(annotations))
        chosen = None
        for a, annotation in enumerate(annotations):
            found = _choice(annotation, f"{where}.annotations[{a}]", file)
            if found is None:
                continue
            when = _time(annotation, f"{where}.annotations[{a}]", file)
            when = -math.inf if when is None else when
            # Latest wins; at equal times the later one in the list (Label Studio lists oldest first).
            if chosen is None or when >= chosen[1]:
                chosen = (
                    found[0],
                    when,
                    annotation,
                    f"{where}.annotations[{a}].result[{found[1]}].value.choices",
                )
        if chosen is None:
            unannotated += 1
            continue
        name, when, annotation, field = chosen
        if name not in index:
            raise InputError(
                file, field, f"one of the run's classes {list(class_names)}", repr(name)
            )
        label = index[name]
        if label == given_of[key]:
            decision = "keep"
        elif label == suggested_of[key]:
            decision = "accept"
        else:
            decision = "relabel"
        item = {
            "sample": key,
            "decision": decision,
            "label": label,
            "annotator": _annotator(annotation),
        }
        if when != -math.inf:
            item["time"] = when
        previous = items.get(key)
        # Two tasks of one sample (imported twice): the later annotation counts.
        if previous is None or item.get("time", -math.inf) >= previous.get("time", -math.inf):
            items[key] = item
    counts = {"tasks": len(exported), "annotated": len(items), "unannotated": unannotated}
    return list(items.values()), counts


def _choice(annotation: object, where: str, file: str) -> tuple[str, int] | None:
    """The class an annotation chose with our control and the region's index, or None
    (cancelled, or no such choice)."""
    if not isinstance(annotation, dict):
        raise InputError(file, where, "an object (a Label Studio annotation)", _kind(annotation))
    if annotation.get("was_cancelled"):
        return None
    result = annotation.get("result", [])
    if not isinstance(result, list):
        raise InputError(file, f"{where}.result", "a list of regions", _kind(result))
    for r, region in enumerate(result):
        if not isinstance(region, dict):
            raise InputError(file, f"{where}.result[{r}]", "an object (a region)", _kind(region))
        if region.get("from_name") != FROM_NAME or region.get("type") != "choices":
            continue
        value = region.get("value")
        choices = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], str):
            raise InputError(file, f"{where}.result[{r}].value.choices", "a list of exactly one class name",
                             repr(choices))  # fmt: skip
        return choices[0], r
    return None


def _time(annotation: dict, where: str, file: str) -> float | None:
    for field in ("updated_at", "created_at"):
        value = annotation.get(field)
        if value is None:
            continue
        try:
            when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise InputError(file, f"{where}.{field}", "an ISO 8601 time", repr(value)) from None
        if when.tzinfo is None:  # Label Studio writes UTC
            when = when.replace(tzinfo=dt.timezone.utc)
        return when.timestamp()
    return None


def _annotator(annotation: dict) -> str:
    """Label Studio's ``completed_by``: a user id, or (some exports) the user with an email."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        if who.get("email"):
            return str(who["email"])
        who = who.get("id")
    return "labelstudio" if who in (None, "") else f"labelstudio:{who}"


def _kind(value: object) -> str:
    return type(value).__name__
