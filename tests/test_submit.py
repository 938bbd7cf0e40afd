"""jobs.submit without a cluster: its arguments, the Workflow it builds, and how it reads a run's status."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from jobs import submit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _logging_left_to_capture_logs(monkeypatch):
    # get_logger() configures logging on first use, which would replace capture_logs' set-up.
    monkeypatch.setattr("common.logging._configured", True)


def repo_template() -> dict:
    return yaml.safe_load((REPO / "argo" / "workflowtemplate.yaml").read_text())


def workflow_for(argv: list[str]) -> dict:
    return submit.workflow_from_args(submit.build_parser().parse_args(argv))


def test_workflow_references_the_template_and_carries_the_parameters():
    wf = workflow_for(["-p", 'archs=["mobilenet_v2"]', "-p", "epochs=1", "-p", "runner-url=http://r:8080/?a=b"])
    assert wf["apiVersion"] == "argoproj.io/v1alpha1" and wf["kind"] == "Workflow"
    assert wf["spec"] == {
        "workflowTemplateRef": {"name": "scenebench"},
        "arguments": {"parameters": [
            {"name": "archs", "value": '["mobilenet_v2"]'},
            {"name": "epochs", "value": "1"},
            {"name": "runner-url", "value": "http://r:8080/?a=b"},
        ]},
    }
    assert wf["metadata"]["generateName"] == "scenebench-"
    assert "name" not in wf["metadata"]
    assert wf["metadata"]["labels"]["scenebench.dev/submitted-by"] == "jobs.submit"


def test_workflow_is_valid_against_the_strict_argo_schema():
    from tests.test_argo import argo_errors

    wf = workflow_for(["--name", "smoke-1", "-p", "archs=all", "-l", "team=vision"])
    assert argo_errors(wf) == []
    assert wf["metadata"]["name"] == "smoke-1"
    assert wf["metadata"]["labels"]["team"] == "vision"


def test_generate_name_and_template_options():
    wf = workflow_for(["--template", "other", "--generate-name", "nightly-manual-"])
    assert wf["spec"]["workflowTemplateRef"]["name"] == "other"
    assert wf["metadata"]["generateName"] == "nightly-manual-"


@pytest.mark.parametrize("argv,message", [
    (["-p", "archs"], "not KEY=VALUE"),
    (["-p", "=x"], "not KEY=VALUE"),
    (["-p", "a=1", "-p", "a=2"], "given twice"),
    (["--poll-s", "0"], "--poll-s"),
    (["--name", "x" * 64], "longer than 63"),
])
def test_bad_arguments_are_refused(argv, message):
    with pytest.raises(submit.SubmitError, match=message) as info:
        workflow_for(argv)
    assert info.value.code == submit.EXIT_USAGE


def test_name_and_generate_name_exclude_each_other():
    with pytest.raises(SystemExit):
        submit.build_parser().parse_args(["--name", "a", "--generate-name", "b-"])


def test_unknown_parameter_is_refused_with_the_valid_ones():
    template = repo_template()
    submit.check_parameters(template, {"archs": "all", "image-size": "96x144"})
    with pytest.raises(submit.SubmitError) as info:
        submit.check_parameters(template, {"arch": "all"})
    assert "'arch'" in str(info.value) and "archs" in str(info.value) and "image-size" in str(info.value)


def test_make_smoke_run_passes_only_parameters_the_template_declares():
    out = subprocess.run(["make", "-n", "--no-print-directory", "kind-smoke", "SMOKE_RUN=smoke-test"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    line = " ".join(out.replace("\\\n", " ").split())
    argv = shlex.split(line)
    argv = argv[argv.index("jobs.submit") + 1:]
    args = submit.build_parser().parse_args(argv)
    wf = submit.workflow_from_args(args)
    params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    submit.check_parameters(repo_template(), params)
    assert args.name == "smoke-test" and args.context == "kind-scenebench"
    assert params["data"] == "synthetic" and params["epochs"] == "1"


def test_main_without_a_cluster_exits_2(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # main() configures logging for a terminal or a pod; keep the test's capturing set-up instead.
    monkeypatch.setattr(submit, "configure", lambda **_: None)
    with capture_logs() as logs:
        code = submit.main(["--kubeconfig", str(tmp_path / "missing"), "-p", "archs=all"])
    assert code == submit.EXIT_USAGE
    assert any(e["event"] == "submit_failed" and "cluster" in e["error"] for e in logs)


# ------------------------------------------------------------------------ reading a run's status


def status_doc(phase, nodes=None, progress="", message="", annotations=None) -> dict:
    meta = {"name": "scenebench-abc12"}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "status": {"phase": phase, "progress": progress, "message": message,
                                        "nodes": nodes or {}}}


FAILED_RUN_NODES = {
    "scenebench-abc12": {"id": "scenebench-abc12", "name": "scenebench-abc12", "type": "DAG", "phase": "Failed",
                         "templateName": "main", "displayName": "scenebench-abc12"},
    "n1": {"id": "scenebench-abc12-1", "name": "scenebench-abc12.architecture(0:resnet50).train(0)", "type": "Pod",
           "phase": "Failed", "templateName": "train", "displayName": "train(0)",
           "message": "OOMKilled (exit code 137)", "outputs": {"exitCode": "137"}},
    "n2": {"id": "scenebench-abc12-2", "name": "scenebench-abc12.architecture(0:resnet50).train", "type": "Retry",
           "phase": "Failed", "templateName": "train", "displayName": "train"},
    "n3": {"id": "scenebench-abc12-3", "name": "scenebench-abc12.prepare", "type": "Pod", "phase": "Succeeded",
           "templateName": "prepare", "displayName": "prepare"},
}


def test_outcome_lists_failed_pods_only():
    result = submit.outcome(status_doc("Failed", FAILED_RUN_NODES, "5/9", "child failed"))
    assert result.done and result.exit_code == submit.EXIT_FAILED
    assert [(f.display_name, f.exit_code) for f in result.failed] == [("train(0)", "137")]
    expected_pod = submit.pod_name("scenebench-abc12", "scenebench-abc12.architecture(0:resnet50).train(0)", "train")
    assert result.failed[0].pod_name == expected_pod
    assert expected_pod.startswith("scenebench-abc12-train-")
    text = submit.report(result, "scenebench")
    assert "OOMKilled" in text and f"logs {expected_pod} -c main" in text and "Failed" in text


@pytest.mark.parametrize("phase,code", [("Succeeded", 0), ("Failed", 1), ("Error", 1), ("Running", 3),
                                        ("Pending", 3), (None, 3)])
def test_exit_code_by_phase(phase, code):
    assert submit.outcome(status_doc(phase)).exit_code == code


def test_fnv32a_matches_the_reference_vectors():
    # Argo hashes node names with Go's hash/fnv New32a; these are FNV-1a's published values.
    assert submit._fnv32a("") == 0x811C9DC5
    assert submit._fnv32a("a") == 0xE40C292C
    assert submit._fnv32a("foobar") == 0xBF9CF968


def test_pod_name_rules():
    assert submit.pod_name("wf", "wf", "main") == "wf"
    assert submit.pod_name("wf", "wf.x", "", "wf-123", "v1") == "wf-123"
    long_name = submit.pod_name("w" * 250, "w.x", "train")
    assert len(long_name) <= 253


def test_wait_polls_until_done_and_logs_each_change():
    docs = iter([status_doc("Pending"), status_doc("Running", progress="0/5"), status_doc("Running", progress="0/5"),
                 status_doc("Running", progress="3/5"), status_doc("Succeeded", progress="5/5")])
    sleeps = []
    with capture_logs() as logs:
        result = submit.wait_for(lambda: next(docs), timeout_s=0, poll_s=7, log=submit.get_logger(),
                                 sleep=sleeps.append)
    assert result.phase == "Succeeded" and result.exit_code == 0
    assert sleeps == [7, 7, 7, 7]
    progress = [(e["phase"], e["progress"]) for e in logs if e["event"] == "workflow_progress"]
    assert progress == [("Pending", ""), ("Running", "0/5"), ("Running", "3/5"), ("Succeeded", "5/5")]


def test_wait_gives_up_at_the_timeout():
    now = [0.0]

    def sleep(s):
        now[0] += s

    result = submit.wait_for(lambda: status_doc("Running", progress="1/5"), timeout_s=30, poll_s=10,
                             log=submit.get_logger(), clock=lambda: now[0], sleep=sleep)
    assert result.exit_code == submit.EXIT_TIMEOUT
    assert now[0] == 30
    assert "still running" in submit.report(result, "scenebench")
