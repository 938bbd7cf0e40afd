"""bench-plan (`jobs.benchmark --emit-plan`): a runner that cannot be asked fails the step (and Argo
retries it); only a runner that answers with nothing to measure gives an empty plan, with its reason."""

from __future__ import annotations

import json

import pytest

from common import layout
from common.schemas import ArtifactRef, BenchPlan, BenchResult, ConvertReport, Missing, TensorInfo
from common.store import LocalStore
from jobs import aggregate, benchmark
from tests.fixtures.runner import free_port
from tests.fixtures.xcrun import DEVICE_ID, DEVICES_JSON

RUN, ARCH, FMT = "scenebench-x7k2p", "mobilenet_v2", "int8"
OFFLINE_ID = "ios-00008030-000a1b2c3d4e5f60"  # the "Drawer phone" of the stand-in xcrun: paired, tunnel unavailable


@pytest.fixture
def store(tmp_path, tiny_models):
    s = LocalStore(tmp_path / "artifacts")
    key = layout.tflite_model(RUN, ARCH, FMT)
    info = s.put_file(key, tiny_models.int8)
    s.put_json(layout.convert_json(RUN, ARCH, FMT), ConvertReport(
        run_id=RUN, arch=ARCH, format=FMT, model=ArtifactRef(key=key, sha256=info.sha256, size=info.size),
        size_mb=round(info.size / 1e6, 3), input=TensorInfo(name="in", dtype="uint8", shape=[1, 32, 48, 3]),
        output=TensorInfo(name="out", dtype="uint8", shape=[1, 5]), op_counts={"CONV_2D": 2}, converter="test",
        seconds=0.1, source_model_sha256="0" * 64, cache_key="k", code_version="test"))
    return s


def plan_args(store, out, runner_url, token, *extra):
    # the arguments the WorkflowTemplate's bench-plan step passes
    return ["--store", store.uri, "--run-id", RUN, "--arch", ARCH, "--format", FMT, "--runner-url", runner_url,
            "--runner-token", token, "--devices", "all", "--delegates", "", "--emit-plan", str(out), *extra]


def test_unreachable_runner_fails_the_step_instead_of_an_empty_plan(store, tmp_path):
    out = tmp_path / "plan.json"
    code = benchmark.main(plan_args(store, out, f"http://127.0.0.1:{free_port()}", "t"))
    assert code == 1  # Argo's retryStrategy retries every exit code but 2
    assert not out.exists()  # no plan: the benchmark fan-out cannot be skipped as if there were nothing to do


def test_a_refused_token_fails_the_step(store, tmp_path, host_runner):
    out = tmp_path / "plan.json"
    assert benchmark.main(plan_args(store, out, host_runner.url, "not-the-token")) == 1
    assert not out.exists()


def test_plan_records_what_the_runner_listed(store, tmp_path, host_runner):
    out = tmp_path / "plan.json"
    assert benchmark.main(plan_args(store, out, host_runner.url, host_runner.token)) == 0
    plan = json.loads(out.read_text())
    doc = store.get_model(layout.bench_plan_json(RUN, ARCH, FMT), BenchPlan)
    assert [i.model_dump() for i in doc.items] == plan and len(plan) == 1 and doc.reason is None
    assert doc.runner == host_runner.url and doc.devices[0].id == plan[0]["device"]
    # the plan document lives beside bench/, which aggregate reads as measurements only
    assert not store.list(layout.bench_prefix(RUN, ARCH, FMT))


@pytest.fixture
def ios_runner(runner_factory, fake_xcrun):
    """A real runner process with its ios backend, over the stand-in xcrun on PATH."""
    def start(devices_json=DEVICES_JSON):
        return runner_factory(extra_args=["--backend", "ios", "--ios-app", fake_xcrun.app],
                              env={"FAKE_XCRUN_DEVICES": json.dumps(devices_json)}).start()
    return start


def test_runner_with_no_devices_gives_an_empty_plan_that_says_why(store, tmp_path, ios_runner):
    runner = ios_runner({"info": {"outcome": "success"}, "result": {"devices": []}})
    out = tmp_path / "plan.json"
    assert benchmark.main(plan_args(store, out, runner.url, runner.token)) == 0
    assert json.loads(out.read_text()) == []
    doc = store.get_model(layout.bench_plan_json(RUN, ARCH, FMT), BenchPlan)
    assert doc.reason == f"the runner {runner.url} lists no devices"

    # aggregate puts that reason into results.json, where the bare gap used to stand
    from common.verdict import is_explained
    from tests.test_verdict import green_results

    results = green_results().model_copy(update={"run_id": RUN})
    results.missing = [Missing(step="benchmark", arch=ARCH, format=FMT, reason="no latency measured")]
    aggregate.explain_empty_plans(store, results)
    assert results.missing[0].reason == f"no latency measured: the runner {runner.url} lists no devices"
    assert not is_explained(results.missing[0], results)  # a farm with no phone is a red night


def test_offline_phone_is_planned_and_its_gap_is_explained(store, tmp_path, ios_runner):
    """The runner lists a phone as offline: it stays in the plan, its benchmark pod records why,
    and that gap is the one kind the verdict forgives. A device id nobody lists is not forgiven."""
    runner = ios_runner()
    out = tmp_path / "plan.json"
    assert benchmark.main(plan_args(store, out, runner.url, runner.token)) == 0
    planned = {(i["device"], i["delegate"]) for i in json.loads(out.read_text())}
    assert {(OFFLINE_ID, d) for d in ("cpu", "gpu", "coreml")} <= planned
    assert (DEVICE_ID, "cpu") in planned

    def bench(device, delegate):
        # the arguments of the WorkflowTemplate's benchmark step for one plan item
        assert benchmark.main(["--store", store.uri, "--run-id", RUN, "--arch", ARCH, "--format", FMT,
                               "--runner-url", runner.url, "--runner-token", runner.token, "--devices", device,
                               "--delegates", delegate, "--num-runs", "5", "--warmup-runs", "1"]) == 0
        return store.get_model(layout.bench_json(RUN, ARCH, FMT, device, delegate), BenchResult)

    from common.verdict import is_explained
    from tests.test_verdict import green_results

    offline = bench(OFFLINE_ID, "cpu")
    assert offline.status == "missing" and offline.device.state == "offline"
    results = green_results()
    results.devices = [offline.device]
    gap = Missing(step="benchmark", arch=ARCH, format=FMT, device_id=OFFLINE_ID, delegate="cpu",
                  reason=offline.reason)  # as common.results.build_results lists it
    assert is_explained(gap, results), offline.reason

    unknown_id = "ios-00008110-000000000000dead"
    assert benchmark.main(plan_args(store, out, runner.url, runner.token, "--devices", unknown_id)) == 0
    assert json.loads(out.read_text()) == [{"device": unknown_id, "delegate": d} for d in ("cpu", "gpu", "coreml")]
    unknown = bench(unknown_id, "cpu")
    assert unknown.status == "missing" and "not listed" in unknown.reason
    results.devices = [unknown.device]
    assert not is_explained(Missing(step="benchmark", arch=ARCH, format=FMT, device_id=unknown_id, delegate="cpu",
                                    reason=unknown.reason), results)
