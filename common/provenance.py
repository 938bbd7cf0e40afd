"""Where a number came from: code version, container image, host CPU and accelerators."""

from __future__ import annotations

import functools
import json
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
    """The image reference the step was started with (a tag: it may point at another build tomorrow)."""
    return os.environ.get("SCENEBENCH_IMAGE") or None


def pod_image_id(pod: dict, container: str = "main") -> str | None:
    """The image the container runtime actually ran for `container`, from a Pod object's status.

    Kubernetes reports it as containerStatuses[].imageID, resolved by the runtime to a digest
    (e.g. `registry.example.com/scenebench@sha256:...`); Argo's step container is `main`.
    """
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return status.get("imageID") or None
    return None


def _api_client():
    """A Kubernetes API client with the pod's own service account (in-cluster configuration)."""
    from kubernetes import client, config

    config.load_incluster_config()
    return client.ApiClient()


def image_digest() -> tuple[str | None, str | None]:
    """(the digest of the image this pod runs, None) or (None, why it is unknown).

    SCENEBENCH_IMAGE_DIGEST wins (a CI system that knows it). In a workflow pod the downward
    API gives SCENEBENCH_POD_NAME and SCENEBENCH_POD_NAMESPACE, and the pod's own status,
    read with its service account, gives the digest. Outside Kubernetes there is none.
    """
    explicit = os.environ.get("SCENEBENCH_IMAGE_DIGEST")
    if explicit:
        return explicit, None
    name, namespace = os.environ.get("SCENEBENCH_POD_NAME"), os.environ.get("SCENEBENCH_POD_NAMESPACE")
    if not (name and namespace):
        return None, "not running in a Kubernetes pod (no SCENEBENCH_POD_NAME / SCENEBENCH_POD_NAMESPACE)"
    try:
        from kubernetes import client

        response = client.CoreV1Api(_api_client()).read_namespaced_pod(
            name, namespace, _preload_content=False, _request_timeout=10)
        pod = json.loads(response.data)
    except Exception as exc:  # no token, no RBAC, no API: provenance says so, the run goes on
        return None, f"cannot read pod {namespace}/{name}: {type(exc).__name__}: {exc}"[:500]
    digest = pod_image_id(pod, os.environ.get("SCENEBENCH_CONTAINER_NAME", "main"))
    return (digest, None) if digest else (None, f"pod {namespace}/{name} reports no imageID for its main container")


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
