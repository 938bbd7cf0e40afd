"""iPhone results without percentiles, with partial delegation, FP16 and heat: results, regression and report."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from common.regression import LatencySummary, Thresholds, check_regressions, diff_results, judge_latency_summary
from common.report import render_report
from common.results import latency_entry, render_leaderboard
from common.schemas import measurement_flags
from runner.api import JobRequest
from runner.ios import result_from_logs
from tests.fixtures.results import IPHONE, MISSING_KEY, RunKnobs, build_run
from tests.test_report import parse

LOGS = Path(__file__).parent / "data" / "ios_logs"
BASE_TIME = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)


def _conditions(name: str, delegate: str):
    req = JobRequest(model_url="file:///m", model_sha256="0" * 64, device=IPHONE.id, delegate=delegate)
    return result_from_logs((LOGS / name).read_text(), IPHONE, req).conditions


def older_app(run, conditions: dict[str, object] | None = None):
    """The run as an app without sample lines would give it: no samples, no percentiles; optional conditions."""
    conditions = conditions or {}
    benches = []
    for b in run.benches:
        if b.device.id == IPHONE.id and b.status == "ok":
            c = conditions.get(b.delegate_requested)
            applied = "partial" if b.delegate_requested == "coreml" and c is not None else b.delegate_requested
            b = b.model_copy(update={
                "samples_ms": [], "conditions": c, "delegate_applied": applied,
                "timings_ms": b.timings_ms.model_copy(update={"p50": None, "p90": None, "p99": None})})
        benches.append(b)
    models = []
    for m in run.results.models:
        latency = [latency_entry(b, e.key) if (b := next((x for x in benches if (x.arch, x.format, x.device.id,
                                                                                x.delegate_requested) ==
                                                         (m.arch, m.format, e.device_id, e.delegate_requested)), None))
                   is not None and e.status == "ok" else e for e in m.latency]
        for new, old in zip(latency, m.latency):
            new.score = old.score
        models.append(m.model_copy(update={"latency": latency}))
    run.results = run.results.model_copy(update={"models": models})
    run.benches = benches
    return run


@pytest.fixture(scope="module")
def ios_run():
    cond = {"coreml": _conditions("app_coreml_float_partial.log", "coreml"),
            "gpu": _conditions("app_gpu_float_timing.log", "gpu"),
            "cpu": _conditions("app_cpu_hot_short.log", "cpu")}
    return older_app(build_run(run_id="older-app", seed=3), cond)


def test_a_log_without_samples_still_fills_every_latency_cell(ios_run):
    root = parse(render_report(ios_run.results, ios_run.evals, ios_run.benches)).root
    table = root.find("table", id="leaderboard-table")
    heads = [th.text() for th in table.find_all("th")]
    iphone_cols = [i for i, h in enumerate(heads) if "iPhone 12 Pro" in h]
    assert iphone_cols
    for row in table.find("tbody").find_all("tr"):
        cells = row.find_all("td")
        for i in iphone_cols:
            if "gapcell" in cells[i].classes:
                assert "percentile" not in cells[i].text() and "median" not in cells[i].text()
                continue
            assert cells[i].attrs["data-v"] != ""
            assert "(no samples)" in cells[i].text() and "mean \u00b1" in cells[i].text()
    md = render_leaderboard(ios_run.results)
    rows = [line for line in md.splitlines() if "iPhone 12 Pro" in line and line.startswith("| mobilenet_v2 | float32")]
    assert rows and all("no samples" in r and " ± " in r for r in rows)


def test_core_ml_is_not_called_the_neural_engine(ios_run):
    html = render_report(ios_run.results, ios_run.evals, ios_run.benches)
    assert "Core ML (Neural Engine)" not in html and "(Neural Engine)" not in html
    root = parse(html).root
    heads = " ".join(th.text() for th in root.find("table", id="leaderboard-table").find_all("th"))
    assert "Core ML" in heads
    paper_head = root.find("table", cls="paper").find("thead").text()
    assert "paper: NPU s" in paper_head and "ours: Core ML s" in paper_head
    conditions = root.find("table", id="conditions").text()
    assert "all (MLComputeUnitsAll: Core ML picks Neural Engine, GPU or CPU)" in conditions
    assert "yes (A12 or later)" in conditions


def test_partial_core_ml_shows_its_coverage_and_is_flagged_mostly_on_cpu(ios_run):
    root = parse(render_report(ios_run.results, ios_run.evals, ios_run.benches)).root
    table = root.find("table", id="leaderboard-table")
    heads = [th.text() for th in table.find_all("th")]
    col = next(i for i, h in enumerate(heads) if "iPhone 12 Pro" in h and "Core ML" in h)
    row = table.find("tr", data_model="mobilenet_v2/float32")
    cell = row.find_all("td")[col]
    assert "Core ML took 3 of 71 nodes (4%)" in cell.text()
    assert any("mostly on CPU" in f.attrs["title"] for f in cell.find_all("span", cls="mflag"))
    conditions = root.find("table", id="conditions")
    assert "3 of 71 (4%)" in conditions.text() and "partly delegated, the rest on the CPU" in conditions.text()
    entry = next(e for m in ios_run.results.models for e in m.latency
                 if (m.arch, m.format, e.device_id, e.delegate_requested) == ("mobilenet_v2", "float32", IPHONE.id,
                                                                              "coreml"))
    assert entry.delegate_applied == "partial" and any(f.startswith("mostly on CPU") for f in entry.flags)
    md = render_leaderboard(ios_run.results)
    assert "coreml (partly, 3 of 71 nodes; the rest on the CPU) ⚠ mostly on CPU" in md


def test_gpu_precision_and_a_hot_short_run_are_shown(ios_run):
    root = parse(render_report(ios_run.results, ios_run.evals, ios_run.benches)).root
    table = root.find("table", id="leaderboard-table")
    heads = [th.text() for th in table.find_all("th")]
    row = table.find("tr", data_model="mobilenet_v2/float32")
    gpu = row.find_all("td")[next(i for i, h in enumerate(heads) if "iPhone 12 Pro" in h and "GPU" in h)]
    assert "FP16 allowed" in gpu.text()
    cpu = row.find_all("td")[next(i for i, h in enumerate(heads) if "iPhone 12 Pro" in h and "\u00b7 CPU" in h)]
    titles = [f.attrs["title"] for f in cpu.find_all("span", cls="mflag")]
    assert any("thermal state serious at the end" in t for t in titles)
    assert any("fewer runs than requested: 37 of 50" in t for t in titles)
    conditions = root.find("table", id="conditions").text()
    assert "fair, battery 64% unplugged \u2192 serious, battery 58% unplugged" in conditions
    assert "TensorFlow v2.18.0 build 20261120T0912Z-4f2c9e1" in conditions


def test_coverage_threshold_is_a_setting():
    c = _conditions("app_gpu_partial_syslog_echo.log", "gpu")  # 64 of 70 nodes: 91 %
    assert not any(f.startswith("mostly on CPU") for f in measurement_flags(c, 0.9))
    assert any(f.startswith("mostly on CPU") for f in measurement_flags(c, 0.95))
    from jobs.aggregate import AggregateSettings

    assert AggregateSettings().coverage_threshold == 0.9


# ---------------------------------------------------------------- regression without samples
def test_summary_judge_respects_the_noise():
    t = Thresholds()
    slow = judge_latency_summary(LatencySummary(80.0, 1.0, 50), LatencySummary(100.0, 1.2, 50), t)
    assert slow.kind == "regression" and "means \u00b1 std were compared" in slow.detail
    noisy = judge_latency_summary(LatencySummary(80.0, 15.0, 50), LatencySummary(95.0, 15.0, 50), t)
    assert noisy.kind is None and noisy.bound_ms == pytest.approx(30.0)  # 2 x std beats the 10 % floor
    few = judge_latency_summary(LatencySummary(80.0, 1.0, 3), LatencySummary(89.0, 9.0, 3), t)
    assert few.kind is None  # the interval of the change of means still reaches below zero
    faster = judge_latency_summary(LatencySummary(100.0, 1.0, 50), LatencySummary(80.0, 1.0, 50), t)
    assert faster.kind == "improvement"


def test_check_compares_means_when_an_older_app_gave_no_samples():
    key = ("mobilenet_v2", "float32", IPHONE.id, "gpu")
    base = older_app(build_run(run_id="base", created_at=BASE_TIME, seed=1))
    cur = older_app(build_run(run_id="cur", created_at=BASE_TIME + timedelta(days=1), seed=2,
                              knobs=RunKnobs(slowdown={key: 2.0})))
    regs = check_regressions(cur.results, base.results, cur.benches, base.benches, Thresholds())
    lat = [r for r in regs if r.metric == "latency_ms" and r.kind == "regression"]
    assert [(r.arch, r.format, r.device_id, r.delegate) for r in lat] == [key]
    assert "means \u00b1 std were compared" in lat[0].detail
    same = older_app(build_run(run_id="same", created_at=BASE_TIME + timedelta(days=1), seed=2))
    assert not [r for r in check_regressions(same.results, base.results, same.benches, base.benches, Thresholds())
                if r.metric == "latency_ms" and r.kind == "regression"]
    rows = [c for c in diff_results(cur.results, base.results, regs) if c.metric == "latency_ms"
            and c.device_id == IPHONE.id]
    assert rows and all(" mean ms" in c.label for c in rows if (c.arch, c.format, c.device_id, c.delegate) != MISSING_KEY)
    # a number on each side, except the measurement that is missing in both runs
    assert {(c.arch, c.format, c.device_id, c.delegate) for c in rows
            if c.baseline is None or c.current is None} == {MISSING_KEY}
