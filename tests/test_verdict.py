"""The verdict on a finished run: a failed step or an unexplained gap makes the night red."""

from __future__ import annotations

import json

import pytest

from common import layout
from common.errors import ConfigError
from common.schemas import Missing
from common.store import LocalStore
from common.verdict import OFFLINE_REASON, judge, parse_failures
from jobs import verdict as verdict_job
from tests.fixtures.results import IPHONE, MISSING_KEY, build_run

RUN = "scenebench-x7k2p"

# `{{workflow.failures}}` of a night where ResNet50's training failed three times while a
# MobileNetV2 conversion failed once and succeeded on its retry. The fields are Argo's
# failedNodeStatus (workflow/controller/operator.go: displayName, message, templateName,
# phase, podName, finishedAt); node and pod names follow its retry naming `<step>(<n>)`.
FAILED_NODES = [
    {"displayName": "architecture(2:resnet50)", "message": "child 'scenebench-x7k2p-1720404350' failed",
     "templateName": "architecture", "phase": "Failed", "podName": "scenebench-x7k2p-architecture-1720404350",
     "finishedAt": "2026-11-26T04:12:09Z"},
    {"displayName": "train", "message": "No more retries left", "templateName": "train", "phase": "Failed",
     "podName": "scenebench-x7k2p-train-3347961283", "finishedAt": "2026-11-26T04:12:08Z"},
    {"displayName": "train(0)", "message": "OOMKilled (exit code 137)", "templateName": "train", "phase": "Failed",
     "podName": "scenebench-x7k2p-train-2817452154", "finishedAt": "2026-11-26T02:31:40Z"},
    {"displayName": "train(1)", "message": "OOMKilled (exit code 137)", "templateName": "train", "phase": "Failed",
     "podName": "scenebench-x7k2p-train-2867785011", "finishedAt": "2026-11-26T03:20:02Z"},
    {"displayName": "train(2)", "message": "OOMKilled (exit code 137)", "templateName": "train", "phase": "Failed",
     "podName": "scenebench-x7k2p-train-2851007392", "finishedAt": "2026-11-26T04:12:08Z"},
]
RETRIED_THEN_SUCCEEDED = [
    {"displayName": "convert(0)", "message": "Error (exit code 1)", "templateName": "convert", "phase": "Failed",
     "podName": "scenebench-x7k2p-convert-1003398118", "finishedAt": "2026-11-26T02:02:41Z"},
]


def argo_quoted(nodes) -> str:
    """What the exit handler's argument holds: the controller marshals the list, then quotes it."""
    return json.dumps(json.dumps(nodes))


def green_results():
    results = build_run(run_id=RUN).results
    results.missing = []
    return results


def offline_gap() -> Missing:
    arch, fmt, _, delegate = MISSING_KEY
    return Missing(step="benchmark", arch=arch, format=fmt, device_id=IPHONE.id, delegate=delegate,
                   reason=f"{OFFLINE_REASON}: not connected (tunnel unavailable)")


def test_failures_parse_as_argo_passes_them():
    nodes = parse_failures(argo_quoted(FAILED_NODES))
    assert [n.display_name for n in nodes] == [n["displayName"] for n in FAILED_NODES]
    assert parse_failures(json.dumps(FAILED_NODES)) == nodes  # an unquoted list too
    assert parse_failures(json.dumps("null")) == [] and parse_failures("") == []
    with pytest.raises(ConfigError, match="--failures"):
        parse_failures("[{broken")


def test_a_failed_branch_is_red_even_when_argo_says_succeeded():
    verdict = judge("Succeeded", parse_failures(argo_quoted(FAILED_NODES)), green_results())
    assert not verdict.ok
    assert [f.display_name for f in verdict.failed_steps] == ["train"]  # not its three attempts
    assert [f.display_name for f in verdict.failed_branches] == ["architecture(2:resnet50)"]
    assert any("No more retries left" in p for p in verdict.problems())


def test_a_retry_that_succeeded_is_green():
    verdict = judge("Succeeded", parse_failures(argo_quoted(RETRIED_THEN_SUCCEEDED)), green_results())
    assert verdict.ok, verdict.problems()


def test_gaps_offline_phones_explain_are_green_others_are_red():
    results = green_results()
    results.missing = [offline_gap()]
    results.devices = [d.model_copy(update={"state": "offline"}) if d.id == IPHONE.id else d for d in results.devices]
    assert judge("Succeeded", [], results).ok

    fixture = build_run(run_id=RUN).results  # its one gap: Core ML rejected the model
    verdict = judge("Succeeded", [], fixture)
    assert not verdict.ok and [m.step for m in verdict.unexplained] == ["benchmark"]
    assert "Core ML delegate rejected" in verdict.problems()[0]

    # the offline wording alone is not enough: the device must be one the runner listed as offline
    results.devices = [d.model_copy(update={"state": "idle"}) for d in results.devices]
    assert not judge("Succeeded", [], results).ok


def test_no_results_or_a_failed_workflow_is_red():
    assert not judge("Succeeded", [], None).ok
    assert "results.json was not written" in judge("Succeeded", [], None).problems()[0]
    assert not judge("Failed", [], green_results()).ok
    with pytest.raises(ConfigError, match="workflow-status"):
        judge("Succeded", [], green_results())


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "artifacts")


def _main(store, *extra):
    return verdict_job.main(["--store", store.uri, "--run-id", RUN, *extra])


def test_verdict_job_exits_1_and_names_the_failed_step(store, capsys):
    store.put_json(layout.results_json(RUN), green_results())
    assert _main(store, "--workflow-status", "Succeeded", "--failures", argo_quoted(FAILED_NODES)) == 1
    err = capsys.readouterr().err
    assert "train [train] Failed: No more retries left" in err
    assert layout.leaderboard_md(RUN) in err  # the partial leaderboard is published; say where


def test_verdict_job_passes_a_clean_run_and_fails_without_results(store):
    assert _main(store, "--workflow-status", "Succeeded", "--failures", argo_quoted(None)) == 1  # no results.json
    store.put_json(layout.results_json(RUN), green_results())
    assert _main(store, "--workflow-status", "Succeeded", "--failures", argo_quoted(None)) == 0
    assert _main(store, "--workflow-status", "Bogus") == 2
