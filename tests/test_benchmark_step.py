"""jobs.benchmark: in-process host runner, a real runner over HTTP, a runner that is down, the plan, the cache."""

import json

import pytest
import structlog

from common import layout
from common.hashing import sha256_file
from common.logging import configure
from common.schemas import ArtifactRef, BenchResult, ConvertReport, TensorInfo
from common.store import LocalStore
from jobs import benchmark
from tests.fixtures.runner import free_port

RUN, ARCH, FMT = "r1", "mobilenet_v2", "int8"


@pytest.fixture
def store(tmp_path, tiny_models):
    s = LocalStore(tmp_path / "artifacts")
    key = layout.tflite_model(RUN, ARCH, FMT)
    info = s.put_file(key, tiny_models.int8)
    report = ConvertReport(
        run_id=RUN, arch=ARCH, format=FMT, model=ArtifactRef(key=key, sha256=info.sha256, size=info.size),
        size_mb=round(info.size / 1e6, 3),
        input=TensorInfo(name="in", dtype="uint8", shape=[1, 32, 48, 3]),
        output=TensorInfo(name="out", dtype="uint8", shape=[1, 5]),
        op_counts={"CONV_2D": 2}, converter="test", seconds=0.1, source_model_sha256="0" * 64,
        cache_key="k", code_version="test",
    )
    s.put_json(layout.convert_json(RUN, ARCH, FMT), report)
    return s


def _args(store, *extra):
    return ["--store", store.uri, "--run-id", RUN, "--arch", ARCH, "--format", FMT,
            "--num-runs", "15", "--warmup-runs", "2", *extra]


def _bench_docs(store):
    keys = store.list(layout.bench_prefix(RUN, ARCH, FMT))
    return {k: store.get_model(k, BenchResult) for k in keys}


def test_in_process_default_writes_a_host_result_then_caches(store, tiny_models, monkeypatch, tmp_path):
    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    assert benchmark.main(_args(store)) == 0
    docs = _bench_docs(store)
    assert len(docs) == 1
    (key, doc), = docs.items()
    assert key == layout.bench_json(RUN, ARCH, FMT, doc.device.id, "cpu")
    assert doc.status == "ok" and doc.runner == "in-process"
    assert doc.device.backend == "host" and doc.delegate_applied == "cpu"
    assert doc.model_sha256 == sha256_file(tiny_models.int8)
    assert doc.timings_ms.count == 15 == len(doc.samples_ms) and doc.memory.peak_mb > 0

    configure()
    settings = benchmark.BenchmarkSettings(store=store.uri, run_id=RUN, arch=ARCH, format=FMT,
                                           num_runs=15, warmup_runs=2)
    with structlog.testing.capture_logs() as events:
        summary = benchmark.run_benchmark(settings, store)
    assert summary["cached"] == 1 and summary["ok"] == 0
    assert any(e["event"] == "step_cached" for e in events)
    assert _bench_docs(store)[key].measured_at == doc.measured_at

    # different parameters are not the cached result
    with structlog.testing.capture_logs() as events:
        summary = benchmark.run_benchmark(settings.model_copy(update={"num_runs": 16}), store)
    assert summary["ok"] == 1 and not any(e["event"] == "step_cached" for e in events)


def test_through_a_real_runner(store, host_runner):
    assert benchmark.main(_args(store, "--runner-url", host_runner.url, "--runner-token", host_runner.token)) == 0
    (doc,) = _bench_docs(store).values()
    assert doc.status == "ok" and doc.runner == host_runner.url and doc.runner_job_id.startswith("job-")
    assert doc.device.backend == "host" and doc.timings_ms.count == 15


def test_runner_down_records_missing_and_goes_on(store, monkeypatch):
    monkeypatch.setenv("SCENEBENCH_RUNNER_TOKEN", "t")
    url = f"http://127.0.0.1:{free_port()}"
    code = benchmark.main(_args(store, "--runner-url", url, "--devices", "host-lab-cpu,ios-00008101-001a2c3e1234001e",
                                "--retries", "1"))
    assert code == 0
    docs = _bench_docs(store)
    assert {(d.device.id, d.delegate_requested) for d in docs.values()} == {
        ("host-lab-cpu", "cpu"), ("ios-00008101-001a2c3e1234001e", "cpu"),
        ("ios-00008101-001a2c3e1234001e", "gpu"), ("ios-00008101-001a2c3e1234001e", "coreml")}
    for d in docs.values():
        assert d.status == "missing" and "unreachable" in d.reason
        assert d.timings_ms is None and d.samples_ms == [] and d.memory is None  # nothing invented


def test_failed_job_is_retried_then_recorded_missing(store, host_runner, tiny_models):
    # Corrupt the stored model so the runner's sha256 check fails every attempt.
    path = store.root / layout.tflite_model(RUN, ARCH, FMT)
    path.write_bytes(tiny_models.float32.read_bytes())
    assert benchmark.main(_args(store, "--runner-url", host_runner.url, "--runner-token", host_runner.token,
                                "--retries", "1")) == 0
    (doc,) = _bench_docs(store).values()
    assert doc.status == "missing" and "failed 2 times" in doc.reason and "sha256 mismatch" in doc.reason


def test_emit_plan(store, host_runner, tmp_path):
    out = tmp_path / "plan.json"
    assert benchmark.main(["--runner-url", host_runner.url, "--runner-token", host_runner.token,
                           "--emit-plan", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert len(plan) == 1 and plan[0]["device"].startswith("host-") and plan[0]["delegate"] == "cpu"


def test_config_errors_exit_2(store):
    assert benchmark.main(_args(store, "--delegates", "cpu,npu")) == 2
    assert benchmark.main(_args(store, "--runner-url", "http://127.0.0.1:1", "--runner-token", "")) == 2
    assert benchmark.main(["--store", store.uri, "--run-id", RUN]) == 2  # no --arch/--format
