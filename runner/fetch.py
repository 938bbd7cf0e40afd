"""Fetch a model by URL into the runner's cache and prove its sha256 before anything runs it."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from common.errors import ScenebenchError

CHUNK = 1 << 20


class FetchError(ScenebenchError):
    """The model could not be fetched, or its bytes are not the ones the request named."""


def fetch_model(url: str, sha256: str, cache_dir: str | Path, timeout_s: float = 300.0) -> Path:
    """Return a local path to the verified model, downloading it unless the cache has it.

    The cache is keyed by sha256, so a model shared by many jobs (one per delegate) is
    fetched once; a cached file is re-hashed before use because a disk can rot too.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / f"{sha256}.tflite"
    if dest.is_file() and _sha256(dest) == sha256:
        return dest
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out:
            _copy_url(url, out, timeout_s)
        actual = _sha256(Path(tmp))
        if actual != sha256:
            raise FetchError(
                f"sha256 mismatch for {_redact(url)}: the downloaded bytes hash to {actual}, the request "
                f"says {sha256}; refusing to run a model that is not the one asked for"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _copy_url(url: str, out, timeout_s: float) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        try:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from None
    elif parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                shutil.copyfileobj(resp, out, CHUNK)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"download of {_redact(url)} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise FetchError(f"download of {_redact(url)} failed: {getattr(exc, 'reason', exc)}") from None
    else:
        raise FetchError(f"model_url scheme {parsed.scheme!r} is not supported: use http://, https:// or file://")


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
