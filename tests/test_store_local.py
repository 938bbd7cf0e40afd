"""LocalStore, the embedded default: round trips, sha256 sidecars, checksum checks, listing, atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from common.errors import ChecksumError, ConfigError, NotFoundError
from common.schemas import ArtifactRef
from common.store import SHA_SUFFIX, LocalStore, open_store


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "artifacts")


def test_open_store_forms(tmp_path):
    assert isinstance(open_store(f"file://{tmp_path}/a"), LocalStore)
    assert open_store(f"file://{tmp_path}/a").root == (tmp_path / "a").resolve()
    assert open_store(str(tmp_path / "b")).root == (tmp_path / "b").resolve()
    with pytest.raises(ConfigError, match="unknown scheme 'gs'"):
        open_store("gs://bucket/x")
    with pytest.raises(ConfigError, match="empty"):
        open_store("")


def test_round_trips(store, tmp_path):
    info = store.put_bytes("a/b.bin", b"hello")
    assert info.sha256 == hashlib.sha256(b"hello").hexdigest() and info.size == 5
    assert store.get_bytes("a/b.bin") == b"hello"

    store.put_json("a/doc.json", {"z": 1, "a": 2})
    assert store.get_json("a/doc.json") == {"a": 2, "z": 1}
    ref = ArtifactRef(key="k", sha256="0" * 64, size=3)
    store.put_json("a/ref.json", ref)
    assert store.get_model("a/ref.json", ArtifactRef) == ref
    assert store.try_get_model("a/missing.json", ArtifactRef) is None

    src = tmp_path / "model.tflite"
    src.write_bytes(os.urandom(100_000))
    put = store.put_file("runs/r/m/float32/model.tflite", src)
    out = store.get_file("runs/r/m/float32/model.tflite", tmp_path / "o" / "m.tflite", sha256=put.sha256)
    assert out.read_bytes() == src.read_bytes()


def test_sha256_sidecar_is_written_and_read(store):
    info = store.put_bytes("runs/r/run.json", b"{}")
    side = store.root / ("runs/r/run.json" + SHA_SUFFIX)
    assert side.read_text().strip() == info.sha256
    assert store.stat("runs/r/run.json").sha256 == info.sha256
    assert store.stat("runs/r/none.json") is None


def test_checksum_mismatch_is_detected_and_destination_untouched(store, tmp_path):
    store.put_bytes("runs/r/m.tflite", b"real")
    (store.root / "runs/r/m.tflite").write_bytes(b"tampered")  # behind the store's back
    dest = tmp_path / "copy.tflite"
    dest.write_bytes(b"previous")
    with pytest.raises(ChecksumError, match="runs/r/m.tflite"):
        store.get_file("runs/r/m.tflite", dest)
    assert dest.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "copy.tflite"]

    store.put_bytes("ok.bin", b"ok")
    with pytest.raises(ChecksumError):
        store.get_bytes("ok.bin", sha256="0" * 64)


def test_put_refuses_a_file_that_does_not_match_the_given_sha(store, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    with pytest.raises(ChecksumError):
        store.put_file("f", src, sha256="0" * 64)
    assert store.stat("f") is None


def test_list_is_recursive_sorted_and_hides_sidecars_and_temp_files(store):
    keys = ["runs/r1/run.json", "runs/r1/a/train.json", "runs/r2/run.json", "datasets/fp/dataset.json"]
    for k in keys:
        store.put_bytes(k, b"x")
    (store.root / "runs/r1/.tmp-abandoned").write_bytes(b"half")
    assert store.list() == sorted(keys)
    assert store.list("runs/r1/") == ["runs/r1/a/train.json", "runs/r1/run.json"]
    assert store.list("nothing/") == []
    assert LocalStore(store.root / "never-created").list() == []


def test_missing_delete_and_bad_keys(store, tmp_path):
    with pytest.raises(NotFoundError):
        store.get_bytes("none")
    store.put_bytes("x", b"1")
    store.delete("x")
    store.delete("x")
    assert not store.exists("x") and not (store.root / ("x" + SHA_SUFFIX)).exists()
    for bad in ("../escape", "a/../../b", ""):
        with pytest.raises(ValueError):
            store.put_bytes(bad, b"no")
    assert store.url("runs/r/m.tflite").startswith("file://")


def test_writes_are_atomic_and_leave_no_temp_files(store, tmp_path, monkeypatch):
    store.put_bytes("runs/r/m.tflite", b"version 1")
    # A copy that dies half-way must leave the old object, its checksum and no debris.
    import shutil

    def broken_copy(src, dst, *a, **k):
        Path(dst).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", broken_copy)
    src = tmp_path / "v2"
    src.write_bytes(b"version 2")
    with pytest.raises(OSError, match="disk full"):
        store.put_file("runs/r/m.tflite", src)
    monkeypatch.undo()
    assert store.get_bytes("runs/r/m.tflite") == b"version 1"
    assert sorted(p.name for p in (store.root / "runs/r").iterdir()) == ["m.tflite", "m.tflite" + SHA_SUFFIX]


def test_get_prefix_keeps_relative_paths(store, tmp_path):
    for k in ("runs/r/a/train.json", "runs/r/a/float32/model.tflite", "runs/r/run.json"):
        store.put_bytes(k, k.encode())
    got = store.get_prefix("runs/r/a/", tmp_path / "dl")
    assert sorted(p.relative_to(tmp_path / "dl").as_posix() for p in got) == ["float32/model.tflite", "train.json"]
    assert (tmp_path / "dl" / "train.json").read_bytes() == b"runs/r/a/train.json"
