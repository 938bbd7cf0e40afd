"""`python -m jobs.compare` on two fixture runs written to a local store."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from common import layout
from common.store import LocalStore
from jobs import compare
from tests.fixtures.results import IPHONE, FixtureRun, RunKnobs, build_run

SLOW = ("mobilenet_v2", "float32", IPHONE.id, "gpu")


def write_run(store: LocalStore, run: FixtureRun) -> None:
    for b in run.benches:
        store.put_json(layout.bench_json(b.run_id, b.arch, b.format, b.device.id, b.delegate_requested), b)
    store.put_json(layout.results_json(run.results.run_id), run.results)


@pytest.fixture
def store(tmp_path):
    s = LocalStore(tmp_path / "artifacts")
    write_run(s, build_run(run_id="run-a", created_at=datetime(2026, 11, 24, 2, tzinfo=timezone.utc), seed=1))
    write_run(s, build_run(run_id="run-b", created_at=datetime(2026, 11, 25, 2, tzinfo=timezone.utc), seed=2,
                           knobs=RunKnobs(slowdown={SLOW: 1.3}, top1_delta={("resnet50", "int8"): -2.0},
                                          size_factor={("efficientnet_b2", "int8"): 0.5})))
    return s


def test_parser_has_positional_runs_and_threshold_flags():
    p = compare.build_parser()
    args = p.parse_args(["a", "b", "--store", "file:///x", "--latency-rel", "0.2", "--fail-on-regression"])
    assert (args.run_a, args.run_b, args.latency_rel, args.fail_on_regression) == ("a", "b", "0.2", True)


def test_compare_prints_what_changed(store, capsys):
    assert compare.main(["run-a", "run-b", "--store", store.uri]) == 0
    out = capsys.readouterr().out
    assert "baseline  A  run-a" in out and "current   B  run-b" in out
    lines = out.splitlines()
    slow = [l for l in lines if "iPhone 12 Pro gpu median ms" in l and l.rstrip().endswith("REGRESSION")]
    assert len(slow) == 1  # only MobileNetV2 float32 on the GPU
    block = out[out.index("mobilenet_v2 float32"):out.index("mobilenet_v2 int8")]
    assert slow[0] in block
    acc = out[out.index("resnet50 int8"):]
    assert any("top-1 %" in l and "REGRESSION" in l for l in acc.splitlines()[:6])
    assert any("size MB" in l and "improved" in l for l in out[out.index("efficientnet_b2 int8"):].splitlines()[:6])
    assert "host CPU (AMD EPYC 7B13) cpu median ms (not an iPhone)" in out
    assert "2 regression(s), 1 improvement(s), 0 missing since A" in out
    # the missing coreml measurement shows as a gap, not a number
    eff = out[out.index("efficientnet_b2 int8"):out.index("resnet50 float32")]
    coreml = next(l for l in eff.splitlines() if "Core ML" in l or "coreml" in l)
    assert "\u2014" in coreml and "Core ML delegate rejected" in coreml


def test_fail_on_regression_exits_non_zero(store, capsys):
    assert compare.main(["run-a", "run-b", "--store", store.uri, "--fail-on-regression"]) == 1
    assert compare.main(["run-a", "run-a", "--store", store.uri, "--fail-on-regression"]) == 0


def test_thresholds_from_flags(store, capsys):
    assert compare.main(["run-a", "run-b", "--store", store.uri, "--top1-drop-pts", "5", "--latency-rel", "0.5",
                         "--size-rel", "0.9"]) == 0
    assert "0 regression(s), 0 improvement(s)" in capsys.readouterr().out


def test_unknown_run_and_bad_flags_are_configuration_errors(store, capsys):
    assert compare.main(["run-a", "no-such-run", "--store", store.uri]) == 2
    assert "results.json" in capsys.readouterr().err
    assert compare.main(["run-a", "run-b", "--store", store.uri, "--latency-rel", "-1"]) == 2
    assert "--latency-rel" in capsys.readouterr().err
    assert compare.main(["run-a", "../etc", "--store", store.uri]) == 2


def test_missing_bench_documents_fall_back_to_means_and_their_spread(tmp_path, capsys):
    """Without raw samples (here: no bench documents for run-b) the check compares mean ± std, and says so."""
    s = LocalStore(tmp_path / "artifacts")
    write_run(s, build_run(run_id="run-a", created_at=datetime(2026, 11, 24, 2, tzinfo=timezone.utc), seed=1))
    write_run(s, build_run(run_id="run-b", created_at=datetime(2026, 11, 25, 2, tzinfo=timezone.utc), seed=2,
                           knobs=RunKnobs(slowdown={SLOW: 2.0})))
    for key in s.list("runs/run-b/"):
        if "/bench/" in key:
            s.delete(key)
    assert compare.main(["run-a", "run-b", "--store", s.uri]) == 0
    out = capsys.readouterr().out
    slow = [line for line in out.splitlines() if "mobilenet_v2 float32" in line and "gpu" in line and "mean" in line]
    assert slow and "regress" in slow[0].lower() and "means \u00b1 std were compared" in slow[0]


def test_history_and_baseline_loading(tmp_path):
    from common.logging import configure
    from tests.fixtures.results import build_history

    configure()  # bind log output to this test's streams, not an earlier test's captured ones
    s = LocalStore(tmp_path / "a")
    runs = build_history(4)
    for i, run in enumerate(runs):
        write_run(s, run)
        r = run.results
        if i == 1:  # a summary rather than a full copy: the loader follows it to results.json
            s.put_json(layout.history_json(f"{r.created_at:%Y-%m-%d}", r.run_id),
                       {"run_id": r.run_id, "created_at": r.created_at.isoformat()})
        elif i < 3:
            s.put_json(layout.history_json(f"{r.created_at:%Y-%m-%d}", r.run_id), r)
    s.put_bytes(layout.HISTORY_PREFIX + "junk.json", b"{not json")
    current = runs[3].results
    history = compare.read_history(s)
    assert [d["run_id"] for d in history] == [r.results.run_id for r in runs[:3]]
    assert compare.load_baseline(s, current, "previous").run_id == runs[2].results.run_id
    assert compare.load_baseline(s, current, "none") is None
    assert compare.load_baseline(s, current, runs[0].results.run_id).run_id == runs[0].results.run_id
    with pytest.raises(Exception, match="does not exist"):
        compare.load_baseline(s, current, "never-ran")
    # a re-aggregated older run never takes a later run as its baseline
    assert compare.load_baseline(s, runs[1].results, "previous").run_id == runs[0].results.run_id
    assert compare.load_baseline(s, runs[0].results, "previous") is None
    recent = compare.recent_results(s, history, current.run_id)
    assert [r.run_id for r in recent] == [r.results.run_id for r in runs[:3]]


def test_attach_comparison_and_write_report(tmp_path):
    from common.logging import configure
    from tests.fixtures.results import build_history

    configure()
    s = LocalStore(tmp_path / "a")
    older = build_history(2)
    for run in older:
        write_run(s, run)
        r = run.results
        s.put_json(layout.history_json(f"{r.created_at:%Y-%m-%d}", r.run_id), r)
    cur = build_run(knobs=RunKnobs(slowdown={SLOW: 1.4}))
    results, base = compare.attach_comparison(s, cur.results, cur.benches, "previous")
    assert base.run_id == older[-1].results.run_id == results.baseline_run_id
    assert [(r.arch, r.format, r.device_id, r.delegate) for r in results.regressions if r.kind == "regression"] == [SLOW]
    keys = compare.write_report(s, results, cur.evals, cur.benches, base)
    assert keys == {"report": layout.report_html(cur.results.run_id), "pareto": layout.pareto_png(cur.results.run_id)}
    page = s.get_bytes(keys["report"]).decode()
    assert older[-1].results.run_id in page and "regression" in page and 'id="history-table"' in page
    assert s.get_bytes(keys["pareto"])[:4] == b"\x89PNG"
    none, base = compare.attach_comparison(s, cur.results, cur.benches, "none")
    assert base is None and none.baseline_run_id is None and none.regressions == []
