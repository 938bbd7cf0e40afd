"""The image recipe: pinned multi-stage build, CPU or GPU by build argument, non-root, no secrets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def build_args() -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)


def test_base_image_is_pinned_to_an_exact_release():
    base = build_args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    froms = [a for k, a in instructions() if k == "FROM"]
    assert len(froms) >= 2, "the build must be multi-stage"
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)


def test_variant_picks_the_extras_and_exists_in_pyproject():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"cpu", "gpu", "cluster"} <= set(extras)
    assert any("tensorflow-cpu" in d for d in extras["cpu"])
    assert any(d.startswith("tensorflow[and-cuda]") for d in extras["gpu"])
    runs = " ".join(a for k, a in instructions() if k == "RUN")
    assert '".[${VARIANT},cluster,runner]"' in runs
    assert "VARIANT must be cpu or gpu" in runs
    assert build_args()["VARIANT"] == "cpu"


def test_runs_as_a_non_root_user():
    users = [a for k, a in instructions() if k == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert re.fullmatch(r"\d+", user), "a numeric user lets Kubernetes check runAsNonRoot"


def test_no_secret_in_the_image():
    for kind, args in instructions():
        if kind in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", args, re.I), f"{kind} {args}"
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    # Everything is excluded first; only the package sources are let back in.
    assert ignore[0] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "common", "jobs", "runner"}


def test_caches_point_at_tmp_for_a_read_only_root_filesystem():
    env = " ".join(a for k, a in instructions() if k == "ENV")
    for var in ("KERAS_HOME=/tmp/", "MPLCONFIGDIR=/tmp/", "XDG_CACHE_HOME=/tmp/", "PYTHONDONTWRITEBYTECODE=1"):
        assert var in env


def git_sha() -> str:
    return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def make_n(*args: str) -> str:
    return subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


def test_make_image_builds_linux_amd64_tagged_with_the_commit():
    out = make_n("image", "VARIANT=gpu")
    assert "docker build --platform linux/amd64 --build-arg VARIANT=gpu" in out
    assert "--build-arg CODE_VERSION=" in out  # results record the code version of the image
    sha = git_sha()
    tag = re.search(r"-t (\S+) \.", out).group(1)
    # the commit names the build; "-dirty" says the tree had changes the commit does not hold
    assert re.fullmatch(rf"scenebench:{sha}(-dirty)?-gpu", tag), tag
    assert f"--build-arg GIT_SHA={sha}" in out
    assert 'org.opencontainers.image.revision="${GIT_SHA}"' in " ".join(a for k, a in instructions() if k == "LABEL")


def test_make_image_outside_a_git_checkout_asks_for_a_tag(tmp_path):
    for name in ("Makefile", "pyproject.toml"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    (tmp_path / "mk").mkdir()
    (tmp_path / "mk" / "cluster.mk").write_bytes((REPO / "mk" / "cluster.mk").read_bytes())
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    out = subprocess.run(["make", "--no-print-directory", "image", "DOCKER=false"], cwd=tmp_path,
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "not a git checkout" in out.stderr and "IMAGE=name:tag" in out.stderr


def test_the_kind_cluster_runs_the_image_just_built():
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if not kubectl:
        pytest.skip("kubectl (for its built-in kustomize) is not installed")
    tag = re.search(r"-t (\S+) \.", make_n("image")).group(1)
    subprocess.run(["make", "--no-print-directory", "kind-overlay"], cwd=REPO, capture_output=True, check=True)
    rendered = subprocess.run([kubectl, "kustomize", str(REPO / "bin" / "kind-overlay")], capture_output=True,
                              text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    template = next(d for d in docs if d["kind"] == "WorkflowTemplate")
    params = {p["name"]: p.get("value") for p in template["spec"]["arguments"]["parameters"]}
    assert params["image"] == tag
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "scenebench-runner")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == tag
