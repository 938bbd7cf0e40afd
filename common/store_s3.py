"""S3/MinIO backend of the artifact store (s3://bucket/prefix): checksummed, streamed and retried.

Configuration comes from the environment, with the names S3 users already know:

    SCENEBENCH_S3_ENDPOINT        host:port or http(s)://host:port (AWS_ENDPOINT_URL also read);
                                  unset means AWS S3 (s3.amazonaws.com)
    AWS_ACCESS_KEY_ID             access key (MinIO: the root user or a service account)
    AWS_SECRET_ACCESS_KEY         secret key
    AWS_SESSION_TOKEN             optional, for temporary credentials
    SCENEBENCH_S3_REGION          region (AWS_REGION also read); unset: asked from the server
    SCENEBENCH_S3_SECURE          true|false: TLS; derived from http:// or https:// in the
                                  endpoint, otherwise true
    SCENEBENCH_S3_CREATE_BUCKET   true|false (default false): create the bucket when missing
    SCENEBENCH_S3_RETRY_SECONDS   total time transient failures are retried (default 120)
    SCENEBENCH_S3_TIMEOUT_SECONDS socket timeout of one request (default 60)
    SCENEBENCH_S3_PART_SIZE_MB    multipart part size, 5..5120 (default 16)
    SCENEBENCH_S3_PARALLEL_UPLOADS parts uploaded at once, 1..16 (default 3)
    SCENEBENCH_S3_PUBLIC_ENDPOINT endpoint put in presigned URLs when the one the jobs use is
                                  not reachable by their reader (e.g. the device farm)

Every object carries its sha256 in `x-amz-meta-sha256`; every download is hashed while it
streams to a temporary file and only renamed into place when the hash matches.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlparse

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import (
    ChecksumError,
    ConfigError,
    NotFoundError,
    StoreError,
    TransientStoreError,
)
from common.hashing import CHUNK, sha256_bytes, sha256_file
from common.logging import get_logger
from common.store import ArtifactStore, ObjectInfo, _content_type

T = TypeVar("T")

META_SHA256 = "x-amz-meta-sha256"
MIB = 1 << 20
AWS_ENDPOINT = "s3.amazonaws.com"

# field -> the variable a person sets; used in every message about a bad value
ENV_NAMES: dict[str, str] = {
    "endpoint": "SCENEBENCH_S3_ENDPOINT",
    "access_key": "AWS_ACCESS_KEY_ID",
    "secret_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
    "region": "SCENEBENCH_S3_REGION",
    "secure": "SCENEBENCH_S3_SECURE",
    "create_bucket": "SCENEBENCH_S3_CREATE_BUCKET",
    "retry_seconds": "SCENEBENCH_S3_RETRY_SECONDS",
    "timeout_seconds": "SCENEBENCH_S3_TIMEOUT_SECONDS",
    "part_size_mb": "SCENEBENCH_S3_PART_SIZE_MB",
    "parallel_uploads": "SCENEBENCH_S3_PARALLEL_UPLOADS",
    "public_endpoint": "SCENEBENCH_S3_PUBLIC_ENDPOINT",
}

_VALID_HINTS: dict[str, str] = {
    "secure": "true, false",
    "create_bucket": "true, false",
    "retry_seconds": "a number of seconds, 0..3600",
    "timeout_seconds": "a number of seconds, 1..3600",
    "part_size_mb": "an integer, 5..5120 (S3's part size limits)",
    "parallel_uploads": "an integer, 1..16",
}


def _alias(field: str, *more: str) -> Any:
    # The field name stays accepted so tests and callers can pass values directly.
    return AliasChoices(ENV_NAMES[field], *more, field)


class S3Settings(BaseSettings):
    """Where the S3 store is and how hard it tries; read from the environment at store open."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        env_ignore_empty=True,
        populate_by_name=True,
    )

    endpoint: str | None = Field(
        None, validation_alias=_alias("endpoint", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="host:port or http(s)://host:port; unset means AWS S3")
    access_key: SecretStr | None = Field(None, validation_alias=_alias("access_key"))
    secret_key: SecretStr | None = Field(None, validation_alias=_alias("secret_key"))
    session_token: SecretStr | None = Field(None, validation_alias=_alias("session_token"))
    region: str | None = Field(
        None, validation_alias=_alias("region", "AWS_REGION", "AWS_DEFAULT_REGION"))
    secure: bool | None = Field(None, validation_alias=_alias("secure"))
    create_bucket: bool = Field(False, validation_alias=_alias("create_bucket"))
    retry_seconds: float = Field(120.0, ge=0, le=3600, validation_alias=_alias("retry_seconds"))
    timeout_seconds: float = Field(60.0, ge=1, le=3600, validation_alias=_alias("timeout_seconds"))
    part_size_mb: int = Field(16, ge=5, le=5120, validation_alias=_alias("part_size_mb"))
    parallel_uploads: int = Field(3, ge=1, le=16, validation_alias=_alias("parallel_uploads"))
    public_endpoint: str | None = Field(None, validation_alias=_alias("public_endpoint"))


def load_s3_settings(**overrides: Any) -> S3Settings:
    """S3Settings from the environment (overrides win); a bad value is one ConfigError."""
    try:
        settings = S3Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = str((err.get("loc") or ("?",))[0])
            field = next((f for f, env in ENV_NAMES.items() if loc in (f, env)), loc)
            var = ENV_NAMES.get(field, loc)
            value = err.get("input")
            if isinstance(value, SecretStr):
                value = "***"
            valid = _VALID_HINTS.get(field)
            hint = f"; valid values: {valid}" if valid else ""
            lines.append(f"bad setting {var} = {value!r}: {err.get('msg', 'invalid value')}{hint}")
        raise ConfigError("invalid S3 configuration:\n  " + "\n  ".join(lines)) from None
    # Checked here, not lazily, so a job with a broken endpoint fails before any work.
    parse_endpoint(settings.endpoint, settings.secure, "endpoint")
    if settings.public_endpoint:
        parse_endpoint(settings.public_endpoint, settings.secure, "public_endpoint")
    if (settings.access_key is None) != (settings.secret_key is None):
        given, missing = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
                          if settings.access_key is not None
                          else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"))
        raise ConfigError(f"{given} is set but {missing} is not: set both, or neither for anonymous access")
    return settings


def parse_endpoint(value: str | None, secure: bool | None, field: str = "endpoint") -> tuple[str, bool]:
    """'minio:9000' / 'http://minio:9000' / None -> (host[:port], use TLS)."""
    var = ENV_NAMES[field]
    if not value:
        return AWS_ENDPOINT, True if secure is None else secure
    text = value.strip()
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme not in ("http", "https"):
            raise ConfigError(f"bad setting {var} = {value!r}: scheme must be http:// or https://, "
                              "or give host:port alone")
        if parsed.path not in ("", "/") or parsed.query or parsed.params or parsed.fragment:
            raise ConfigError(f"bad setting {var} = {value!r}: give only scheme, host and port "
                              "(the bucket comes from the s3:// store URI)")
        url_secure = parsed.scheme == "https"
        if secure is not None and secure != url_secure:
            raise ConfigError(f"{var} = {value!r} says {parsed.scheme}:// but SCENEBENCH_S3_SECURE="
                              f"{str(secure).lower()}: drop one of them or make them agree")
        host = parsed.netloc
    else:
        host, url_secure = text.rstrip("/"), (True if secure is None else secure)
    try:
        port = urlparse("//" + host).port
    except ValueError:
        port = -1
    if not host or "/" in host or "@" in host or port == -1 or (port is not None and not 0 < port < 65536):
        raise ConfigError(f"bad setting {var} = {value!r}: expected host:port or http(s)://host:port, "
                          "e.g. http://minio:9000")
    return host, url_secure


def _check_bucket(bucket: str, uri: str) -> None:
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or ".." in bucket:
        raise ConfigError(
            f"store {uri!r}: bucket name {bucket!r} is not valid: 3-63 characters, lowercase "
            "letters, digits, '.' and '-', starting and ending with a letter or digit"
        )


# ----------------------------------------------------------------- failure classes
# Codes a retry can fix: the server is busy, restarting or briefly unable to answer.
TRANSIENT_CODES = frozenset({
    "SlowDown", "SlowDownRead", "SlowDownWrite", "InternalError", "ServiceUnavailable",
    "RequestTimeout", "OperationAborted", "Throttling", "ThrottlingException",
    "RequestLimitExceeded", "RequestThrottled", "XMinioServerNotInitialized",
    "XMinioReadQuorum", "XMinioWriteQuorum", "IncompleteBody",
})
NOT_FOUND_CODES = frozenset({"NoSuchKey", "ResourceNotFound", "NoSuchObject"})


def status_of(exc: BaseException) -> int | None:
    """The HTTP status behind a minio error, when there was a response."""
    if isinstance(exc, S3Error):
        response = getattr(exc, "response", None)
        return getattr(response, "status", None)
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        return getattr(exc, "_code", None)
    return None


def is_transient(exc: BaseException) -> bool:
    """True when the same request may succeed later (network trouble, 5xx, throttling)."""
    if isinstance(exc, S3Error):
        if exc.code in TRANSIENT_CODES:
            return True
        status = status_of(exc)
        return status is not None and (status >= 500 or status == 429) and exc.code not in PERMANENT_HINTS
    if isinstance(exc, (ServerError, InvalidResponseError)):
        status = status_of(exc)
        # A proxy in front of MinIO answering HTML 502/503 while MinIO restarts is transient.
        return status is not None and (status >= 500 or status == 429)
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return exc.reason is None or is_transient(exc.reason)
    if isinstance(exc, (urllib3.exceptions.SSLError, urllib3.exceptions.LocationParseError,
                        urllib3.exceptions.ProxySchemeUnknown)):
        return False
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return True  # ProtocolError, NewConnectionError, timeouts, NameResolutionError...
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException)):
        return True
    return False


PERMANENT_HINTS: dict[str, str] = {
    "AccessDenied": "the credentials in AWS_ACCESS_KEY_ID may not read/write this bucket: "
                    "grant them s3:GetObject, s3:PutObject, s3:ListBucket (and s3:DeleteObject) "
                    "on it, e.g. `mc admin policy attach` on MinIO, or use other credentials",
    "NoSuchBucket": "the bucket does not exist on this endpoint: create it (`mc mb ALIAS/BUCKET`), "
                    "fix the bucket in the store URI, or set SCENEBENCH_S3_CREATE_BUCKET=true",
    "InvalidAccessKeyId": "the server does not know AWS_ACCESS_KEY_ID: check it, and that "
                          "SCENEBENCH_S3_ENDPOINT points at the server those credentials belong to",
    "SignatureDoesNotMatch": "AWS_SECRET_ACCESS_KEY does not belong to AWS_ACCESS_KEY_ID (or a proxy "
                             "rewrites the Host header): check the secret",
    "ExpiredToken": "AWS_SESSION_TOKEN has expired: refresh the temporary credentials",
    "InvalidToken": "AWS_SESSION_TOKEN is not valid: refresh the temporary credentials",
    "AuthorizationHeaderMalformed": "the bucket is in another region: set SCENEBENCH_S3_REGION",
    "PermanentRedirect": "the bucket is in another region or behind another endpoint: set "
                         "SCENEBENCH_S3_REGION / SCENEBENCH_S3_ENDPOINT",
    "InvalidBucketName": "fix the bucket name in the store URI",
    "AllAccessDisabled": "all access to this bucket has been disabled by its owner",
    "AccountProblem": "the account behind AWS_ACCESS_KEY_ID is suspended or misconfigured",
    "XMinioStorageFull": "the MinIO server is out of disk space: free space or expand the volume",
    "EntityTooLarge": "the object exceeds the server's size limit",
    "MethodNotAllowed": "the server refused the method: is SCENEBENCH_S3_ENDPOINT an S3 API "
                        "(MinIO port 9000, not the console on 9001)?",
}


def _hint(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return PERMANENT_HINTS.get(exc.code or "", "see the server's error code above")
    root = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    if isinstance(root, urllib3.exceptions.SSLError):
        return ("TLS failed: if the server speaks plain HTTP use http:// in SCENEBENCH_S3_ENDPOINT "
                "(or SCENEBENCH_S3_SECURE=false); for a private CA point SSL_CERT_FILE at it")
    if isinstance(exc, (ServerError, InvalidResponseError)):
        return ("the endpoint did not answer like S3: is SCENEBENCH_S3_ENDPOINT the S3 API "
                "(MinIO port 9000, not the console on 9001)?")
    return "see the error above"


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code}: {(exc.message or '').rstrip('.')}"
    text = str(exc)
    return text if len(text) < 400 else text[:400] + "..."


class _Progress:
    """What minio's `progress=` expects (set_meta/update), forwarded to an optional callback."""

    def __init__(self, key: str, callback: Callable[[str, int, int], None] | None):
        self.key = key
        self.total = 0
        self.done = 0
        self.callback = callback

    def set_meta(self, object_name: str, total_length: int) -> None:
        self.total = total_length

    def update(self, size: int) -> None:
        self.done += size
        if self.callback is not None:
            self.callback(self.key, self.done, self.total)


class S3Store(ArtifactStore):
    """Artifacts in an S3 bucket under a prefix; the same keys as LocalStore."""

    def __init__(self, bucket: str, prefix: str = "", settings: S3Settings | None = None):
        self.settings = settings or load_s3_settings()
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        _check_bucket(bucket, self.uri)
        s = self.settings
        self.host, self.secure = parse_endpoint(s.endpoint, s.secure)
        self.endpoint = ("https://" if self.secure else "http://") + self.host
        self._client = self._make_client(self.host, self.secure, s.region)
        self._public_client: Minio | None = None
        self._bucket_ready = False
        # Called as (key, bytes_read, total) while an upload reads its file; a hook for
        # progress reporting on large models.
        self.on_progress: Callable[[str, int, int], None] | None = None

    @classmethod
    def from_uri(cls, uri: str, settings: S3Settings | None = None) -> "S3Store":
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(f"store {uri!r} is not an S3 URI: use s3://bucket or s3://bucket/prefix")
        if parsed.query or parsed.fragment:
            raise ConfigError(f"store {uri!r}: no ?query or #fragment in an s3:// URI")
        return cls(parsed.netloc, parsed.path, settings)

    def _make_client(self, host: str, secure: bool, region: str | None) -> Minio:
        s = self.settings
        # Our own pool, with urllib3's retries off: the bounded, logged retry loop below is
        # the only one, so SCENEBENCH_S3_RETRY_SECONDS really bounds the time spent.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(10.0, s.timeout_seconds), read=s.timeout_seconds),
            maxsize=max(10, s.parallel_uploads),
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        return Minio(
            host,
            access_key=s.access_key.get_secret_value() if s.access_key else None,
            secret_key=s.secret_key.get_secret_value() if s.secret_key else None,
            session_token=s.session_token.get_secret_value() if s.session_token else None,
            secure=secure,
            region=region,
            http_client=http,
        )

    # ------------------------------------------------------------- helpers
    def _object(self, key: str) -> str:
        key = key.lstrip("/")
        if not key or ".." in key.split("/") or key.endswith("/"):
            raise ValueError(f"bad store key {key!r}")
        return self.prefix + key

    def describe(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key.lstrip('/')}"

    def _log(self):
        # Fetched per event so that loggers configured (or captured in tests) later apply.
        return get_logger(store=self.uri)

    def _call(self, op: str, key: str | None, fn: Callable[[], T], *, write: bool = False) -> T:
        """Run one S3 operation, retrying transient failures until the retry budget is spent."""
        if self.settings.create_bucket and not self._bucket_ready and op != "create_bucket":
            # Before the first operation of any kind: a first read of a fresh bucket (a step
            # looking for its cached output) must find "no such key", not "no such bucket".
            self._create_bucket()
        budget = self.settings.retry_seconds
        start = time.monotonic()
        attempt = 0
        bucket_created = False
        where = self.describe(key or "")
        while True:
            attempt += 1
            try:
                result = fn()
                if attempt > 1:
                    self._log().info("s3_recovered", op=op, key=key, attempts=attempt,
                                     seconds=round(time.monotonic() - start, 2))
                return result
            except (MinioException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError,
                    socket.timeout, http.client.HTTPException) as exc:
                error = exc
            code = getattr(error, "code", None)
            if isinstance(error, S3Error) and code in NOT_FOUND_CODES:
                raise NotFoundError(f"{where} does not exist (endpoint {self.endpoint})") from error
            if (isinstance(error, S3Error) and code == "NoSuchBucket" and write
                    and self.settings.create_bucket and not bucket_created):
                # The bucket vanished (or never was) and we may create it: do so and go on.
                self._create_bucket()
                bucket_created = True
                continue
            if not is_transient(error):
                raise StoreError(
                    f"S3 {op} of {where} at {self.endpoint} failed: {_describe_error(error)}. "
                    f"Likely fix: {_hint(error)}"
                ) from error
            elapsed = time.monotonic() - start
            remaining = budget - elapsed
            if remaining <= 0:
                raise TransientStoreError(
                    f"S3 {op} of {where} at {self.endpoint} still failing after {attempt} attempts "
                    f"over {elapsed:.1f}s: {_describe_error(error)}. Likely fix: check that the "
                    "server is up and reachable from here, or allow more time with "
                    "SCENEBENCH_S3_RETRY_SECONDS"
                ) from error
            # Exponential backoff with jitter so that many pods do not retry in lock-step.
            delay = min(remaining, min(8.0, 0.25 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
            self._log().warning("s3_retry", op=op, key=key, attempt=attempt,
                                error=_describe_error(error), error_type=type(error).__name__,
                                delay_s=round(delay, 2), remaining_s=round(remaining, 1),
                                endpoint=self.endpoint)
            time.sleep(delay)

    def _create_bucket(self) -> None:
        def create() -> bool:
            if self._client.bucket_exists(self.bucket):
                return False
            try:
                self._client.make_bucket(self.bucket, location=self.settings.region or "us-east-1")
            except S3Error as exc:
                if exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    return False  # someone else won the race; fine
                raise
            return True

        if self._call("create_bucket", None, create):
            self._log().info("s3_bucket_created", bucket=self.bucket, endpoint=self.endpoint)
        self._bucket_ready = True

    # ------------------------------------------------------------- primitives
    def put_file(self, key: str, path: str | Path, *, sha256: str | None = None) -> ObjectInfo:
        obj = self._object(key)
        path = Path(path)
        size = path.stat().st_size
        digest = sha256_file(path)
        if sha256 and sha256 != digest:
            raise ChecksumError(f"{path} hashes to {digest}, not the expected {sha256}; "
                                f"refusing to upload it as {self.describe(key)}")
        started = time.monotonic()
        # fput_object streams the file: single PUT up to one part, multipart beyond, holding at
        # most `parallel_uploads` parts in memory. Each retry starts a fresh upload.
        self._call("put", key, lambda: self._client.fput_object(
            self.bucket, obj, str(path),
            content_type=_content_type(key),
            metadata={META_SHA256: digest},
            part_size=self.settings.part_size_mb * MIB,
            num_parallel_uploads=self.settings.parallel_uploads,
            progress=_Progress(key, self.on_progress),
        ), write=True)
        # What the server now holds must be the whole file with its checksum: an interrupted
        # and retried multipart upload must never leave a short or unlabelled object.
        stored = self.stat(key)
        if stored is None or stored.size != size or stored.sha256 != digest:
            raise ChecksumError(
                f"{self.describe(key)} at {self.endpoint}: after upload the server reports "
                f"size={getattr(stored, 'size', None)} sha256={getattr(stored, 'sha256', None)}, "
                f"expected size={size} sha256={digest}"
            )
        self._log().debug("s3_put", key=key, size=size, sha256=digest,
                          seconds=round(time.monotonic() - started, 3))
        return ObjectInfo(key=key, size=size, sha256=digest)

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        obj = self._object(key)
        headers = {"If-None-Match": "*", "Content-Type": _content_type(key), META_SHA256: sha256_bytes(data)}

        def put() -> bool:
            try:
                # A conditional PUT (S3 since 2024, MinIO): 412 when the key exists, 409 when
                # another conditional write of it is in flight; either way someone else has it.
                # put_object would file If-None-Match under user metadata, hence _put_object.
                self._client._put_object(self.bucket, obj, data, headers=headers)
            except S3Error as exc:
                if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                raise
            return True

        return self._call("put", key, put, write=True)

    def get_file(self, key: str, path: str | Path, *, sha256: str | None = None) -> Path:
        obj = self._object(key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        def download() -> tuple[str, str, str | None, int]:
            response = self._client.get_object(self.bucket, obj)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                recorded = response.headers.get(META_SHA256)
                h = hashlib.sha256()
                n = 0
                with os.fdopen(fd, "wb") as f:
                    for chunk in response.stream(CHUNK):
                        f.write(chunk)
                        h.update(chunk)
                        n += len(chunk)
                return tmp, h.hexdigest(), recorded, n
            except BaseException:
                os.unlink(tmp)
                raise
            finally:
                response.close()
                response.release_conn()

        tmp, actual, recorded, size = self._call("get", key, download)
        try:
            for label, expected in (("expected", sha256), ("recorded", recorded)):
                if expected and actual != expected:
                    raise ChecksumError(
                        f"{self.describe(key)} at {self.endpoint}: downloaded sha256 {actual} does "
                        f"not match the {label} {expected}; the object is corrupt or was "
                        "overwritten — re-run the step that writes it (with --force)"
                    )
            if not (sha256 or recorded):
                # Objects written by other tools (raw datasets) carry no checksum of ours.
                self._log().debug("s3_get_unverified", key=key, size=size)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def stat(self, key: str) -> ObjectInfo | None:
        obj = self._object(key)
        try:
            info = self._call("stat", key, lambda: self._client.stat_object(self.bucket, obj))
        except NotFoundError:
            return None
        return ObjectInfo(key=key, size=int(info.size or 0),
                          sha256=(info.metadata or {}).get(META_SHA256))

    def list(self, prefix: str = "") -> list[str]:
        full = self.prefix + prefix.lstrip("/")

        def listing() -> list[str]:
            return [o.object_name for o in
                    self._client.list_objects(self.bucket, prefix=full, recursive=True)
                    if not o.is_dir and o.object_name]

        names = self._call("list", prefix, listing)
        return sorted(n[len(self.prefix):] for n in names)

    def delete(self, key: str) -> None:
        obj = self._object(key)
        self._call("delete", key, lambda: self._client.remove_object(self.bucket, obj), write=False)

    def url(self, key: str, expires_s: int = 24 * 3600) -> str:
        obj = self._object(key)
        if not 1 <= int(expires_s) <= 7 * 24 * 3600:
            raise ConfigError(f"presigned URL lifetime {expires_s}s is out of range: S3 allows "
                              "1 second to 7 days (604800 s)")
        client = self._presign_client()
        return self._call("url", key, lambda: client.presigned_get_object(
            self.bucket, obj, expires=timedelta(seconds=int(expires_s))))

    def _presign_client(self) -> Minio:
        public = self.settings.public_endpoint
        if not public:
            return self._client
        if self._public_client is None:
            host, secure = parse_endpoint(public, self.settings.secure, "public_endpoint")
            # Signing needs the region but must not talk to the public endpoint, which the jobs
            # themselves may not reach; ask the internal one (minio has no public API for it).
            region = self.settings.region or self._call(
                "region", None, lambda: self._client._get_region(self.bucket))
            self._public_client = self._make_client(host, secure, region)
        return self._public_client
