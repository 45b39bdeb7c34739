"""`dynacor export` / `import-review`: a reviewed run handed to cleanlab, FiftyOne and Label Studio
(with the real packages where they are installed) and Label Studio's answers read back."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynacor.cli.main import main
from dynacor.review import exports
from dynacor.review.store import ReviewStore
from dynacor.runs import store as runstore
from dynacor.runs import umap_map
from tests.app_fixtures import finished_run

RUN = "fixture-run"


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    """One engine run with images for the whole module (a second or two); tests copy it."""
    base = tmp_path_factory.mktemp("made")
    return finished_run(base / "runs", base / "data", RUN)


@pytest.fixture
def run(made_run, tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("DYNACOR_REVIEW_DB", raising=False)
    target = tmp_path / "runs" / RUN
    shutil.copytree(made_run, target)
    return target


def with_candidates(run_dir: Path) -> pd.DataFrame:
    """Give the run's table the candidate columns of the new engine, written here so the test
    knows them: per sample the two classes other than the given one (3 classes), in an order that
    alternates by row, with probabilities 0.6 and 0.3; the suggestion is the first."""
    samples = runstore.load_samples(run_dir)
    given = samples["given_label"].to_numpy()
    others = [[c for c in range(3) if c != g] for g in given]
    ranked = [o if i % 2 else o[::-1] for i, o in enumerate(others)]
    samples["candidates"] = [[int(c) for c in r] for r in ranked]
    samples["candidate_probs"] = [[0.6, 0.3] for _ in ranked]
    samples["suggested_label"] = [r[0] for r in ranked]
    samples["suggested_prob"] = 0.6
    if "suggested_name" in samples:
        samples["suggested_name"] = [f"class{r[0]}" for r in ranked]
    samples.to_parquet(run_dir / "samples.parquet", index=False)
    return samples


def without_suggestion(run_dir: Path) -> pd.DataFrame:
    """The table of a run that recorded no probabilities: suggestion -1, no candidates. Its
    suggested_name is the last class's, as ``names[-1]`` would give: the exports must not use it."""
    samples = runstore.load_samples(run_dir)
    samples["suggested_label"] = -1
    samples["suggested_prob"] = np.nan
    samples["candidates"] = [[] for _ in range(len(samples))]
    samples["candidate_probs"] = [[] for _ in range(len(samples))]
    if "suggested_name" in samples:
        samples["suggested_name"] = "class2"
    samples.to_parquet(run_dir / "samples.parquet", index=False)
    return samples


def export(run_dir: Path, fmt: str, out: Path, *extra: str) -> int:
    return main(["export", str(run_dir), "--to", fmt, "--out", str(out), *extra])


def import_review(run_dir: Path, file: Path, *extra: str) -> int:
    return main(["import-review", str(run_dir), "--from", "labelstudio", str(file), *extra])


def store_of(run_dir: Path) -> ReviewStore:
    """The store the CLI uses by default: reviews.sqlite next to the run."""
    return ReviewStore(runs_root=run_dir.parent)


def review_some(run_dir: Path) -> dict[str, tuple[str, int | None]]:
    """Decide five flagged samples, one per decision; returns {sample: (decision, label)}."""
    samples = runstore.load_samples(run_dir)
    flagged = samples[samples["flagged"] == 1].head(5)
    assert len(flagged) == 5
    rows = list(flagged.itertuples())
    other = lambda r: next(c for c in range(3) if c not in (r.given_label, r.suggested_label))  # noqa: E731
    plan = {
        str(rows[0].id): ("keep", None),
        str(rows[1].id): ("accept", None),
        str(rows[2].id): ("relabel", other(rows[2])),
        str(rows[3].id): ("remove", None),
        str(rows[4].id): ("unsure", None),
    }
    given = dict(zip(samples["id"].astype(str), samples["given_label"], strict=True))
    suggested = dict(zip(samples["id"].astype(str), samples["suggested_label"], strict=True))
    items = []
    for key, (decision, label) in plan.items():
        label = {"keep": given[key], "accept": suggested[key]}.get(decision, label)
        items.append(
            {"sample": key, "decision": decision, "label": None if label is None else int(label)}
        )
    store_of(run_dir).record_decisions(runstore.run_id(run_dir), items, annotator="ann")
    return plan


# ---- cleanlab


def test_cleanlab_table_has_cleanlabs_columns_and_the_review(run, tmp_path):
    plan = review_some(run)
    out = tmp_path / "out" / "issues.csv"
    assert export(run, "cleanlab", out) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:4]) == exports.CLEANLAB_COLUMNS
    samples = runstore.load_samples(run)
    assert len(table) == len(samples) and table["id"].tolist() == samples["id"].tolist()
    np.testing.assert_allclose(table["label_score"], 1.0 - samples["noisy_score"], atol=1e-12)
    assert (table["given_label"] == samples["given_label"]).all()
    assert (table["predicted_label"] == samples["suggested_label"]).all()
    by_id = table.set_index(table["id"].astype(str))
    # The review overrules the detector; unsure and undecided keep the detector's flag.
    assert not by_id.loc[_key(plan, "keep"), "is_label_issue"]
    for decision in ("accept", "relabel", "remove"):
        assert by_id.loc[_key(plan, decision), "is_label_issue"]
    assert by_id.loc[_key(plan, "unsure"), "is_label_issue"]
    undecided = ~table["id"].astype(str).isin(plan)
    assert (table.loc[undecided, "is_label_issue"] == table.loc[undecided, "flagged"]).all()
    assert pd.isna(by_id.loc[_key(plan, "remove"), "final_label"])
    assert by_id.loc[_key(plan, "relabel"), "final_label"] == plan[_key(plan, "relabel")][1]

    parquet = tmp_path / "issues.parquet"
    assert export(run, "cleanlab", parquet) == 0
    again = pd.read_parquet(parquet)
    assert [str(again[c].dtype) for c in exports.CLEANLAB_COLUMNS] == [
        "bool",
        "float64",
        "int64",
        "int64",
    ]
    assert str(again["final_label"].dtype) == "Int64"


def test_cleanlab_table_is_what_cleanlab_produces_and_consumes(run, made_run):
    """Same columns and kinds as cleanlab's own label-issue frame (CleanLearning.find_label_issues,
    which Datalab's get_issues("label") serves with label_quality renamed label_score), and
    CleanLearning.fit takes it as ``label_issues``."""
    from cleanlab.classification import CleanLearning
    from sklearn.linear_model import LogisticRegression

    features = np.load(made_run.parent.parent / "data" / "blobs.npz")["features"]
    samples = runstore.load_samples(run)
    labels = samples["given_label"].to_numpy()
    table = exports.cleanlab_table(samples, store_of(run).latest_decisions(runstore.run_id(run)))

    pred_probs = np.eye(3)[samples["suggested_label"].to_numpy()] * 0.8 + 0.2 / 3
    theirs = CleanLearning(LogisticRegression()).find_label_issues(
        labels=labels, pred_probs=pred_probs
    )
    theirs = theirs.rename(columns={"label_quality": "label_score"})  # what Datalab does
    assert list(theirs.columns) == exports.CLEANLAB_COLUMNS
    assert [table[c].dtype.kind for c in theirs.columns] == [
        theirs[c].dtype.kind for c in theirs.columns
    ]

    model = CleanLearning(LogisticRegression(max_iter=500)).fit(
        features, labels, label_issues=table
    )
    np.testing.assert_array_equal(model.label_issues_mask, table["is_label_issue"].to_numpy())
    assert model.get_label_issues() is table
    assert model.predict(features).shape == labels.shape


def test_cleanlab_table_carries_the_suggestion_and_its_candidates(run, tmp_path):
    samples = with_candidates(run)
    for out in (tmp_path / "issues.csv", tmp_path / "issues.parquet"):
        assert export(run, "cleanlab", out) == 0
        table = pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)
        assert list(table.columns[-6:]) == exports.CANDIDATE_COLUMNS
        assert table["predicted_label"].tolist() == samples["suggested_label"].tolist()
        assert table["candidate_1"].tolist() == [c[0] for c in samples["candidates"]]
        assert table["candidate_2"].tolist() == [c[1] for c in samples["candidates"]]
        assert table["candidate_3"].isna().all() and table["candidate_3_prob"].isna().all()
        assert (table["candidate_1_prob"] == 0.6).all() and (table["candidate_2_prob"] == 0.3).all()
        assert (table["candidate_1"] != table["given_label"]).all()
    again = pd.read_parquet(tmp_path / "issues.parquet")
    assert str(again["predicted_label"].dtype) == "int64"
    assert [str(again[c].dtype) for c in exports.CANDIDATE_COLUMNS[:2]] == ["Int64", "float64"]


def test_a_run_without_suggestions_exports_no_prediction(run, tmp_path):
    """Suggestion -1 (no probabilities recorded) is no prediction in every format, never the
    last class (what names[-1] would give)."""
    samples = without_suggestion(run)
    names = exports.class_list(samples)
    assert names == ["class0", "class1", "class2"]

    out = tmp_path / "issues.csv"
    assert export(run, "cleanlab", out) == 0
    table = pd.read_csv(out)
    assert table["predicted_label"].isna().all()
    assert table[exports.CANDIDATE_COLUMNS].isna().all().all()
    latest = store_of(run).latest_decisions(runstore.run_id(run))
    frame = exports.cleanlab_table(samples, latest)
    assert str(frame["predicted_label"].dtype) == "Int64" and frame["predicted_label"].isna().all()

    assert export(run, "labelstudio", tmp_path / "ls") == 0
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    for task in tasks:
        assert task["predictions"] == []
        data = task["data"]
        assert data["suggested_label"] is None and data["suggested_prob"] is None
        assert data["candidates"] == [] and data["candidate_probs"] == []
        assert data["suggestion"] == "nothing"

    rows = exports.fiftyone_rows(samples, latest, names, samples["path"].tolist())
    assert all(
        r["suggested"] is None and r["confidence"] is None and r["candidates"] == [] for r in rows
    )

    # Any class but the given one is then a relabel, found outside the (no) candidates.
    key, given = str(samples["id"].iloc[0]), int(samples["given_label"].iloc[0])
    other = f"class{(given + 1) % 3}"
    items, _ = exports.decisions_from_export([annotated(key, other)], samples, names, "r")
    assert items[0]["decision"] == "relabel" and items[0]["candidate_rank"] == 0


def test_a_run_from_before_the_candidates_has_its_suggestion_as_the_only_one():
    """Old tables lack the candidate columns (and older engines could suggest the given label):
    the suggestion is then the only candidate, unless it is the given label, as the cards show."""
    samples = pd.DataFrame({"id": [0, 1, 2], "given_label": [0, 1, 2], "suggested_label": [1, 1, 0],
                            "suggested_prob": [0.7, 0.9, 0.5], "noisy_score": [0.8, 0.1, 0.6],
                            "flagged": [1, 0, 1]})  # fmt: skip
    no_decisions = pd.DataFrame(columns=["sample", "decision", "label", "annotator", "time"])
    table = exports.cleanlab_table(samples, no_decisions)
    assert table["predicted_label"].tolist() == [1, 1, 0]
    assert table["candidate_1"].tolist() == [1, pd.NA, 0]
    assert table["candidate_1_prob"].fillna(-1).tolist() == [0.7, -1, 0.5]
    assert table["candidate_2"].isna().all()


def test_cleanlab_export_refuses_an_unknown_extension(run, tmp_path, capsys):
    assert export(run, "cleanlab", tmp_path / "issues.xlsx") == 2
    err = capsys.readouterr().err
    assert "issues.xlsx" in err and "`--out`" in err and ".csv or .parquet" in err
    assert not list(tmp_path.glob("*issues*"))


# ---- bad runs


def test_export_refuses_what_is_not_a_finished_run(run, tmp_path, capsys):
    assert export(tmp_path / "nothing", "cleanlab", tmp_path / "a.csv") == 2
    assert "status.json" in capsys.readouterr().err
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "failed"}))
    assert export(run, "cleanlab", tmp_path / "a.csv") == 2
    err = capsys.readouterr().err
    assert "field `status` must be finished" in err and "'failed'" in err
    assert not (tmp_path / "a.csv").exists()


def test_unknown_format_is_refused_by_the_parser(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        export(run, "excel", tmp_path / "x")
    assert stop.value.code == 2
    assert "invalid choice: 'excel'" in capsys.readouterr().err


def test_image_exports_refuse_a_run_without_images(tmp_path, blobs_npz, capsys):
    run_dir = tmp_path / "runs" / "features-only"
    assert main(["detect", "--features", str(blobs_npz), "--out", str(run_dir), "--epochs", "4",
                 "--encoder-epochs", "2", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    for fmt in ("labelstudio", "fiftyone"):
        assert export(run_dir, fmt, tmp_path / fmt) == 2
        err = capsys.readouterr().err
        assert "samples.parquet: field `path` must be image paths" in err
        assert not (tmp_path / fmt).exists()
    assert export(run_dir, "cleanlab", tmp_path / "t.csv") == 0
    assert "path" not in pd.read_csv(tmp_path / "t.csv").columns


# ---- Label Studio


def test_labelstudio_tasks_and_config_validate_with_label_studio_sdk(run, tmp_path):
    li_module = pytest.importorskip("label_studio_sdk.label_interface", reason="label-studio-sdk is not installed "
                                    "(pip install 'dynacor[labelstudio]')")  # fmt: skip
    out = tmp_path / "ls"
    assert export(run, "labelstudio", out) == 0
    config = (out / "label_config.xml").read_text()
    tasks = json.loads((out / "tasks.json").read_text())
    interface = li_module.LabelInterface(config)
    interface.validate()
    control = interface.get_control(exports.FROM_NAME)
    assert control.labels == ["class0", "class1", "class2"]
    samples = runstore.load_samples(run)
    assert len(tasks) == len(samples)
    run_id = runstore.run_id(run)
    for task, row in zip(tasks, samples.itertuples(), strict=True):
        assert task["data"]["image"] == row.path and task["data"]["dynacor_id"] == str(row.id)
        (prediction,) = task["predictions"]
        assert interface.validate_prediction(prediction, return_errors=True) == []
        assert prediction["model_version"] == f"dynacor-{run_id}"
        assert prediction["score"] == pytest.approx(row.suggested_prob)
        assert prediction["result"][0]["value"]["choices"] == [f"class{row.suggested_label}"]
        assert task["data"]["noisy_score"] == pytest.approx(row.noisy_score)
    # Every variable the config shows is in each task's data.
    shown = {obj.value_name for obj in interface.objects if obj.value_is_variable}
    assert shown <= set(tasks[0]["data"])


def test_labelstudio_image_urls_relative_to_a_root(run, tmp_path, capsys):
    out = tmp_path / "ls"
    root = Path(runstore.load_samples(run)["path"].iloc[0]).parent.parent
    assert export(run, "labelstudio", out, "--image-root", str(root)) == 0
    first = json.loads((out / "tasks.json").read_text())[0]["data"]["image"]
    assert first == "/data/local-files/?d=images/0000.png"
    assert export(run, "labelstudio", out, "--image-root", str(root),
                 "--image-url", "https://example.org/img/") == 0  # fmt: skip
    assert (
        json.loads((out / "tasks.json").read_text())[0]["data"]["image"]
        == "https://example.org/img/images/0000.png"
    )
    assert export(run, "labelstudio", out, "--image-root", str(tmp_path / "elsewhere")) == 2
    assert "`--image-root` must be a folder holding every image" in capsys.readouterr().err


def test_images_inside_a_tar_are_extracted_next_to_the_run(run, tmp_path):
    """The built-in sample keeps its images in a tar archive (paths are member names): the image
    exports extract them once into RUN_DIR/exports/images."""
    import tarfile

    samples = runstore.load_samples(run)
    folder = Path(samples["path"].iloc[0]).parent
    archive = tmp_path / "sample.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(
            folder, arcname="images"
        )  # the fixture's first images are gone: missing stays missing
    samples["path"] = ["images/" + Path(p).name for p in samples["path"]]
    samples.to_parquet(run / "samples.parquet", index=False)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(
        json.dumps({**info, "source": {"kind": "builtin", "file": str(archive)}})
    )

    out = tmp_path / "ls"
    assert export(run, "labelstudio", out) == 0
    images = [t["data"]["image"] for t in json.loads((out / "tasks.json").read_text())]
    extracted = (run / "exports" / "images").resolve()
    assert images == [str(extracted / p) for p in samples["path"]]
    present = [Path(p).is_file() for p in images]
    assert (
        present == [(folder / Path(p).name).is_file() for p in samples["path"]]
        and sum(present) == 295
    )
    assert (extracted / "images" / "0010.png").read_bytes() == (folder / "0010.png").read_bytes()


def labelstudio_export(
    tasks: list[dict], answers: dict[int, list[tuple[str, int, str]]]
) -> list[dict]:
    """What Label Studio's JSON export holds after annotators answered: tasks with ids and, per
    task index, annotations (class, user id, ISO time) built with label-studio-sdk's own models."""
    li_module = pytest.importorskip("label_studio_sdk.label_interface")
    from label_studio_sdk.label_interface.objects import AnnotationValue

    config = exports.label_config(["class0", "class1", "class2"])
    control = li_module.LabelInterface(config).get_control(exports.FROM_NAME)
    out = []
    for t, task in enumerate(tasks):
        annotations = []
        for n, (name, user, when) in enumerate(answers.get(t, [])):
            value = AnnotationValue(completed_by=user, result=[control.label(name)]).model_dump()
            annotations.append(
                {**value, "id": 100 * t + n, "created_at": when, "updated_at": when, "task": t + 1}
            )
        out.append(
            {
                "id": t + 1,
                "data": task["data"],
                "annotations": annotations,
                "predictions": task["predictions"],
            }
        )
    return out


def test_labelstudio_round_trip_records_decisions(run, tmp_path, capsys):
    out = tmp_path / "ls"
    assert export(run, "labelstudio", out) == 0
    tasks = json.loads((out / "tasks.json").read_text())
    samples = runstore.load_samples(run)
    flagged = [i for i in range(len(samples)) if samples["flagged"].iloc[i] == 1][:3]
    given = samples["given_label"].to_numpy()
    suggested = samples["suggested_label"].to_numpy()
    other = [next(c for c in range(3) if c not in (given[i], suggested[i])) for i in flagged]
    answers = {
        flagged[0]: [(f"class{given[flagged[0]]}", 3, "2026-01-02T10:00:00Z")],
        # Two annotators: the later answer counts.
        flagged[1]: [(f"class{suggested[flagged[1]]}", 4, "2026-01-02T11:00:00.500000Z"),
                     (f"class{other[1]}", 3, "2026-01-02T09:00:00Z")],
        flagged[2]: [(f"class{other[2]}", 5, "2026-01-03T08:00:00Z")],
    }  # fmt: skip
    exported = labelstudio_export(tasks, answers)
    exported[flagged[0]]["annotations"].append({**exported[flagged[0]]["annotations"][0], "was_cancelled": True,
                                                "updated_at": "2026-02-01T00:00:00Z", "result": []})  # fmt: skip
    file = tmp_path / "project-1-at-2026.json"
    file.write_text(json.dumps(exported))

    assert import_review(run, file, "--dry-run") == 0
    assert "would record 3 decisions" in capsys.readouterr().out
    run_id = runstore.run_id(run)
    assert len(store_of(run).latest_decisions(run_id)) == 0

    assert import_review(run, file) == 0
    printed = capsys.readouterr().out
    assert (
        f"{len(tasks)} tasks, 3 annotated; recorded 3 decisions (1 accept, 1 keep, 1 relabel)"
        in printed
    )
    latest = store_of(run).latest_decisions(run_id).set_index("sample")
    ids = samples["id"].astype(str).to_numpy()
    assert latest.loc[ids[flagged[0]], ["decision", "label", "annotator"]].tolist() == [
        "keep",
        given[flagged[0]],
        "labelstudio:3",
    ]
    assert latest.loc[ids[flagged[1]], ["decision", "label", "annotator"]].tolist() == [
        "accept",
        suggested[flagged[1]],
        "labelstudio:4",
    ]
    assert latest.loc[ids[flagged[2]], ["decision", "label", "annotator"]].tolist() == [
        "relabel",
        other[2],
        "labelstudio:5",
    ]
    assert latest.loc[ids[flagged[1]], "time"] == pytest.approx(
        pd.Timestamp("2026-01-02T11:00:00.5Z").timestamp()
    )

    # Importing the same export again records nothing new; the final labels follow the import.
    assert import_review(run, file) == 0
    assert "recorded 0 decisions (none); 3 already recorded" in capsys.readouterr().out
    assert store_of(run).count(run_id) == 3
    table = exports.cleanlab_table(samples, store_of(run).latest_decisions(run_id))
    assert (
        table.loc[flagged[2], "final_label"] == other[2]
        and not table.loc[flagged[0], "is_label_issue"]
    )


def annotated(key: str, name: str, user: int = 1, when: str = "2026-01-01T00:00:00Z") -> dict:
    """An exported Label Studio task of sample ``key`` whose annotator chose ``name``."""
    return {"data": {"dynacor_id": key}, "annotations": [
        {"completed_by": user, "created_at": when,
         "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [name]}}]}]}  # fmt: skip


def test_labelstudio_tasks_carry_the_candidates(run, tmp_path):
    samples = with_candidates(run)
    out = tmp_path / "ls"
    assert export(run, "labelstudio", out) == 0
    tasks = json.loads((out / "tasks.json").read_text())
    config = (out / "label_config.xml").read_text()
    assert "$suggestion" in config
    for task, row in zip(tasks, samples.itertuples(), strict=True):
        data = task["data"]
        names = [f"class{c}" for c in row.candidates]
        assert data["suggested_label"] == names[0] and data["suggested_prob"] == pytest.approx(0.6)
        assert data["candidates"] == names and data["candidate_probs"] == pytest.approx([0.6, 0.3])
        assert data["suggestion"] == f"{names[0]} 60%, {names[1]} 30%"
        (prediction,) = task["predictions"]
        assert prediction["score"] == pytest.approx(0.6)
        assert prediction["result"][0]["value"]["choices"] == [names[0]]


def test_labelstudio_choosing_a_lower_candidate_is_a_relabel_with_its_rank(run, tmp_path, capsys):
    samples = with_candidates(run)
    names = ["class0", "class1", "class2"]
    keys = samples["id"].astype(str).tolist()
    ranked = samples["candidates"].tolist()
    given = samples["given_label"].tolist()
    exported = [
        annotated(keys[0], f"class{given[0]}"),
        annotated(keys[1], f"class{ranked[1][0]}"),
        annotated(keys[2], f"class{ranked[2][1]}"),
    ]
    items, _ = exports.decisions_from_export(exported, samples, names, runstore.run_id(run))
    got = [(i["decision"], i["label"], i["candidate_rank"]) for i in items]
    assert got == [
        ("keep", given[0], None),
        ("accept", ranked[1][0], 1),
        ("relabel", ranked[2][1], 2),
    ]

    file = tmp_path / "export.json"
    file.write_text(json.dumps(exported))
    assert import_review(run, file) == 0
    assert "recorded 3 decisions (1 accept, 1 keep, 1 relabel)" in capsys.readouterr().out
    latest = store_of(run).latest_decisions(runstore.run_id(run)).set_index("sample")
    assert latest.loc[keys[2], ["decision", "label"]].tolist() == ["relabel", ranked[2][1]]
    assert latest.loc[keys[1], "candidate_rank"] == 1 and latest.loc[keys[2], "candidate_rank"] == 2
    assert pd.isna(latest.loc[keys[0], "candidate_rank"])


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda e: e.__setitem__(0, "not a task"), "[0].data"),
        (lambda e: e[1]["data"].pop("dynacor_id"), "[1].data.dynacor_id"),
        (lambda e: e[1]["data"].__setitem__("dynacor_id", "no-such-sample"), "[1].data.dynacor_id"),
        (lambda e: e[1]["data"].__setitem__("dynacor_run", "another-run"), "[1].data.dynacor_run"),
        (lambda e: e[2].__setitem__("annotations", {"result": []}), "[2].annotations"),
        (lambda e: e[2]["annotations"][0]["result"][0]["value"].__setitem__("choices", ["class0", "class1"]),
         "[2].annotations[0].result[0].value.choices"),
        (lambda e: e[2]["annotations"][0]["result"][0]["value"].__setitem__("choices", ["zebra"]),
         "[2].annotations[0].result[0].value.choices"),
        (lambda e: e[2]["annotations"][0].__setitem__("updated_at", "yesterday"), "[2].annotations[0].updated_at"),
    ],
)  # fmt: skip
def test_malformed_labelstudio_export_names_the_file_and_field(
    run, tmp_path, capsys, change, field
):
    out = tmp_path / "ls"
    assert export(run, "labelstudio", out) == 0
    exported = labelstudio_export(
        json.loads((out / "tasks.json").read_text())[:3],
        {2: [("class1", 1, "2026-01-01T00:00:00Z")]},
    )
    change(exported)
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(exported))
    assert import_review(run, file) == 2
    err = capsys.readouterr().err
    assert f"bad.json: field `{field}` must be" in err, err
    assert store_of(run).count(runstore.run_id(run)) == 0


def test_unreadable_labelstudio_file_is_refused(run, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"data": ')
    assert import_review(run, broken) == 2
    assert "broken.json: must be valid JSON" in capsys.readouterr().err
    broken.write_text('{"tasks": []}')
    assert import_review(run, broken) == 2
    assert "must be a JSON list of tasks" in capsys.readouterr().err


def test_annotator_is_the_email_when_the_export_carries_the_user(run):
    samples = runstore.load_samples(run)
    key = str(samples["id"].iloc[0])
    exported = [{"data": {"dynacor_id": key}, "annotations": [
        {"completed_by": {"id": 9, "email": "ann@example.org"}, "created_at": "2026-01-01T00:00:00",
         "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["class2"]}}]}]}]  # fmt: skip
    items, counts = exports.decisions_from_export(
        exported, samples, ["class0", "class1", "class2"], "r"
    )
    assert items[0]["annotator"] == "ann@example.org" and counts == {
        "tasks": 1,
        "annotated": 1,
        "unannotated": 0,
    }


# ---- FiftyOne


@pytest.fixture(scope="module")
def fiftyone(tmp_path_factory):
    """FiftyOne with its database in a temporary folder (its MongoDB listens on localhost and
    stops with this process); skipped with the reason when it cannot run here."""
    if "fiftyone" not in sys.modules:
        os.environ["FIFTYONE_DATABASE_DIR"] = str(tmp_path_factory.mktemp("fiftyone-db"))
        os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    reason = exports.fiftyone_unavailable()
    if reason is not None:
        pytest.skip(reason)
    import fiftyone

    return fiftyone


def test_fiftyone_dataset_round_trip(fiftyone, run, tmp_path, capsys):
    import fiftyone.brain as fob

    with_candidates(run)
    plan = review_some(run)
    coords, _ = umap_map.run_map(run)  # the map the Clusters page caches
    out = tmp_path / "fo"
    assert export(run, "fiftyone", out) == 0
    printed = capsys.readouterr().out
    assert "the run's cached map" in printed and "fiftyone app launch" in printed

    dataset = fiftyone.Dataset.from_dir(str(out), dataset_type=fiftyone.types.FiftyOneDataset)
    try:
        samples = runstore.load_samples(run)
        assert len(dataset) == len(samples)
        assert dataset.values("filepath") == [str(Path(p).resolve()) for p in samples["path"]]
        assert dataset.values("ground_truth.label") == [f"class{g}" for g in samples["given_label"]]
        assert dataset.values("dynacor.label") == [f"class{s}" for s in samples["suggested_label"]]
        np.testing.assert_allclose(
            dataset.values("dynacor.confidence"), samples["suggested_prob"], rtol=1e-6
        )
        np.testing.assert_allclose(dataset.values("noisy_score"), samples["noisy_score"], rtol=1e-6)
        assert dataset.values("dynacor_candidates.classifications.label") == [
            [f"class{c}" for c in row] for row in samples["candidates"]
        ]
        assert dataset.values("dynacor_candidates.classifications.confidence") == [
            pytest.approx([0.6, 0.3]) for _ in range(len(samples))
        ]
        assert dataset.count_sample_tags()["flagged"] == int(samples["flagged"].sum())
        by_id = {s.dynacor_id: s for s in dataset}
        for key, (decision, _) in plan.items():
            sample = by_id[key]
            assert f"review:{decision}" in sample.tags and sample.decision == decision
            assert sample.annotator == "ann"
        assert by_id[_key(plan, "remove")].final is None
        assert by_id[_key(plan, "relabel")].final.label == f"class{plan[_key(plan, 'relabel')][1]}"
        undecided = next(s for s in dataset if s.decision == "")
        assert undecided.final.label == undecided.ground_truth.label
        assert dataset.list_brain_runs() == [exports.BRAIN_KEY]
        results = dataset.load_brain_results(exports.BRAIN_KEY)
        np.testing.assert_allclose(results.points, coords[: len(samples)], rtol=1e-6)
        assert isinstance(results, fob.VisualizationResults)
    finally:
        dataset.delete()

    # Written again into the same folder: replaced whole; a folder of other files is refused.
    assert export(run, "fiftyone", out) == 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".fo.")]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert export(run, "fiftyone", other) == 2
    assert "a new or empty folder, or an earlier FiftyOne export" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_fiftyone_export_without_a_map_says_so(fiftyone, run, tmp_path, capsys):
    (run / "representations.npy").unlink()
    out = tmp_path / "fo"
    assert export(run, "fiftyone", out) == 0
    assert "no map (the run has no representations)" in capsys.readouterr().out
    dataset = fiftyone.Dataset.from_dir(str(out), dataset_type=fiftyone.types.FiftyOneDataset)
    try:
        assert dataset.list_brain_runs() == []
    finally:
        dataset.delete()


def test_fiftyone_dataset_of_a_run_without_suggestions(fiftyone, run, tmp_path):
    without_suggestion(run)
    (run / "representations.npy").unlink()  # no map: not what this test is about
    out = tmp_path / "fo"
    assert export(run, "fiftyone", out) == 0
    dataset = fiftyone.Dataset.from_dir(str(out), dataset_type=fiftyone.types.FiftyOneDataset)
    try:
        assert "dynacor" in dataset.get_field_schema()
        assert set(dataset.values("dynacor")) == {None}
        assert set(dataset.values("dynacor_candidates")) == {None}
    finally:
        dataset.delete()


def _key(plan: dict, decision: str) -> str:
    return next(k for k, (d, _) in plan.items() if d == decision)


# ---- the Export page


def open_export_page(runs: Path, monkeypatch):
    testing = pytest.importorskip(
        "streamlit.testing.v1", reason="streamlit is not installed (the app extra)"
    )
    monkeypatch.setenv("DYNACOR_RUNS", str(runs))
    monkeypatch.setenv("DYNACOR_DATA_ROOTS", str(runs.parent))
    at = testing.AppTest.from_file(
        str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120
    )
    at.session_state["current_run"] = RUN
    at.switch_page("pages/export.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_export_page_offers_the_three_tools(run, monkeypatch):
    at = open_export_page(run.parent, monkeypatch)
    labels = [b.label for b in at.get("download_button")]
    assert {"cleanlab table (CSV)", "Tasks (JSON)", "Labelling config (XML)"} <= set(labels)
    shown = "\n".join(str(e.value) for e in at.get("caption"))
    assert f"dynacor import-review {run} --from labelstudio FILE" in shown


def test_export_page_writes_the_fiftyone_dataset(fiftyone, run, monkeypatch):
    at = open_export_page(run.parent, monkeypatch)
    next(b for b in at.button if b.label == "Write the FiftyOne dataset").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    target = run / "exports" / "fiftyone"
    assert any(f"Wrote 300 samples to `{target}`" in s.value for s in at.success), [
        e.value for e in at.error
    ]
    assert f"--dataset-dir {target}" in at.code[0].value
    dataset = fiftyone.Dataset.from_dir(str(target), dataset_type=fiftyone.types.FiftyOneDataset)
    try:
        assert len(dataset) == 300 and dataset.list_brain_runs() == [exports.BRAIN_KEY]
    finally:
        dataset.delete()
