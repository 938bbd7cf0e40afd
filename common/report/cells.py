"""Labels, number formats, latency columns and gap reasons shared by every part of the report."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from common.archs import ARCHS
from common.schemas import DELEGATES, EvalReport, LatencyEntry, ModelResult, Results

HOST_LABEL = "host CPU \u2014 not an iPhone"
# Core ML is not "the Neural Engine": TFLite's Core ML delegate asks Core ML for all compute units and
# Core ML places the work on the Neural Engine, the GPU or the CPU as it sees fit.
DELEGATE_NAMES = {"cpu": "CPU", "gpu": "GPU (Metal)", "coreml": "Core ML"}
APPLIED_NAMES = {**DELEGATE_NAMES, "partial": "partly delegated, the rest on the CPU"}


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def display_name(arch: str) -> str:
    a = ARCHS.get(arch)
    return a.display if a is not None else arch


def model_label(m: ModelResult | EvalReport) -> str:
    return f"{display_name(m.arch)} {m.format}"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return ""
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_s(v: float) -> str:
    """Seconds as the paper prints them, without rounding a sub-millisecond host time to 0.000."""
    return f"{v:.3f}" if v >= 0.01 else f"{v:.2g}"


def fmt(v: float | None, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def fmt_score(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"


# ------------------------------------------------------------------ measurement columns
@dataclass(frozen=True)
class Column:
    """One (device, delegate) that some model was measured on."""

    device_id: str
    delegate: str
    device_name: str
    device_model: str
    device_os: str
    backend: str

    @property
    def host(self) -> bool:
        return self.backend == "host"

    @property
    def title(self) -> str:
        return f"{self.device_name} \u00b7 {DELEGATE_NAMES.get(self.delegate, self.delegate)}"

    @property
    def slug(self) -> str:
        return f"{self.device_id}-{self.delegate}"


def columns_of(results: Results) -> list[Column]:
    seen: dict[tuple[str, str], Column] = {}
    for m in results.models:
        for le in m.latency:
            seen.setdefault((le.device_id, le.delegate_requested), Column(
                le.device_id, le.delegate_requested, le.device_name, le.device_model, le.device_os, le.backend))
    order = {d: i for i, d in enumerate(DELEGATES)}
    # iPhones first: they are what the benchmark is for; the host CPU is the fallback
    return sorted(seen.values(), key=lambda c: (c.host, c.device_name, c.device_id, order.get(c.delegate, 9)))


def entry_of(m: ModelResult, col: Column) -> LatencyEntry | None:
    for le in m.latency:
        if le.device_id == col.device_id and le.delegate_requested == col.delegate:
            return le
    return None


def gap_reason(results: Results, m: ModelResult, col: Column | None = None) -> str:
    if m.status != "ok":
        return m.reason or "model failed"
    if col is not None:
        le = entry_of(m, col)
        if le is not None and le.reason:
            return le.reason
        for miss in results.missing:
            if (miss.arch, miss.format, miss.device_id, miss.delegate) == (m.arch, m.format, col.device_id,
                                                                           col.delegate):
                return miss.reason
        if le is None:
            return "not measured on this device and delegate in this run"
        return "missing (no reason recorded)"
    for miss in results.missing:
        if (miss.arch, miss.format) == (m.arch, m.format) and miss.device_id is None:
            return miss.reason
    return "not measured"


def gap(reason: str) -> str:
    return f'<span class="gap" title="{e(reason)}">\u2014 <span class="why">{e(reason)}</span></span>'


def host_badge() -> str:
    return f'<span class="host-badge" title="{e(HOST_LABEL)}">{e(HOST_LABEL)}</span>'


def basis_entry(m: ModelResult) -> LatencyEntry | None:
    """The measurement the model's score was computed from."""
    ok = [le for le in m.latency if le.status == "ok"]
    if m.score is not None:
        for le in ok:
            if le.score is not None and math.isclose(le.score, m.score, rel_tol=1e-9):
                return le
    return ok[0] if ok else None


# ------------------------------------------------------------------ latency: never blank for want of a percentile
def latency_value(le: LatencyEntry) -> tuple[float | None, str]:
    """The number a latency cell shows and what it is: the median of the samples, else the tool's mean."""
    if le.p50_ms is not None:
        return le.p50_ms, "median"
    if le.mean_ms is not None:
        return le.mean_ms, "mean"
    return None, ""


def coverage_text(le: LatencyEntry) -> str:
    """'Core ML took 3 of 71 nodes (4 %)' and the like; '' when the log gave no node counts."""
    c = le.conditions
    if c is None or le.delegate_requested == "cpu" or c.delegated_nodes is None:
        return ""
    name = DELEGATE_NAMES.get(le.delegate_requested, le.delegate_requested)
    if c.total_nodes:
        return f"{name} took {c.delegated_nodes} of {c.total_nodes} nodes ({c.coverage:.0%})"
    return f"{name} took {c.delegated_nodes} nodes (of an unknown total)"


def measurement_notes(le: LatencyEntry) -> list[str]:
    """Short facts a latency cell carries: precision, coverage; the flags come separately."""
    c = le.conditions
    notes = []
    if c is not None and le.delegate_requested == "gpu" and c.gpu_precision_loss_allowed is not None:
        notes.append("FP16 allowed" if c.gpu_precision_loss_allowed else "FP32 only")
    if le.delegate_applied == "partial" or (c is not None and c.coverage is not None and c.coverage < 1):
        cov = coverage_text(le)
        notes.append(cov or "partly delegated")
    return notes


def gpu_verdict(m: ModelResult) -> str:
    """One line on whether the GPU delegate can take the whole model (from convert.json)."""
    g = m.gpu_compatibility
    if g is None:
        return "no GPU delegate check recorded for this model"
    shapes = ("static shapes" if m.dynamic_tensors == 0
              else f"{m.dynamic_tensors} dynamic-shape tensors" if m.dynamic_tensors else "shapes not checked")
    if g.compatible:
        return f"{shapes}; the GPU delegate takes every op"
    nodes: dict[str, set[int]] = {}
    for issue in g.ops:
        nodes.setdefault(issue.op, set()).update(issue.nodes)
    ops = ", ".join(f"{op} \u00d7{len(n)}" for op, n in sorted(nodes.items()))
    return f"{shapes}; the GPU delegate cannot take: {ops}"
