"""Regression check of one run against a baseline run, and the choice of that baseline.

Pure functions over the results objects and bench documents; the aggregate job and
`jobs.compare` load them from the store and pass them in.

How a latency change is judged (`judge_latency`)
------------------------------------------------
A run measures each (model, device, delegate) as N raw samples. Two runs on the same phone
differ by more than those samples suggest: thermal state, background work and clock
governors move a whole run up or down, and successive samples within a run are correlated.
A significance test on the samples alone (Mann-Whitney, a t-test) therefore becomes
"significant" for shifts of a fraction of the spread once N is 50-100, and would flag
every night. So a slowdown is flagged only when all three hold:

1. the median grew by more than ``latency_rel`` (default 10 %) of the baseline median —
   the smallest change worth a person's attention;
2. the growth exceeds ``latency_noise_k`` (default 2) robust standard deviations of the
   device's noise, estimated from the two sample sets by the median absolute deviation
   (1.4826 x MAD is the standard deviation of a normal distribution). A shift as large as
   the device's own spread is what two runs of the same model can show, and is not
   flagged. MAD rather than the interquartile range or the standard deviation because
   timings are often bimodal: a CPU shared with other work puts a third or more of the
   samples in a second, slower cluster, which inflates the IQR (measured: a doubled host
   median hidden under an IQR-based bound) while MAD still reads the main cluster;
3. a seeded bootstrap of the difference of medians puts the lower end of its
   ``confidence`` interval above zero: with few samples the medians themselves are
   uncertain, and a difference that resampling can erase is not a finding.

Medians, not means, because one stalled inference moves a mean by more than a real
regression does. Improvements are judged the same way, mirrored.

Without raw samples (an iPhone app built before it printed them) a measurement still has
benchmark_model's mean, standard deviation and run count, and `judge_latency_summary` compares
those: the same relative floor, the noise bound from the two standard deviations, and a normal
interval of the difference of means in place of the bootstrap.

How an accuracy change is judged (`judge_accuracy`)
---------------------------------------------------
With 600 validation images one image is 0.17 points, and two trainings of the same code
differ by a few images either way. A top-1 or top-3 change is flagged only when both hold:

1. it is larger than ``top1_drop_pts`` / ``top3_drop_pts`` (default 1 point), the smallest
   change worth a person's attention;
2. a test says it is not chance. On the same images (same dataset fingerprint, per-image
   results in both runs) that is the exact McNemar test on the images only one run got
   right, p below ``accuracy_alpha`` (default 0.05); the detail also gives the paired
   bootstrap interval of the change. On different images, or when a run has no per-image
   results, an unpaired bootstrap interval of the change must exclude zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from statistics import NormalDist
from typing import Any, Iterable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from common import stats
from common.errors import ConfigError
from common.schemas import BenchResult, Interval, LatencyEntry, ModelResult, Regression, Results

MAD_TO_SIGMA = 1.4826


class Thresholds(BaseModel):
    """When a change counts; defaults suit a nightly run of tens of samples per device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    top1_drop_pts: float = Field(1.0, ge=0, description="top-1 drop in percentage points that is a regression")
    top3_drop_pts: float = Field(1.0, ge=0, description="top-3 drop in percentage points that is a regression")
    accuracy_alpha: float = Field(0.05, gt=0, lt=1, description="an accuracy change must have a McNemar p below "
                                                                 "this (paired), or its interval exclude zero")
    latency_rel: float = Field(0.10, ge=0, description="smallest relative growth of the median latency flagged")
    latency_noise_k: float = Field(2.0, ge=0, description="growth must exceed this many robust sigmas of the samples")
    confidence: float = Field(0.95, gt=0, lt=1, description="bootstrap interval of the change of medians")
    bootstrap_iterations: int = Field(2000, ge=100)
    size_rel: float = Field(0.05, ge=0, description="relative model size growth that is a regression")
    improvements: bool = Field(True, description="also report changes as large the other way")


# ------------------------------------------------------------------ latency
@dataclass(frozen=True)
class LatencyVerdict:
    kind: Literal["regression", "improvement"] | None
    baseline_ms: float
    current_ms: float
    change_ms: float
    change_rel: float
    bound_ms: float  # the growth a change had to exceed
    detail: str


def _robust_sigma(samples: np.ndarray) -> float:
    if samples.size < 2:
        return 0.0
    return MAD_TO_SIGMA * float(np.median(np.abs(samples - np.median(samples))))


def _bootstrap_interval(base: np.ndarray, cur: np.ndarray, thresholds: Thresholds) -> tuple[float, float]:
    # Fixed seed: the same two runs must always get the same verdict.
    rng = np.random.default_rng(20210618)
    n = thresholds.bootstrap_iterations
    b = np.median(rng.choice(base, size=(n, base.size), replace=True), axis=1)
    c = np.median(rng.choice(cur, size=(n, cur.size), replace=True), axis=1)
    diff = c - b
    alpha = (1.0 - thresholds.confidence) / 2.0
    lo, hi = np.quantile(diff, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def judge_latency(
    baseline_samples: Sequence[float],
    current_samples: Sequence[float],
    thresholds: Thresholds,
) -> LatencyVerdict:
    """Compare two sets of raw latency samples (ms) of one model on one device and delegate.

    One-element sequences are accepted (a summary number when raw samples are missing);
    then only the relative floor applies, and the detail says so.
    """
    base = np.asarray([s for s in baseline_samples if s is not None and np.isfinite(s)], dtype=float)
    cur = np.asarray([s for s in current_samples if s is not None and np.isfinite(s)], dtype=float)
    if base.size == 0 or cur.size == 0:
        raise ValueError("judge_latency needs at least one sample on each side")
    mb, mc = float(np.median(base)), float(np.median(cur))
    delta = mc - mb
    rel = delta / mb if mb > 0 else float("inf")
    sigma = float(np.sqrt((_robust_sigma(base) ** 2 + _robust_sigma(cur) ** 2) / 2.0))
    floor = thresholds.latency_rel * mb
    noise = thresholds.latency_noise_k * sigma
    bound = max(floor, noise)
    raw = base.size >= 3 and cur.size >= 3
    if raw:
        lo, hi = _bootstrap_interval(base, cur, thresholds)
        interval = f"; {thresholds.confidence:.0%} bootstrap interval of the change {lo:+.3g}..{hi:+.3g} ms"
    else:
        lo = hi = delta
        interval = "; raw samples missing, compared summary numbers only"
    detail = (
        f"median {mb:.3g} \u2192 {mc:.3g} ms ({rel:+.1%}); threshold \u00b1{bound:.3g} ms = max("
        f"{thresholds.latency_rel:.0%} of baseline, {thresholds.latency_noise_k:g} \u00d7 robust sigma "
        f"{sigma:.3g} ms){interval}"
    )
    kind: Literal["regression", "improvement"] | None = None
    if delta > bound and lo > 0:
        kind = "regression"
    elif delta < -bound and hi < 0:
        kind = "improvement"
    return LatencyVerdict(kind=kind, baseline_ms=mb, current_ms=mc, change_ms=delta, change_rel=rel,
                          bound_ms=bound, detail=detail)


@dataclass(frozen=True)
class LatencySummary:
    """A measurement's mean, standard deviation and run count (ms), for when raw samples are missing."""

    mean: float
    std: float | None = None
    count: int | None = None


def judge_latency_summary(base: LatencySummary, cur: LatencySummary, thresholds: Thresholds) -> LatencyVerdict:
    """Compare two measurements by their means, with their standard deviations as the device's noise."""
    if not (np.isfinite(base.mean) and np.isfinite(cur.mean)):
        raise ValueError("judge_latency_summary needs a finite mean on each side")
    delta = cur.mean - base.mean
    rel = delta / base.mean if base.mean > 0 else float("inf")
    sb, sc = base.std or 0.0, cur.std or 0.0
    sigma = float(np.sqrt((sb ** 2 + sc ** 2) / 2.0))
    floor = thresholds.latency_rel * base.mean
    bound = max(floor, thresholds.latency_noise_k * sigma)
    if base.std is not None and cur.std is not None and (base.count or 0) > 1 and (cur.count or 0) > 1:
        z = NormalDist().inv_cdf(1.0 - (1.0 - thresholds.confidence) / 2.0)
        half = z * float(np.sqrt(sb ** 2 / base.count + sc ** 2 / cur.count))
        lo, hi = delta - half, delta + half
        interval = (f"; {thresholds.confidence:.0%} normal interval of the change of means {lo:+.3g}..{hi:+.3g} ms "
                    f"(n = {base.count}, {cur.count})")
    else:
        lo = hi = delta
        interval = "; no run counts, so no interval"
    spread = f"std {sigma:.3g} ms" if base.std is not None or cur.std is not None else "no std"
    detail = (f"mean {base.mean:.3g} \u2192 {cur.mean:.3g} ms ({rel:+.1%}); threshold \u00b1{bound:.3g} ms = max("
              f"{thresholds.latency_rel:.0%} of baseline, {thresholds.latency_noise_k:g} \u00d7 {spread})"
              f"{interval}; per-run samples missing on at least one side, so means \u00b1 std were compared")
    kind: Literal["regression", "improvement"] | None = None
    if delta > bound and lo > 0:
        kind = "regression"
    elif delta < -bound and hi < 0:
        kind = "improvement"
    return LatencyVerdict(kind=kind, baseline_ms=base.mean, current_ms=cur.mean, change_ms=delta, change_rel=rel,
                          bound_ms=bound, detail=detail)


# ------------------------------------------------------------------ the check
BenchKey = tuple[str, str, str, str]  # arch, format, device_id, delegate_requested


def _bench_index(benches: Iterable[BenchResult]) -> dict[BenchKey, BenchResult]:
    return {(b.arch, b.format, b.device.id, b.delegate_requested): b for b in benches}


def _samples(entry: LatencyEntry, bench: BenchResult | None) -> list[float]:
    """Raw samples of a measurement, when there are enough to judge on them."""
    if bench is not None and bench.status == "ok" and len(bench.samples_ms) >= 3:
        return list(bench.samples_ms)
    return []


def _summary(entry: LatencyEntry, bench: BenchResult | None) -> LatencySummary | None:
    """Mean, std and count of a measurement: from its samples, else from the tool's statistics."""
    samples = bench.samples_ms if bench is not None and bench.status == "ok" else []
    if len(samples) >= 2:
        a = np.asarray(samples, dtype=float)
        return LatencySummary(float(a.mean()), float(a.std()), int(a.size))
    t = bench.timings_ms if bench is not None and bench.status == "ok" else None
    mean = entry.mean_ms if entry.mean_ms is not None else (t.mean if t is not None else None)
    if mean is None:
        return None
    std = entry.std_ms if entry.std_ms is not None else (t.std if t is not None else None)
    count = entry.count if entry.count is not None else (t.count if t is not None else None)
    return LatencySummary(mean, std, count)


def _models(results: Results) -> dict[tuple[str, str], ModelResult]:
    return {(m.arch, m.format): m for m in results.models}


def _entries(model: ModelResult) -> dict[tuple[str, str], LatencyEntry]:
    return {(e.device_id, e.delegate_requested): e for e in model.latency}


@dataclass(frozen=True)
class AccuracyVerdict:
    kind: Literal["regression", "improvement"] | None
    change: float  # current minus baseline, points
    ci: Interval | None
    p_value: float | None
    detail: str


def _per_image(m: ModelResult, metric: str) -> np.ndarray | None:
    if m.per_image is None:
        return None
    return stats.unpack(getattr(m.per_image, metric), m.per_image.count)


def _p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"


def judge_accuracy(metric: str, baseline: ModelResult, current: ModelResult, limit: float,
                   thresholds: Thresholds, same_images: bool) -> AccuracyVerdict:
    """Is the change of one accuracy (top1 or top3, percent) from baseline to current real?

    `same_images`: both runs evaluated the same validation images in the same order (same
    dataset fingerprint), so per-image results pair up.
    """
    b, c = getattr(baseline, metric), getattr(current, metric)
    change = c - b
    base_bits = _per_image(baseline, metric) if same_images else None
    cur_bits = _per_image(current, metric) if same_images else None
    name = {"top1": "top-1", "top3": "top-3"}.get(metric, metric)
    head = f"{name} {b:.2f} \u2192 {c:.2f} % ({change:+.2f} points; threshold {limit:g} points"
    ci: Interval | None = None
    p: float | None = None
    if base_bits is not None and cur_bits is not None and base_bits.size == cur_bits.size:
        mc = stats.mcnemar_exact(cur_bits, base_bits)
        iv = stats.paired_difference_interval(cur_bits, base_bits, level=1.0 - thresholds.accuracy_alpha)
        ci, p = Interval(lo=round(iv.lo, 4), hi=round(iv.hi, 4), level=iv.level), mc.p_value
        real = p < thresholds.accuracy_alpha
        how = (f"; on the same {cur_bits.size} images {mc.second_only} were right only in the baseline and "
               f"{mc.first_only} only now: exact McNemar p {_p_text(p)} (flagged below {thresholds.accuracy_alpha:g}), "
               f"{iv.level:.0%} paired bootstrap interval {iv.lo:+.2f}..{iv.hi:+.2f} points)")
    elif baseline.count and current.count:
        why = ("different validation images (the dataset changed)" if not same_images
               else "no per-image results in " + ("the baseline" if base_bits is None else "this run"))
        iv = stats.unpaired_difference_interval(round(c * current.count / 100), current.count,
                                                round(b * baseline.count / 100), baseline.count,
                                                level=1.0 - thresholds.accuracy_alpha)
        ci = Interval(lo=round(iv.lo, 4), hi=round(iv.hi, 4), level=iv.level)
        real = iv.excludes_zero()
        how = (f"; not paired, {why}: {iv.level:.0%} unpaired bootstrap interval "
               f"{iv.lo:+.2f}..{iv.hi:+.2f} points, flagged when it excludes 0)")
    else:
        real = False
        how = "; no image counts to test the change with, so it is not flagged)"
    kind: Literal["regression", "improvement"] | None = None
    if real and change < -limit:
        kind = "regression"
    elif real and change > limit:
        kind = "improvement"
    return AccuracyVerdict(kind=kind, change=change, ci=ci, p_value=p, detail=head + how)


def _accuracy(arch: str, fmt: str, metric: str, bm: ModelResult, cm: ModelResult, limit: float,
              thresholds: Thresholds, note: str, same_images: bool) -> Regression | None:
    if abs(getattr(cm, metric) - getattr(bm, metric)) <= limit:
        return None  # below the floor: not worth a test
    v = judge_accuracy(metric, bm, cm, limit, thresholds, same_images)
    if v.kind is None or (v.kind == "improvement" and not thresholds.improvements):
        return None
    return Regression(arch=arch, format=fmt, metric=metric, baseline=getattr(bm, metric),
                      current=getattr(cm, metric), change=round(v.change, 4), kind=v.kind,
                      detail=v.detail + note, ci=v.ci, p_value=v.p_value)


def check_regressions(
    current: Results,
    baseline: Results,
    current_benches: list[BenchResult],
    baseline_benches: list[BenchResult],
    thresholds: Thresholds | None = None,
) -> list[Regression]:
    """What got worse (or better, or went missing) from baseline to current.

    A model or measurement present in the baseline and absent or failed now is
    kind='missing' with the reason, never a regression: we cannot say it got worse.
    Measurements new in the current run are not reported (nothing to compare with).
    """
    thresholds = thresholds or Thresholds()
    out: list[Regression] = []
    cur_models, base_models = _models(current), _models(baseline)
    cur_bench, base_bench = _bench_index(current_benches), _bench_index(baseline_benches)
    note = ""
    same_images = current.dataset_fingerprint == baseline.dataset_fingerprint
    if not same_images:
        note = (f"; the dataset changed ({baseline.dataset_fingerprint[:12]} \u2192 "
                f"{current.dataset_fingerprint[:12]}), so accuracy is not strictly comparable")

    for (arch, fmt), bm in base_models.items():
        if bm.status != "ok":
            continue
        cm = cur_models.get((arch, fmt))
        if cm is None or cm.status != "ok":
            reason = (cm.reason if cm is not None else None) or "not in this run"
            out.append(Regression(arch=arch, format=fmt, metric="model", kind="missing",
                                  detail=f"{arch} {fmt} was in the baseline; now missing: {reason}"))
            continue

        for metric, limit in (("top1", thresholds.top1_drop_pts), ("top3", thresholds.top3_drop_pts)):
            b, c = getattr(bm, metric), getattr(cm, metric)
            if b is None:
                continue
            if c is None:
                out.append(Regression(arch=arch, format=fmt, metric=metric, baseline=b, kind="missing",
                                      detail=f"{metric} was measured in the baseline; not in this run"))
                continue
            r = _accuracy(arch, fmt, metric, bm, cm, limit, thresholds, note, same_images)
            if r is not None:
                out.append(r)

        if bm.size_mb and cm.size_mb is not None:
            rel = (cm.size_mb - bm.size_mb) / bm.size_mb
            kind = None
            if rel > thresholds.size_rel:
                kind = "regression"
            elif rel < -thresholds.size_rel and thresholds.improvements:
                kind = "improvement"
            if kind:
                out.append(Regression(arch=arch, format=fmt, metric="size_mb", baseline=bm.size_mb,
                                      current=cm.size_mb, change=round(cm.size_mb - bm.size_mb, 4), kind=kind,
                                      detail=f"size {bm.size_mb:.2f} \u2192 {cm.size_mb:.2f} MB ({rel:+.1%}; "
                                      f"threshold {thresholds.size_rel:.0%})"))

        cur_entries = _entries(cm)
        for (device_id, delegate), be in _entries(bm).items():
            if be.status != "ok":
                continue
            where = f"{be.device_name} ({device_id}) {delegate}"
            ce = cur_entries.get((device_id, delegate))
            if ce is None or ce.status != "ok":
                reason = (ce.reason if ce is not None else None) or "device or delegate not measured in this run"
                out.append(Regression(arch=arch, format=fmt, metric="latency_ms", device_id=device_id,
                                      delegate=delegate, baseline=be.p50_ms if be.p50_ms is not None else be.mean_ms,
                                      kind="missing",
                                      detail=f"{where} was measured in the baseline; now missing: {reason}"))
                continue
            bb, cb = base_bench.get((arch, fmt, device_id, delegate)), cur_bench.get((arch, fmt, device_id, delegate))
            bs, cs = _samples(be, bb), _samples(ce, cb)
            if bs and cs:
                verdict = judge_latency(bs, cs, thresholds)
            else:
                # An older app on either side printed no per-run samples: compare means with their spread.
                bsum, csum = _summary(be, bb), _summary(ce, cb)
                if bsum is None or csum is None:
                    continue
                verdict = judge_latency_summary(bsum, csum, thresholds)
            if verdict.kind is None or (verdict.kind == "improvement" and not thresholds.improvements):
                continue
            out.append(Regression(arch=arch, format=fmt, metric="latency_ms", device_id=device_id,
                                  delegate=delegate, baseline=round(verdict.baseline_ms, 4),
                                  current=round(verdict.current_ms, 4), change=round(verdict.change_ms, 4),
                                  kind=verdict.kind, detail=f"{where}: {verdict.detail}"))
    return out


def count_kinds(regressions: Iterable[Regression]) -> dict[str, int]:
    counts = {"regression": 0, "improvement": 0, "missing": 0}
    for r in regressions:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    return counts


# ------------------------------------------------------------------ side-by-side changes
@dataclass(frozen=True)
class Change:
    """One compared number of one model, for tables meant for people."""

    arch: str
    format: str
    metric: str  # top1, top3, size_mb, score, latency_ms
    label: str  # column label, e.g. "top-1 %" or "iPhone 12 Pro gpu ms"
    device_id: str | None
    delegate: str | None
    baseline: float | None
    current: float | None
    flag: str  # regression, improvement, missing, new, or ""
    detail: str = ""

    @property
    def change(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


def _flag_index(regressions: Iterable[Regression]) -> dict[tuple, Regression]:
    return {(r.arch, r.format, r.metric, r.device_id, r.delegate): r for r in regressions}


def diff_results(current: Results, baseline: Results | None, regressions: Iterable[Regression]) -> list[Change]:
    """Every compared number of every model of either run, with the flag the check gave it.

    Latency is the median (p50) of each run, the number the check compares; where a side has no
    per-run samples, both sides show their mean.
    """
    flags = _flag_index(regressions)
    cur_models = _models(current)
    base_models = _models(baseline) if baseline is not None else {}
    keys = list(cur_models) + [k for k in base_models if k not in cur_models]
    rows: list[Change] = []
    for arch, fmt in keys:
        cm, bm = cur_models.get((arch, fmt)), base_models.get((arch, fmt))

        def add(metric: str, label: str, b: float | None, c: float | None,
                device_id: str | None = None, delegate: str | None = None, gap: str = "") -> None:
            r = flags.get((arch, fmt, metric, device_id, delegate)) or (
                flags.get((arch, fmt, "model", None, None)) if c is None else None)
            flag = r.kind if r is not None else ("new" if b is None and c is not None and baseline is not None
                                                 else "")
            rows.append(Change(arch=arch, format=fmt, metric=metric, label=label, device_id=device_id,
                               delegate=delegate, baseline=b, current=c, flag=flag,
                               detail=r.detail if r is not None else (gap if c is None else "")))

        def val(m: ModelResult | None, attr: str) -> float | None:
            return getattr(m, attr) if m is not None and m.status == "ok" else None

        model_gap = "" if cm is not None and cm.status == "ok" else (
            (cm.reason if cm is not None else None) or "not in this run")

        add("top1", "top-1 %", val(bm, "top1"), val(cm, "top1"), gap=model_gap)
        add("top3", "top-3 %", val(bm, "top3"), val(cm, "top3"), gap=model_gap)
        add("size_mb", "size MB", val(bm, "size_mb"), val(cm, "size_mb"), gap=model_gap)
        add("score", "score", val(bm, "score"), val(cm, "score"), gap=model_gap)
        ce = _entries(cm) if cm is not None else {}
        be = _entries(bm) if bm is not None else {}
        for dev, dlg in list(ce) + [k for k in be if k not in ce]:
            e = ce.get((dev, dlg)) or be[(dev, dlg)]
            host = ""
            if e.backend == "host":
                host = " (not an iPhone)" if "host cpu" in e.device_name.lower() else " (host CPU, not an iPhone)"
            b_ok = be[(dev, dlg)] if (dev, dlg) in be and be[(dev, dlg)].status == "ok" else None
            c_ok = ce[(dev, dlg)] if (dev, dlg) in ce and ce[(dev, dlg)].status == "ok" else None
            # Like with like: medians when every side present has one, else the tool's means.
            stat = "p50_ms" if all(x.p50_ms is not None for x in (b_ok, c_ok) if x is not None) else "mean_ms"
            bv = getattr(b_ok, stat) if b_ok is not None else None
            cv = getattr(c_ok, stat) if c_ok is not None else None
            reason = (ce[(dev, dlg)].reason if (dev, dlg) in ce else None) or model_gap or "not measured in this run"
            label = "median" if stat == "p50_ms" else "mean"
            add("latency_ms", f"{e.device_name} {dlg} {label} ms{host}", bv, cv, dev, dlg, gap=reason)
    return rows


# ------------------------------------------------------------------ baseline choice
def _field(item: Any, name: str) -> Any:
    if isinstance(item, dict):
        return item.get(name)
    return getattr(item, name, None)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, str) and value:
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    # Documents are written in UTC; a naive time is read as UTC so that it can be ordered.
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _successful(item: Any) -> bool:
    # A history entry exists only for a run whose results.json was written; a summary may
    # still carry a status, and a run in which no model succeeded has nothing to compare.
    status = _field(item, "status")
    if status is not None and str(status).lower() not in ("ok", "success", "succeeded", "complete", "completed"):
        return False
    models = _field(item, "models")
    if models:
        return any((_field(m, "status") or "ok") == "ok" for m in models)
    return True


def pick_baseline(history: Sequence[Any], current_run_id: str, named: str | None = None,
                  *, before: datetime | None = None) -> Any | None:
    """The run to compare against, from the history entries (Results or summaries with
    run_id and created_at).

    named None or 'previous': the most recent successful run other than the current one
    (created before `before`, when given). 'none': no baseline. Anything else: that run id,
    which must be in the history.
    """
    if named == "none":
        return None
    others = [h for h in history if _field(h, "run_id") != current_run_id]
    if named not in (None, "", "previous"):
        if named == current_run_id:
            raise ConfigError(f"--baseline {named!r} is the run being aggregated; name an earlier run")
        for h in others:
            if _field(h, "run_id") == named:
                return h
        known = ", ".join(sorted({str(_field(h, 'run_id')) for h in others})) or "none"
        raise ConfigError(f"--baseline run {named!r} is not in results/history/; known runs: {known}; "
                          "or use previous|none")
    candidates = []
    for h in others:
        created = _as_datetime(_field(h, "created_at"))
        if created is None or not _successful(h):
            continue
        if before is not None and created >= _as_datetime(before):
            continue
        candidates.append((created, str(_field(h, "run_id")), h))
    if not candidates:
        return None
    return max(candidates, key=lambda t: (t[0], t[1]))[2]
