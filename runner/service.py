"""The runner service: per-device FIFO workers over the SQLite job table, and the HTTP API in front."""

from __future__ import annotations

import hmac
import io
import json
import math
import re
import socket
import sys
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
from runner.api import ERROR_CODES, DevicesResponse, ErrorBody, Health, JobRequest, openapi_document
from runner.backends import Backend
from runner.fetch import DEFAULT_MAX_BYTES, Sha256Mismatch, fetch_model
from runner.jobstore import JobStore
from runner.locks import DeviceLocks, describe, this_process

MAX_BODY = 1 << 20
DEVICE_CACHE_S = 5.0  # listing iPhones spawns devicectl; a burst of submissions shares one listing
IDLE_POLL_S = 1.0
LINGER_S = 0.5  # how long a closing connection's late bytes are read and dropped


class Scheduler:
    """One worker thread per device; each takes that device's oldest queued job, one at a time."""

    def __init__(self, store: JobStore, backend: Backend, cache_dir: Path, *, locks: DeviceLocks,
                 model_dir: Path | None = None, max_model_bytes: int = DEFAULT_MAX_BYTES, max_attempts: int = 3):
        self.store = store
        self.backend = backend
        self.cache_dir = cache_dir
        self.locks = locks  # shared with `python -m runner try`: one process per phone
        self.model_dir = model_dir  # None: file:// model URLs are refused
        self.max_model_bytes = max_model_bytes
        self.max_attempts = max_attempts
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
        requeued, gave_up = self.store.requeue_running(self.max_attempts)
        if requeued:
            self.log.warning("jobs_requeued", count=len(requeued), jobs=requeued,
                             reason="they were running when the previous runner process stopped")
        for jid, reason in gave_up.items():
            self.log.error("job_failed", job_id=jid, error=reason, max_attempts=self.max_attempts)
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

    def _idle(self) -> bool:
        """Wait for a notification or a moment; False once the scheduler is stopping."""
        with self._cond:
            if self._stopping:
                return False
            self._cond.wait(timeout=IDLE_POLL_S)
            return not self._stopping

    def _worker(self, device: str) -> None:
        lock = self.locks.lock(device)
        waiting_for = ""
        while True:
            with self._cond:
                if self._stopping:
                    return
            if not self.store.has_queued(device):
                if not self._idle():
                    return
                continue
            # The lock is taken before the job is claimed: while `runner try` holds the phone,
            # the job stays queued rather than running and waiting.
            try:
                got = lock.try_acquire(this_process())
            except OSError as exc:  # the lock folder vanished or filled up: wait, and say so
                self.log.error("device_lock_failed", device=device, path=str(lock.path), error=str(exc))
                if not self._idle():
                    return
                continue
            if not got:
                holder = describe(lock.holder())
                if holder != waiting_for:
                    self.log.warning("device_in_use", device=device, holder=holder,
                                     reason="another process holds the device's lock; its queued jobs wait")
                    waiting_for = holder
                if not self._idle():
                    return
                continue
            waiting_for = ""
            try:
                job = self.store.claim_next(device)
                if job is not None:
                    lock.note(**this_process(job=job.id))
                    self._execute(job)
            finally:
                lock.release()

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
            model = fetch_model(req.model_url, req.model_sha256, self.cache_dir, file_root=self.model_dir,
                                max_bytes=self.max_model_bytes)
            result = self.backend.run(dev, model, req)
        except ScenebenchError as exc:
            self.store.finish(job.id, error=str(exc))
            # The actual hash goes to the runner's log only (see Sha256Mismatch).
            extra = {"actual_sha256": exc.actual} if isinstance(exc, Sha256Mismatch) else {}
            log.warning("job_failed", error=str(exc), seconds=round(time.monotonic() - t0, 3), **extra)
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
_DIGITS = re.compile(r"[0-9]+")


class _BadFraming(Exception):
    """The request's body framing is unusable; the answer is `status` and the connection closes."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def body_length(headers) -> int:
    """The body's length from Content-Length, or _BadFraming naming what is wrong with it.

    Exactly one non-negative decimal integer is accepted. Python's int() would also take
    "-1", "+5", " 5" or "٥", and a body read with a length a proxy reads differently is
    how requests get smuggled.
    """
    if headers.get("Transfer-Encoding") is not None:
        raise _BadFraming(411, "Transfer-Encoding is not accepted: send the body with a Content-Length")
    values = headers.get_all("Content-Length") or []
    if not values:
        return 0
    if len(set(values)) > 1:
        raise _BadFraming(400, f"several different Content-Length headers: {', '.join(map(repr, values))}")
    value = values[0].strip()
    if not _DIGITS.fullmatch(value):
        raise _BadFraming(400, f"Content-Length must be one non-negative integer, not {value[:40]!r}")
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(MAX_BODY)):  # before int(): Python refuses to parse over 4300 digits
        raise _BadFraming(413, f"body of {len(digits)}-digit length is larger than the {MAX_BODY} bytes the "
                               f"runner accepts")
    length = int(digits)
    if length > MAX_BODY:
        raise _BadFraming(413, f"body of {length} bytes is larger than the {MAX_BODY} bytes the runner accepts")
    return length


class _DeadlineReader(io.RawIOBase):
    """The connection's bytes, while the current request's deadline lasts.

    A per-recv socket timeout alone lets a client that sends one byte every few seconds
    (slowloris) hold a thread for ever; here every recv waits at most until the deadline.
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.deadline = math.inf
        self.received = 0
        self.timed_out = False

    def arm(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.received = 0
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.timed_out = True
            raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(remaining)
        try:
            n = self.sock.recv_into(buf)
        except TimeoutError:
            self.timed_out = True
            raise
        self.received += n
        return n


class RunnerHTTPServer(ThreadingHTTPServer):
    """The API server: a thread per connection, at most max_connections of them, each with a deadline."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64  # a burst of pollers waits in the backlog rather than being dropped

    def __init__(self, addr, scheduler: Scheduler, token: str, *, timeout_s: float = 30.0,
                 max_connections: int = 32):
        self.scheduler = scheduler
        self.token = token
        self.log = scheduler.log
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refused = 0
        self._refused_logged_at = -math.inf
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket, client_address) -> None:
        """Answer 503 from the accepting thread, without a handler thread, and close."""
        body = json.dumps(ErrorBody(
            error="unavailable",
            detail=f"the runner already serves {self.max_connections} connections (--max-connections); "
                   f"retry in a moment").model_dump()).encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(0.5)  # a fresh socket's send buffer takes this at once; never stall accepting
            request.sendall(head + body)
            request.shutdown(socket.SHUT_WR)
            # Only what has already arrived is read (see shutdown_request): this thread accepts.
            request.setblocking(False)
            while request.recv(1 << 16):
                pass
        except OSError:
            pass
        finally:
            self.close_request(request)
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at > 5.0:  # a flood must not flood the log too
            self.log.warning("http_connections_refused", count=self._refused, client=client_address[0],
                             max_connections=self.max_connections)
            self._refused, self._refused_logged_at = 0, now

    def shutdown_request(self, request: socket.socket) -> None:
        """Close after reading what the client still sends, for a moment.

        Closing a socket with unread bytes makes the kernel send RST, and a RST can destroy
        the answer before the client reads it: a 400 for a bad length, sent before the body
        it announced, would then look like a dropped connection.
        """
        try:
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_S
            drained = 0
            while drained < MAX_BODY and (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                chunk = request.recv(1 << 16)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client hung up or reset: nothing the runner did wrong
            self.log.info("http_connection_dropped", client=client_address[0], error=str(exc))
        else:
            self.log.exception("http_handler_crashed", client=client_address[0])


class _Handler(BaseHTTPRequestHandler):
    server: RunnerHTTPServer
    protocol_version = "HTTP/1.1"
    # stdlib takes a request line it cannot parse for HTTP/0.9, whose answers have no status
    # line; a client could not read the 400 it gets. Nobody speaks 0.9 to the runner.
    default_request_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (stdlib's signature)
        self.server.log.debug("http_request", client=self.client_address[0], line=format % args)

    # -- connection handling
    def setup(self) -> None:
        self.timeout = self.server.timeout_s  # socket timeout for writes; reads go by the deadline
        super().setup()
        self.rfile.close()  # stdlib's reader knows no deadline; replaced by one that does
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle(self) -> None:
        self.close_connection = True
        self._handle_one()
        while not self.close_connection:
            self._handle_one()

    def _handle_one(self) -> None:
        self._reader.arm(self.server.timeout_s)
        self._responded = False
        self.requestline, self.request_version, self.command = "", "", ""
        self.handle_one_request()  # stdlib's: it catches the TimeoutError and closes
        if self._reader.timed_out:
            self.close_connection = True
            # An idle keep-alive connection just closes; a request cut short gets its answer.
            if self._reader.received and not self._responded:
                try:
                    self.connection.settimeout(1.0)
                    self._error(408, f"the request did not arrive completely within {self.server.timeout_s:g} s")
                except OSError:
                    pass

    def handle_expect_100(self) -> bool:
        """Refuse a bad length before the client sends the body, not after."""
        try:
            body_length(self.headers)
        except _BadFraming as exc:
            self._error(exc.status, exc.detail)
            return False
        return super().handle_expect_100()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """stdlib's own refusals (request line too long, bad syntax, too many headers) as our JSON."""
        self._error(code, message or HTTPStatus(code).phrase)

    # -- helpers
    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body, default=str).encode()
        self._responded = True
        self.connection.settimeout(self.server.timeout_s)  # reading left the deadline's remainder on it
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="scenebench-runner"')
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, detail: str) -> None:
        code = ERROR_CODES.get(status) or ("internal" if status >= 500 else "bad_request")
        if status >= 400 and status not in (401, 404, 422):
            self.close_connection = True  # framing or capacity trouble: the next bytes cannot be trusted
        self._send(status, ErrorBody(error=code, detail=detail).model_dump())

    def _body(self) -> bytes | None:
        """The request body, read in full; None once a 4xx has been sent for bad framing.

        Every method reads it: a body left unread would be parsed as the next request.
        """
        try:
            length = body_length(self.headers)
        except _BadFraming as exc:
            self._error(exc.status, exc.detail)
            return None
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            self._error(400, f"the body ended after {len(raw)} of the {length} bytes its Content-Length announced")
            return None
        return raw

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            self._error(HTTPStatus.UNAUTHORIZED, "send 'Authorization: Bearer <token>'")
            return False
        if not hmac.compare_digest(given.strip().encode(), self.server.token.encode()):
            self._error(HTTPStatus.UNAUTHORIZED, "wrong token")
            return False
        return True

    def _route(self, handler) -> None:
        """Run a route; an unexpected exception becomes a 500, not a dropped connection."""
        try:
            handler()
        except OSError:
            raise  # the connection itself failed; handle_one_request and handle_error deal with it
        except Exception as exc:
            self.server.log.exception("http_route_crashed", path=self.path)
            if not self._responded:
                self.close_connection = True
                self._error(500, f"internal error in the runner: {type(exc).__name__}")

    # -- routes
    def do_GET(self) -> None:  # noqa: N802  (stdlib's naming)
        if self._body() is not None:
            self._route(self._get)

    def do_POST(self) -> None:  # noqa: N802
        # The body is read before any early answer, or its bytes would be parsed as the next request.
        raw = self._body()
        if raw is not None:
            self._route(lambda: self._post(raw))

    def do_PUT(self) -> None:  # noqa: N802
        if self._body() is not None:
            self._error(405, "use GET or POST; see /openapi.json")

    do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_PUT  # noqa: N815

    def _get(self) -> None:
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
                    self._error(404, f"no job {path.removeprefix('/v1/jobs/')!r}")
                else:
                    self._send(200, json.loads(job.model_dump_json()))
            else:
                self._error(404, f"no route GET {path}; see /openapi.json")
        except ScenebenchError as exc:
            self._error(500, str(exc))

    def _post(self, raw: bytes) -> None:
        path = urlparse(self.path).path.rstrip("/")
        if not self._authorized():
            return
        if path != "/v1/jobs":
            self._error(404, f"no route POST {path}; see /openapi.json")
            return
        sched = self.server.scheduler
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._error(400, f"body is not JSON: {exc}")
            return
        try:
            req = JobRequest.model_validate(body)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            self._error(422, detail)
            return
        try:
            dev = sched.find_device(req.device)
        except ScenebenchError as exc:
            self._error(500, f"cannot list devices: {exc}")
            return
        if dev is None:
            known = ", ".join(d.id for d in sched.devices()) or "none"
            self._error(404, f"device {req.device!r} is not attached to this runner; devices: {known}")
            return
        if req.delegate not in dev.delegates:
            self._error(422, f"device {dev.id} supports delegates {', '.join(dev.delegates)}, not {req.delegate!r}")
            return
        job, changed = sched.store.submit(req)
        sched.log.info("job_submitted" if changed else "job_resubmitted", job_id=job.id, state=job.state,
                       device=req.device, delegate=req.delegate)
        if changed:
            sched.notify(req.device)
        self._send(202, json.loads(job.model_dump_json()))
