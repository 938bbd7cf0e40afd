"""A local working folder per job: cached, verified copies of store objects that TF reads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from common.hashing import sha256_file
from common.schemas import ArtifactRef
from common.store import ArtifactStore, LocalStore


def cache_dir() -> Path:
    base = os.environ.get("SCENEBENCH_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "scenebench-cache")
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True)
    return p


def fetch(store: ArtifactStore, ref: ArtifactRef, dest_dir: Path | None = None) -> Path:
    """A local, sha256-verified copy of ref (the store's own file when it is a local folder)."""
    if isinstance(store, LocalStore):
        # No copy: verify in place; the store raises ChecksumError if it is not what was recorded.
        path = store.root / ref.key
        if path.is_file() and sha256_file(path) == ref.sha256:
            return path
        return store.get_file(ref.key, (dest_dir or cache_dir()) / ref.key, sha256=ref.sha256)
    target = (dest_dir or cache_dir()) / ref.key
    if target.is_file() and target.stat().st_size == ref.size and sha256_file(target) == ref.sha256:
        return target
    return store.get_file(ref.key, target, sha256=ref.sha256)

