"""Fetch a model by URL into the runner's cache and prove its sha256 before anything runs it."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from common.errors import ScenebenchError

CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 1 << 30  # ResNet50 float is ~100 MB; a GiB leaves room and still bounds a bad URL


class FetchError(ScenebenchError):
    """The model could not be fetched, or its bytes are not the ones the request named."""


class Sha256Mismatch(FetchError):
    """The fetched bytes hash differently. `actual` is for the runner's own log only: the caller
    named the URL, and echoing the hash of what it points at would let a caller learn the hash
    of a file or an internal URL it cannot read itself."""

    def __init__(self, message: str, actual: str):
        super().__init__(message)
        self.actual = actual


def fetch_model(url: str, sha256: str, cache_dir: str | Path, *, file_root: str | Path | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES, timeout_s: float = 300.0) -> Path:
    """Return a local path to the verified model, downloading it unless the cache has it.

    The cache is keyed by sha256, so a model shared by many jobs (one per delegate) is
    fetched once; a cached file is re-hashed before use because a disk can rot too.
    file_root: file:// URLs are read only from inside this directory (symlinks resolved);
    None refuses file:// altogether. max_bytes caps what one download may write to disk.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / f"{sha256}.tflite"
    if dest.is_file() and _sha256(dest) == sha256:
        return dest
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out:
            _copy_url(url, out, file_root, max_bytes, timeout_s)
        actual = _sha256(Path(tmp))
        if actual != sha256:
            raise Sha256Mismatch(
                f"sha256 mismatch for {_redact(url)}: the fetched bytes do not hash to the request's {sha256}; "
                f"refusing to run a model that is not the one asked for", actual)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _copy_url(url: str, out: BinaryIO, file_root: str | Path | None, max_bytes: int, timeout_s: float) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        with _open_confined(parsed, file_root) as src:
            _copy(src, out, max_bytes, url)
    elif parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                announced = resp.headers.get("Content-Length", "")
                if announced.isascii() and announced.isdigit() and int(announced) > max_bytes:
                    raise FetchError(_too_big(url, max_bytes, f"it announces {int(announced)} bytes"))
                _copy(resp, out, max_bytes, url)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"download of {_redact(url)} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise FetchError(f"download of {_redact(url)} failed: {getattr(exc, 'reason', exc)}") from None
    else:
        raise FetchError(f"model_url scheme {parsed.scheme!r} is not supported: use http://, https:// or file://")


def _open_confined(parsed, file_root: str | Path | None) -> BinaryIO:
    """Open a file:// URL's file if, with every symlink resolved, it lies inside file_root.

    Errors name the path the caller gave, never where a symlink leads: that is the runner's
    business, not the caller's.
    """
    given = unquote(parsed.path)
    if file_root is None:
        raise FetchError("file:// model URLs are off on this runner: send an http(s):// URL, or start the runner "
                         "with --model-dir DIR (SCENEBENCH_MODEL_DIR) to allow files under DIR")
    if parsed.netloc not in ("", "localhost"):
        raise FetchError(f"file:// URL names host {parsed.netloc!r}; only local files (file:///path) can be read")
    root = Path(os.path.realpath(Path(file_root).expanduser()))
    real = Path(os.path.realpath(given))
    if not Path(given).is_absolute() or not real.is_relative_to(root):
        raise FetchError(f"file:// path {given} is outside the runner's model directory {root}; "
                         f"only files under --model-dir can be read")
    try:
        # O_NOFOLLOW: the path was resolved above; a symlink swapped in since then is refused, not followed.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise FetchError(f"cannot read {given}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device would never end
        os.close(fd)
        raise FetchError(f"file:// path {given} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _copy(src: BinaryIO, out: BinaryIO, max_bytes: int, url: str) -> None:
    """Copy at most max_bytes; one byte more fails the fetch before the disk fills."""
    written = 0
    while chunk := src.read(CHUNK):
        written += len(chunk)
        if written > max_bytes:
            raise FetchError(_too_big(url, max_bytes, "it is larger"))
        out.write(chunk)


def _too_big(url: str, max_bytes: int, why: str) -> str:
    return (f"model at {_redact(url)} exceeds the runner's download cap of {max_bytes} bytes ({why}); "
            f"raise --max-model-mb if the model is really that big")


def _redact(url: str) -> str:
    """The URL without its query: presigned signatures must not end up in logs or job errors."""
    p = urlparse(url)
    return p._replace(query="", fragment="").geturl() + ("?…" if p.query else "")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
