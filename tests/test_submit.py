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


# ------------------------------------------------------------------------ against an API server on loopback

from tests.fixtures.kube_api import DROP, not_found, server_error  # noqa: E402

NS, WF = "scenebench", "scenebench-abc12"
WF_PATH = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows/{WF}"
TEMPLATE_PATH = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflowtemplates/scenebench"
CREATE_PATH = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
# The node graph of a Workflow's status as Argo writes it (NodeStatus: id, name, displayName, type,
# templateName, phase, message, children, outputs.exitCode): ResNet50's training failed three times
# (its Retry node failed), and a MobileNetV2 conversion failed once and then succeeded.
NODES = {
    WF: {"id": WF, "name": WF, "displayName": WF, "type": "DAG", "templateName": "main", "phase": "Running",
         "children": [f"{WF}-1"]},
    f"{WF}-1": {"id": f"{WF}-1", "name": f"{WF}.architecture(2:resnet50).train", "displayName": "train",
                "type": "Retry", "templateName": "train", "phase": "Failed", "message": "No more retries left",
                "children": [f"{WF}-2", f"{WF}-3", f"{WF}-4"]},
    **{f"{WF}-{i + 2}": {"id": f"{WF}-{i + 2}", "name": f"{WF}.architecture(2:resnet50).train({i})",
                         "displayName": f"train({i})", "type": "Pod", "templateName": "train", "phase": "Failed",
                         "message": "Error (exit code 1)", "outputs": {"exitCode": "1"}} for i in range(3)},
    f"{WF}-5": {"id": f"{WF}-5", "name": f"{WF}.architecture(0:mobilenet_v2).model(1:int8).convert",
                "displayName": "convert", "type": "Retry", "templateName": "convert", "phase": "Succeeded",
                "children": [f"{WF}-6", f"{WF}-7"]},
    f"{WF}-6": {"id": f"{WF}-6", "name": f"{WF}.architecture(0:mobilenet_v2).model(1:int8).convert(0)",
                "displayName": "convert(0)", "type": "Pod", "templateName": "convert", "phase": "Failed",
                "message": "OOMKilled (exit code 137)", "outputs": {"exitCode": "137"}},
    f"{WF}-7": {"id": f"{WF}-7", "name": f"{WF}.architecture(0:mobilenet_v2).model(1:int8).convert(1)",
                "displayName": "convert(1)", "type": "Pod", "templateName": "convert", "phase": "Succeeded"},
}
TRAIN_POD = submit.pod_name(WF, f"{WF}.architecture(2:resnet50).train(2)", "train")
# The last lines the failed training pod printed: jobs.train's own JSON log lines (run with a store
# that has no run.json, as a cluster shows when prepare wrote elsewhere).
TRAIN_LOG = (
    '{"step": "train", "store": "s3://scenebench/", "run_id": "scenebench-abc12", "force": false, "arch": '
    '"resnet50", "epochs": null, "image_size": null, "weights": null, "batch_size": null, "seed": null, '
    '"mixed_precision": "auto", "event": "config", "level": "info", "timestamp": "2026-12-03T08:50:05.748664Z"}\n'
    '{"step": "train", "error": "s3://scenebench/runs/scenebench-abc12/run.json does not exist: run `python -m '
    'jobs.prepare --run-id scenebench-abc12 --store s3://scenebench/ --data ...` first", "error_type": '
    '"NotFoundError", "event": "step_failed", "level": "error", "timestamp": "2026-12-03T08:50:05.868145Z"}\n')


def wf_doc(phase: str, nodes: dict | None = None) -> dict:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": WF, "namespace": NS},
            "status": {"phase": phase, "progress": "5/9", "nodes": nodes or {},
                       **({"message": "child 'scenebench-abc12-1' failed"} if phase == "Failed" else {})}}


class FakeTime:
    """Test time: sleep() advances clock() instantly, and is recorded."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def run_submit(kube_api, *extra):
    t = FakeTime()
    code = submit.main(["-n", NS, "--name", WF, "-p", "archs=all", "--poll-s", "10",
                        "--ui", "https://argo.example.com", *extra], client=kube_api.client(), sleep=t.sleep,
                       clock=t.clock)
    return code, t


@pytest.fixture
def submitted(kube_api):
    kube_api.on("GET", TEMPLATE_PATH, (200, repo_template()))
    kube_api.on("POST", CREATE_PATH, (201, wf_doc("Pending")))
    return kube_api


@pytest.fixture(autouse=False)
def quiet(monkeypatch):
    monkeypatch.setattr(submit, "configure", lambda **_: None)


def test_wait_rides_out_api_outages_then_shows_the_failed_steps_with_their_logs(submitted, quiet, capsys):
    failed = dict(NODES)
    failed[WF] = {**NODES[WF], "phase": "Failed"}
    submitted.on("GET", WF_PATH, DROP, (503, server_error(503, "ServiceUnavailable", "etcdserver: leader changed")),
                 (429, server_error(429, "TooManyRequests", "the server has received too many requests"),
                  {"Retry-After": "7"}),
                 (200, wf_doc("Running", NODES)), (200, wf_doc("Failed", failed)))
    submitted.on("GET", f"/api/v1/namespaces/{NS}/pods/{TRAIN_POD}/log", (200, TRAIN_LOG))
    with capture_logs() as logs:
        code, t = run_submit(submitted, "--log-lines", "2")
    assert code == submit.EXIT_FAILED
    retries = [e for e in logs if e["event"] == "api_retry"]
    assert len(retries) == 3 and t.sleeps[:3] == [2.0, 4.0, 7.0]  # back-off, then the server's Retry-After
    out = capsys.readouterr()
    assert f"https://argo.example.com/workflows/{NS}/{WF}" in out.err + out.out
    assert "Failed train(2) [train] exit 1" in out.out
    assert "convert" not in out.out  # retried and succeeded: not a failed step
    assert "run.json does not exist" in out.out  # the failed pod's last log lines
    (log_call,) = [p for m, p, _ in submitted.requests if "/log" in p]
    assert "container=main" in log_call and "tailLines=2" in log_call


def test_a_deleted_workflow_is_not_a_missing_template(submitted, quiet, capsys):
    submitted.on("GET", WF_PATH, (200, wf_doc("Running", NODES)), (404, not_found("argoproj.io", "workflows", WF)))
    code, _ = run_submit(submitted)
    assert code == submit.EXIT_DELETED
    assert "was deleted before it finished" in capsys.readouterr().err


def test_a_missing_template_and_a_missing_argo_are_told_apart(kube_api, quiet, capsys):
    kube_api.on("GET", TEMPLATE_PATH, (404, not_found("argoproj.io", "workflowtemplates", "scenebench")))
    code, _ = run_submit(kube_api)
    assert code == submit.EXIT_USAGE and "no such WorkflowTemplate" in capsys.readouterr().err
    kube_api.routes.clear()  # nothing served under argoproj.io: Argo's CRDs are not installed
    code, _ = run_submit(kube_api)
    assert code == submit.EXIT_USAGE and "is Argo Workflows installed" in capsys.readouterr().err


def test_an_api_that_never_comes_back_ends_the_wait_after_api_retry_s(submitted, quiet, capsys):
    submitted.on("GET", WF_PATH, (200, wf_doc("Running", NODES)), DROP)
    code, t = run_submit(submitted, "--api-retry-s", "3600")
    assert code == submit.EXIT_TIMEOUT
    assert 3600 <= t.now - 10 <= 3600 + 300  # waited about an hour of (test) time after the last answer
    assert max(t.sleeps) <= 300  # back-off is capped at five minutes
    assert "has not answered" in capsys.readouterr().err


def test_in_a_pod_without_a_token_the_error_says_how_to_mount_one(monkeypatch, quiet, capsys):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert not Path(submit.SA_TOKEN).exists()
    assert submit.main(["-p", "archs=all"]) == submit.EXIT_USAGE
    err = capsys.readouterr().err
    assert "scenebench-submitter" in err and "manifests/examples/ci-submit.yaml" in err


def test_outcome_leaves_out_attempts_a_retry_recovered_from():
    result = submit.outcome(wf_doc("Failed", NODES))
    assert [f.display_name for f in result.failed] == ["train(2)"]


def test_an_outage_never_stretches_the_wait_past_timeout_s(submitted, quiet):
    submitted.on("GET", WF_PATH, (200, wf_doc("Running", NODES)), DROP)
    code, t = run_submit(submitted, "--timeout-s", "600")
    assert code == submit.EXIT_TIMEOUT and t.now <= 600


def test_a_cluster_that_does_not_answer_before_submitting_is_a_usage_error(kube_api, quiet, capsys):
    kube_api.on("GET", TEMPLATE_PATH, DROP)
    code, t = run_submit(kube_api)
    assert code == submit.EXIT_USAGE and t.now <= 120  # minutes, not the hours a running workflow gets
    assert kube_api.calls("POST", CREATE_PATH) == 0
