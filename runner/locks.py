"""File locks that keep two runner processes off one phone and off one job database.

flock(2) locks belong to an open file and the kernel drops them when the holder dies, even
by SIGKILL, so a crashed runner never leaves a phone locked. The holder writes who it is
into the file, so that whoever finds the lock taken can say by whom.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from common.errors import ConfigError, ScenebenchError


class LockBusy(ScenebenchError):
    """Another process holds the lock; `holder` is what it wrote about itself (may be empty)."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


def default_lock_dir() -> Path:
    """Where `serve` and `try` meet unless told otherwise: the same for a launchd agent and a terminal.

    Not $TMPDIR: launchd and Terminal may give one user different temporary folders, and
    two processes that look in different folders never see each other's locks.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "scenebench-runner" / "locks"


def describe(holder: dict[str, Any]) -> str:
    """'pid 4242 (python -m runner serve --port 8470), job job-…, since 2024-…' from what the holder wrote."""
    if not holder.get("pid"):
        return "another process (it has not said which yet)"
    parts = [f"pid {holder['pid']}"]
    if holder.get("command"):
        parts[0] += f" ({holder['command']})"
    for key in ("listening", "job"):
        if holder.get(key):
            parts.append(f"{key} {holder[key]}")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    return ", ".join(parts)


def this_process(**extra: Any) -> dict[str, Any]:
    """What a holder writes about itself: enough for a person to find it with `ps`."""
    if sys.argv and sys.argv[0].endswith(os.path.join("runner", "__main__.py")):
        command = " ".join(["python -m runner", *sys.argv[1:]])
    else:
        command = " ".join(sys.argv)
    return {"pid": os.getpid(), "command": command,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}


class FileLock:
    """An exclusive, non-reentrant lock on one file; `acquire` either gets it or raises LockBusy."""

    def __init__(self, path: str | Path, what: str):
        self.path = Path(path)
        self.what = what  # "device ios-…", "job database /…/jobs.sqlite": for messages
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict[str, Any]:
        """What the current holder wrote; {} when it wrote nothing yet or nothing readable."""
        try:
            text = self.path.read_text()
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}

    def try_acquire(self, info: dict[str, Any]) -> bool:
        if self._fd is not None:
            raise RuntimeError(f"{self.what}: lock already held by this object")
        # O_NOFOLLOW: a symlink planted at the lock's name must not make us truncate its target.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.note(**info)
        return True

    def acquire(self, info: dict[str, Any], wait_s: float = 0.0, poll_s: float = 0.2,
                should_stop: Callable[[], bool] = lambda: False) -> None:
        """Take the lock, waiting up to wait_s for its holder to let go; LockBusy when it does not."""
        deadline = time.monotonic() + wait_s
        while not self.try_acquire(info):
            if time.monotonic() >= deadline or should_stop():
                holder = self.holder()
                raise LockBusy(f"{self.what} is in use by {describe(holder)}", holder)
            time.sleep(poll_s)

    def note(self, **info: Any) -> None:
        """Rewrite what the file says about the holder (e.g. the job it now runs)."""
        if self._fd is None:
            return
        data = json.dumps(info, default=str).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # a stale description must not outlive the hold
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class DeviceLocks:
    """One lock file per device id in a directory shared by every runner process on this machine."""

    def __init__(self, directory: str | Path | None = None):
        self.dir = Path(directory).expanduser() if directory else default_lock_dir()
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create the device lock directory {self.dir}: {exc.strerror or exc}; "
                              f"set --lock-dir / SCENEBENCH_LOCK_DIR to a writable directory") from None
        if not os.access(self.dir, os.W_OK):
            raise ConfigError(f"the device lock directory {self.dir} is not writable; "
                              f"set --lock-dir / SCENEBENCH_LOCK_DIR to a writable directory")

    def lock(self, device_id: str) -> FileLock:
        # Device ids are ours (ios-<udid>, host-<cpu slug>), but a file name must never climb out.
        return FileLock(self.dir / f"{_SAFE.sub('_', device_id)}.lock", f"device {device_id}")
