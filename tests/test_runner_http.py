"""Malformed and hostile HTTP against a real `python -m runner serve` process, over raw sockets.

Each answer must be a 4xx (or the documented 503 for too many connections) that arrives
at once or at the request deadline, the status must be in the OpenAPI document, and the
runner must go on serving afterwards.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from runner.client import RunnerClient
from tests.fixtures.runner import RunnerProcess, free_port

TIMEOUT_S = 3  # the runner's --http-timeout-s here
MAX_CONNECTIONS = 4


@pytest.fixture(scope="module")
def runner(tmp_path_factory, runner_lock_dir):
    rp = RunnerProcess(db=tmp_path_factory.mktemp("http") / "runner.sqlite", port=free_port(),
                       extra_args=["--http-timeout-s", str(TIMEOUT_S), "--max-connections", str(MAX_CONNECTIONS)])
    rp.start()
    yield rp
    rp.stop()


@pytest.fixture(scope="module")
def openapi(runner):
    status, _, body = _exchange(runner, b"GET /openapi.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status == 200
    return json.loads(body)


def _connect(rp: RunnerProcess, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", rp.port), timeout=timeout)


def _read_response(source) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from a socket or from a reader made by sock.makefile("rb"):
    status, headers (lower-case names), body by Content-Length. Pass the same reader to read
    several responses from one connection."""
    reader = source.makefile("rb") if isinstance(source, socket.socket) else source
    status_line = reader.readline()
    if not status_line:
        raise AssertionError("connection closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    return status, headers, body


def _exchange(rp: RunnerProcess, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    with _connect(rp, timeout) as sock:
        sock.sendall(data)
        return _read_response(sock)


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _post(length_header: str, body: bytes = b"") -> bytes:
    return (f"POST /v1/jobs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {RunnerProcess.token}\r\n"
            f"Content-Type: application/json\r\n{length_header}\r\n").encode() + body


def _assert_documented(doc, status: int, path: str, method: str) -> None:
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{status} answered to {method.upper()} {path} but not in its OpenAPI responses"


def _assert_still_serving(rp: RunnerProcess) -> None:
    status, _, body = _exchange(rp, b"GET /v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"


@pytest.mark.parametrize("value, status, says", [
    ("-1", 400, "non-negative integer"),
    ("abc", 400, "non-negative integer"),
    ("+5", 400, "non-negative integer"),
    ("1e3", 400, "non-negative integer"),
    ("99999999999999999999999", 413, "larger than"),
    ("9" * 5000, 413, "larger than"),  # past the 4300 digits int() parses
    ("0" * 30 + "2", 400, "not JSON"),  # leading zeros are still a length, here 2
])
def test_a_bad_content_length_is_answered_at_once(runner, openapi, value, status, says):
    with _connect(runner) as sock:
        sock.sendall(_post(f"Content-Length: {value}\r\n", b"{x"))
        got, headers, body = _read_response(sock)  # before the request deadline: nothing else is sent
        assert got == status and says in json.loads(body)["detail"]
        assert json.loads(body)["error"] == ("bad_request" if status == 400 else "payload_too_large")
        if says != "not JSON":  # a well-framed bad body keeps the connection
            assert headers.get("connection") == "close" and _closed_by_server(sock)
    _assert_documented(openapi, status, "/v1/jobs", "post")
    _assert_still_serving(runner)


def test_conflicting_lengths_and_chunked_bodies_are_refused(runner, openapi):
    status, _, body = _exchange(runner, _post("Content-Length: 2\r\nContent-Length: 3\r\n", b"{}x"))
    assert status == 400 and "several different Content-Length" in json.loads(body)["detail"]
    status, _, body = _exchange(runner, _post("Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n"))
    assert status == 411 and "Content-Length" in json.loads(body)["detail"]
    _assert_documented(openapi, 411, "/v1/jobs", "post")
    _assert_still_serving(runner)


def test_a_body_on_a_get_is_not_read_as_the_next_request(runner):
    smuggled = b"GET /v1/nothing-here HTTP/1.1\r\nHost: t\r\n\r\n"
    with _connect(runner) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled)
                     + b"GET /v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reader = sock.makefile("rb")
        first, second = _read_response(reader), _read_response(reader)
    assert (first[0], second[0]) == (200, 200)


def test_slowloris_headers_get_408_at_the_deadline(runner, openapi):
    """A client trickling a header line every half second would hold a thread for ever on a per-recv timeout."""
    stop = threading.Event()
    with _connect(runner, timeout=TIMEOUT_S + 10) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n")

        def trickle():
            for i in range(60):
                if stop.wait(0.5):
                    return
                try:
                    sock.sendall(b"X-Slow-%d: a\r\n" % i)
                except OSError:
                    return

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            status, _, body = _read_response(sock)
        finally:
            stop.set()
            t.join()
    assert status == 408 and json.loads(body)["error"] == "request_timeout"
    _assert_documented(openapi, 408, "/v1/health", "get")
    _assert_still_serving(runner)


def test_a_body_that_stops_short_gets_408(runner, openapi):
    with _connect(runner, timeout=TIMEOUT_S + 10) as sock:
        sock.sendall(_post("Content-Length: 100\r\n", b'{"model_url": '))
        status, _, body = _read_response(sock)
    assert status == 408 and "did not arrive completely" in json.loads(body)["detail"]
    _assert_documented(openapi, 408, "/v1/jobs", "post")
    _assert_still_serving(runner)


def test_oversized_request_line_and_headers_are_json_4xx(runner, openapi):
    status, _, body = _exchange(runner, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 414 and json.loads(body)["error"] == "uri_too_long"
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    status, _, body = _exchange(runner, b"GET /v1/health HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
    assert status == 431 and json.loads(body)["error"] == "headers_too_large"
    status, _, body = _exchange(runner, b"NONSENSE\r\n\r\n")
    assert status == 400 and json.loads(body)["error"] == "bad_request"
    for code in (414, 431):
        _assert_documented(openapi, code, "/v1/health", "get")
    _assert_still_serving(runner)


def test_connections_beyond_the_bound_get_503_and_the_runner_recovers(runner, openapi):
    held = [_connect(runner) for _ in range(MAX_CONNECTIONS)]  # idle: each holds a handler thread
    try:
        time.sleep(0.3)  # let the runner accept them all
        with _connect(runner) as extra:
            status, headers, body = _read_response(extra)  # answered without sending a byte
        assert status == 503 and headers.get("retry-after") == "1"
        assert "--max-connections" in json.loads(body)["detail"]
        with _connect(runner) as extra:  # a client that sent its request still reads the 503
            extra.sendall(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
            assert _read_response(extra)[0] == 503
    finally:
        for s in held:
            s.close()
    _assert_documented(openapi, 503, "/v1/jobs", "post")
    deadline = time.monotonic() + 5
    while True:  # the held threads see EOF and give their slots back
        try:
            _assert_still_serving(runner)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert RunnerClient(runner.url, runner.token).devices()[0].backend == "host"


def test_openapi_lists_the_error_answers_of_every_route(openapi):
    for path, methods in openapi["paths"].items():
        for method, op in methods.items():
            codes = {int(c) for c in op["responses"] if c[0] in "45"}
            assert {400, 408, 431, 500, 503} <= codes, (path, method, codes)
            if path != "/v1/health":
                assert 401 in codes
            for ref in (r["$ref"] for c, r in op["responses"].items() if c[0] in "45"):
                name = ref.rsplit("/", 1)[-1]
                schema = openapi["components"]["responses"][name]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    assert {413, 422, 411, 404} <= {int(c) for c in openapi["paths"]["/v1/jobs"]["post"]["responses"]}
