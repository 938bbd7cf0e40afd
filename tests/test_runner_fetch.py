"""runner.fetch: file:// confined to the model directory, a size cap, and no hash echoed on a mismatch.

Real files, symlinks and FIFOs on disk, and a real HTTP server on loopback.
"""

from __future__ import annotations

import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runner.fetch import FetchError, Sha256Mismatch, fetch_model

MODEL = b"\x1c\x00\x00\x00TFL3 tiny model bytes" * 10


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def dirs(tmp_path):
    root = tmp_path / "models"
    (root / "run-1").mkdir(parents=True)
    (root / "run-1" / "model.tflite").write_bytes(MODEL)
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.tflite").write_bytes(b"not for the caller")
    return root, outside, tmp_path / "cache"


def test_file_urls_are_off_without_a_model_dir(dirs):
    root, _, cache = dirs
    url = (root / "run-1" / "model.tflite").as_uri()
    with pytest.raises(FetchError, match="file:// model URLs are off on this runner.*--model-dir"):
        fetch_model(url, _sha(MODEL), cache)
    assert fetch_model(url, _sha(MODEL), cache, file_root=root).read_bytes() == MODEL


@pytest.mark.parametrize("make_url", [
    lambda root, outside: (outside / "secret.tflite").as_uri(),
    lambda root, outside: f"file://{root}/run-1/../../private/secret.tflite",
    lambda root, outside: f"file://{root}/run-1/%2E%2E/%2E%2E/private/secret.tflite",
    lambda root, outside: f"file://{root}-evil/secret.tflite",  # a sibling that shares the prefix
])
def test_paths_outside_the_model_dir_are_refused(dirs, make_url):
    root, outside, cache = dirs
    (root.parent / "models-evil").mkdir()
    (root.parent / "models-evil" / "secret.tflite").write_bytes(b"x")
    secret = (outside / "secret.tflite").read_bytes()
    with pytest.raises(FetchError, match="outside the runner's model directory"):
        fetch_model(make_url(root, outside), _sha(secret), cache, file_root=root)
    assert not list(cache.glob("*.tflite"))


def test_a_symlink_out_of_the_model_dir_is_refused_without_saying_where_it_leads(dirs):
    root, outside, cache = dirs
    (root / "run-1" / "link.tflite").symlink_to(outside / "secret.tflite")
    (root / "run-1" / "dirlink").symlink_to(outside, target_is_directory=True)
    for name in ("link.tflite", "dirlink/secret.tflite"):
        with pytest.raises(FetchError, match="outside the runner's model directory") as info:
            fetch_model((root / "run-1" / name).as_uri(), "0" * 64, cache, file_root=root)
        assert "private" not in str(info.value)
    # A symlink that stays inside is fine: a store may link a shared model into each run.
    (root / "run-1" / "same.tflite").symlink_to(root / "run-1" / "model.tflite")
    assert fetch_model((root / "run-1" / "same.tflite").as_uri(), _sha(MODEL), cache, file_root=root).is_file()


def test_a_fifo_in_the_model_dir_does_not_hang_the_fetch(dirs):
    root, _, cache = dirs
    os.mkfifo(root / "run-1" / "pipe.tflite")
    with pytest.raises(FetchError, match="not a regular file"):
        fetch_model((root / "run-1" / "pipe.tflite").as_uri(), "0" * 64, cache, file_root=root)


def test_a_sha256_mismatch_does_not_echo_the_hash_of_the_bytes_read(dirs):
    root, _, cache = dirs
    wanted = "a" * 64
    with pytest.raises(Sha256Mismatch, match="sha256 mismatch") as info:
        fetch_model((root / "run-1" / "model.tflite").as_uri(), wanted, cache, file_root=root)
    assert _sha(MODEL) not in str(info.value) and wanted in str(info.value)
    assert info.value.actual == _sha(MODEL)  # for the runner's own log
    assert not [p for p in cache.iterdir()]  # no partial file left behind


def test_a_file_larger_than_the_cap_is_refused(dirs):
    root, _, cache = dirs
    with pytest.raises(FetchError, match="download cap of 100 bytes.*--max-model-mb"):
        fetch_model((root / "run-1" / "model.tflite").as_uri(), _sha(MODEL), cache, file_root=root, max_bytes=100)
    assert fetch_model((root / "run-1" / "model.tflite").as_uri(), _sha(MODEL), cache, file_root=root,
                       max_bytes=len(MODEL)).read_bytes() == MODEL
    assert not [p for p in cache.iterdir() if p.name.startswith(".part-")]


class _Server(BaseHTTPRequestHandler):
    """/announced: a Content-Length over the cap; /streamed: no length, more bytes than the cap."""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        if self.path.startswith("/announced"):
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            self.wfile.write(MODEL)  # the client must give up on the header, not on the bytes
        else:
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"x" * 4096)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_downloads_over_the_cap_are_refused(http_url, tmp_path):
    with pytest.raises(FetchError, match=r"announces 1000000000000 bytes"):
        fetch_model(http_url + "/announced?X-Amz-Signature=s3cr3t", "0" * 64, tmp_path, max_bytes=10_000)
    with pytest.raises(FetchError, match="download cap of 10000 bytes") as info:
        fetch_model(http_url + "/streamed?X-Amz-Signature=s3cr3t", "0" * 64, tmp_path, max_bytes=10_000)
    assert "s3cr3t" not in str(info.value)
    assert not list(tmp_path.iterdir())
