"""The pipeline measured through a real runner process gives the same kind of results as in-process."""

import pytest

from common import layout
from common.schemas import BenchResult, Results
from common.store import LocalStore
from jobs import pipeline

pytestmark = pytest.mark.slow

TINY = ["--data", "synthetic", "--archs", "mobilenet_v2", "--formats", "float32", "--image-size", "32x48",
        "--epochs", "1", "--weights", "none", "--synthetic-per-class", "3", "--num-runs", "5",
        "--warmup-runs", "1", "--baseline", "none"]


def _filled(entry) -> set[str]:
    return {k for k, v in entry.model_dump().items() if v is not None}


def test_runner_url_and_in_process_give_the_same_kind_of_results(tmp_path, monkeypatch, host_runner):
    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCENEBENCH_RUNNER_TOKEN", host_runner.token)
    store = LocalStore(tmp_path / "store")
    assert pipeline.main(["--store", str(store.root), "--run-id", "local", *TINY]) == 0
    assert pipeline.main(["--store", str(store.root), "--run-id", "remote", "--runner-url", host_runner.url,
                          *TINY]) == 0
    local = store.get_model(layout.results_json("local"), Results).models[0].latency
    remote = store.get_model(layout.results_json("remote"), Results).models[0].latency
    assert len(local) == len(remote) == 1
    assert remote[0].status == "ok" and remote[0].backend == "host" and remote[0].delegate_applied == "cpu"
    assert _filled(remote[0]) == _filled(local[0])
    assert remote[0].device_id == local[0].device_id  # the same machine, named the same way
    doc = store.get_model(remote[0].key, BenchResult)
    assert doc.runner == host_runner.url and doc.runner_job_id
    assert len(doc.samples_ms) == 5 and doc.memory and doc.memory.peak_mb > 0
    assert store.get_model(local[0].key, BenchResult).runner == "in-process"
