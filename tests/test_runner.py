"""A real `python -m runner serve` process (host backend, SQLite) over loopback HTTP."""

import json
import os
import time
import urllib.error
import urllib.request

import pytest

from common.hashing import sha256_file
from runner.api import JobRequest
from runner.client import (RunnerAuthError, RunnerClient, RunnerJobFailed, RunnerNotFound, RunnerRequestError,
                           wait_for_job)


def _req(model, device, **kw) -> JobRequest:
    return JobRequest(model_url=model.as_uri(), model_sha256=sha256_file(model), device=device, **kw)


def _raw(url, method="GET", token=None, body=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_state(client, jid, states, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(jid)
        if job.state in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {jid} never reached {states}")


def _assert_no_orphan_child(marker: str, timeout_s: float = 10) -> None:
    """The measurement child notices its parent is gone (stdin EOF) and exits."""
    if not os.path.isdir("/proc"):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if "--child" in cmd and marker in cmd:
                alive.append(pid)
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"measurement child(ren) {alive} outlived the killed runner")


def test_token_health_and_openapi(host_runner, tiny_models):
    url = host_runner.url
    assert _raw(url + "/v1/health")[0] == 200  # open
    status, body = _raw(url + "/v1/devices")
    assert status == 401 and body["error"] == "unauthorized"
    assert _raw(url + "/v1/devices", token="wrong")[0] == 401
    assert _raw(url + "/v1/jobs/job-x", token="wrong")[0] == 401
    job = _req(tiny_models.int8, "host-x").model_dump()
    assert _raw(url + "/v1/jobs", "POST", token=None, body=job)[0] == 401
    assert _raw(url + "/v1/jobs", "POST", token="wrong", body=job)[0] == 401
    status, body = _raw(url + "/v1/devices", token=host_runner.token)
    assert status == 200 and body["devices"][0]["backend"] == "host"
    status, doc = _raw(url + "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/v1/health", "/v1/devices", "/v1/jobs", "/v1/jobs/{job_id}"} <= set(doc["paths"])
    assert "JobRequest" in doc["components"]["schemas"]
    with pytest.raises(RunnerAuthError):
        RunnerClient(url, "wrong").devices()


def test_job_runs_and_submission_is_idempotent(host_runner, tiny_models):
    client = RunnerClient(host_runner.url, host_runner.token)
    device = client.devices()[0]
    assert device.id.startswith("host-") and "not an iPhone" in device.name
    req = _req(tiny_models.int8, device.id, num_runs=20, warmup_runs=2)
    first = client.submit(req)
    again = client.submit(req.model_copy(update={"model_url": req.model_url + "?sig=new"}))
    assert first.id == again.id  # a new presigned URL for the same model is the same job
    other = client.submit(req.model_copy(update={"client_key": "run-2"}))
    assert other.id != first.id
    done = wait_for_job(client, first, timeout_s=60)
    r = done.result
    assert done.state == "succeeded" and done.attempts == 1
    assert r.delegate_applied == "cpu" and r.device.backend == "host"
    assert r.timings_ms.count == 20 == len(r.samples_ms)
    assert r.timings_ms.p50 <= r.timings_ms.p90 <= r.timings_ms.max
    assert "child process" in r.memory.method
    assert client.submit(req).state == "succeeded"  # still the same, finished job


def test_bad_requests_are_typed_errors(host_runner, tiny_models):
    client = RunnerClient(host_runner.url, host_runner.token)
    dev = client.devices()[0].id
    with pytest.raises(RunnerNotFound, match="not attached"):
        client.submit(_req(tiny_models.int8, "ios-nope"))
    with pytest.raises(RunnerRequestError, match="supports delegates cpu"):
        client.submit(_req(tiny_models.int8, dev, delegate="coreml"))
    status, body = _raw(host_runner.url + "/v1/jobs", "POST", token=host_runner.token,
                        body={"model_url": "x", "model_sha256": "nothex", "device": dev, "delegate": "npu"})
    assert status == 422 and "model_sha256" in body["detail"] and "delegate" in body["detail"]
    with pytest.raises(RunnerNotFound):
        client.get("job-does-not-exist")


def test_sha256_mismatch_fails_the_job(host_runner, tiny_models):
    client = RunnerClient(host_runner.url, host_runner.token)
    dev = client.devices()[0].id
    req = _req(tiny_models.int8, dev).model_copy(update={"model_sha256": sha256_file(tiny_models.float32)})
    with pytest.raises(RunnerJobFailed, match="sha256 mismatch") as info:
        wait_for_job(client, client.submit(req), timeout_s=60)
    assert info.value.job.state == "failed" and info.value.job.result is None
    # The caller learns that the bytes differ, not what they hash to: that would tell it the
    # hash of any file or internal URL it names. The runner's own log keeps it.
    actual = sha256_file(tiny_models.int8)
    assert actual not in info.value.job.error
    assert actual in host_runner.logs()


def test_file_urls_are_confined_to_the_model_dir(runner_factory, tiny_models, tmp_path):
    inside = tmp_path / "store"  # not "models": that is where the runner caches beside its database
    inside.mkdir()
    (inside / "m.tflite").write_bytes(tiny_models.int8.read_bytes())
    rp = runner_factory(env={"SCENEBENCH_MODEL_DIR": str(inside)}).start()
    client = RunnerClient(rp.url, rp.token)
    dev = client.devices()[0].id
    with pytest.raises(RunnerJobFailed, match="is outside the runner's model directory"):
        wait_for_job(client, client.submit(_req(tiny_models.int8, dev, num_runs=3)), timeout_s=60)
    escape = _req(tiny_models.int8, dev, num_runs=3).model_copy(
        update={"model_url": f"file://{inside}/../../{tiny_models.int8.relative_to('/')}"})
    with pytest.raises(RunnerJobFailed, match="is outside the runner's model directory"):
        wait_for_job(client, client.submit(escape), timeout_s=60)
    assert wait_for_job(client, client.submit(_req(inside / "m.tflite", dev, num_runs=3)), timeout_s=60).result
    rp.stop()

    (tmp_path / "off").mkdir()
    off = runner_factory(env={"SCENEBENCH_MODEL_DIR": ""}, db=tmp_path / "off" / "runner.sqlite").start()
    client = RunnerClient(off.url, off.token)
    with pytest.raises(RunnerJobFailed, match="file:// model URLs are off on this runner"):
        wait_for_job(client, client.submit(_req(inside / "m.tflite", dev, num_runs=3, client_key="off")),
                     timeout_s=60)


def test_one_job_per_device_at_a_time_in_fifo_order(host_runner, slow_model):
    client = RunnerClient(host_runner.url, host_runner.token)
    dev = client.devices()[0].id
    jobs = [client.submit(_req(slow_model, dev, num_runs=800, warmup_runs=1, client_key=f"k{i}")) for i in range(3)]
    done = [wait_for_job(client, j, timeout_s=120) for j in jobs]
    spans = [(d.started_at, d.finished_at) for d in done]
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert e1 <= s2, f"jobs overlapped: {spans}"  # FIFO and never two at once


def test_results_survive_a_restart(runner_factory, tiny_models):
    rp = runner_factory().start()
    client = RunnerClient(rp.url, rp.token)
    req = _req(tiny_models.float32, client.devices()[0].id, num_runs=10)
    done = wait_for_job(client, client.submit(req), timeout_s=60)
    rp.stop()
    rp.start()
    after = client.get(done.id)
    assert after.state == "succeeded" and after.result == done.result and after.attempts == 1


def test_job_interrupted_by_sigkill_is_rerun_after_restart(runner_factory, slow_model):
    rp = runner_factory().start()
    client = RunnerClient(rp.url, rp.token)
    req = _req(slow_model, client.devices()[0].id, num_runs=6000, warmup_runs=1)
    job = client.submit(req)
    _wait_state(client, job.id, {"running"})
    time.sleep(0.5)
    rp.kill()
    _assert_no_orphan_child(str(rp.db.parent / "models"))
    rp.start()
    assert client.get(job.id).state in ("queued", "running")
    done = wait_for_job(client, job, timeout_s=180)
    assert done.state == "succeeded" and done.attempts == 2
    assert done.result.timings_ms.count == 6000
    assert "jobs_requeued" in rp.logs()


def test_runner_refuses_to_start_without_a_token(runner_factory):
    rp = runner_factory(token="")
    with pytest.raises(RuntimeError, match="exited with 2"):
        rp.start(timeout_s=20)
