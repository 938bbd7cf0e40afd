"""S3Store against a real S3 server on loopback (moto_server, or MinIO via SCENEBENCH_TEST_S3_ENDPOINT)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import urllib3
from minio.error import S3Error, ServerError
from structlog.testing import capture_logs

from common.errors import ChecksumError, ConfigError, NotFoundError, StoreError, TransientStoreError
from common.hashing import sha256_file
from common.logging import get_logger
from common.schemas import ArtifactRef
from common.store import open_store
from common.store_s3 import META_SHA256, S3Store, is_transient, load_s3_settings, parse_endpoint
from tests.fixtures.s3 import FlakyProxy, S3Server, apply_s3_env, ensure_bucket, free_port

MIB = 1 << 20


@pytest.fixture(autouse=True)
def _logging_configured():
    # Configure structlog before any capture_logs block, so the first get_logger() inside
    # one does not replace the capturing processors.
    get_logger()


def _random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, MIB)
            f.write(os.urandom(n))
            left -= n
    return path


# ------------------------------------------------------------------ settings
def test_bad_settings_name_the_variable_and_valid_values(monkeypatch):
    monkeypatch.setenv("SCENEBENCH_S3_SECURE", "maybe")
    monkeypatch.setenv("SCENEBENCH_S3_PART_SIZE_MB", "1")
    with pytest.raises(ConfigError) as err:
        load_s3_settings()
    text = str(err.value)
    assert "SCENEBENCH_S3_SECURE = 'maybe'" in text and "true, false" in text
    assert "SCENEBENCH_S3_PART_SIZE_MB = '1'" in text and "5..5120" in text


@pytest.mark.parametrize("name,value,needle", [
    ("SCENEBENCH_S3_RETRY_SECONDS", "soon", "0..3600"),
    ("SCENEBENCH_S3_CREATE_BUCKET", "perhaps", "true, false"),
    ("SCENEBENCH_S3_PARALLEL_UPLOADS", "0", "1..16"),
    ("SCENEBENCH_S3_ENDPOINT", "ftp://minio:9000", "http:// or https://"),
    ("SCENEBENCH_S3_ENDPOINT", "http://minio:9000/bucket", "only scheme, host and port"),
    ("SCENEBENCH_S3_ENDPOINT", "minio:notaport", "host:port"),
])
def test_each_bad_value_fails_at_start(monkeypatch, name, value, needle):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        S3Store.from_uri("s3://some-bucket/x")
    assert name in str(err.value) and needle in str(err.value)


def test_endpoint_forms():
    assert parse_endpoint("minio:9000", None) == ("minio:9000", True)
    assert parse_endpoint("minio:9000", False) == ("minio:9000", False)
    assert parse_endpoint("http://minio:9000", None) == ("minio:9000", False)
    assert parse_endpoint("https://s3.example.org/", None) == ("s3.example.org", True)
    assert parse_endpoint(None, None) == ("s3.amazonaws.com", True)
    with pytest.raises(ConfigError, match="SCENEBENCH_S3_SECURE"):
        parse_endpoint("http://minio:9000", True)


def test_half_credentials_and_bad_uris_are_config_errors(monkeypatch):
    for name in ("AWS_SECRET_ACCESS_KEY", "SCENEBENCH_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAONLY")
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY is not"):
        load_s3_settings()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(ConfigError, match="bucket name 'ab'"):
        S3Store.from_uri("s3://ab/x")
    with pytest.raises(ConfigError, match="not an S3 URI"):
        S3Store.from_uri("s3:///nobucket")


def test_failure_classes():
    def s3err(code, status=None):
        response = urllib3.HTTPResponse(status=status) if status else None
        return S3Error(response, code, "m", "/r", "id", "host")

    assert is_transient(s3err("SlowDown", 503))
    assert is_transient(s3err("InternalError", 500))
    assert is_transient(s3err("SomethingNew", 502))
    assert is_transient(ServerError("bad gateway", 502))
    assert is_transient(urllib3.exceptions.ProtocolError("Connection aborted."))
    assert is_transient(urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"))
    assert is_transient(ConnectionRefusedError())
    for code, status in (("AccessDenied", 403), ("NoSuchBucket", 404), ("InvalidAccessKeyId", 403),
                         ("SignatureDoesNotMatch", 403)):
        assert not is_transient(s3err(code, status))
    assert not is_transient(urllib3.exceptions.SSLError("wrong version number"))
    assert not is_transient(FileNotFoundError("local file"))


# ------------------------------------------------------------------ round trips
def test_open_store_dispatches_to_s3(s3_store_uri):
    store = open_store(s3_store_uri)
    assert isinstance(store, S3Store) and store.uri == s3_store_uri


def test_bytes_json_and_file_round_trip(s3_store_uri, s3_client, tmp_path):
    store = S3Store.from_uri(s3_store_uri)
    info = store.put_bytes("a/blob.bin", b"\x00\x01hello")
    assert info.sha256 == hashlib.sha256(b"\x00\x01hello").hexdigest() and info.size == 7
    assert store.get_bytes("a/blob.bin") == b"\x00\x01hello"

    store.put_json("a/doc.json", {"b": 1, "a": [1, 2]})
    assert store.get_json("a/doc.json") == {"a": [1, 2], "b": 1}
    ref = ArtifactRef(key="runs/r/m.tflite", sha256="0" * 64, size=1)
    store.put_json("a/ref.json", ref)
    assert store.get_model("a/ref.json", ArtifactRef) == ref
    assert store.try_get_model("a/none.json", ArtifactRef) is None

    src = _random_file(tmp_path / "model.tflite", 300_000)
    put = store.put_file("runs/r1/mobilenet_v2/float32/model.tflite", src)
    assert put.sha256 == sha256_file(src) and put.size == 300_000
    dest = store.get_file("runs/r1/mobilenet_v2/float32/model.tflite", tmp_path / "out" / "m.tflite",
                          sha256=put.sha256)
    assert dest.read_bytes() == src.read_bytes()

    # The checksum is in the object's own metadata, readable by any S3 tool.
    raw = s3_client.stat_object(store.bucket, store.prefix + "runs/r1/mobilenet_v2/float32/model.tflite")
    assert raw.metadata[META_SHA256] == put.sha256
    assert raw.content_type == "application/octet-stream"
    assert s3_client.stat_object(store.bucket, store.prefix + "a/doc.json").content_type == "application/json"
    assert store.stat("a/doc.json").sha256 == s3_client.stat_object(
        store.bucket, store.prefix + "a/doc.json").metadata[META_SHA256]


def test_upload_refuses_a_file_that_does_not_match_the_given_sha(s3_store_uri, tmp_path):
    store = S3Store.from_uri(s3_store_uri)
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    with pytest.raises(ChecksumError, match="refusing to upload"):
        store.put_file("f", src, sha256="0" * 64)
    assert store.stat("f") is None


def test_tampered_object_is_detected_and_destination_untouched(s3_store_uri, s3_client, tmp_path):
    store = S3Store.from_uri(s3_store_uri)
    good = store.put_bytes("runs/r1/arch/int8/model.tflite", b"the real model")
    # Someone overwrites the bytes behind the store's back, keeping the old checksum label.
    evil = b"a different model!"
    s3_client.put_object(store.bucket, store.prefix + "runs/r1/arch/int8/model.tflite",
                         io.BytesIO(evil), len(evil), metadata={META_SHA256: good.sha256})
    dest = tmp_path / "model.tflite"
    dest.write_bytes(b"previous copy")
    with pytest.raises(ChecksumError) as err:
        store.get_file("runs/r1/arch/int8/model.tflite", dest)
    assert "runs/r1/arch/int8/model.tflite" in str(err.value) and store.bucket in str(err.value)
    assert dest.read_bytes() == b"previous copy"  # atomic: nothing half-written or replaced
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]  # temp file cleaned up

    # A JSON document's reference is checked too, even when the metadata agrees with the bytes.
    store.put_bytes("other.bin", b"payload")
    with pytest.raises(ChecksumError, match="expected"):
        store.get_bytes("other.bin", sha256=hashlib.sha256(b"something else").hexdigest())


def test_listing_stat_delete_and_missing(s3_store_uri, tmp_path):
    store = S3Store.from_uri(s3_store_uri)
    keys = ["runs/r1/run.json", "runs/r1/mnv2/train.json", "runs/r1/mnv2/float32/model.tflite",
            "runs/r2/run.json", "datasets/fp/dataset.json"]
    for k in keys:
        store.put_bytes(k, k.encode())
    assert store.list() == sorted(keys)
    assert store.list("runs/r1/") == sorted(k for k in keys if k.startswith("runs/r1/"))
    assert store.list("nothing/") == []
    # A sibling prefix in the same bucket is not part of this store.
    sibling = S3Store.from_uri(s3_store_uri + "-sibling")
    sibling.put_bytes("runs/r1/run.json", b"x")
    assert store.list("runs/r1/") == sorted(k for k in keys if k.startswith("runs/r1/"))
    sibling.delete("runs/r1/run.json")

    assert store.stat("runs/r2/run.json").size == len(b"runs/r2/run.json")
    assert store.stat("runs/r9/run.json") is None and not store.exists("runs/r9/run.json")
    with pytest.raises(NotFoundError, match="runs/r9/run.json"):
        store.get_bytes("runs/r9/run.json")
    store.delete("runs/r2/run.json")
    store.delete("runs/r2/run.json")  # deleting twice is fine
    assert not store.exists("runs/r2/run.json")

    got = store.get_prefix("runs/r1/", tmp_path / "r1")
    assert sorted(p.relative_to(tmp_path / "r1").as_posix() for p in got) == \
        ["mnv2/float32/model.tflite", "mnv2/train.json", "run.json"]
    assert store.describe("runs/r1/run.json") == s3_store_uri + "/runs/r1/run.json"


def test_presigned_url_downloads_without_credentials(s3_store_uri):
    store = S3Store.from_uri(s3_store_uri)
    store.put_bytes("runs/r1/mnv2/float32/model.tflite", b"tflite bytes")
    url = store.url("runs/r1/mnv2/float32/model.tflite", expires_s=600)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
    with urllib.request.urlopen(url, timeout=10) as resp:  # plain HTTP, no S3 client, no keys
        assert resp.read() == b"tflite bytes"
    with pytest.raises(ConfigError, match="7 days"):
        store.url("runs/r1/mnv2/float32/model.tflite", expires_s=8 * 24 * 3600)


def test_public_endpoint_goes_into_presigned_urls(s3_server, s3_store_uri, monkeypatch):
    monkeypatch.setenv("SCENEBENCH_S3_PUBLIC_ENDPOINT", "https://minio.example.org")
    store = S3Store.from_uri(s3_store_uri)
    store.put_bytes("m.tflite", b"x")
    assert store.url("m.tflite").startswith(f"https://minio.example.org/{store.bucket}/")


# ------------------------------------------------------------------ failures
def test_missing_bucket_fails_fast_with_a_named_fix(s3_server, monkeypatch):
    # A long retry budget: the point is that a permanent error does not use it.
    apply_s3_env(monkeypatch, s3_server, SCENEBENCH_S3_RETRY_SECONDS="60",
                 SCENEBENCH_S3_CREATE_BUCKET="false")
    bucket = f"missing-{uuid.uuid4().hex[:10]}"
    store = S3Store.from_uri(f"s3://{bucket}/run-test")
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        store.put_bytes("runs/r1/run.json", b"{}")
    assert time.monotonic() - started < 5
    assert not isinstance(err.value, TransientStoreError)
    text = str(err.value)
    for part in (s3_server.endpoint, bucket, "runs/r1/run.json", "NoSuchBucket",
                 "SCENEBENCH_S3_CREATE_BUCKET=true"):
        assert part in text
    with pytest.raises(StoreError, match="NoSuchBucket"):
        store.get_bytes("runs/r1/run.json")


def test_bucket_is_created_when_allowed(s3_server, monkeypatch):
    apply_s3_env(monkeypatch, s3_server, SCENEBENCH_S3_CREATE_BUCKET="true")
    bucket = f"created-{uuid.uuid4().hex[:10]}"
    client = s3_server.client()
    assert not client.bucket_exists(bucket)
    with capture_logs() as logs:
        store = S3Store.from_uri(f"s3://{bucket}/p")
        # A step's first call is often a read (is my output cached?): "not there", not an error.
        assert store.try_get_model("x.json", ArtifactRef) is None
        store.put_bytes("x.json", b"{}")
    try:
        assert client.bucket_exists(bucket)
        assert store.get_bytes("x.json") == b"{}"
        assert [e["bucket"] for e in logs if e["event"] == "s3_bucket_created"] == [bucket]
    finally:
        client.remove_object(bucket, "p/x.json")
        client.remove_bucket(bucket)


@pytest.fixture
def auth_s3_server():
    """A server that checks credentials: the external MinIO, or a moto with IAM checks on."""
    external = S3Server.from_env()
    if external:
        yield external
        return
    server = S3Server.moto(extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        yield server
    finally:
        server.close()


def test_unknown_access_key_fails_fast_naming_the_variable(auth_s3_server, monkeypatch):
    apply_s3_env(monkeypatch, auth_s3_server, AWS_ACCESS_KEY_ID="AKIANOTAREALKEY00000",
                 AWS_SECRET_ACCESS_KEY="wrong", SCENEBENCH_S3_RETRY_SECONDS="60")
    store = S3Store.from_uri("s3://scenebench-test/run-test")
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        store.put_bytes("runs/r1/run.json", b"{}")
    assert time.monotonic() - started < 5
    text = str(err.value)
    assert "InvalidAccessKeyId" in text and "AWS_ACCESS_KEY_ID" in text
    assert auth_s3_server.endpoint in text and "scenebench-test" in text and "runs/r1/run.json" in text


def test_unreachable_server_is_retried_for_the_budget_then_fails(monkeypatch):
    dead = S3Server(endpoint=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    apply_s3_env(monkeypatch, dead, SCENEBENCH_S3_RETRY_SECONDS="1.5")
    store = S3Store.from_uri("s3://scenebench-test/x")
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(TransientStoreError) as err:
        store.stat("runs/r1/run.json")
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 4
    retries = [e for e in logs if e["event"] == "s3_retry"]
    assert len(retries) >= 3 and all(e["op"] == "stat" for e in retries)
    assert [e["attempt"] for e in retries] == list(range(1, len(retries) + 1))
    assert "SCENEBENCH_S3_RETRY_SECONDS" in str(err.value) and dead.endpoint in str(err.value)


@pytest.mark.parametrize("parallel", ["1", "3"])
def test_server_outage_during_multipart_upload_is_survived(restartable_s3_server, monkeypatch,
                                                          tmp_path, parallel):
    server = restartable_s3_server
    bucket = "outage-bucket"
    # create_bucket: moto forgets the bucket on restart (MinIO would keep it); the fixture
    # recreates it too, whichever comes first.
    apply_s3_env(monkeypatch, server, SCENEBENCH_S3_PART_SIZE_MB="5",
                 SCENEBENCH_S3_PARALLEL_UPLOADS=parallel, SCENEBENCH_S3_RETRY_SECONDS="30",
                 SCENEBENCH_S3_CREATE_BUCKET="true")
    ensure_bucket(server.client(), bucket)
    src = _random_file(tmp_path / "model.keras", 20 * MIB + 12345)  # 5 parts of 5 MiB
    digest = sha256_file(src)
    key = "runs/r1/resnet50/model/model.keras"
    store = S3Store.from_uri(f"s3://{bucket}/run-test")

    stopped = threading.Event()
    restarted = threading.Event()
    parts_before_outage: list[int] = []

    def outage():
        client = server.client()
        # Wait until the first part is on the server, so the outage is mid-upload for sure.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            uploads = client._list_multipart_uploads(bucket, prefix="run-test/").uploads
            if uploads:
                parts = client._list_parts(bucket, uploads[0].object_name, uploads[0].upload_id).parts
                if parts:
                    parts_before_outage.append(len(parts))
                    break
            time.sleep(0.02)
        server.stop()
        stopped.set()
        time.sleep(1.0)
        server.restart(recreate_buckets=(bucket,))
        restarted.set()

    killer: list[threading.Thread] = []

    def on_progress(k, done, total):
        # Reading of the second part has begun: trigger the outage and hold the uploader
        # until the server is really gone, so the rest of the upload hits a dead endpoint.
        if not killer and done > 5 * MIB:
            t = threading.Thread(target=outage, daemon=True)
            killer.append(t)
            t.start()
            assert stopped.wait(15)

    store.on_progress = on_progress
    with capture_logs() as logs:
        info = store.put_file(key, src)
    killer[0].join(20)
    assert restarted.is_set() and parts_before_outage and parts_before_outage[0] >= 1

    retries = [e for e in logs if e["event"] == "s3_retry" and e["op"] == "put"]
    assert retries, "the upload should have hit the outage and retried"
    assert any(e["event"] == "s3_recovered" and e["op"] == "put" for e in logs)

    assert info.sha256 == digest and info.size == src.stat().st_size
    raw = server.client().stat_object(bucket, "run-test/" + key)
    assert raw.size == src.stat().st_size and raw.metadata[META_SHA256] == digest
    fresh = S3Store.from_uri(f"s3://{bucket}/run-test")
    out = fresh.get_file(key, tmp_path / "back.keras")
    assert sha256_file(out) == digest


def test_tls_to_a_plain_http_server_fails_fast_with_a_hint(s3_server, monkeypatch):
    if s3_server.secure:
        pytest.skip("the test server speaks TLS")
    apply_s3_env(monkeypatch, s3_server, SCENEBENCH_S3_RETRY_SECONDS="60",
                 SCENEBENCH_S3_ENDPOINT=s3_server.endpoint.replace("http://", "https://"))
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        S3Store.from_uri("s3://scenebench-test/x").stat("runs/r1/run.json")
    assert time.monotonic() - started < 5
    assert "use http:// in SCENEBENCH_S3_ENDPOINT" in str(err.value)


@pytest.mark.parametrize("status,code", [(503, "SlowDown"), (500, "InternalError")])
def test_throttling_and_server_errors_are_retried(s3_server, s3_store_uri, monkeypatch, status, code):
    bucket, prefix = s3_store_uri[len("s3://"):].split("/", 1)
    proxy = FlakyProxy(s3_server.endpoint, failures=3, status=status, code=code)
    try:
        apply_s3_env(monkeypatch, s3_server, SCENEBENCH_S3_ENDPOINT=proxy.endpoint,
                     SCENEBENCH_S3_RETRY_SECONDS="20")
        store = S3Store.from_uri(s3_store_uri)
        with capture_logs() as logs:
            info = store.put_bytes("runs/r1/run.json", b'{"ok": true}')
            proxy.failures_left = 2
            assert store.get_bytes("runs/r1/run.json") == b'{"ok": true}'
        retries = [e for e in logs if e["event"] == "s3_retry"]
        assert [e["op"] for e in retries] == ["put"] * 3 + ["get"] * 2
        assert all(e["error"].startswith(code) for e in retries)
        assert store.stat("runs/r1/run.json").sha256 == info.sha256
    finally:
        proxy.close()
