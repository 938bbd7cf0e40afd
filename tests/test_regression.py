"""Regression check and baseline choice on synthetic histories."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from common.errors import ConfigError
from common.regression import Thresholds, check_regressions, diff_results, judge_latency, pick_baseline
from tests.fixtures.results import HOST, IPHONE, MISSING_KEY, RunKnobs, build_history, build_run

BASE_TIME = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
KEY = ("mobilenet_v2", "float32", IPHONE.id, "gpu")


def pair(knobs: RunKnobs, base_knobs: RunKnobs | None = None, seeds=(1, 2)):
    base = build_run(run_id="base", created_at=BASE_TIME, seed=seeds[0], knobs=base_knobs)
    cur = build_run(run_id="cur", created_at=BASE_TIME + timedelta(days=1), seed=seeds[1], knobs=knobs)
    return base, cur


def check(base, cur, thresholds=None):
    return check_regressions(cur.results, base.results, cur.benches, base.benches, thresholds or Thresholds())


def of(regs, kind, metric=None):
    return [r for r in regs if r.kind == kind and (metric is None or r.metric == metric)]


def test_same_code_twice_flags_nothing():
    base, cur = pair(RunKnobs())
    regs = check(base, cur)
    assert of(regs, "regression") == []
    assert of(regs, "missing") == []


def test_real_slowdown_is_flagged():
    base, cur = pair(RunKnobs(slowdown={KEY: 1.3}))
    regs = of(check(base, cur), "regression", "latency_ms")
    assert [(r.arch, r.format, r.device_id, r.delegate) for r in regs] == [KEY]
    r = regs[0]
    assert r.current > r.baseline and r.change == pytest.approx(r.current - r.baseline, abs=1e-3)
    assert "bootstrap" in r.detail and "median" in r.detail


def test_noise_as_large_as_the_device_spread_is_not_flagged():
    # A noisy device (15 % spread) whose run shifts by one spread: beyond the 10 % floor,
    # but what two runs of the same model on that phone can show.
    spread = {KEY: 0.15}
    base, cur = pair(RunKnobs(slowdown={KEY: 1.15}, spread=spread), RunKnobs(spread=spread))
    regs = check(base, cur)
    assert not [r for r in regs if r.metric == "latency_ms" and r.kind == "regression"]
    # and the same shift on a quiet device is a finding
    base, cur = pair(RunKnobs(slowdown={KEY: 1.15}, spread={KEY: 0.02}), RunKnobs(spread={KEY: 0.02}))
    assert [r.delegate for r in of(check(base, cur), "regression", "latency_ms")] == ["gpu"]


def test_small_slowdown_below_relative_floor_is_not_flagged():
    base, cur = pair(RunKnobs(slowdown={KEY: 1.05}, spread={KEY: 0.005}), RunKnobs(spread={KEY: 0.005}))
    assert of(check(base, cur), "regression", "latency_ms") == []


def test_few_samples_need_the_bootstrap_to_agree():
    # The median moved by 30 %, beyond the floor and the spread bound, but with three
    # samples a resample keeps the old median a quarter of the time: not a finding.
    v = judge_latency([100.0, 100.0, 100.0], [100.0, 130.0, 131.0], Thresholds())
    assert v.change_ms > v.bound_ms and v.kind is None
    rng = np.random.default_rng(3)
    v = judge_latency(rng.normal(100, 2, 30), rng.normal(140, 2, 30), Thresholds())
    assert v.kind == "regression"
    v = judge_latency(rng.normal(100, 2, 30), rng.normal(70, 2, 30), Thresholds())
    assert v.kind == "improvement"


def test_summary_numbers_only_use_relative_floor():
    v = judge_latency([100.0], [125.0], Thresholds())
    assert v.kind == "regression" and "summary numbers" in v.detail


def test_missing_device_is_missing_not_regression():
    base, cur = pair(RunKnobs(drop_devices=(IPHONE.id,)))
    regs = check(base, cur)
    missing = of(regs, "missing", "latency_ms")
    assert {(r.device_id, r.delegate) for r in missing} == {(IPHONE.id, d) for d in ("cpu", "gpu", "coreml")}
    # 6 models x 3 delegates, less the measurement that was already missing in the baseline
    assert len(missing) == 6 * 3 - 1
    assert of(regs, "regression") == []
    assert all("now missing" in r.detail for r in missing)


def test_measurement_missing_in_baseline_is_not_reported():
    base, cur = pair(RunKnobs())
    regs = check(base, cur)
    assert not [r for r in regs if (r.arch, r.format, r.device_id, r.delegate) == MISSING_KEY]


def test_failed_model_is_missing_with_reason():
    base, cur = pair(RunKnobs())
    m = cur.results.models[0]
    cur.results.models[0] = m.model_copy(update={"status": "failed", "reason": "conversion failed: OOM"})
    regs = check(base, cur)
    r = [r for r in regs if r.metric == "model"]
    assert len(r) == 1 and r[0].kind == "missing" and "OOM" in r[0].detail


def test_accuracy_drop_is_flagged_and_gain_is_an_improvement():
    base, cur = pair(RunKnobs(top1_delta={("resnet50", "int8"): -1.6, ("mobilenet_v2", "int8"): +2.0}))
    regs = check(base, cur)
    drops = of(regs, "regression", "top1")
    assert [(r.arch, r.format) for r in drops] == [("resnet50", "int8")]
    assert drops[0].change == pytest.approx(-1.6)
    assert [(r.arch, r.format) for r in of(regs, "improvement", "top1")] == [("mobilenet_v2", "int8")]
    # a drop inside the threshold is not flagged
    base, cur = pair(RunKnobs(top1_delta={("resnet50", "int8"): -0.5}))
    assert of(check(base, cur), "regression", "top1") == []


def test_size_growth_is_flagged():
    base, cur = pair(RunKnobs(size_factor={("efficientnet_b2", "float32"): 1.08,
                                           ("resnet50", "float32"): 1.02}))
    regs = of(check(base, cur), "regression", "size_mb")
    assert [(r.arch, r.format) for r in regs] == [("efficientnet_b2", "float32")]


def test_thresholds_are_strict():
    with pytest.raises(Exception):
        Thresholds(top1_drop=1.0)
    t = Thresholds()
    with pytest.raises(Exception):
        t.latency_rel = 0.5


def test_diff_results_carries_flags():
    base, cur = pair(RunKnobs(slowdown={KEY: 1.3}))
    regs = check(base, cur)
    rows = diff_results(cur.results, base.results, regs)
    flagged = [r for r in rows if r.flag == "regression"]
    assert [(r.arch, r.format, r.device_id, r.delegate) for r in flagged] == [KEY]
    host_rows = [r for r in rows if r.device_id == HOST.id]
    assert host_rows and all("host CPU" in r.label for r in host_rows)


def test_pick_baseline_previous_named_none():
    runs = [r.results for r in build_history(4)]
    current = runs[-1]
    assert pick_baseline(runs, current.run_id).run_id == runs[-2].run_id
    # order of the listing does not matter, only created_at
    assert pick_baseline(list(reversed(runs)), current.run_id, "previous").run_id == runs[-2].run_id
    assert pick_baseline(runs, current.run_id, "none") is None
    assert pick_baseline(runs, current.run_id, runs[0].run_id).run_id == runs[0].run_id
    with pytest.raises(ConfigError, match="not in results/history"):
        pick_baseline(runs, current.run_id, "no-such-run")
    assert pick_baseline([current], current.run_id) is None
    # summaries as plain dicts work too; a failed run is skipped; 'before' excludes later runs
    dicts = [{"run_id": r.run_id, "created_at": r.created_at.isoformat()} for r in runs]
    dicts[-2]["status"] = "failed"
    assert pick_baseline(dicts, current.run_id)["run_id"] == runs[-3].run_id
    assert pick_baseline(dicts, "other", before=runs[1].created_at)["run_id"] == runs[0].run_id


def bimodal(rng, fast: float, n: int = 40, slow_share: float = 0.35) -> np.ndarray:
    # host CPUs shared with other work: a tight fast cluster and a slower one ~3x away
    s = rng.normal(fast, fast * 0.02, n)
    k = int(n * slow_share)
    s[:k] = rng.uniform(fast * 1.5, fast * 3.5, k)
    return rng.permutation(s)


def test_bimodal_host_timings_doubling_is_flagged_same_is_not():
    rng = np.random.default_rng(11)
    assert judge_latency(bimodal(rng, 0.22), bimodal(rng, 0.44), Thresholds()).kind == "regression"
    for _ in range(5):
        assert judge_latency(bimodal(rng, 0.22), bimodal(rng, 0.22), Thresholds()).kind is None


def _with_per_image(model, metric_bits: dict[str, np.ndarray]):
    from common import stats
    from common.schemas import PerImage

    top1, top3 = metric_bits["top1"], metric_bits["top3"]
    return model.model_copy(update={
        "top1": round(100 * top1.mean(), 4), "top3": round(100 * top3.mean(), 4), "count": top1.size,
        "per_image": PerImage(count=top1.size, top1=stats.pack(top1), top3=stats.pack(top3))})


def _swap(cur, arch_fmt, lost: int, gained: int):
    """This run's model got `lost` baseline-right images wrong and `gained` baseline-wrong ones right."""
    from common import stats

    i = next(i for i, m in enumerate(cur.results.models) if (m.arch, m.format) == arch_fmt)
    m = cur.results.models[i]
    bits = {k: stats.unpack(getattr(m.per_image, k), m.per_image.count) for k in ("top1", "top3")}
    top1 = bits["top1"].copy()
    top1[np.flatnonzero(top1)[:lost]] = False
    top1[np.flatnonzero(~bits["top1"])[:gained]] = True
    cur.results.models[i] = _with_per_image(m, {"top1": top1, "top3": bits["top3"] | top1})
    return cur.results.models[i]


def test_accuracy_drop_that_the_paired_test_calls_chance_is_not_flagged():
    # 25 images lost, 15 gained: -10 images = -1.67 points on 600, beyond the 1-point floor,
    # but McNemar p = 0.15 on 40 discordant images: what two trainings can differ by.
    base, cur = pair(RunKnobs())
    m = _swap(cur, ("resnet50", "int8"), lost=25, gained=15)
    b = next(x for x in base.results.models if (x.arch, x.format) == ("resnet50", "int8"))
    assert m.top1 - b.top1 == pytest.approx(-10 / 6, abs=0.05)  # the fixture rounds top-1 to 0.1
    regs = check(base, cur)
    assert of(regs, "regression", "top1") == []


def test_accuracy_drop_the_paired_test_confirms_is_flagged_with_its_p_value():
    base, cur = pair(RunKnobs())
    _swap(cur, ("resnet50", "int8"), lost=10, gained=0)  # 10 against 0: p = 0.002
    (r,) = of(check(base, cur), "regression", "top1")
    assert (r.arch, r.format) == ("resnet50", "int8")
    assert r.p_value == pytest.approx(2 / 1024)
    assert r.ci is not None and r.ci.hi < 0
    assert "McNemar p 0.002" in r.detail and "10 were right only in the baseline and 0 only now" in r.detail


def test_accuracy_on_changed_data_is_judged_unpaired():
    base, cur = pair(RunKnobs(top1_delta={("resnet50", "int8"): -1.6}))
    cur.results = cur.results.model_copy(update={"dataset_fingerprint": "other"})
    # 10 images of 600 on different images: the unpaired interval includes 0, so not a finding
    assert of(check(base, cur), "regression", "top1") == []
    base, cur = pair(RunKnobs(top1_delta={("resnet50", "int8"): -6.0}))
    cur.results = cur.results.model_copy(update={"dataset_fingerprint": "other"})
    (r,) = of(check(base, cur), "regression", "top1")
    assert r.p_value is None and "not paired, different validation images" in r.detail


def test_accuracy_without_counts_is_not_flagged():
    # results written before per-image results were kept: nothing to test a change with
    base, cur = pair(RunKnobs(top1_delta={("resnet50", "int8"): -3.0}))
    strip = {"count": None, "per_image": None}
    base.results.models[:] = [m.model_copy(update=strip) for m in base.results.models]
    regs = check(base, cur)
    assert of(regs, "regression", "top1") == []
