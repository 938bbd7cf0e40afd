"""Results kept by cache key across runs: publish, verified lookup, adoption, races, bad settings."""

from __future__ import annotations

import threading

import pytest
from structlog.testing import capture_logs

from common import layout, stepcache
from common.schemas import (ClassAccuracy, ConvertReport, EvalReport, ReusedFrom, ReusedStep, TensorInfo,
                            TrainReport)
from common.store import LocalStore, open_store

KEY = "0123456789abcdef0123456789abcdef"


def eval_report(run_id: str, top1: float = 50.0) -> EvalReport:
    return EvalReport(run_id=run_id, arch="mobilenet_v2", format="int8", model_sha256="ab" * 32, count=4,
                      top1=top1, top3=75.0, per_class=[ClassAccuracy(index=0, name="Dog", count=4, top1=top1)],
                      confusion=[[4]], seconds=1.0, cache_key=KEY, code_version="test")


def convert_report(store, run_id: str, blob: bytes) -> ConvertReport:
    info = store.put_bytes(layout.tflite_model(run_id, "mobilenet_v2", "int8"), blob)
    tensor = TensorInfo(name="x", dtype="uint8", shape=[1, 32, 48, 3])
    report = ConvertReport(run_id=run_id, arch="mobilenet_v2", format="int8",
                           model={"key": info.key, "sha256": info.sha256, "size": info.size}, size_mb=0.001,
                           input=tensor, output=tensor, op_counts={"CONV_2D": 1}, converter="test", seconds=1.0,
                           source_model_sha256="cd" * 32, cache_key=KEY, code_version="test")
    store.put_json(layout.convert_json(run_id, "mobilenet_v2", "int8"), report)
    return report


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path, monkeypatch):
    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    if request.param == "file":
        return LocalStore(tmp_path / "store")
    return open_store(request.getfixturevalue("s3_store_uri"))


def test_reuse_setting_is_a_closed_set():
    assert stepcache.canonical_reuse("evaluate,train") == "train,evaluate"
    assert stepcache.canonical_reuse('["convert"]') == "convert"
    assert stepcache.canonical_reuse("all") == "train,convert,evaluate"
    assert stepcache.canonical_reuse("none") == ""
    with pytest.raises(ValueError, match="'benchmark'.*train, convert, evaluate"):
        stepcache.canonical_reuse("train,benchmark")
    assert stepcache.may_reuse("train", "train,convert", force=False)
    assert not stepcache.may_reuse("evaluate", "train,convert", force=False)
    assert not stepcache.may_reuse("train", "train,convert", force=True)


def test_bad_reuse_flag_stops_the_job_at_start(tmp_path, capsys):
    from jobs import train

    assert train.main(["--store", str(tmp_path), "--run-id", "r", "--arch", "mobilenet_v2",
                       "--reuse", "benchmark"]) == 2
    err = capsys.readouterr().err
    assert "--reuse" in err and "SCENEBENCH_REUSE" in err and "'benchmark'" in err
    assert not any(tmp_path.iterdir())


def test_a_published_result_is_found_verified_and_adopted(store):
    first = convert_report(store, "run-a", b"tflite bytes of run a")
    assert stepcache.publish(store, "convert", KEY, "run-a", layout.convert_json("run-a", "mobilenet_v2", "int8"),
                             [first.model.key])
    hit = stepcache.lookup(store, "convert", KEY)
    assert hit is not None and hit.entry.run_id == "run-a"
    with capture_logs() as logs:
        doc = stepcache.adopt(store, hit, ConvertReport, "run-b", layout.convert_json("run-b", "mobilenet_v2", "int8"))
    assert doc.run_id == "run-b" and doc.model == first.model  # referenced where run-a wrote it
    stored = store.get_model(layout.convert_json("run-b", "mobilenet_v2", "int8"), ConvertReport)
    assert stored.reused_from.run_id == "run-a"
    assert stored.reused_from.document == layout.convert_json("run-a", "mobilenet_v2", "int8")
    assert stored.reused_from.cache_entry == layout.cache_entry("convert", KEY)
    assert [e["from_run"] for e in logs if e["event"] == "step_reused"] == ["run-a"]
    assert not store.exists(layout.tflite_model("run-b", "mobilenet_v2", "int8"))


def test_adopt_copies_the_files_asked_for(store):
    pred = store.put_bytes("runs/run-a/mobilenet_v2/model/val_predictions.npz", b"predictions")
    store.put_json(layout.eval_json("run-a", "mobilenet_v2", "int8"), eval_report("run-a"))
    stepcache.publish(store, "evaluate", KEY, "run-a", layout.eval_json("run-a", "mobilenet_v2", "int8"), [pred.key])
    doc = stepcache.reuse(store, "evaluate", KEY, reuse_steps="evaluate", force=False, run_id="run-b",
                          model=EvalReport, dest_key=layout.eval_json("run-b", "mobilenet_v2", "int8"),
                          copies=lambda src: {f"runs/{src}/mobilenet_v2/model/val_predictions.npz":
                                              "runs/run-b/mobilenet_v2/model/val_predictions.npz"})
    assert doc.reused_from.run_id == "run-a"
    assert store.get_bytes("runs/run-b/mobilenet_v2/model/val_predictions.npz") == b"predictions"
    # not allowed, or forced: the step computes
    for reuse_steps, force in (("train,convert", False), ("evaluate", True)):
        assert stepcache.reuse(store, "evaluate", KEY, reuse_steps=reuse_steps, force=force, run_id="run-c",
                               model=EvalReport, dest_key=layout.eval_json("run-c", "mobilenet_v2", "int8")) is None


def test_a_result_whose_file_changed_is_not_reused(store):
    first = convert_report(store, "run-a", b"tflite bytes of run a")
    stepcache.publish(store, "convert", KEY, "run-a", layout.convert_json("run-a", "mobilenet_v2", "int8"),
                      [first.model.key])
    # the model file is overwritten behind the entry's back (same key, other bytes)
    store.put_bytes(first.model.key, b"something else entirely")
    with capture_logs() as logs:
        assert stepcache.lookup(store, "convert", KEY) is None
    (warning,) = [e for e in logs if e["event"] == "cache_entry_unusable"]
    assert "sha256" in warning["error"] or "changed" in warning["error"]
    # the next complete result replaces the entry that no longer verifies
    second = convert_report(store, "run-b", b"tflite bytes of run b")
    assert stepcache.publish(store, "convert", KEY, "run-b", layout.convert_json("run-b", "mobilenet_v2", "int8"),
                             [second.model.key])
    assert stepcache.lookup(store, "convert", KEY).entry.run_id == "run-b"


def test_a_deleted_result_is_not_reused(store):
    first = convert_report(store, "run-a", b"tflite bytes of run a")
    stepcache.publish(store, "convert", KEY, "run-a", layout.convert_json("run-a", "mobilenet_v2", "int8"),
                      [first.model.key])
    store.delete(first.model.key)
    assert stepcache.lookup(store, "convert", KEY) is None


def test_racing_runs_the_first_complete_result_wins_and_nothing_is_overwritten(store):
    runs = [f"run-{i}" for i in range(6)]
    reports = {r: convert_report(store, r, f"model of {r}".encode()) for r in runs}
    barrier = threading.Barrier(len(runs))
    won: dict[str, bool] = {}

    def finish(run_id: str) -> None:
        barrier.wait()
        won[run_id] = stepcache.publish(store, "convert", KEY, run_id,
                                        layout.convert_json(run_id, "mobilenet_v2", "int8"),
                                        [reports[run_id].model.key])

    threads = [threading.Thread(target=finish, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r, ok in won.items() if ok]
    assert len(winners) == 1
    hit = stepcache.lookup(store, "convert", KEY)
    assert hit.entry.run_id == winners[0]
    # every run still has exactly what it wrote
    for r in runs:
        assert store.get_bytes(reports[r].model.key) == f"model of {r}".encode()
        assert store.get_model(layout.convert_json(r, "mobilenet_v2", "int8"), ConvertReport).run_id == r


def test_put_bytes_if_absent_never_replaces(store):
    assert store.put_bytes_if_absent("cache/x/k.json", b"first")
    assert not store.put_bytes_if_absent("cache/x/k.json", b"second")
    assert store.get_bytes("cache/x/k.json") == b"first"
    assert store.stat("cache/x/k.json").sha256  # recorded like every object's


def test_reused_steps_and_their_description():
    a = eval_report("run-b").model_copy(
        update={"reused_from": ReusedFrom(run_id="run-a", document="d", cache_entry="c")})
    steps = stepcache.reused_steps({"mobilenet_v2": None}, {}, {("mobilenet_v2", "int8"): a})
    assert steps == [ReusedStep(step="evaluate", arch="mobilenet_v2", format="int8", from_run_id="run-a")]
    assert stepcache.describe_reused(steps) == ["reused from run run-a: evaluate mobilenet_v2/int8"]
    assert TrainReport.model_fields["reused_from"].default is None


def test_the_code_part_of_a_key_changes_with_any_edit_of_the_sources(tmp_path):
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    for package in ("common", "jobs"):
        shutil.copytree(repo / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    before = stepcache.code_fingerprint(tmp_path)
    assert before == stepcache.code_fingerprint(tmp_path)  # same tree, same key
    training = tmp_path / "common" / "training.py"
    training.write_text(training.read_text() + "\n# an uncommitted edit\n")
    # `git describe --dirty` reads the same for every uncommitted edit; the sources do not
    assert stepcache.code_fingerprint(tmp_path) != before
    (tmp_path / "jobs" / "newstep.py").write_text('"""a new module"""\n')
    assert len({before, stepcache.code_fingerprint(tmp_path)}) == 2


def test_a_step_key_follows_only_the_sources_that_step_imports(tmp_path):
    """An edit of the conversion code keeps the trained models (three networks, tens of minutes)
    and changes what convert computes; an edit of the training code changes both."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    for package in ("common", "jobs"):
        shutil.copytree(repo / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    train_src = {p.relative_to(tmp_path).as_posix() for p in stepcache.step_sources(tmp_path, "train")}
    assert {"jobs/train.py", "common/training.py", "common/archs.py", "common/dataset.py"} <= train_src
    assert "common/quantdebug.py" not in train_src and "common/conversion.py" not in train_src
    before = {s: stepcache.code_fingerprint(tmp_path, s) for s in ("train", "convert", "evaluate")}

    quantdebug = tmp_path / "common" / "quantdebug.py"
    quantdebug.write_text(quantdebug.read_text() + "\n# another choice of float layers\n")
    after = {s: stepcache.code_fingerprint(tmp_path, s) for s in ("train", "convert", "evaluate")}
    assert after["train"] == before["train"] and after["evaluate"] == before["evaluate"]
    assert after["convert"] != before["convert"]

    # a module imported only inside a function (as the jobs import TensorFlow-heavy code) counts too
    training = tmp_path / "common" / "training.py"
    training.write_text(training.read_text() + "\n# a changed recipe\n")
    assert stepcache.code_fingerprint(tmp_path, "train") != after["train"]
    assert stepcache.code_fingerprint(tmp_path, "convert") != after["convert"]  # convert imports training lazily
    with pytest.raises(ValueError, match="no job module for step 'nonesuch'"):
        stepcache.code_fingerprint(tmp_path, "nonesuch")
