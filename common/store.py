"""The artifact store: one interface, a local-folder backend and (common.store_s3) S3/MinIO.

Keys are '/'-separated paths in the DESIGN.md layout (see common.layout). Every object's
sha256 is known to the store (S3 object metadata, or a sidecar for local folders) and is
checked on every download. Writers put binaries first and the JSON that points at them last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel

from common.errors import ChecksumError, ConfigError, NotFoundError
from common.hashing import sha256_bytes, sha256_file

M = TypeVar("M", bound=BaseModel)

SHA_SUFFIX = ".sha256"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None


def _content_type(key: str) -> str:
    if key.endswith(".json"):
        return "application/json"
    if key.endswith(".html"):
        return "text/html; charset=utf-8"
    if key.endswith(".md"):
        return "text/markdown; charset=utf-8"
    if key.endswith(".png"):
        return "image/png"
    return "application/octet-stream"


class ArtifactStore(ABC):
    """Where a run's artifacts live. Library code receives paths; jobs talk to the store."""

    uri: str

    # -- primitives every backend implements
    @abstractmethod
    def put_file(self, key: str, path: str | Path, *, sha256: str | None = None) -> ObjectInfo:
        """Upload a local file (streamed); records its sha256. Returns what was stored."""

    @abstractmethod
    def get_file(self, key: str, path: str | Path, *, sha256: str | None = None) -> Path:
        """Download to `path` (atomically), verifying sha256 (given, or the recorded one)."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and recorded sha256, or None when the object does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys under prefix (recursive), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; missing objects are fine."""

    @abstractmethod
    def url(self, key: str, expires_s: int = 24 * 3600) -> str:
        """A URL that fetches the object without credentials (presigned for S3)."""

    @abstractmethod
    def describe(self, key: str = "") -> str:
        """Human-readable location of key, for messages (e.g. s3://bucket/prefix/key)."""

    @abstractmethod
    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        """Create key with data unless it exists, atomically; False when it existed (nothing written).

        Two writers racing for one key: exactly one creates it, the other gets False.
        """

    # -- conveniences built on the primitives
    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        with tempfile.NamedTemporaryFile(delete=False) as tmp:
            tmp.write(data)
        try:
            return self.put_file(key, tmp.name, sha256=sha256_bytes(data))
        finally:
            os.unlink(tmp.name)

    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            p = self.get_file(key, Path(d) / "obj", sha256=sha256)
            return p.read_bytes()

    def put_json(self, key: str, doc: BaseModel | dict[str, Any]) -> ObjectInfo:
        if isinstance(doc, BaseModel):
            text = doc.model_dump_json(indent=2)
        else:
            text = json.dumps(doc, indent=2, sort_keys=True, default=str)
        return self.put_bytes(key, (text + "\n").encode())

    def get_json(self, key: str) -> dict[str, Any]:
        return json.loads(self.get_bytes(key))

    def get_model(self, key: str, model: type[M]) -> M:
        return model.model_validate(self.get_json(key))

    def try_get_model(self, key: str, model: type[M]) -> M | None:
        try:
            return self.get_model(key, model)
        except NotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def get_prefix(self, prefix: str, dest: str | Path) -> list[Path]:
        """Download every object under prefix into dest, keeping relative paths."""
        out = []
        for key in self.list(prefix):
            rel = key[len(prefix):].lstrip("/")
            out.append(self.get_file(key, Path(dest) / rel))
        return out


class LocalStore(ArtifactStore):
    """A folder on disk (file://PATH). sha256 sidecars are kept next to each object."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        key = key.lstrip("/")
        if not key or ".." in Path(key).parts:
            raise ValueError(f"bad store key {key!r}")
        return self.root / key

    def describe(self, key: str = "") -> str:
        return str(self._path(key)) if key else str(self.root)

    def put_file(self, key: str, path: str | Path, *, sha256: str | None = None) -> ObjectInfo:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = sha256 or sha256_file(path)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            actual = sha256_file(tmp) if sha256 else digest
            if actual != digest:
                raise ChecksumError(f"{self.describe(key)}: copy hashed {actual}, expected {digest}")
            # sidecar first: an object never exists without its checksum
            Path(str(dest) + SHA_SUFFIX).write_text(digest + "\n")
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return ObjectInfo(key=key, size=dest.stat().st_size, sha256=digest)

    def stat(self, key: str) -> ObjectInfo | None:
        p = self._path(key)
        if not p.is_file():
            return None
        side = Path(str(p) + SHA_SUFFIX)
        digest = side.read_text().strip() if side.is_file() else None
        return ObjectInfo(key=key, size=p.stat().st_size, sha256=digest)

    def get_file(self, key: str, path: str | Path, *, sha256: str | None = None) -> Path:
        info = self.stat(key)
        if info is None:
            raise NotFoundError(f"{self.describe(key)} does not exist")
        expected = sha256 or info.sha256
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(self._path(key), tmp)
            if expected:
                actual = sha256_file(tmp)
                if actual != expected:
                    raise ChecksumError(
                        f"{self.describe(key)}: sha256 {actual} does not match the recorded "
                        f"{expected}; the object is corrupt or was overwritten — re-run the step "
                        "that writes it (with --force)"
                    )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                # link() never replaces: of two racing writers exactly one creates the name,
                # and a reader sees either nothing or the whole content.
                os.link(tmp, dest)
            except FileExistsError:
                return False
            Path(str(dest) + SHA_SUFFIX).write_text(sha256_bytes(data) + "\n")
            return True
        finally:
            os.unlink(tmp)

    def list(self, prefix: str = "") -> list[str]:
        base = self.root
        if not base.exists():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".tmp-")]
            for name in filenames:
                if name.endswith(SHA_SUFFIX) or name.startswith(".tmp-"):
                    continue
                key = str((Path(dirpath) / name).relative_to(base)).replace(os.sep, "/")
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        for p in (self._path(key), Path(str(self._path(key)) + SHA_SUFFIX)):
            if p.exists():
                p.unlink()

    def url(self, key: str, expires_s: int = 24 * 3600) -> str:
        return self._path(key).as_uri()


def open_store(uri: str) -> ArtifactStore:
    """file://PATH, a plain path, or s3://bucket[/prefix] (endpoint and keys from settings)."""
    if not uri:
        raise ConfigError("store URI is empty: give --store file://./artifacts or s3://bucket/prefix")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return LocalStore(path or ".")
    if parsed.scheme == "s3":
        from common.store_s3 import S3Store

        return S3Store.from_uri(uri)
    raise ConfigError(
        f"store {uri!r} has an unknown scheme {parsed.scheme!r}: use file://PATH or s3://bucket/prefix"
    )
