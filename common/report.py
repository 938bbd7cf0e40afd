"""The run report: one self-contained static HTML page, and the Pareto plot as a PNG.

The page must open straight from the MinIO console, so it fetches nothing: CSS and the
small sorting script are inline and every chart is inline SVG. Every piece of text from a
document is escaped. Numbers measured on the runner's own CPU carry a "host CPU — not an
iPhone" label wherever they appear, and a missing measurement is a gap with its reason,
never a number.
"""

from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from common import paper
from common.archs import ARCHS
from common.regression import count_kinds, diff_results
from common.schemas import DELEGATES, BenchResult, EvalReport, LatencyEntry, ModelResult, Regression, Results

HOST_LABEL = "host CPU \u2014 not an iPhone"
DELEGATE_NAMES = {"cpu": "CPU", "gpu": "GPU (Metal)", "coreml": "Core ML (Neural Engine)"}


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


# ------------------------------------------------------------------ SVG helpers
class Scale:
    """Maps data to pixels; logarithmic when the data spans more than a decade or so."""

    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False):
        if hi <= lo:
            hi = lo + (abs(lo) * 0.1 or 1.0)
        self.log = log and lo > 0
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        if self.log:
            t = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return self.a + t * (self.b - self.a)

    def ticks(self) -> list[float]:
        if self.log:
            out = []
            for k in range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1):
                for m in (1, 2, 5):
                    v = m * 10.0 ** k
                    if self.lo <= v <= self.hi:
                        out.append(v)
            return out
        span = self.hi - self.lo
        raw = span / 5
        mag = 10 ** math.floor(math.log10(raw))
        step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
        start = math.ceil(self.lo / step) * step
        return [start + i * step for i in range(int((self.hi - start) / step) + 1)]


def padded_range(values: Sequence[float], log: bool, pad: float = 0.08) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if log:
        return lo / (1 + pad * 3), hi * (1 + pad * 3)
    span = (hi - lo) or (abs(hi) * 0.1 or 1.0)
    return lo - span * pad, hi + span * pad


def tick_label(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e4 else f"{v:.3g}"


def chart_subtitle(col: Column) -> str:
    return f"{HOST_LABEL} \u00b7 {col.device_os}" if col.host else f"{col.device_model}, {col.device_os}"


def chart_title(col: Column, x: float) -> str:
    """Two lines: device and delegate, then the phone model and OS or the host-CPU label."""
    return (f'<text x="{x}" y="17" class="ct">{e(col.title)}</text>'
            f'<text x="{x}" y="32" class="cs{" host-text" if col.host else ""}">{e(chart_subtitle(col))}</text>')


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points (latency, accuracy) that no other point beats on both counts."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any(
            (l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, (l2, a2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


@dataclass(frozen=True)
class Point:
    label: str
    arch: str
    format: str
    latency_ms: float
    top1: float


def pareto_points(results: Results) -> dict[Column, list[Point]]:
    out: dict[Column, list[Point]] = {}
    for col in columns_of(results):
        pts = []
        for m in results.models:
            le = entry_of(m, col)
            if m.status == "ok" and m.top1 is not None and le is not None and le.status == "ok":
                lat = le.p50_ms if le.p50_ms is not None else le.mean_ms
                if lat is not None and lat > 0:
                    pts.append(Point(model_label(m), m.arch, m.format, lat, m.top1))
        if pts:
            out[col] = pts
    return out


def svg_pareto(col: Column, pts: list[Point], width: int = 520, height: int = 330) -> str:
    ml, mr, mt, mb = 56, 16, 46, 44
    lats = [p.latency_ms for p in pts]
    log = max(lats) / min(lats) > 8
    x = Scale(*padded_range(lats, log), ml, width - mr, log=log)
    y = Scale(*padded_range([p.top1 for p in pts], False, 0.15), height - mb, mt)
    front = pareto_front([(p.latency_ms, p.top1) for p in pts])
    parts = [f'<svg class="chart pareto" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" data-device="{e(col.device_id)}" data-delegate="{e(col.delegate)}">',
             f'<title>{e("Top-1 vs median latency, " + col.title + (" (" + HOST_LABEL + ")" if col.host else ""))}'
             '</title>']
    parts.append(chart_title(col, 10))
    for t in x.ticks():
        px = x(t)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{mt}" y2="{height - mb}" class="grid"/>'
                     f'<text x="{px:.1f}" y="{height - mb + 14}" class="tick" text-anchor="middle">{tick_label(t)}</text>')
    for t in y.ticks():
        py = y(t)
        parts.append(f'<line x1="{ml}" x2="{width - mr}" y1="{py:.1f}" y2="{py:.1f}" class="grid"/>'
                     f'<text x="{ml - 6}" y="{py + 4:.1f}" class="tick" text-anchor="end">{tick_label(t)}</text>')
    parts.append(f'<text x="{(ml + width - mr) / 2:.0f}" y="{height - 8}" class="axis" text-anchor="middle">'
                 f'median latency, ms{" (log scale)" if log else ""}</text>'
                 f'<text transform="translate(14,{(mt + height - mb) / 2:.0f}) rotate(-90)" class="axis" '
                 'text-anchor="middle">top-1 %</text>')
    if len(front) > 1:
        # a staircase: between two front points you get the slower one's accuracy only when you pay its latency
        d = []
        for k, i in enumerate(front):
            px, py = x(pts[i].latency_ms), y(pts[i].top1)
            if k == 0:
                d.append(f"M{px:.1f},{py:.1f}")
            else:
                d.append(f"H{px:.1f}V{py:.1f}")
        parts.append(f'<path d="{"".join(d)}" class="front-line"/>')
    placed: list[tuple[float, float, float]] = []
    # most accurate first: their labels sit at the top and the rest make room below
    for i, p in sorted(enumerate(pts), key=lambda ip: -ip[1].top1):
        on = i in front
        px, py = x(p.latency_ms), y(p.top1)
        cls = "pt front" if on else "pt"
        # labels of points near the right edge go to their left, so that none is cut off;
        # a label that would overprint one already placed moves down a line
        lw = 5.6 * len(p.label)
        right = px > width - mr - 150
        lx0 = px - 8 - lw if right else px + 8
        ly = py - 7
        while any(abs(ly - oy) < 11 and lx0 < ox1 and ox0 < lx0 + lw for ox0, ox1, oy in placed):
            ly += 11
        placed.append((lx0, lx0 + lw, ly))
        anchor = ' text-anchor="end"' if right else ""
        label_svg = (f'<text x="{px - 8 if right else px + 8:.1f}" y="{ly:.1f}" class="pl"{anchor}>'
                     f'{e(p.label)}</text>')
        parts.append(
            f'<g class="{cls}" data-model="{e(p.arch)}/{e(p.format)}"><circle cx="{px:.1f}" cy="{py:.1f}" '
            f'r="{6 if on else 4.5}"><title>{e(p.label)}: {p.top1:.2f} % top-1, {fmt_ms(p.latency_ms)} ms'
            f'{" — on the Pareto front" if on else ""}</title></circle>'
            f'{label_svg}</g>')
    parts.append("</svg>")
    return "".join(parts)


def _box_stats(s: np.ndarray) -> dict[str, float]:
    q1, med, q3 = np.percentile(s, [25, 50, 75])
    iqr = q3 - q1
    lo_w = float(s[s >= q1 - 1.5 * iqr].min())
    hi_w = float(s[s <= q3 + 1.5 * iqr].max())
    return {"q1": float(q1), "med": float(med), "q3": float(q3), "lo": lo_w, "hi": hi_w}


def svg_distribution(col: Column, rows: list[tuple[str, list[float]]], width: int = 1060) -> str:
    """Box plot with every raw sample drawn as a jittered dot, one row per model."""
    ml, mr, mt, mb, rh = 190, 20, 44, 40, 30
    height = mt + mb + rh * len(rows)
    allv = [v for _, s in rows for v in s]
    log = max(allv) / min(allv) > 8
    x = Scale(*padded_range(allv, log, 0.03), ml, width - mr, log=log)
    rng = np.random.default_rng(0)  # fixed jitter: the same run draws the same picture
    title = f"{col.title} \u2014 {chart_subtitle(col)}"
    parts = [f'<svg class="chart dist" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'data-device="{e(col.device_id)}" data-delegate="{e(col.delegate)}">',
             f'<title>{e("Latency samples, " + title)}</title>', chart_title(col, 10)]
    for t in x.ticks():
        px = x(t)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{mt}" y2="{height - mb}" class="grid"/>'
                     f'<text x="{px:.1f}" y="{height - mb + 14}" class="tick" text-anchor="middle">{tick_label(t)}</text>')
    parts.append(f'<text x="{(ml + width - mr) / 2:.0f}" y="{height - 8}" class="axis" text-anchor="middle">'
                 f'latency per inference, ms{" (log scale)" if log else ""}</text>')
    for k, (label, samples) in enumerate(rows):
        s = np.asarray(samples, dtype=float)
        st = _box_stats(s)
        cy = mt + rh * k + rh / 2
        parts.append(f'<text x="{ml - 8}" y="{cy + 4:.1f}" class="rl" text-anchor="end">{e(label)}</text>')
        jit = rng.uniform(-rh * 0.3, rh * 0.3, size=s.size)
        dots = "".join(f'<circle cx="{x(v):.1f}" cy="{cy + j:.1f}" r="1.6"/>' for v, j in zip(s, jit))
        parts.append(f'<g class="samples">{dots}</g>')
        parts.append(
            f'<g class="box"><title>{e(label)}: n={s.size}, median {fmt_ms(st["med"])} ms, IQR '
            f'{fmt_ms(st["q1"])}\u2013{fmt_ms(st["q3"])} ms, min {fmt_ms(float(s.min()))}, max '
            f'{fmt_ms(float(s.max()))}</title>'
            f'<line x1="{x(st["lo"]):.1f}" x2="{x(st["q1"]):.1f}" y1="{cy:.1f}" y2="{cy:.1f}"/>'
            f'<line x1="{x(st["q3"]):.1f}" x2="{x(st["hi"]):.1f}" y1="{cy:.1f}" y2="{cy:.1f}"/>'
            f'<rect x="{x(st["q1"]):.1f}" y="{cy - rh * 0.32:.1f}" width="{max(x(st["q3"]) - x(st["q1"]), 1):.1f}" '
            f'height="{rh * 0.64:.1f}"/>'
            f'<line class="med" x1="{x(st["med"]):.1f}" x2="{x(st["med"]):.1f}" y1="{cy - rh * 0.32:.1f}" '
            f'y2="{cy + rh * 0.32:.1f}"/></g>')
    parts.append("</svg>")
    return "".join(parts)


def svg_per_class(ev: EvalReport, width: int = 520) -> str:
    ml, mr, mt, rh = 200, 56, 10, 16
    height = mt * 2 + rh * len(ev.per_class)
    x = Scale(0, 100, ml, width - mr)
    parts = [f'<svg class="chart per-class" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title>{e("Per-class top-1 of " + model_label(ev))}</title>']
    for k, c in enumerate(ev.per_class):
        y0 = mt + rh * k
        w = x(c.top1) - ml
        cls = "bar low" if c.top1 < ev.top1 - 5 else "bar"
        parts.append(f'<text x="{ml - 6}" y="{y0 + 12}" class="rl" text-anchor="end">{e(c.name)}</text>'
                     f'<rect class="{cls}" x="{ml}" y="{y0 + 2}" width="{max(w, 0):.1f}" height="{rh - 4}">'
                     f'<title>{e(c.name)}: {c.top1:.1f} % of {c.count}</title></rect>'
                     f'<text x="{ml + max(w, 0) + 4:.1f}" y="{y0 + 12}" class="tick">{c.top1:.1f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_confusion(ev: EvalReport) -> str:
    n = len(ev.confusion)
    cell = 15 if n > 15 else 26
    ml, mt = 200, 40
    size = cell * n
    width, height = ml + size + 10, mt + size + 10
    names = {c.index: c.name for c in ev.per_class}
    parts = [f'<svg class="chart confusion" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title>{e("Confusion matrix of " + model_label(ev))}</title>',
             f'<text x="{ml}" y="14" class="axis">predicted class (index) \u2192</text>']
    for j in range(n):
        parts.append(f'<text x="{ml + cell * j + cell / 2:.1f}" y="{mt - 6}" class="tick" '
                     f'text-anchor="middle">{j}</text>')
    for i, row in enumerate(ev.confusion):
        total = sum(row) or 1
        name = names.get(i, str(i))
        parts.append(f'<text x="{ml - 6}" y="{mt + cell * i + cell * 0.72:.1f}" class="rl" '
                     f'text-anchor="end">{e(name)} ({i})</text>')
        for j, count in enumerate(row):
            if count == 0:
                continue
            frac = count / total
            if i == j:
                fill = f"rgba(31,119,180,{0.15 + 0.85 * frac:.3f})"
            else:
                fill = f"rgba(214,39,40,{min(0.2 + 2.5 * frac, 1):.3f})"
            parts.append(f'<rect x="{ml + cell * j}" y="{mt + cell * i}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="{fill}"><title>{e(name)} \u2192 {e(names.get(j, str(j)))}: {count}</title></rect>')
    parts.append(f'<rect x="{ml - 0.5}" y="{mt - 0.5}" width="{size}" height="{size}" class="frame"/>')
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------ sections
def _section(id_: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{e(id_)}"><h2>{e(title)}</h2>{note_html}{body}</section>'


def _flags(results: Results) -> dict[tuple, Regression]:
    return {(r.arch, r.format, r.metric, r.device_id, r.delegate): r for r in results.regressions
            if r.kind in ("regression", "improvement")}


def _flag_attr(flag: Regression | None) -> tuple[str, str]:
    if flag is None:
        return "", ""
    mark = "\u26a0 regression" if flag.kind == "regression" else "\u2714 improvement"
    cls = " reg" if flag.kind == "regression" else " imp"
    return cls, f'<span class="flag" title="{e(flag.detail)}">{mark}</span>'


def _num_cell(value: float | None, text: str, reason: str, flag: Regression | None = None,
              extra: str = "", cls: str = "") -> str:
    if value is None:
        return f'<td class="num gapcell{cls}" data-v="">{gap(reason)}</td>'
    fcls, fmark = _flag_attr(flag)
    return f'<td class="num{cls}{fcls}" data-v="{value:.6g}">{e(text)}{extra}{fmark}</td>'


def leaderboard(results: Results) -> str:
    cols = columns_of(results)
    flags = _flags(results)
    head = ['<th data-type="text">Architecture</th>', '<th data-type="text">Format</th>',
            '<th data-type="num" data-first="asc">Size MB</th>', '<th data-type="num" data-key="top1">Top-1 %</th>',
            '<th data-type="num">Top-3 %</th>',
            '<th data-type="num" data-first="asc" title="Keras top-1 minus TFLite top-1, points">'
            'Lost in conversion (top-1 pts)</th>']
    for c in cols:
        label = f"{e(c.title)}<br><small>median ms</small>"
        if c.host:
            label += f"<br>{host_badge()}"
        head.append(f'<th data-type="num" data-first="asc" class="{"hostcol" if c.host else ""}" '
                    f'title="{e(c.device_name + " " + c.device_model + " " + c.device_os)}">{label}</th>')
    head += ['<th data-type="num" data-first="asc" title="peak memory of the measurement the score uses">'
             'RAM MB<br><small>peak, score basis</small></th>',
             '<th data-type="num" data-key="score">Score</th>', '<th data-type="text">Score measured on</th>']
    rows = []

    def order(m: ModelResult):
        return (m.status != "ok", -(m.score if m.score is not None else -1e9), -(m.top1 or 0))

    for m in sorted(results.models, key=order):
        why = gap_reason(results, m)
        cells = [f'<td data-v="{e(display_name(m.arch))}">{e(display_name(m.arch))}</td>',
                 f'<td data-v="{e(m.format)}">{e(m.format)}</td>']
        ok = m.status == "ok"
        cells.append(_num_cell(m.size_mb if ok else None, fmt(m.size_mb), why,
                               flags.get((m.arch, m.format, "size_mb", None, None))))
        cells.append(_num_cell(m.top1 if ok else None, fmt(m.top1), why if not ok else "not evaluated",
                               flags.get((m.arch, m.format, "top1", None, None))))
        cells.append(_num_cell(m.top3 if ok else None, fmt(m.top3), why if not ok else "not evaluated",
                               flags.get((m.arch, m.format, "top3", None, None))))
        cells.append(_num_cell(m.drop_top1 if ok else None, fmt(m.drop_top1),
                               why if not ok else "no Keras accuracy to compare with"))
        for c in cols:
            le = entry_of(m, c)
            hostcls = " hostcol" if c.host else ""
            if not ok or le is None or le.status != "ok" or le.p50_ms is None:
                cells.append(_num_cell(None, "", gap_reason(results, m, c), cls=hostcls))
                continue
            extra = f'<small class="sub">p90 {fmt_ms(le.p90_ms)}</small>' if le.p90_ms is not None else ""
            if c.host:
                extra += f'<span class="host-mark" title="{e(HOST_LABEL)}">host CPU</span>'
            cells.append(_num_cell(le.p50_ms, fmt_ms(le.p50_ms), "", flags.get(
                (m.arch, m.format, "latency_ms", c.device_id, c.delegate)), extra=extra, cls=hostcls))
        be = basis_entry(m) if ok else None
        ram = be.peak_memory_mb if be is not None else None
        host_basis = be is not None and be.backend == "host"
        mark = f'<span class="host-mark" title="{e(HOST_LABEL)}">host CPU</span>' if host_basis else ""
        cells.append(_num_cell(ram, fmt(ram, 0), why if not ok else "memory not measured", extra=mark))
        cells.append(_num_cell(m.score if ok else None, fmt_score(m.score),
                               why if not ok else "no latency to score", extra=mark))
        basis = m.score_basis or (f"{be.device_name} {be.delegate_requested}" if be else "")
        if host_basis and "host" not in basis.lower():
            basis += f" ({HOST_LABEL})"
        cells.append(f'<td data-v="{e(basis)}">{e(basis)}</td>')
        rows.append(f'<tr data-model="{e(m.arch)}/{e(m.format)}" class="{"" if ok else "failed"}">'
                    + "".join(cells) + "</tr>")
    table = (f'<table class="sortable leaderboard" id="leaderboard-table"><thead><tr>{"".join(head)}</tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>')
    note = (f"Click a column header to sort. Score = 2^((top-1 \u2212 96) + (top-3 \u2212 99)) / (C \u00b7 runtime s), "
            f"C = {e(results.c)}, runtime = mean latency on the score basis ({e(results.score_basis)}). "
            "Latency cells show the median of the raw samples and their 90th percentile. "
            "\u26a0 marks a regression against the baseline run (hover it for why), \u2714 an improvement.")
    return _section("leaderboard", "Leaderboard", table, note)


def pareto_section(results: Results) -> str:
    pts = pareto_points(results)
    if not pts:
        return _section("pareto", "Accuracy vs latency", gap("no model has both an accuracy and a latency"))
    charts = "".join(f'<figure>{svg_pareto(col, p)}</figure>' for col, p in pts.items())
    note = ("One chart per device and delegate. Filled, larger points joined by the staircase are on the "
            "Pareto front: no other model is both faster and more accurate there. Hover a point for its numbers.")
    return _section("pareto", "Accuracy vs latency", f'<div class="charts">{charts}</div>', note)


def best_model(results: Results, evals: dict[tuple[str, str], EvalReport]) -> tuple[ModelResult, str] | None:
    ok = [m for m in results.models if m.status == "ok" and (m.arch, m.format) in evals and m.top1 is not None]
    if not ok:
        return None
    if any(m.score is not None for m in ok):
        return max(ok, key=lambda m: (m.score if m.score is not None else -1, m.top1)), "highest score"
    return max(ok, key=lambda m: m.top1 or 0), "highest top-1"


def best_section(results: Results, evals: dict[tuple[str, str], EvalReport]) -> str:
    pick = best_model(results, evals)
    if pick is None:
        return _section("best", "Best model: per-class accuracy and confusion", gap("no evaluated model"))
    m, why = pick
    ev = evals[(m.arch, m.format)]
    body = (f'<p>Best model by {e(why)}: <strong>{e(model_label(m))}</strong> \u2014 top-1 {ev.top1:.2f} %, '
            f'top-3 {ev.top3:.2f} % on {ev.count} validation images.</p>'
            f'<div class="charts"><figure><figcaption>Per-class top-1 % (red: more than 5 points below the '
            f'model\'s top-1)</figcaption>{svg_per_class(ev)}</figure>'
            f'<figure><figcaption>Confusion matrix: rows true class, columns predicted; blue diagonal is correct, '
            f'red is confusion, shaded by the share of the row</figcaption>{svg_confusion(ev)}</figure></div>')
    return _section("best", "Best model: per-class accuracy and confusion", body)


def conversion_section(results: Results, evals: dict[tuple[str, str], EvalReport]) -> str:
    head = ("<tr><th data-type='text'>Architecture</th><th data-type='text'>Format</th>"
            "<th data-type='num'>Keras top-1 %</th><th data-type='num'>TFLite top-1 %</th>"
            "<th data-type='num' data-first='desc'>Lost top-1 (pts)</th><th data-type='num'>Lost top-3 (pts)</th>"
            "<th data-type='num'>Same top-1 label as Keras %</th></tr>")
    rows = []
    for m in results.models:
        ev = evals.get((m.arch, m.format))
        if ev is None:
            why = m.reason if m.status != "ok" else "no eval.json for this model"
            rows.append(f"<tr><td>{e(display_name(m.arch))}</td><td>{e(m.format)}</td>"
                        + "".join(f'<td class="num gapcell" data-v="">{gap(why)}</td>' for _ in range(5)) + "</tr>")
            continue
        cells = [f'<td data-v="{e(display_name(m.arch))}">{e(display_name(m.arch))}</td>',
                 f'<td data-v="{e(m.format)}">{e(m.format)}</td>']
        for v in (ev.keras_top1, ev.top1, ev.drop_top1, ev.drop_top3, ev.agreement_with_keras):
            cells.append(_num_cell(v, fmt(v), "no Keras evaluation to compare with"))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = f'<table class="sortable" id="conversion-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    return _section("conversion", "Accuracy lost by each conversion", table,
                    "TFLite model against the Keras model it was converted from, on the same validation images.")


def distribution_section(results: Results, benches: Sequence[BenchResult]) -> str:
    index = {(b.arch, b.format, b.device.id, b.delegate_requested): b for b in benches}
    figs = []
    for col in columns_of(results):
        rows = []
        for m in results.models:
            b = index.get((m.arch, m.format, col.device_id, col.delegate))
            if b is not None and b.status == "ok" and b.samples_ms:
                rows.append((model_label(m), list(b.samples_ms)))
        if rows:
            figs.append(f"<figure>{svg_distribution(col, rows)}</figure>")
    if not figs:
        return _section("latency", "Latency distributions", gap("no raw latency samples in this run"))
    note = ("Every dot is one timed inference; boxes span the middle half of the samples, the bar is the median, "
            "whiskers reach the furthest sample within 1.5 IQR. Warm-up runs are not shown.")
    return _section("latency", "Latency distributions", "".join(figs), note)


def _ours_for_phone(results: Results, phone: str) -> tuple[str, str | None, bool]:
    """(device id, label, is_host) of our measurements to show beside the paper's phone."""
    devs = {le.device_id: le for m in results.models for le in m.latency}
    for dev_id, le in devs.items():
        if le.backend == "ios" and paper.paper_phone_of(le.device_model) == phone:
            return dev_id, f"{le.device_name} ({le.device_model}, {le.device_os})", False
    if phone != paper.IPHONE_12_PRO:
        return "", None, False
    for dev_id, le in devs.items():
        if le.backend == "ios":
            return dev_id, f"{le.device_name} ({le.device_model}, {le.device_os}) \u2014 not an iPhone 12 Pro", False
    for dev_id, le in devs.items():
        return dev_id, le.device_name, True
    return "", None, False


def paper_section(results: Results) -> str:
    out = []
    for phone, table_no in ((paper.IPHONE_12_PRO, "Tables 2 and 3"), (paper.IPHONE_X, "Table 4")):
        dev_id, ours_label, ours_host = _ours_for_phone(results, phone)
        head = ("<tr><th>Model</th><th>Source</th><th>Size MB</th><th>Top-1 %</th><th>CPU s</th><th>GPU s</th>"
                "<th>NPU / Core ML s</th><th>CPU RAM MB</th><th>Score</th></tr>")
        rows = []
        for pr in paper.ROWS:
            d = pr.devices[phone]
            cells = [f'<td rowspan="2" class="model">{e(pr.label)}</td>',
                     f'<td class="src paper-src">paper ({e(paper.SHORT_CITATION)}, {e(phone)})</td>',
                     f'<td class="num">{pr.size_mb:g}</td>', f'<td class="num">{pr.top1:g}</td>']
            for colname in ("cpu_s", "gpu_s", "npu_s"):
                v = getattr(d, colname)
                cells.append(f'<td class="num">{v:g}</td>' if v is not None
                             else f'<td class="num gapcell">{gap(paper.gap_reason(pr.arch, colname, phone))}</td>')
            cells.append(f'<td class="num">{d.cpu_ram_mb:g}</td>' if d.cpu_ram_mb is not None
                         else f'<td class="num gapcell">{gap("not reported in the paper")}</td>')
            score_cell = (f'<td class="num">{pr.score:g}</td>' if phone == paper.IPHONE_12_PRO
                          else f'<td class="num gapcell">{gap("the paper scores on the iPhone 12 Pro CPU only")}</td>')
            if phone != paper.IPHONE_12_PRO and not ours_label:
                cells[0] = f'<td class="model">{e(pr.label)}</td>'
                rows.append('<tr class="paper-row">' + "".join(cells) + score_cell + "</tr>")
                continue
            rows.append('<tr class="paper-row">' + "".join(cells) + score_cell + "</tr>")
            m = next((m for m in results.models if (m.arch, m.format) == (pr.arch, pr.format)), None)
            ours_text = f"ours \u2014 {e(ours_label)}" if ours_label else "ours"
            ours = [f'<td class="src ours-src">{ours_text}{host_badge() if ours_host else ""}</td>']
            if m is None or m.status != "ok":
                why = (m.reason if m is not None else None) or "model not in this run"
                ours += [f'<td class="num gapcell">{gap(why)}</td>' for _ in range(7)]
            else:
                ours.append(f'<td class="num">{fmt(m.size_mb)}</td><td class="num">{fmt(m.top1)}</td>')
                for dlg in ("cpu", "gpu", "coreml"):
                    le = next((x for x in m.latency if x.device_id == dev_id and x.delegate_requested == dlg), None)
                    if not ours_label:
                        ours.append(f'<td class="num gapcell">{gap("no " + phone + " in the device farm")}</td>')
                    elif le is None or le.status != "ok" or le.mean_ms is None:
                        col = Column(dev_id, dlg, "", "", "", "host" if ours_host else "ios")
                        ours.append(f'<td class="num gapcell">{gap(gap_reason(results, m, col))}</td>')
                    else:
                        ours.append(f'<td class="num{" hostcol" if ours_host else ""}">{fmt_s(le.mean_ms / 1000)}</td>')
                cpu = next((x for x in m.latency if x.device_id == dev_id and x.delegate_requested == "cpu"), None)
                ram = cpu.peak_memory_mb if cpu is not None and cpu.status == "ok" else None
                ours.append(f'<td class="num">{fmt(ram, 0)}</td>' if ram is not None
                            else f'<td class="num gapcell">{gap("memory not measured")}</td>')
                be = basis_entry(m)
                ours.append(f'<td class="num">{fmt_score(m.score)}'
                            f'{"<small class=sub>on " + e(m.score_basis) + "</small>" if m.score_basis else ""}</td>'
                            if m.score is not None and be is not None else f'<td class="num gapcell">{gap("no score")}</td>')
            rows.append('<tr class="ours-row">' + "".join(ours) + "</tr>")
        caption = (f"The paper's numbers \u2014 {e(paper.CITATION)}, {table_no} ({e(phone)}) \u2014 "
                   "beside ours. Paper rows are the paper's published measurements, not ours.")
        if not ours_label:
            caption += f" No {e(phone)} in the device farm for this run, so only the paper's numbers are shown."
        out.append(f'<table class="paper" id="paper-{e(phone.lower().replace(" ", "-"))}">'
                   f'<caption>{caption}</caption><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>')
    note = ("Our latencies here are the mean of the raw samples in seconds, as the paper reports them; the paper "
            "measured with the TFLite iOS example app, memory for the whole app. The paper's NPU is our Core ML "
            "delegate (Neural Engine). Our 'float32' is the paper's 'float', our 'int8' its 'int'.")
    return _section("paper", "The paper's numbers beside ours", "".join(out), note)


def baseline_section(results: Results, baseline: Results | None) -> str:
    if baseline is None:
        if results.baseline_run_id:
            body = f"<p>Baseline run {e(results.baseline_run_id)} was named but its results were not available.</p>"
        else:
            body = ("<p>No baseline run: this is the first successful run in results/history/, or the comparison "
                    "was switched off (--baseline none).</p>")
        return _section("baseline", "Compared with the baseline run", body)
    counts = count_kinds(results.regressions)
    summary = (f'<p class="verdict {"bad" if counts["regression"] else "good"}">Baseline: run '
               f'<strong>{e(baseline.run_id)}</strong> ({e(baseline.created_at.strftime("%Y-%m-%d %H:%M UTC"))}, '
               f'code {e(baseline.code_version)}). <strong>{counts["regression"]}</strong> regression(s), '
               f'{counts["improvement"]} improvement(s), {counts["missing"]} measurement(s) missing now.</p>')
    rows = []
    order = {"regression": 0, "missing": 1, "improvement": 2}
    hosts = {d.id for d in results.devices if d.backend == "host"} | {
        le.device_id for m in results.models for le in m.latency if le.backend == "host"}
    for r in sorted(results.regressions, key=lambda r: (order.get(r.kind, 9), r.arch, r.format, r.metric)):
        where = f"{r.device_id} {r.delegate}" if r.device_id else ""
        if r.device_id in hosts:
            where += f" ({HOST_LABEL})"
        rows.append(f'<tr class="{e(r.kind)}"><td>{e(r.kind)}</td><td>{e(display_name(r.arch))} {e(r.format)}</td>'
                    f'<td>{e(r.metric)}</td><td>{e(where)}</td><td class="num">{e(fmt(r.baseline, 3))}</td>'
                    f'<td class="num">{e(fmt(r.current, 3))}</td><td class="num">{e(fmt(r.change, 3))}</td>'
                    f'<td class="detail">{e(r.detail)}</td></tr>')
    flagged = (f'<table id="regressions"><thead><tr><th>Kind</th><th>Model</th><th>Metric</th><th>Where</th>'
               f'<th>Baseline</th><th>Now</th><th>Change</th><th>Why</th></tr></thead><tbody>{"".join(rows)}'
               '</tbody></table>' if rows else "<p>Nothing changed beyond the thresholds.</p>")
    diff_rows = []
    for c in diff_results(results, baseline, results.regressions):
        ch = c.change
        diff_rows.append(
            f'<tr class="{e(c.flag)}"><td>{e(display_name(c.arch))} {e(c.format)}</td><td>{e(c.label)}</td>'
            f'<td class="num">{e(fmt(c.baseline, 3)) if c.baseline is not None else gap("not in baseline")}</td>'
            f'<td class="num">{e(fmt(c.current, 3)) if c.current is not None else gap("not in this run")}</td>'
            f'<td class="num">{e(f"{ch:+.3f}") if ch is not None else ""}</td><td>{e(c.flag)}</td></tr>')
    full = (f'<details><summary>Every compared number</summary><table class="diff"><thead><tr><th>Model</th>'
            f'<th>Metric</th><th>Baseline</th><th>Now</th><th>Change</th><th>Flag</th></tr></thead>'
            f'<tbody>{"".join(diff_rows)}</tbody></table></details>')
    note = ("Latency is judged on the raw samples: flagged only when the median grew by more than the relative "
            "floor and by more than the device's run-to-run noise (a multiple of the robust spread of the samples), "
            "and a bootstrap of the medians agrees. A measurement present in the baseline and absent now is "
            "reported as missing, not as a regression.")
    return _section("baseline", "Compared with the baseline run", summary + flagged + full, note)


def history_section(results: Results, history: Sequence[Results] | None) -> str:
    if not history:
        return ""
    runs = sorted({r.run_id: r for r in list(history) + [results]}.values(), key=lambda r: r.created_at)[-14:]
    keys = [(m.arch, m.format) for m in results.models]
    head = "<tr><th>Run</th><th>Date (UTC)</th>" + "".join(
        f"<th>{e(display_name(a))} {e(f)}<br><small>top-1 % \u00b7 score</small></th>" for a, f in keys) + "</tr>"
    rows = []
    for r in runs:
        ms = {(m.arch, m.format): m for m in r.models}
        cells = []
        for k in keys:
            m = ms.get(k)
            if m is None or m.status != "ok" or m.top1 is None:
                cells.append(f'<td class="num gapcell">{gap((m.reason if m else None) or "not in this run")}</td>')
            else:
                cells.append(f'<td class="num">{fmt(m.top1)} \u00b7 {fmt_score(m.score)}</td>')
        cur = ' class="current"' if r.run_id == results.run_id else ""
        rows.append(f"<tr{cur}><td>{e(r.run_id)}</td><td>{e(r.created_at.strftime('%Y-%m-%d %H:%M'))}</td>"
                    + "".join(cells) + "</tr>")
    table = f'<table id="history-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    return _section("history", "Recent runs", table, "Scores are on each run's own score basis.")


def provenance_section(results: Results, benches: Sequence[BenchResult]) -> str:
    p = results.params
    items = [
        ("Run", results.run_id), ("Created", results.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Trigger", results.trigger), ("Code version", results.code_version),
        ("Image", results.image or "not recorded (run outside a container)"),
        ("Dataset fingerprint", results.dataset_fingerprint),
        ("Dataset", f"{p.data} \u2014 " + ("SYNTHETIC images, accuracy says nothing about CamSDD"
                                          if results.dataset_synthetic else "real images")),
        ("Images per split", ", ".join(f"{k}: {v}" for k, v in results.dataset_counts.items())),
        ("Files left out", f"{results.dataset_skipped} (each with its reason in "
                           f"datasets/{results.dataset_fingerprint}/dataset.json)"),
        *(("Dataset warning", w) for w in results.dataset_warnings),
        ("Classes", str(len(results.classes))),
        ("Architectures", ", ".join(p.archs)), ("Formats", ", ".join(p.formats)),
        ("Input size (H\u00d7W)", "\u00d7".join(map(str, p.image_size))), ("Epochs", str(p.epochs)),
        ("Initial weights", p.weights), ("Score C", f"{results.c:g}"), ("Score basis", results.score_basis),
        ("Runner", p.runner_url or "in-process"),
    ]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items)
    settings: dict[str, set[str]] = {}
    for b in benches:
        settings.setdefault(b.device.id, set()).add(
            f"{b.num_threads} threads, {b.warmup_runs} warm-up, {b.num_runs} timed runs")
    dev_rows = []
    for d in results.devices:
        kind = host_badge() if d.backend == "host" else "iPhone"
        dev_rows.append(f"<tr><td>{e(d.id)}</td><td>{e(d.name)}</td><td>{kind}</td><td>{e(d.model)}</td>"
                        f"<td>{e(d.os)}</td><td>{e(', '.join(d.delegates))}</td>"
                        f"<td>{e('; '.join(sorted(settings.get(d.id, set()))))}</td></tr>")
    devices = (f'<table id="devices"><thead><tr><th>Device id</th><th>Name</th><th>Kind</th><th>Model</th>'
               f'<th>OS</th><th>Delegates</th><th>Benchmark settings</th></tr></thead><tbody>{"".join(dev_rows)}'
               '</tbody></table>')
    miss_rows = "".join(
        f"<tr><td>{e(m.step)}</td><td>{e(m.arch or '')}</td><td>{e(m.format or '')}</td><td>{e(m.device_id or '')}"
        f"</td><td>{e(m.delegate or '')}</td><td>{e(m.reason)}</td></tr>" for m in results.missing)
    missing = (f'<h3>Missing results</h3><table id="missing"><thead><tr><th>Step</th><th>Architecture</th>'
               f'<th>Format</th><th>Device</th><th>Delegate</th><th>Reason</th></tr></thead><tbody>{miss_rows}'
               '</tbody></table>' if results.missing else "<p>No missing results.</p>")
    return _section("provenance", "Provenance", f'<dl class="prov">{dl}</dl><h3>Devices</h3>{devices}{missing}')


CSS = """
:root{--fg:#1d232a;--muted:#5b6670;--line:#d9dee3;--bg:#fff;--alt:#f6f8fa;--host:#fff4e0;--reg:#fde2e1;
--imp:#e3f6e6;--accent:#1f77b4}
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg);margin:0;padding:24px 32px;max-width:1500px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 8px;border-bottom:1px solid var(--line);
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
nav a{margin-right:14px;color:var(--accent);text-decoration:none}
.sub{display:block;color:var(--muted);font-size:11px}
.note{color:var(--muted);max-width:1100px}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;border:1px solid}
.banner.warn{background:#fff4e0;border-color:#f0b24a}.banner.bad{background:var(--reg);border-color:#e5534b}
.banner.good{background:var(--imp);border-color:#4ac26b}
table{border-collapse:collapse;margin:8px 0 12px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;vertical-align:top;text-align:left}
th{background:var(--alt);font-weight:600}
tbody tr:nth-child(even) td{background:#fbfcfd}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th[data-type]{cursor:pointer;user-select:none}
table.sortable th[data-type]::after{content:" \\2195";color:#9aa5b1;font-size:11px}
table.sortable th[aria-sort=ascending]::after{content:" \\25b2";color:var(--fg)}
table.sortable th[aria-sort=descending]::after{content:" \\25bc";color:var(--fg)}
.hostcol,tbody tr td.hostcol{background:var(--host)}
.host-badge{display:inline-block;background:#f0b24a;color:#3b2500;border-radius:3px;padding:0 5px;font-size:11px;
font-weight:600;white-space:nowrap;margin:2px 0}
.host-mark{display:block;color:#9a5b00;font-size:10px;font-weight:600}
.host-text{fill:#9a5b00}
.gap{color:var(--muted);font-style:italic;white-space:normal}
.gap .why{font-size:11px}
td.gapcell{background:repeating-linear-gradient(45deg,#fafafa,#fafafa 6px,#f1f1f1 6px,#f1f1f1 12px)!important;
max-width:220px;text-align:left}
td.reg,tr.regression td{background:var(--reg)!important}
td.imp,tr.improvement td{background:var(--imp)!important}
tr.missing td{background:#f1f1f1}
.flag{display:block;font-size:10px;font-weight:700;color:#b42318}
td.imp .flag{color:#1a7f37}
tr.failed td{color:var(--muted)}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}figcaption{color:var(--muted);font-size:12px;margin-bottom:4px;max-width:520px}
svg.chart{background:#fff;border:1px solid var(--line);border-radius:4px}
svg .grid{stroke:#eef1f4}svg .tick{font-size:10px;fill:var(--muted)}svg .axis{font-size:11px;fill:var(--muted)}
svg .ct{font-size:13px;font-weight:600;fill:var(--fg)}svg .cs{font-size:11.5px;fill:var(--muted)}
svg .cs.host-text{fill:#9a5b00;font-weight:600}svg .rl{font-size:11px;fill:var(--fg)}
svg .pl{font-size:10.5px;fill:#3a4550}
svg .pt circle{fill:#9aa5b1;stroke:#fff;stroke-width:1}
svg .pt.front circle{fill:#d62728;stroke:#7a0c0c;stroke-width:1.2}
svg .front-line{fill:none;stroke:#d62728;stroke-width:1.5;stroke-dasharray:5 3}
svg .samples circle{fill:rgba(31,119,180,.35)}
svg .box line{stroke:#1d232a;stroke-width:1.2}svg .box rect{fill:rgba(255,255,255,.55);stroke:#1d232a}
svg .box line.med{stroke:#d62728;stroke-width:2.2}
svg .bar{fill:var(--accent)}svg .bar.low{fill:#d62728}svg .frame{fill:none;stroke:var(--line)}
table.paper caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
tr.paper-row td{background:#f3f0fa!important}
.paper-src{font-weight:600;color:#5a3e99;white-space:nowrap}.ours-src{font-weight:600}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dl.prov dt{color:var(--muted)}dl.prov dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:12.5px;word-break:break-all}
td.detail{font-size:12px;max-width:560px}
p.verdict.bad{color:#b42318}
#history tr.current td{font-weight:600;background:#eef5fb}
"""

# Error hook first, in its own script, so that an error anywhere later is visible in the DOM.
JS_HOOK = "window.addEventListener('error',function(ev){document.documentElement.setAttribute('data-js-error'," \
          "String(ev.message||ev));});"

JS = r"""
(function(){
  function cellValue(row, i, type){
    var c = row.cells[i]; if(!c) return null;
    var v = c.hasAttribute('data-v') ? c.getAttribute('data-v') : c.textContent.trim();
    if(v === '') return null;
    if(type === 'num'){ var n = parseFloat(v); return isNaN(n) ? null : n; }
    return v.toLowerCase();
  }
  function sortBy(table, i, th, dir){
    var type = th.getAttribute('data-type');
    if(!dir){
      var cur = th.getAttribute('aria-sort');
      var first = th.getAttribute('data-first') || (type === 'num' ? 'desc' : 'asc');
      dir = cur === 'ascending' ? 'desc' : cur === 'descending' ? 'asc' : first;
    }
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = cellValue(a, i, type), y = cellValue(b, i, type);
      if(x === null && y === null) return 0;
      if(x === null) return 1;   // gaps go last whichever way we sort
      if(y === null) return -1;
      var r = x < y ? -1 : x > y ? 1 : 0;
      return dir === 'asc' ? r : -r;
    });
    rows.forEach(function(r){ body.appendChild(r); });
    Array.prototype.forEach.call(th.parentNode.cells, function(h){ h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir === 'asc' ? 'ascending' : 'descending');
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th, i){
      if(!th.hasAttribute('data-type')) return;
      th.tabIndex = 0;
      th.addEventListener('click', function(){ sortBy(table, i, th); });
      th.addEventListener('keydown', function(ev){
        if(ev.key === 'Enter' || ev.key === ' '){ ev.preventDefault(); sortBy(table, i, th); }
      });
    });
  });
  // A link such as report.html#sort=top1 opens the leaderboard sorted by that column.
  var m = /sort=([a-z0-9_]+)(?:,(asc|desc))?/.exec(location.hash);
  var lb = document.getElementById('leaderboard-table');
  if(m && lb){
    Array.prototype.forEach.call(lb.tHead.rows[0].cells, function(th, i){
      if(th.getAttribute('data-key') === m[1]) sortBy(lb, i, th, m[2]);
    });
  }
  document.documentElement.setAttribute('data-sort-ready', String(tables.length));
})();
"""


def render_report(
    results: Results,
    evals: dict[tuple[str, str], EvalReport],
    benches: list[BenchResult],
    baseline: Results | None = None,
    history: list[Results] | None = None,
) -> str:
    """The whole report page for one run, as HTML text."""
    banners = []
    if results.dataset_synthetic:
        banners.append('<div class="banner warn"><strong>Synthetic dataset.</strong> These images are generated '
                       'for testing the pipeline; accuracy numbers say nothing about CamSDD.</div>')
    backends = {le.backend for m in results.models for le in m.latency if le.status == "ok"}
    if backends == {"host"}:
        banners.append(f'<div class="banner warn"><strong>No iPhone in this run.</strong> Every latency, memory '
                       f'and score number was measured on the runner\'s own CPU: {e(HOST_LABEL)}.</div>')
    elif "host" in backends:
        banners.append(f'<div class="banner warn">Columns marked {host_badge()} were measured on the runner\'s '
                       'own CPU, not on a phone; compare them only with each other.</div>')
    counts = count_kinds(results.regressions)
    if baseline is not None or results.baseline_run_id:
        if counts["regression"]:
            banners.append(f'<div class="banner bad"><strong>{counts["regression"]} regression(s)</strong> against '
                           f'run {e(results.baseline_run_id or (baseline.run_id if baseline else ""))} \u2014 see '
                           '<a href="#baseline">the comparison</a>.</div>')
        else:
            banners.append(f'<div class="banner good">No regressions against run '
                           f'{e(results.baseline_run_id or (baseline.run_id if baseline else ""))}.</div>')
    nav = "".join(f'<a href="#{k}">{e(v)}</a>' for k, v in (
        ("leaderboard", "Leaderboard"), ("baseline", "Baseline"), ("pareto", "Accuracy vs latency"),
        ("paper", "Paper"), ("best", "Best model"), ("conversion", "Conversion loss"),
        ("latency", "Latency samples"), ("provenance", "Provenance")))
    sections = [
        leaderboard(results),
        baseline_section(results, baseline),
        pareto_section(results),
        paper_section(results),
        best_section(results, evals),
        conversion_section(results, evals),
        distribution_section(results, benches),
        history_section(results, history),
        provenance_section(results, benches),
    ]
    title = f"scenebench \u2014 run {results.run_id}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{e(title)}</title><style>{CSS}</style><script>{JS_HOOK}</script></head><body>"
        f"<header><h1>{e(title)}</h1><p class=\"note\">{e(results.created_at.strftime('%Y-%m-%d %H:%M UTC'))} "
        f"\u00b7 trigger {e(results.trigger)} \u00b7 code {e(results.code_version)} \u00b7 "
        f"{len(results.models)} models \u00b7 {len(results.devices)} devices</p><nav>{nav}</nav></header>"
        + "".join(banners) + "".join(sections)
        + f"<script>{JS}</script></body></html>\n"
    )


# ------------------------------------------------------------------ pareto.png
def pareto_png(results: Results) -> bytes:
    """The accuracy-vs-latency charts as one PNG (matplotlib, Agg: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    pts = pareto_points(results)
    n = max(len(pts), 1)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(6.4 * ncols, 4.4 * nrows), dpi=110)
    FigureCanvasAgg(fig)
    if not pts:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no model has both an accuracy and a latency", ha="center", va="center")
        ax.set_axis_off()
    for k, (col, ps) in enumerate(pts.items()):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        lats = [p.latency_ms for p in ps]
        accs = [p.top1 for p in ps]
        front = pareto_front(list(zip(lats, accs)))
        if max(lats) / min(lats) > 8:
            ax.set_xscale("log")
            # plain numbers at 1-2-5 steps read better than 2x10^2 and do not collide
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.12, y=0.1)
        ax.scatter(lats, accs, s=28, color="#9aa5b1", zorder=2)
        ax.scatter([lats[i] for i in front], [accs[i] for i in front], s=52, color="#d62728", zorder=3,
                   label="Pareto front")
        if len(front) > 1:
            ax.step([lats[i] for i in front], [accs[i] for i in front], where="post", color="#d62728",
                    linestyle="--", linewidth=1.2, zorder=1)
        for p in ps:
            ax.annotate(p.label, (p.latency_ms, p.top1), textcoords="offset points", xytext=(5, 5), fontsize=7.5)
        where = HOST_LABEL if col.host else f"{col.device_model}, {col.device_os}"
        ax.set_title(f"{col.title}\n{where}", fontsize=10, color="#9a5b00" if col.host else "black")
        ax.set_xlabel("median latency, ms")
        ax.set_ylabel("top-1 %")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"scenebench run {results.run_id}: accuracy vs latency", fontsize=12)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
