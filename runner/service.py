"""The runner service: per-device FIFO workers over the SQLite job table, and the HTTP API in front."""

from __future__ import annotations

import hmac
import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError

from common import __version__
from common.errors import ScenebenchError
from common.logging import get_logger
from common.schemas import DeviceInfo
from runner.api import DevicesResponse, ErrorBody, Health, JobRequest, openapi_document
from runner.backends import Backend
from runner.fetch import fetch_model
from runner.jobstore import JobStore

MAX_BODY = 1 << 20
DEVICE_CACHE_S = 5.0  # listing iPhones spawns devicectl; a burst of submissions shares one listing


class Scheduler:
    """One worker thread per device; each takes that device's oldest queued job, one at a time."""

    def __init__(self, store: JobStore, backend: Backend, cache_dir: Path):
        self.store = store
        self.backend = backend
        self.cache_dir = cache_dir
        self.log = get_logger(component="runner", backend=backend.name)
        self._cond = threading.Condition()
        self._workers: dict[str, threading.Thread] = {}
        self._stopping = False
        self._devices: list[DeviceInfo] = []
        self._devices_at = 0.0

    # -- devices
    def devices(self, fresh: bool = False) -> list[DeviceInfo]:
        now = time.monotonic()
        if fresh or now - self._devices_at > DEVICE_CACHE_S:
            self._devices = self.backend.devices(busy=self.store.busy_devices())
            self._devices_at = now
        return self._devices

    def find_device(self, device_id: str) -> DeviceInfo | None:
        return next((d for d in self.devices() if d.id == device_id), None)

    # -- lifecycle
    def start(self) -> None:
        requeued = self.store.requeue_running()
        if requeued:
            self.log.warning("jobs_requeued", count=len(requeued), jobs=requeued,
                             reason="they were running when the previous runner process stopped")
        for device in self.store.devices_with_queued():
            self._ensure_worker(device)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def notify(self, device: str) -> None:
        self._ensure_worker(device)
        with self._cond:
            self._cond.notify_all()

    def _ensure_worker(self, device: str) -> None:
        with self._cond:
            t = self._workers.get(device)
            if t is None or not t.is_alive():
                t = threading.Thread(target=self._worker, args=(device,), name=f"worker-{device}", daemon=True)
                self._workers[device] = t
                t.start()

    def _worker(self, device: str) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
            job = self.store.claim_next(device)
            if job is None:
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(timeout=1.0)
                continue
            self._execute(job)

    def _execute(self, job) -> None:
        req = job.request
        log = self.log.bind(job_id=job.id, device=req.device, delegate=req.delegate, attempt=job.attempts)
        log.info("job_started", num_runs=req.num_runs, warmup_runs=req.warmup_runs, num_threads=req.num_threads)
        t0 = time.monotonic()
        try:
            dev = self.find_device(req.device) or next(
                (d for d in self.devices(fresh=True) if d.id == req.device), None)
            if dev is None:
                raise ScenebenchError(f"device {req.device!r} is not attached to this runner any more")
            if dev.state == "offline":
                raise ScenebenchError(f"device {req.device!r} is offline: "
                                      f"{dev.state_reason or 'paired but not connected'}")
            model = fetch_model(req.model_url, req.model_sha256, self.cache_dir)
            result = self.backend.run(dev, model, req)
        except ScenebenchError as exc:
            self.store.finish(job.id, error=str(exc))
            log.warning("job_failed", error=str(exc), seconds=round(time.monotonic() - t0, 3))
            return
        except Exception as exc:  # a bug must fail the job, not kill the device's worker
            self.store.finish(job.id, error=f"internal error in the runner: {type(exc).__name__}: {exc}")
            log.exception("job_crashed")
            return
        self.store.finish(job.id, result=result)
        t = result.timings_ms
        log.info("job_succeeded", seconds=round(time.monotonic() - t0, 3), delegate_applied=result.delegate_applied,
                 mean_ms=t.mean if t else None, p50_ms=t.p50 if t else None)


# ---------------------------------------------------------------- HTTP
class RunnerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, scheduler: Scheduler, token: str):
        super().__init__(addr, _Handler)
        self.scheduler = scheduler
        self.token = token
        self.log = scheduler.log


class _Handler(BaseHTTPRequestHandler):
    server: RunnerHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (stdlib's signature)
        self.server.log.debug("http_request", client=self.client_address[0], line=format % args)

    # -- helpers
    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="scenebench-runner"')
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, detail: str) -> None:
        self._send(status, ErrorBody(error=code, detail=detail).model_dump())

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            self._error(HTTPStatus.UNAUTHORIZED, "unauthorized", "send 'Authorization: Bearer <token>'")
            return False
        if not hmac.compare_digest(given.strip().encode(), self.server.token.encode()):
            self._error(HTTPStatus.UNAUTHORIZED, "unauthorized", "wrong token")
            return False
        return True

    # -- routes
    def do_GET(self) -> None:  # noqa: N802  (stdlib's naming)
        path = urlparse(self.path).path.rstrip("/")
        sched = self.server.scheduler
        try:
            if path == "/v1/health":
                c = sched.store.counts()
                self._send(200, Health(backend=sched.backend.name, version=__version__,
                                       queued=c["queued"], running=c["running"]).model_dump())
            elif path in ("/openapi.json", "/v1/openapi.json"):
                self._send(200, openapi_document())
            elif not self._authorized():
                return
            elif path == "/v1/devices":
                body = DevicesResponse(backend=sched.backend.name, devices=sched.devices(fresh=True))
                self._send(200, json.loads(body.model_dump_json()))
            elif path.startswith("/v1/jobs/"):
                job = sched.store.get(path.removeprefix("/v1/jobs/"))
                if job is None:
                    self._error(404, "not_found", f"no job {path.removeprefix('/v1/jobs/')!r}")
                else:
                    self._send(200, json.loads(job.model_dump_json()))
            else:
                self._error(404, "not_found", f"no route GET {path}; see /openapi.json")
        except ScenebenchError as exc:
            self._error(500, "internal", str(exc))

    def do_POST(self) -> None:  # noqa: N802
        path = urlparse(self.path).path.rstrip("/")
        # Read the body before any early answer, or its bytes would be parsed as the next request.
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._error(400, "bad_request", f"body of {length} bytes is larger than {MAX_BODY}")
            return
        raw = self.rfile.read(length) if length else b""
        if not self._authorized():
            return
        if path != "/v1/jobs":
            self._error(404, "not_found", f"no route POST {path}; see /openapi.json")
            return
        sched = self.server.scheduler
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._error(400, "bad_request", f"body is not JSON: {exc}")
            return
        try:
            req = JobRequest.model_validate(body)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            self._error(422, "unprocessable", detail)
            return
        try:
            dev = sched.find_device(req.device)
        except ScenebenchError as exc:
            self._error(500, "internal", f"cannot list devices: {exc}")
            return
        if dev is None:
            known = ", ".join(d.id for d in sched.devices()) or "none"
            self._error(404, "not_found", f"device {req.device!r} is not attached to this runner; devices: {known}")
            return
        if req.delegate not in dev.delegates:
            self._error(422, "unprocessable",
                        f"device {dev.id} supports delegates {', '.join(dev.delegates)}, not {req.delegate!r}")
            return
        job, changed = sched.store.submit(req)
        sched.log.info("job_submitted" if changed else "job_resubmitted", job_id=job.id, state=job.state,
                       device=req.device, delegate=req.delegate)
        if changed:
            sched.notify(req.device)
        self._send(202, json.loads(job.model_dump_json()))

    def do_PUT(self) -> None:  # noqa: N802
        self._error(405, "method_not_allowed", "use GET or POST; see /openapi.json")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815
