"""Tests of the prepare job: CLI settings, caching by fingerprint, run.json, Argo outputs, s3:// and synthetic data."""

from __future__ import annotations

import io
import json

import pytest
from structlog.testing import capture_logs

from common import layout
from common.archs import ARCH_NAMES
from common.logging import configure, get_logger
from common.schemas import DatasetManifest, RunManifest
from common.settings import load
from common.store import LocalStore
from jobs import prepare as job
from tests.fixtures.data import class_tree, write


@pytest.fixture(autouse=True)
def _logging_configured():
    # Configure structlog at the start of each test: the console logger holds on to the
    # sys.stderr of the moment, which pytest replaces (and closes) per test; and a logger
    # configured first keeps capture_logs' processors in place.
    configure()
    get_logger()


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "CamSDD"
    class_tree(root, {"1_Portrait": 3, "2_Group_Portrait": 3, "3_Kids": 3}, split="training")
    class_tree(root, {"1_Portrait": 1, "2_Group_Portrait": 1, "3_Kids": 1}, split="validation")
    return root


def _settings(**kw) -> job.PrepareSettings:
    return load(job.PrepareSettings, kw)


def test_cli_prepares_then_reuses_the_dataset(tmp_path, source):
    store_dir = tmp_path / "store"
    out = tmp_path / "outputs"
    argv = ["--data", str(source), "--store", f"file://{store_dir}", "--run-id", "r1",
            "--archs", "mobilenet_v2,resnet50", "--formats", '["float32","int8"]', "--image-size", "64x96",
            "--epochs", "2", "--weights", "none", "--outputs-dir", str(out)]
    assert job.main(argv) == 0
    store = LocalStore(store_dir)
    run = store.get_model(layout.run_json("r1"), RunManifest)
    manifest = store.get_model(layout.dataset_json(run.dataset_fingerprint), DatasetManifest)
    assert run.params.archs == ["mobilenet_v2", "resnet50"] and run.params.image_size == [64, 96]
    assert run.params.epochs == 2 and run.params.weights == "none" and not run.dataset_synthetic
    assert manifest.splits["train"].count == 9 and manifest.splits["validation"].count == 3
    assert [c.name for c in manifest.classes] == ["Portrait", "Group Portrait", "Kids"]
    assert json.loads((out / "archs.json").read_text()) == ["mobilenet_v2", "resnet50"]
    assert json.loads((out / "formats.json").read_text()) == ["float32", "int8"]
    assert json.loads((out / "models.json").read_text())[:2] == [
        {"arch": "mobilenet_v2", "format": "float32"}, {"arch": "mobilenet_v2", "format": "int8"}]
    assert (out / "fingerprint").read_text() == manifest.fingerprint

    # Same source under another name, another run: the dataset is found by fingerprint, not decoded.
    moved = tmp_path / "elsewhere"
    source.rename(moved)
    before = {k: store.stat(k) for k in store.list("datasets/")}
    with capture_logs() as events:
        m2, run2 = job.prepare(_settings(data=str(moved), store=store.uri, run_id="r2"), store)
    assert m2.fingerprint == manifest.fingerprint and run2.dataset_fingerprint == manifest.fingerprint
    assert {k: store.stat(k) for k in store.list("datasets/")} == before
    cached = [e for e in events if e["event"] == "step_cached"]
    done = [e for e in events if e["event"] == "prepare_done"]
    assert cached and cached[0]["step"] == "prepare"
    assert done and done[0]["cached"] is True and done[0]["fingerprint"] == manifest.fingerprint

    # --force prepares again.
    with capture_logs() as events:
        job.prepare(_settings(data=str(moved), store=store.uri, run_id="r3", force=True), store)
    assert [e["cached"] for e in events if e["event"] == "prepare_done"] == [False]


def test_skipped_files_are_listed_and_logged(tmp_path, source):
    write(source / "training" / "3_Kids" / "broken.jpg", b"not a jpeg")
    write(source / "training" / "3_Kids" / ".DS_Store", b"junk")
    store = LocalStore(tmp_path / "store")
    with capture_logs() as events:
        manifest, _ = job.prepare(_settings(data=str(source), store=store.uri, run_id="r1"), store)
    # paths relative to the folder given as --data; junk is not listed
    assert [(f.path, f.reason.split(":")[0]) for f in manifest.skipped] == [
        ("training/3_Kids/broken.jpg", "not an image")]
    warned = [e for e in events if e["event"] == "files_skipped"]
    assert warned and warned[0]["count"] == 1 and "broken.jpg" in warned[0]["files"][0]
    done = [e for e in events if e["event"] == "prepare_done"][0]
    assert done["skipped"] == 1 and done["cached"] is False
    stored = store.get_model(layout.dataset_json(manifest.fingerprint), DatasetManifest)
    assert stored.skipped == manifest.skipped


def test_empty_class_exits_2_naming_the_path(tmp_path, source, capsys):
    (source / "validation" / "3_Kids" / "000.jpg").write_bytes(b"")
    code = job.main(["--data", str(source), "--store", f"file://{tmp_path / 'store'}", "--run-id", "r1"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(source / "validation" / "3_Kids") in err
    assert not (tmp_path / "store" / "runs").exists()


def test_synthetic_data_is_labelled(tmp_path):
    store = LocalStore(tmp_path / "store")
    settings = _settings(data="synthetic", store=store.uri, run_id="syn", synthetic_per_class=3,
                         image_size="48x72", seed=4)
    manifest, run = job.prepare(settings, store)
    assert manifest.synthetic and run.dataset_synthetic
    assert manifest.source == "synthetic(seed=4,per_class=3,size=48x72)"
    assert manifest.splits["train"].count == 90 and manifest.splits["validation"].count == 60  # max(2, 3 // 3)
    assert len(manifest.classes) == 30 and manifest.classes[14].folder == "15_Sunrise_Sunset"
    assert manifest.image_size_range == {"min": [48, 72], "max": [48, 72]}
    # Same synthetic parameters give the same bytes, hence the same, cached dataset.
    again, _ = job.prepare(_settings(data="synthetic", store=store.uri, run_id="syn2", synthetic_per_class=3,
                                     image_size="48x72", seed=4), store)
    assert again.fingerprint == manifest.fingerprint


def test_s3_data_is_downloaded_and_prepared(tmp_path, source, s3_server, monkeypatch):
    from tests.fixtures.s3 import apply_s3_env, ensure_bucket

    apply_s3_env(monkeypatch, s3_server)
    ensure_bucket(s3_server.client(), "scenebench-data")
    from common.store import open_store

    remote = open_store("s3://scenebench-data/datasets-in/camsdd")
    client = s3_server.client()
    for p in sorted(source.rglob("*")):
        if p.is_dir():
            # The folder objects an S3 console's "Create folder" leaves: zero bytes, key ending in '/'.
            client.put_object("scenebench-data", f"datasets-in/camsdd/{p.relative_to(source).as_posix()}/",
                              io.BytesIO(b""), 0)
        elif p.name.startswith("0"):
            # Photos uploaded by another tool carry no sha256 metadata.
            client.fput_object("scenebench-data", f"datasets-in/camsdd/{p.relative_to(source).as_posix()}", str(p))
        else:
            remote.put_file(p.relative_to(source).as_posix(), p)
    store = LocalStore(tmp_path / "store")
    local, _ = job.prepare(_settings(data=str(source), store=store.uri, run_id="a"), store)
    manifest, _ = job.prepare(_settings(data="s3://scenebench-data/datasets-in/camsdd", store=store.uri,
                                        run_id="b", force=True), store)
    assert manifest.fingerprint == local.fingerprint
    assert manifest.source == "s3://scenebench-data/datasets-in/camsdd"


def test_run_json_is_kept_on_retry_and_guarded_against_changes(tmp_path, source):
    store = LocalStore(tmp_path / "store")
    base = dict(data=str(source), store=store.uri, run_id="r1", epochs=3)
    _, first = job.prepare(_settings(**base), store)
    _, again = job.prepare(_settings(**base), store)
    assert again.created_at == first.created_at
    with pytest.raises(Exception, match="already exists .* --force"):
        job.prepare(_settings(**{**base, "epochs": 4}), store)
    _, forced = job.prepare(_settings(**{**base, "epochs": 4, "force": True}), store)
    assert forced.params.epochs == 4


def test_defaults_and_generated_run_id(tmp_path, source, monkeypatch):
    monkeypatch.setenv("SCENEBENCH_ARCHS", "all")
    monkeypatch.setenv("SCENEBENCH_FORMATS", "int8,float32")
    settings = _settings(data=str(source), store=str(tmp_path / "s"))
    assert settings.archs == list(ARCH_NAMES)
    assert settings.formats == ["float32", "int8"]  # registry order, whatever order was given
    store = LocalStore(tmp_path / "s")
    _, run = job.prepare(settings, store)
    assert run.run_id[:8].isdigit() and len(run.run_id) == len("20261126-053000-abcdef")
    assert store.exists(layout.run_json(run.run_id))


@pytest.mark.parametrize("flag, value, needles", [
    ("--archs", "foo", ["--archs", "foo", "mobilenet_v2", "efficientnet_b2", "resnet50"]),
    ("--image-size", "10x10", ["--image-size", "10x10", "32..4096"]),
    ("--formats", "fp8", ["--formats", "fp8", "float32", "int8", "float16", "dynamic"]),
    ("--trigger", "hourly", ["--trigger", "manual", "nightly"]),
    ("--val-fraction", "1.5", ["--val-fraction"]),
    ("--weights", "ftp://x/y", ["--weights", "none", "imagenet"]),
    ("--runner-url", "runner:8080", ["--runner-url", "http://"]),
])
def test_bad_values_exit_2_naming_the_flag_and_valid_values(tmp_path, capsys, flag, value, needles):
    code = job.main(["--data", "synthetic", "--store", f"file://{tmp_path}", flag, value])
    assert code == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not list(tmp_path.iterdir())


def test_missing_data_flag_and_missing_folder(tmp_path, capsys):
    assert job.main(["--store", f"file://{tmp_path}"]) == 2
    assert "--data" in capsys.readouterr().err
    assert job.main(["--store", f"file://{tmp_path}", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_parser_lists_every_contract_flag():
    flags = {a for action in job.build_parser()._actions for a in action.option_strings}
    for f in ("--data", "--store", "--run-id", "--archs", "--formats", "--image-size", "--epochs", "--weights",
              "--runner-url", "--c", "--trigger", "--val-fraction", "--seed", "--synthetic-per-class",
              "--synthetic-image-size", "--outputs-dir", "--force"):
        assert f in flags, f
