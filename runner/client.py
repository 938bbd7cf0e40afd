"""Clients of the runner: HTTP (`RunnerClient`) and in-process host (`LocalHostRunner`), with typed errors."""

from __future__ import annotations

import json
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

from common import hostbench
from common.errors import RunnerError, ScenebenchError
from common.schemas import DeviceInfo
from runner.api import DevicesResponse, JobRequest, JobResult, JobView
from runner.fetch import fetch_model
from runner.jobstore import job_id


class RunnerUnavailable(RunnerError):
    """The runner could not be reached, timed the request out (408), or answered with a server error
    (5xx, e.g. 503 when it holds too many connections); retrying may help."""


class RunnerAuthError(RunnerError):
    """The runner refused the token (HTTP 401)."""


class RunnerRequestError(RunnerError):
    """The runner refused the request as invalid (HTTP 400/411/413/422/431)."""


class RunnerNotFound(RunnerError):
    """No such device or job on the runner (HTTP 404)."""


class RunnerJobFailed(RunnerError):
    """The job ran and failed; `job` holds the runner's record with its error."""

    def __init__(self, message: str, job: JobView):
        super().__init__(message)
        self.job = job


class RunnerTimeout(RunnerError):
    """The job did not finish within the caller's time budget."""


class Runner(Protocol):
    """What the benchmark step needs from a runner, remote or in-process."""

    label: str

    def devices(self) -> list[DeviceInfo]: ...

    def submit(self, request: JobRequest) -> JobView: ...

    def get(self, jid: str) -> JobView: ...


_STATUS_ERRORS: dict[int, type[RunnerError]] = {
    400: RunnerRequestError, 401: RunnerAuthError, 404: RunnerNotFound, 408: RunnerUnavailable,
    411: RunnerRequestError, 413: RunnerRequestError, 422: RunnerRequestError, 431: RunnerRequestError,
}


class RunnerClient:
    """The runner's HTTP API with urllib (no extra dependency on a Mac or in a pod)."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.label = self.url
        self.token = token
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read() or b"{}").get("detail") or exc.reason
            except (json.JSONDecodeError, AttributeError):
                detail = exc.reason
            cls = _STATUS_ERRORS.get(exc.code, RunnerUnavailable if exc.code >= 500 else RunnerError)
            raise cls(f"runner {self.url} answered {method} {path} with HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RunnerUnavailable(f"runner {self.url} is unreachable ({method} {path}): {reason}") from None

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/v1/health", auth=False)

    def devices(self) -> list[DeviceInfo]:
        return DevicesResponse.model_validate(self._call("GET", "/v1/devices")).devices

    def submit(self, request: JobRequest) -> JobView:
        return JobView.model_validate(self._call("POST", "/v1/jobs", request.model_dump()))

    def get(self, jid: str) -> JobView:
        return JobView.model_validate(self._call("GET", f"/v1/jobs/{jid}"))


class LocalHostRunner:
    """The host backend in this process, with the same interface: what `make run` uses with no runner URL.

    The measurement itself still runs in a fresh child process (hostbench isolate=True), so its
    memory numbers are not those of the pipeline that imported TensorFlow.
    """

    label = "in-process"

    def __init__(self, cache_dir: str | Path | None = None, timeout_s: float | None = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="scenebench-host-") if cache_dir is None else None
        self.cache_dir = Path(cache_dir or self._tmp.name)
        self.timeout_s = timeout_s
        self._device = hostbench.host_device()
        self._jobs: dict[str, JobView] = {}

    def devices(self) -> list[DeviceInfo]:
        return [self._device]

    def submit(self, request: JobRequest) -> JobView:
        from runner.backends import HostBackend

        jid = job_id(request)
        if jid in self._jobs and self._jobs[jid].state == "succeeded":
            return self._jobs[jid]
        if request.device != self._device.id:
            raise RunnerNotFound(f"device {request.device!r} is not this host ({self._device.id})")
        now = datetime.now(timezone.utc)
        result: JobResult | None = None
        error = None
        try:
            # file_root "/": this process wrote the model itself; confinement guards a served runner's callers.
            model = fetch_model(request.model_url, request.model_sha256, self.cache_dir, file_root="/")
            result = HostBackend(timeout_s=self.timeout_s).run(self._device, model, request)
        except ScenebenchError as exc:
            error = str(exc)
        view = JobView(id=jid, state="failed" if error else "succeeded", request=request, attempts=1,
                       created_at=now, started_at=now, finished_at=datetime.now(timezone.utc),
                       result=result, error=error)
        self._jobs[jid] = view
        return view

    def get(self, jid: str) -> JobView:
        if jid not in self._jobs:
            raise RunnerNotFound(f"no job {jid!r} in this process")
        return self._jobs[jid]


def wait_for_job(runner: Runner, job: JobView, timeout_s: float, *, first_poll_s: float = 0.2,
                 max_poll_s: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> JobView:
    """Poll until the job is finished, backing off ×1.5 up to max_poll_s; raise on failure or timeout.

    A runner that drops off the network for a moment is tolerated (its jobs are durable);
    only the overall time budget ends the wait.
    """
    deadline = time.monotonic() + timeout_s
    delay = first_poll_s
    last_error: Exception | None = None
    while True:
        if job.state == "succeeded":
            return job
        if job.state == "failed":
            raise RunnerJobFailed(f"job {job.id} failed on {job.request.device}: {job.error}", job)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            extra = f"; last poll error: {last_error}" if last_error else ""
            raise RunnerTimeout(f"job {job.id} still {job.state} after {timeout_s:.0f} s{extra}")
        sleep(min(delay, remaining))
        delay = min(delay * 1.5, max_poll_s)
        try:
            job = runner.get(job.id)
            last_error = None
        except RunnerUnavailable as exc:
            last_error = exc
