"""The image recipe: pinned multi-stage build, CPU or GPU by build argument, non-root, no secrets."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

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


def test_make_image_builds_with_the_variant():
    out = subprocess.run(["make", "-n", "--no-print-directory", "image", "VARIANT=gpu"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "build --build-arg VARIANT=gpu" in out and "-t scenebench:" in out and "-gpu ." in out
    assert "--build-arg CODE_VERSION=" in out  # results record the code version of the image


def test_image_tag_is_the_one_the_manifests_run():
    import yaml

    out = subprocess.run(["make", "-n", "--no-print-directory", "image"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    tag = re.search(r"-t (\S+) \.", out).group(1)
    template = yaml.safe_load((REPO / "argo" / "workflowtemplate.yaml").read_text())
    params = {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}
    assert params["image"] == tag
    runner = yaml.safe_load_all((REPO / "manifests" / "overlays" / "kind" / "runner.yaml").read_text())
    deployment = next(d for d in runner if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == tag
