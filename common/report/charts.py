"""Inline SVG charts for the report page, and the Pareto plot as a PNG."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from common.report.cells import HOST_LABEL, Column, columns_of, e, entry_of, fmt_ms, model_label
from common.schemas import EvalReport, Results


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
