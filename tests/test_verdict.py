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
from tests.fixtures.argo_failures import FAILED_NODES, RETRIED_THEN_SUCCEEDED, argo_quoted
from tests.fixtures.results import IPHONE, MISSING_KEY, build_run

RUN = "scenebench-x7k2p"

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
