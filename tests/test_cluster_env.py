"""The cluster commands (submit, artifacts, compare) run with the `cluster` extra alone: no TensorFlow.

`make submit`, `make leaderboard`, `make compare` and `make local-kind` use .venv-cluster, which
holds scenebench's base dependencies and the `cluster` extra only. These tests run the commands
in a subprocess where every installed distribution outside that set cannot be imported, as in
that venv, and check the pinned sets per platform.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from common.store import LocalStore
from tests.fixtures.results import build_run
from tests.test_compare import write_run

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _name(n: str) -> str:
    return n.lower().replace("_", "-").replace(".", "-")


def distributions_of(extras: list[str]) -> set[str]:
    """Every installed distribution the project's base dependencies plus `extras` pull in."""
    project = PYPROJECT["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(r) for e in extras for r in project["optional-dependencies"][e]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            # a dependency's own extras count only when asked for
            if sub.marker is None or sub.marker.evaluate({"extra": next(iter(req.extras), "")}):
                todo.append(sub)
    return seen


# Imported first in the subprocess: any module of an installed distribution outside the
# allowed set fails to import, exactly as it would in .venv-cluster where it is absent.
BLOCKER = r"""
import importlib.abc, importlib.metadata as md, json, os, sys

allowed = set(json.loads(os.environ["ALLOWED_DISTRIBUTIONS"]))
owners = {}
for top, dists in md.packages_distributions().items():
    owners[top] = {d.lower().replace("_", "-").replace(".", "-") for d in dists}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        top = fullname.partition(".")[0]
        dists = owners.get(top)
        if dists and not (dists & allowed):
            raise ModuleNotFoundError(f"No module named {top!r} (not in the cluster extra)", name=top)
        return None

sys.meta_path.insert(0, Blocker())
"""


def run_blocked(code: str, tmp_path: Path, allowed: set[str]) -> subprocess.CompletedProcess:
    script = tmp_path / "run_blocked.py"
    script.write_text(BLOCKER + "\n" + code)
    env = {**os.environ, "PYTHONPATH": str(REPO), "ALLOWED_DISTRIBUTIONS": json.dumps(sorted(allowed)),
           "SCENEBENCH_LOG_FORMAT": "json"}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def cluster_distributions() -> set[str]:
    allowed = distributions_of(["cluster"]) | {"scenebench"}
    assert "kubernetes" in allowed and "minio" in allowed
    assert not {"tensorflow", "tensorflow-cpu", "keras", "matplotlib"} & allowed
    return allowed


def test_the_blocker_really_blocks_tensorflow(tmp_path, cluster_distributions):
    out = run_blocked("import tensorflow\n", tmp_path, cluster_distributions)
    assert out.returncode != 0 and "not in the cluster extra" in out.stderr


def test_cluster_commands_run_without_tensorflow(tmp_path, cluster_distributions):
    store = LocalStore(tmp_path / "artifacts")
    write_run(store, build_run(run_id="run-a", created_at=datetime(2026, 11, 24, 2, tzinfo=timezone.utc), seed=1))
    write_run(store, build_run(run_id="run-b", created_at=datetime(2026, 11, 25, 2, tzinfo=timezone.utc), seed=2))
    store.put_bytes("runs/run-b/leaderboard.md", b"# leaderboard of run-b\n")
    code = f"""
import contextlib, io, sys
from jobs import artifacts, compare, submit

results = {{}}
for name, main, argv in [
        ("compare", compare.main, ["--store", {store.uri!r}, "run-a", "run-b"]),
        ("artifacts", artifacts.main, ["--store", {store.uri!r}, "cat", "runs/run-b/leaderboard.md"]),
        ("submit", submit.main, ["--help"])]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse --help
            rc = exc.code
    results[name] = (rc, out.getvalue())
loaded = sorted({{m.partition(".")[0] for m in sys.modules}} & {{"tensorflow", "keras", "matplotlib"}})
import json
print("RESULT " + json.dumps({{"results": results, "loaded": loaded}}))
"""
    out = run_blocked(code, tmp_path, cluster_distributions)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    results = doc["results"]
    assert results["compare"][0] == 0 and "baseline  A  run-a" in results["compare"][1]
    assert results["artifacts"][0] == 0 and "leaderboard of run-b" in results["artifacts"][1]
    assert results["submit"][0] == 0 and "--namespace" in results["submit"][1]
    assert doc["loaded"] == []


# ---------------------------------------------------------------- per-platform TensorFlow pins
def _load_check_wheels():
    spec = importlib.util.spec_from_file_location("check_wheels", REPO / ".ci" / "check_wheels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


LINUX_X86 = {"os_name": "posix", "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
             "platform_python_implementation": "CPython", "implementation_name": "cpython",
             "platform_release": "6.1.0", "platform_version": ""}


def test_tensorflow_is_chosen_per_platform_with_exact_pins():
    cw = _load_check_wheels()
    mac = cw.requirements_for(PYPROJECT, ["cpu", "cluster", "dev"], cw.TARGETS["macos-arm64"], "3.11")
    linux = cw.requirements_for(PYPROJECT, ["cpu", "cluster", "dev"], cw.Target("manylinux_2_28_x86_64", LINUX_X86),
                                "3.11")
    assert "tensorflow==2.21.0" in mac and not any(r.startswith("tensorflow-cpu") for r in mac)
    assert "tensorflow-cpu==2.21.0" in linux and "tensorflow==2.21.0" not in linux
    for reqs in (mac, linux):
        assert "ai-edge-litert==2.3.0" in reqs and "keras==3.15.1" in reqs


def test_the_runner_set_has_no_tensorflow_on_a_mac():
    cw = _load_check_wheels()
    runner = cw.requirements_for(PYPROJECT, ["runner"], cw.TARGETS["macos-arm64"], "3.11")
    assert "ai-edge-litert==2.3.0" in runner
    assert not any(Requirement(r).name.startswith(("tensorflow", "keras")) for r in runner)


def test_unknown_extra_is_named():
    cw = _load_check_wheels()
    with pytest.raises(SystemExit, match="unknown extra.*cpus"):
        cw.requirements_for(PYPROJECT, ["cpus"], cw.TARGETS["macos-arm64"], "3.11")
