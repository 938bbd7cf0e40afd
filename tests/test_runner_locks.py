"""One process per phone, one runner per job database, and a cap on attempts cut short by a crash.

Real runner processes on loopback, a real `python -m runner try`, real flock(2) locks and SQLite.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.hashing import sha256_file
from runner.api import JobRequest
from runner.client import RunnerClient, RunnerJobFailed, wait_for_job
from runner.jobstore import JobStore
from runner.locks import DeviceLocks, FileLock, LockBusy, this_process

ROOT = Path(__file__).resolve().parents[1]


def _req(model, device, **kw) -> JobRequest:
    return JobRequest(model_url=model.as_uri(), model_sha256=sha256_file(model), device=device, **kw)


def _wait_state(client, jid, states, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(jid)
        if job.state in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {jid} never reached {states}")


def _try_cmd(model, *args) -> list[str]:
    return [sys.executable, "-m", "runner", "try", "--model", str(model), "--num-runs", "3", "--warmup-runs", "1",
            *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "SCENEBENCH_LOG_FORMAT": "json"}


# ---------------------------------------------------------------- the lock itself
def test_a_file_lock_is_exclusive_and_names_its_holder(tmp_path):
    first, second = FileLock(tmp_path / "d.lock", "device d"), FileLock(tmp_path / "d.lock", "device d")
    assert first.try_acquire(this_process(job="job-1"))
    assert not second.try_acquire(this_process())  # flock: per open file, even within one process
    with pytest.raises(LockBusy, match=rf"device d is in use by pid {os.getpid()} .*job job-1") as info:
        second.acquire(this_process(), wait_s=0.3, poll_s=0.1)
    assert info.value.holder["pid"] == os.getpid()
    first.release()
    assert second.try_acquire(this_process()) and second.held
    second.release()
    assert (tmp_path / "d.lock").read_text() == ""  # no stale description once free


def test_device_lock_files_stay_in_their_folder(tmp_path):
    lock = DeviceLocks(tmp_path / "locks").lock("../../etc/ios-x")
    assert lock.path.parent == tmp_path / "locks"


# ---------------------------------------------------------------- one runner per database
def test_a_second_runner_on_the_same_database_exits_naming_the_first(runner_factory):
    first = runner_factory().start()
    second = runner_factory(db=first.db)
    with pytest.raises(RuntimeError, match="exited with 2") as info:
        second.start(timeout_s=30)
    message = str(info.value)
    assert f"another runner already serves the job database {first.db}" in message
    assert f"pid {first.proc.pid}" in message and f"listening http://127.0.0.1:{first.port}" in message
    first.stop()
    second.start()  # the lock went with the first process
    assert RunnerClient(second.url, second.token).devices()


# ---------------------------------------------------------------- one process per phone
def test_try_fails_clearly_while_a_served_job_holds_the_phone(runner_factory, slow_model, tiny_models):
    rp = runner_factory().start()
    client = RunnerClient(rp.url, rp.token)
    device = client.devices()[0].id
    job = client.submit(_req(slow_model, device, num_runs=100_000, warmup_runs=1))
    _wait_state(client, job.id, {"running"})
    proc = subprocess.run(_try_cmd(tiny_models.int8, "--device", device), capture_output=True, text=True,
                          timeout=120, env=_env(), cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert f"device {device} is in use by pid {rp.proc.pid}" in proc.stderr
    assert f"job {job.id}" in proc.stderr and "--lock-wait-s" in proc.stderr
    assert proc.stdout == ""  # nothing measured


def test_a_served_job_waits_while_another_process_holds_the_phone(runner_factory, tiny_models, runner_lock_dir):
    rp = runner_factory().start()
    client = RunnerClient(rp.url, rp.token)
    device = client.devices()[0].id
    held = DeviceLocks(runner_lock_dir).lock(device)
    assert held.try_acquire(this_process(command="python -m runner try (held by the test)"))
    try:
        job = client.submit(_req(tiny_models.int8, device, num_runs=5, warmup_runs=1))
        deadline = time.monotonic() + 30
        while '"event": "device_in_use"' not in rp.logs():
            assert time.monotonic() < deadline, rp.logs()
            time.sleep(0.1)
        assert client.get(job.id).state == "queued"  # not claimed, so not running on a busy phone
        assert f"pid {os.getpid()} (python -m runner try (held by the test))" in rp.logs()
    finally:
        held.release()
    done = wait_for_job(client, job, timeout_s=60)
    assert done.state == "succeeded" and done.attempts == 1


def test_try_waits_for_the_phone_when_asked_to(tiny_models, runner_lock_dir):
    from common.hostbench import host_device

    held = DeviceLocks(runner_lock_dir).lock(host_device().id)
    assert held.try_acquire(this_process())
    proc = subprocess.Popen(_try_cmd(tiny_models.int8, "--lock-wait-s", "120"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        waiting = ""
        while "waiting_for_device" not in waiting:
            assert time.monotonic() < deadline and proc.poll() is None, waiting
            waiting += proc.stderr.readline()
    finally:
        held.release()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["timings_ms"]["count"] == 3


# ---------------------------------------------------------------- attempt cap
def test_jobs_cut_short_too_often_fail_with_the_reason(tmp_path, tiny_models):
    store = JobStore(tmp_path / "jobs.sqlite")
    job, _ = store.submit(_req(tiny_models.int8, "host-x"))
    for attempt in (1, 2):
        assert store.claim_next("host-x").attempts == attempt
        assert store.requeue_running(max_attempts=3) == ([job.id], {})  # the runner died mid-job
        assert store.get(job.id).interrupted == attempt
    assert store.claim_next("host-x").attempts == 3
    requeued, failed = store.requeue_running(max_attempts=3)
    assert requeued == [] and "3 time(s) in a row" in failed[job.id] and "--max-attempts" in failed[job.id]
    view = store.get(job.id)
    assert view.state == "failed" and view.error == failed[job.id] and view.finished_at is not None
    # Sending it again is a fresh start: the count is per submission.
    again, changed = store.submit(_req(tiny_models.int8, "host-x"))
    assert changed and again.state == "queued" and again.interrupted == 0
    store.close()


def test_a_database_from_before_the_cap_still_opens(tmp_path, tiny_models):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, device TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
            request TEXT NOT NULL, result TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, started_at REAL, finished_at REAL);""")
    req = _req(tiny_models.int8, "host-x")
    db.execute("INSERT INTO jobs (id, seq, device, state, request, attempts, created_at, started_at) "
               "VALUES ('job-old', 1, 'host-x', 'running', ?, 1, 0, 0)", (req.model_dump_json(),))
    db.commit()
    db.close()
    store = JobStore(path)
    assert store.requeue_running(max_attempts=3) == (["job-old"], {})
    assert store.get("job-old").interrupted == 1
    store.close()


def test_a_runner_gives_up_on_a_job_after_max_attempts(runner_factory, slow_model):
    rp = runner_factory(extra_args=["--max-attempts", "1"]).start()
    client = RunnerClient(rp.url, rp.token)
    job = client.submit(_req(slow_model, client.devices()[0].id, num_runs=100_000, warmup_runs=1))
    _wait_state(client, job.id, {"running"})
    rp.kill()
    rp.start()
    with pytest.raises(RunnerJobFailed, match=r"the runner stopped while running this job, 1 time\(s\)") as info:
        wait_for_job(client, client.get(job.id), timeout_s=30)
    assert info.value.job.attempts == 1 and info.value.job.interrupted == 1
    assert '"event": "job_failed"' in rp.logs()
    assert "jobs_requeued" not in rp.logs()
