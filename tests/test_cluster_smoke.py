"""The cluster form end to end: `make -n local-kind` shows the whole sequence; with a cluster, a smoke run succeeds."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from jobs import submit

REPO = Path(__file__).resolve().parents[1]


def dry_run(target: str, *variables: str) -> str:
    out = subprocess.run(["make", "-n", "--no-print-directory", target, *variables], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, f"make -n {target} failed:\n{out.stderr}"
    return out.stdout


def test_make_local_kind_shows_the_full_sequence_in_order():
    out = dry_run("local-kind", "SMOKE_RUN=smoke-dry")
    steps = [
        "releases/download/v",                    # pinned kind fetched into ./bin
        "sha256sum -c",                           # and checked
        "create cluster --name scenebench --image kindest/node:v",
        "docker build --platform linux/amd64 --build-arg VARIANT=cpu",
        # through an archive of the one platform: `kind load docker-image` fails under
        # Docker's containerd image store (kind#3795)
        "docker save --platform linux/amd64 scenebench:",
        "load image-archive /dev/stdin --name scenebench",
        "apply --server-side --force-conflicts -n argo -f https://github.com/argoproj/argo-workflows/releases/download/v",
        "rollout status deployment/workflow-controller",
        "../../manifests/overlays/kind",
        "apply -k bin/kind-overlay",
        "rollout status deployment/minio",
        "rollout status deployment/scenebench-runner",
        "wait --for=condition=complete job/minio-create-bucket",
        ".venv-cluster/bin/python -m jobs.submit --context kind-scenebench --namespace scenebench --name smoke-dry",
        "port-forward svc/minio",
        "-m jobs.artifacts cat runs/smoke-dry/leaderboard.md",
        "http://localhost:9001",
    ]
    assert "load docker-image" not in out
    position = 0
    for step in steps:
        found = out.find(step, position)
        assert found >= 0, f"`make -n local-kind` lacks, or has out of order: {step!r}\n{out}"
        position = found
    # Every cluster command of local-kind names the kind context: it never touches another cluster.
    for line in out.splitlines():
        if line.lstrip().startswith("kubectl "):
            assert "--context kind-scenebench" in line, line


def test_kind_cluster_tells_that_kubectl_context_was_switched():
    out = dry_run("kind-cluster")
    assert "config current-context" in out and "kubectl config use-context" in out


def test_argo_cli_is_fetched_at_the_pinned_version_and_checked():
    out = dry_run("argo-cli", "HOST_OS=darwin", "HOST_ARCH=arm64", "BIN_DIR=/nonexistent-bin")
    version = re.search(r"^ARGO_VERSION\s*\?=\s*(\S+)", (REPO / "mk" / "cluster.mk").read_text(), re.M).group(1)
    base = f"https://github.com/argoproj/argo-workflows/releases/download/{version}/"
    assert base + "argo-darwin-arm64.gz" in out
    assert base + "argo-workflows-cli-checksums.txt" in out
    assert "' argo-darwin-arm64\\.gz$' argo-workflows-cli-checksums.txt" in out and "sha256sum -c argo.sha256" in out
    assert f"/nonexistent-bin/argo-{version}" in out


def test_cluster_commands_use_the_venv_without_tensorflow():
    for target, variables in (("submit", ()), ("leaderboard", ("RUN=r",)), ("compare", ("RUN_A=a", "RUN_B=b")),
                              ("local-kind", ("SMOKE_RUN=s",))):
        out = dry_run("-B", target, *variables)
        assert "pip install --quiet -e '.[cluster]'" in out, target
        assert ".[cpu" not in out and ".venv/bin/" not in out, f"{target} installs or runs the TensorFlow venv"
    assert "-m jobs.compare --store s3://scenebench/ a b" in dry_run("compare", "RUN_A=a", "RUN_B=b")


def test_other_cluster_targets_dry_run():
    assert "kind-v" in dry_run("kind-down") and "delete cluster --name scenebench" in dry_run("kind-down")
    assert "apply -f argo/cronworkflow.yaml" in dry_run("nightly-install")
    assert "-m jobs.submit --namespace scenebench -p archs=all" in dry_run("submit", "SUBMIT_ARGS=-p archs=all")
    assert "apply -k manifests/overlays/gpu" in dry_run("cluster-apply", "OVERLAY=gpu")


def test_make_help_lists_the_cluster_targets():
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "$(" not in out, "a ## comment shows an unexpanded make variable"
    for target in ("image", "local-kind", "kind-down", "submit", "nightly-install", "cluster-apply", "leaderboard",
                   "console", "compare", "argo-cli", "image-push", "install-cluster", "check-wheels"):
        assert f" {target} " in out, target


def reachable_cluster() -> tuple[str, str | None]:
    """(namespace, context) when a cluster with the scenebench template answers; skip otherwise."""
    namespace = os.environ.get("SCENEBENCH_NAMESPACE", "scenebench")
    context = os.environ.get("SCENEBENCH_KUBE_CONTEXT") or None
    try:
        from kubernetes import client

        api = submit.custom_objects_api(context, None)
        client.VersionApi().get_code(_request_timeout=5)
        api.get_namespaced_custom_object(submit.GROUP, submit.VERSION, namespace, "workflowtemplates",
                                         "scenebench", _request_timeout=5)
    except Exception as exc:  # no config, no cluster, no Argo, no template: all mean "not here"
        pytest.skip(f"no reachable cluster with the scenebench WorkflowTemplate in {namespace!r}: {exc}")
    return namespace, context


@pytest.mark.cluster
def test_smoke_workflow_succeeds_on_a_cluster():
    namespace, context = reachable_cluster()
    argv = ["--namespace", namespace, "--generate-name", "smoke-test-", "--timeout-s",
            os.environ.get("SCENEBENCH_SMOKE_TIMEOUT_S", "3600"), "--poll-s", "5",
            "-p", 'archs=["mobilenet_v2"]', "-p", "formats=float32,int8", "-p", "data=synthetic",
            "-p", "epochs=1", "-p", "image-size=64x96", "-p", "weights=none", "-p", "num-runs=5", "-p", "warmup-runs=1"]
    if context:
        argv += ["--context", context]
    assert submit.main(argv) == submit.EXIT_SUCCEEDED
