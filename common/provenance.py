"""Where a number came from: code version, container image, host CPU and accelerators."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

from common import __version__


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """SCENEBENCH_CODE_VERSION (set at image build), else `git describe`, else the package version."""
    env = os.environ.get("SCENEBENCH_CODE_VERSION")
    if env:
        return env
    repo = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty", "--tags"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        if out:
            return f"{__version__}+g{out}" if not out.startswith("v") else out
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def container_image() -> str | None:
    return os.environ.get("SCENEBENCH_IMAGE") or None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
