"""Label Studio: tasks with the suggestion as a prediction, the labelling config that matches them,
and a Label Studio JSON export read back as review decisions.

A task per sample::

    {"data": {"image": URL, "dynacor_id": "17", "dynacor_run": RUN_ID, "given_label": "cat",
              "suggested_label": "dog", "suggested_prob": 0.81,
              "candidates": ["dog", "fox", "cow"], "candidate_probs": [0.81, 0.1, 0.04],
              "suggestion": "dog 81%, fox 10%, cow 4%", "noisy_score": 0.93, "flagged": true},
     "predictions": [{"model_version": "dynacor-RUN_ID", "score": 0.81,
                      "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                  "value": {"choices": ["dog"]}}]}]}

The suggestion is the most likely class other than the given one; ``candidates`` are the top
other classes, most likely first (the suggestion first), and ``suggestion`` says them as text
for the config's header. The prediction's ``score`` is the suggestion's probability. A sample
without a suggestion (a run that recorded no probabilities) has no prediction, ``suggested_label``
null, no candidates, and ``suggestion`` "nothing".

The annotator's choice becomes a decision: the given class -> keep, the suggested class ->
accept, any other class (the second or third candidate included) -> relabel, with the chosen
class's ``candidate_rank`` (1-3 among the candidates, 0 for a class outside them, as the review
cards record a class found by search; none for a keep); the annotator is Label Studio's
``completed_by``.
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
from dynacor.review.candidates import choice
from dynacor.review.exports.common import name_of, suggestions_of
from dynacor.review.queue import sample_keys

TASKS_FILE, CONFIG_FILE = "tasks.json", "label_config.xml"

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
        '  <Header value="Given label: $given_label (dynacor suggests $suggestion)"/>\n'
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
    suggestion = suggestions_of(samples)
    out = []
    columns = zip(sample_keys(samples), images, samples["given_label"].astype(int), suggestion.label, suggestion.prob,
                  suggestion.candidates, suggestion.candidate_probs, samples["noisy_score"].astype(float),
                  samples["flagged"].astype(bool), strict=True)  # fmt: skip
    for key, image, given, suggested, prob, candidates, candidate_probs, score, flagged in columns:
        suggested_name = name_of(class_names, int(suggested))
        ranked = [
            (class_names[int(c)], _unit(p))
            for c, p in zip(candidates, candidate_probs, strict=True)
            if c >= 0
        ]
        # No suggestion is no prediction: Label Studio would pre-select whatever class it named.
        predictions = [] if suggested_name is None else [
            {"model_version": model_version, "score": _unit(prob),
             "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                         "value": {"choices": [suggested_name]}}]}
        ]  # fmt: skip
        out.append(
            {
                "data": {
                    TO_NAME: image,
                    "dynacor_id": key,
                    "dynacor_run": run_id,
                    "given_label": class_names[given],
                    "suggested_label": suggested_name,
                    "suggested_prob": _unit(prob),
                    "candidates": [name for name, _ in ranked],
                    "candidate_probs": [p for _, p in ranked],
                    "suggestion": _suggestion_text(suggested_name, _unit(prob), ranked),
                    "noisy_score": _unit(score),
                    "flagged": bool(flagged),
                },
                "predictions": predictions,
            }
        )
    return out


def _unit(value: float) -> float | None:
    # Label Studio refuses prediction scores outside [0, 1]; a missing value is none (JSON null).
    return None if math.isnan(value) else min(max(float(value), 0.0), 1.0)


def _suggestion_text(
    suggested: str | None, prob: float | None, ranked: list[tuple[str, float | None]]
) -> str:
    """What the header says dynacor suggests: the candidates with their chances, else the
    suggestion alone, else "nothing"."""
    if suggested is None:
        return "nothing"
    shown = ranked or [(suggested, prob)]
    return ", ".join(name if p is None else f"{name} {p:.0%}" for name, p in shown)


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
    (``sample``, ``decision``, ``label``, ``candidate_rank``, ``annotator``, ``time``) and counts
    (``tasks``, ``annotated``, ``unannotated``). Raises `InputError` naming ``file`` and the
    field (e.g. ``[3].annotations[0].result[0].value.choices``) for anything it cannot read.
    """
    index = {name: i for i, name in enumerate(class_names)}
    keys = sample_keys(samples)
    given_of = dict(zip(keys, samples["given_label"].astype(int), strict=True))
    suggestion = suggestions_of(samples)
    candidates_of = dict(
        zip(keys, ([int(c) for c in row if c >= 0] for row in suggestion.candidates), strict=True)
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
        # As the review card records it: keep, accept (the first candidate) or relabel, with its rank.
        item = {"sample": key, **choice(given_of[key], index[name], candidates_of[key]),
                "annotator": _annotator(annotation)}  # fmt: skip
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
