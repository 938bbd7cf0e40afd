"""The whole pipeline against the loopback S3 server: the DESIGN.md tree, then a re-run served from the caches."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from common import layout
from common.store_s3 import S3Store
from jobs import pipeline
from tests.fixtures.s3 import apply_s3_env, ensure_bucket

ARCH, FMT, RUN = "mobilenet_v2", "float32", "r1"
# Each step of a finished run re-run with the same inputs must say it was served from its cache.
# aggregate has no cache: it is cheap and re-reads the step documents to rebuild results.json.
CACHED_STEPS = {"prepare", "train", "convert", "evaluate", "benchmark"}


def _events(text: str) -> list[dict]:
    """The JSON log lines among a job's stdout (which also carries the leaderboard for people)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def _etags(server, bucket: str, prefix: str) -> dict[str, str]:
    client = server.client()
    return {o.object_name[len(prefix):]: o.etag
            for o in client.list_objects(bucket, prefix=prefix, recursive=True)}


@pytest.mark.slow
def test_pipeline_on_s3_writes_the_tree_and_a_rerun_is_cached(s3_server, s3_bucket, monkeypatch,
                                                              tmp_path, capsys):
    apply_s3_env(monkeypatch, s3_server, SCENEBENCH_S3_RETRY_SECONDS="30")
    # JSON lines: the jobs reconfigure logging when they start, so their events are read back
    # from the lines they print, exactly as a log collector in a pod sees them.
    monkeypatch.setenv("SCENEBENCH_LOG_FORMAT", "json")
    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    ensure_bucket(s3_server.client(), s3_bucket)
    prefix = f"run-test-{uuid.uuid4().hex[:8]}"
    uri = f"s3://{s3_bucket}/{prefix}"
    argv = ["--store", uri, "--run-id", RUN, "--data", "synthetic", "--archs", ARCH,
            "--formats", FMT, "--image-size", "32x48", "--epochs", "1", "--weights", "none",
            "--synthetic-per-class", "3", "--num-runs", "3", "--warmup-runs", "1",
            "--baseline", "none"]

    assert pipeline.main(argv) == 0, capsys.readouterr().err[-3000:]
    first = _events(capsys.readouterr().out)
    assert not [e for e in first if e.get("event") in ("step_failed", "step_crashed")]

    store = S3Store.from_uri(uri)
    keys = store.list()
    fps = {k.split("/")[1] for k in keys if k.startswith("datasets/")}
    assert len(fps) == 1
    fp = fps.pop()
    expected = [
        layout.dataset_json(fp),
        layout.run_json(RUN),
        layout.train_json(RUN, ARCH),
        layout.keras_model(RUN, ARCH),
        layout.tflite_model(RUN, ARCH, FMT),
        layout.convert_json(RUN, ARCH, FMT),
        layout.eval_json(RUN, ARCH, FMT),
        layout.results_json(RUN),
        layout.leaderboard_md(RUN),
        layout.report_html(RUN),
        layout.pareto_png(RUN),
        layout.LATEST,
    ]
    missing = [k for k in expected if k not in keys]
    assert not missing, f"missing {missing} in {keys}"
    assert any(k.startswith(layout.dataset_prefix(fp)) and k.endswith(".tfrecord") for k in keys)
    assert any(k.startswith(layout.checkpoint_prefix(RUN, ARCH)) for k in keys)
    assert any(re.fullmatch(rf"runs/{RUN}/{ARCH}/{FMT}/bench/[^/]+/cpu\.json", k) for k in keys)
    assert any(re.fullmatch(rf"results/history/\d{{4}}-?\d{{2}}-?\d{{2}}.*-{RUN}\.json", k) for k in keys)
    # Every object the jobs wrote carries its sha256 in S3 metadata.
    assert all(store.stat(k).sha256 for k in keys)
    # results.json references verify against the store.
    results = store.get_json(layout.results_json(RUN))
    assert results["run_id"] == RUN and results["models"][0]["status"] == "ok"

    before = _etags(s3_server, s3_bucket, prefix + "/")
    assert pipeline.main(argv) == 0, capsys.readouterr().err[-3000:]
    second = _events(capsys.readouterr().out)
    cached = {e.get("step") for e in second if e.get("event") == "step_cached"}
    assert CACHED_STEPS <= cached, f"not served from cache: {CACHED_STEPS - cached}"
    after = _etags(s3_server, s3_bucket, prefix + "/")
    # Nothing a cached step owns was written again.
    step_outputs = [k for k in before if k.startswith(("datasets/", f"runs/{RUN}/{ARCH}/"))]
    assert step_outputs and all(after[k] == before[k] for k in step_outputs)

    # A new run with the same inputs finds run r1's results in the store: nothing trained or
    # converted again, r1's files referenced, the latency measured afresh.
    argv2 = [a if a != RUN else "r2" for a in argv]
    assert pipeline.main(argv2) == 0, capsys.readouterr().err[-3000:]
    third = _events(capsys.readouterr().out)
    assert not [e for e in third if e.get("event") == "epoch_done"]
    reused = {(e.get("step"), e.get("from_run")) for e in third if e.get("event") == "step_reused"}
    assert reused == {("train", RUN), ("convert", RUN), ("evaluate", RUN)}
    conv = store.get_json(layout.convert_json("r2", ARCH, FMT))
    assert conv["reused_from"]["run_id"] == RUN and conv["model"]["key"] == layout.tflite_model(RUN, ARCH, FMT)
    assert any(re.fullmatch(rf"runs/r2/{ARCH}/{FMT}/bench/[^/]+/cpu\.json", k) for k in store.list("runs/r2/"))
    assert store.get_json(layout.results_json("r2"))["reused"]
