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


def test_pipeline_through_an_ios_runner(tmp_path, monkeypatch, fake_xcrun, runner_factory):
    """The whole pipeline against a real runner process driving (stand-in) iPhones: labels, delegates, score basis."""
    from tests.fixtures.xcrun import DEVICE_ID

    # No cooldown between the delegates here: the stand-in phone does not warm up.
    rp = runner_factory(extra_args=["--backend", "ios", "--ios-app", fake_xcrun.app, "--cooldown-s", "0"],
                        env=fake_xcrun.env).start()
    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCENEBENCH_RUNNER_TOKEN", rp.token)
    store = LocalStore(tmp_path / "store")
    args = [a if a != "float32" else "float32,int8" for a in TINY]
    assert pipeline.main(["--store", str(store.root), "--run-id", "phones", "--runner-url", rp.url, *args]) == 0
    results = store.get_model(layout.results_json("phones"), Results)
    devices = {d.id: d for d in results.devices}
    assert devices[DEVICE_ID].model == "iPhone13,3"
    drawer = "ios-00008030-000a1b2c3d4e5f60"  # paired, tunnel unavailable: a gap with its reason, no retries
    assert devices[drawer].state == "offline"
    by_format = {m.format: m for m in results.models}
    for fmt, m in by_format.items():
        entries = {e.delegate_requested: e for e in m.latency if e.device_id == DEVICE_ID}
        assert set(entries) == {"cpu", "gpu", "coreml"}, fmt
        assert all(e.backend == "ios" and e.status == "ok" and "iPhone 12 Pro" in e.device_name
                   for e in entries.values())
        gaps = [e for e in m.latency if e.device_id == drawer]
        assert len(gaps) == 3 and all(e.status == "missing" and e.reason.startswith(
            "device offline on the runner: unreachable") for e in gaps)
        assert m.score_basis == "Lab 12 Pro (iPhone 12 Pro) · cpu" and m.score == entries["cpu"].score
    # Core ML took 3 of the float graph's 71 nodes: partial, and flagged as mostly on the CPU.
    coreml_float = next(e for e in by_format["float32"].latency
                        if e.delegate_requested == "coreml" and e.device_id == DEVICE_ID)
    assert coreml_float.delegate_applied == "partial" and "3 of 71 nodes" in (coreml_float.reason or "")
    assert any(f.startswith("mostly on CPU") for f in coreml_float.flags)
    # Core ML takes float models only: the int8 model ran on the CPU, and says so.
    coreml_int8 = next(e for e in by_format["int8"].latency
                       if e.delegate_requested == "coreml" and e.device_id == DEVICE_ID)
    assert coreml_int8.delegate_applied == "cpu" and "ran on the CPU" in (coreml_int8.reason or "")
    board = store.get_bytes(layout.leaderboard_md("phones")).decode()
    assert "| Lab 12 Pro (iPhone 12 Pro) · cpu |" in board and "Host CPU" not in board  # no host row
