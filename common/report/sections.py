"""The report page's sections, one function each, as HTML text."""

from __future__ import annotations

from typing import Sequence

from common import paper
from common.regression import count_kinds, diff_results
from common.report.cells import (
    APPLIED_NAMES,
    DELEGATE_NAMES,
    HOST_LABEL,
    Column,
    basis_entry,
    columns_of,
    display_name,
    e,
    entry_of,
    fmt,
    fmt_ms,
    fmt_s,
    fmt_score,
    gap,
    gap_reason,
    gpu_verdict,
    host_badge,
    latency_value,
    measurement_notes,
    model_label,
)
from common.report.charts import pareto_points, svg_confusion, svg_distribution, svg_pareto, svg_per_class
from common.schemas import BenchResult, EvalReport, Interval, ModelResult, PairedTest, QuantDebugReport, Regression, Results
from common.stats import plus_minus
from common.stepcache import describe_reused


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
              extra: str = "", cls: str = "", title: str = "") -> str:
    if value is None:
        return f'<td class="num gapcell{cls}" data-v="">{gap(reason)}</td>'
    fcls, fmark = _flag_attr(flag)
    tip = f' title="{e(title)}"' if title else ""
    return f'<td class="num{cls}{fcls}" data-v="{value:.6g}"{tip}>{e(text)}{extra}{fmark}</td>'


def _ci_title(ci: Interval | None, count: int | None) -> str:
    if ci is None:
        return "no interval: evaluated before per-image results were kept"
    over = f" over the {count} validation images" if count else ""
    return f"{ci.level:.0%} bootstrap interval {ci.lo:.2f}..{ci.hi:.2f} %{over}"


def _p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"


def _test_sub(t: PairedTest | None) -> tuple[str, str]:
    """(sub-line, tooltip) of a paired test of what a conversion lost."""
    if t is None:
        return "", ""
    verdict = "beyond chance" if t.p_value < 0.05 else "within chance"
    tip = (f"Keras minus TFLite on the same images: {t.ci.level:.0%} paired bootstrap interval "
           f"{t.ci.lo:+.2f}..{t.ci.hi:+.2f} points; {t.first_only} images right only in Keras, "
           f"{t.second_only} only in TFLite; exact McNemar p {_p_text(t.p_value)} ({verdict})")
    return f'<small class="sub">McNemar p {e(_p_text(t.p_value))}</small>', tip


def leaderboard(results: Results) -> str:
    cols = columns_of(results)
    flags = _flags(results)
    head = ['<th data-type="text">Architecture</th>', '<th data-type="text">Format</th>',
            '<th data-type="num" data-first="asc">Size MB</th>', '<th data-type="num" data-key="top1">Top-1 %</th>',
            '<th data-type="num">Top-3 %</th>',
            '<th data-type="num" data-first="asc" title="Keras top-1 minus TFLite top-1, points">'
            'Lost in conversion (top-1 pts)</th>']
    for c in cols:
        label = f"{e(c.title)}<br><small>median ms (mean where no samples)</small>"
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
        cells.append(_num_cell(m.top1 if ok else None, plus_minus(m.top1, m.top1_ci),
                               why if not ok else "not evaluated",
                               flags.get((m.arch, m.format, "top1", None, None)), title=_ci_title(m.top1_ci, m.count)))
        cells.append(_num_cell(m.top3 if ok else None, plus_minus(m.top3, m.top3_ci),
                               why if not ok else "not evaluated",
                               flags.get((m.arch, m.format, "top3", None, None)), title=_ci_title(m.top3_ci, m.count)))
        sub, tip = _test_sub(m.drop_top1_test)
        drop_text = plus_minus(m.drop_top1, m.drop_top1_test.ci) if m.drop_top1_test else fmt(m.drop_top1, 1)
        cells.append(_num_cell(m.drop_top1 if ok else None, drop_text,
                               why if not ok else "no Keras accuracy to compare with", extra=sub, title=tip))
        for c in cols:
            le = entry_of(m, c)
            hostcls = " hostcol" if c.host else ""
            value, kind = latency_value(le) if ok and le is not None and le.status == "ok" else (None, "")
            if value is None:
                why = (gap_reason(results, m, c) if not ok or le is None or le.status != "ok"
                       else "the device reported no latency")
                cells.append(_num_cell(None, "", why, cls=hostcls))
                continue
            if kind == "median":
                extra = f'<small class="sub">p90 {fmt_ms(le.p90_ms)}</small>' if le.p90_ms is not None else ""
            else:
                spread = f" \u00b1 {fmt_ms(le.std_ms)}" if le.std_ms is not None else ""
                extra = (f'<small class="sub" title="no per-run samples from this device: the benchmark tool\'s '
                         f'mean and standard deviation">mean{spread} (no samples)</small>')
            extra += "".join(f'<small class="sub">{e(n)}</small>' for n in measurement_notes(le))
            extra += "".join(f'<span class="mflag" title="{e(f)}">\u26a0 {e(f.split(":")[0])}</span>' for f in le.flags)
            if c.host:
                extra += f'<span class="host-mark" title="{e(HOST_LABEL)}">host CPU</span>'
            cells.append(_num_cell(value, fmt_ms(value), "", flags.get(
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
            "Top-1 and top-3 show \u00b1 half the width of their seeded 95 % bootstrap interval over the validation "
            "images (hover for the interval); what a conversion lost is Keras minus TFLite on the same images, "
            "\u00b1 its paired bootstrap interval, with the exact McNemar p (below 0.05: beyond chance). "
            "Latency cells show the median of the raw samples and their 90th percentile; where a device gave no "
            "per-run samples, the tool's mean \u00b1 standard deviation, marked as such. \u26a0 under a number "
            "marks a measurement to read with care (mostly on CPU, hot phone, fewer runs than asked; hover it). "
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


WORST_LAYERS = 5


def worst_layers_table(debug: dict[tuple[str, str], QuantDebugReport]) -> str:
    """The five layers with the largest quantization error of each integer model, as the
    quantization debugger measured them on the calibration images."""
    if not debug:
        return ""
    rows = []
    for (arch, format_), doc in sorted(debug.items()):
        ranked = sorted((x for x in doc.layers if x.rmse_over_scale is not None),
                        key=lambda x: x.rmse_over_scale, reverse=True)[:WORST_LAYERS]
        for rank, x in enumerate(ranked, start=1):
            rows.append(f"<tr><td>{e(display_name(arch))}</td><td>{e(format_)}</td><td class='num'>{rank}</td>"
                        f"<td>{e(', '.join(x.layers))}</td><td>{e(x.op)}</td>"
                        f"<td class='num' data-v='{x.rmse_over_scale:.6g}'>{x.rmse_over_scale:.2f}</td>"
                        f"<td class='num' data-v='{x.mean_error:.6g}'>{x.mean_error:.3g}</td>"
                        f"<td class='num'>{x.scale:.3g}</td></tr>")
    head = ("<tr><th data-type='text'>Architecture</th><th data-type='text'>Format</th><th data-type='num'>#</th>"
            "<th data-type='text'>Layer</th><th data-type='text'>Op</th>"
            "<th data-type='num'>RMSE / scale</th><th data-type='num'>Mean error</th><th data-type='num'>Scale</th></tr>")
    return (f"<h3>Worst layers of each integer model</h3><p class='note'>TensorFlow's quantization debugger on the "
            f"calibration images: error of each quantized layer against float from the same input, in its own "
            f"quantization steps (about 0.29 is rounding alone; above {doc.suspect_threshold:g} the debugger's guide "
            f"calls a layer suspect). Layers kept float by int8-selective are not listed for it.</p>"
            f'<table class="sortable" id="worst-layers"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>')


def finetuned_note(results: Results, evals: dict[tuple[str, str], EvalReport]) -> str:
    """int8-qat fine-tunes before it converts, so its difference from Keras mixes training with
    rounding: what it loses against its own fine-tuned weights in float is the conversion's part."""
    items = []
    for m in results.models:
        ev = evals.get((m.arch, m.format))
        if ev is None or ev.drop_top1_vs_finetuned_test is None or ev.finetuned_float_top1 is None:
            continue
        t = ev.drop_top1_vs_finetuned_test
        items.append(f"<li>{e(display_name(m.arch))} {e(m.format)}: fine-tuned weights in float "
                     f"{ev.finetuned_float_top1:.2f} %, this model {ev.top1:.2f} %: lost "
                     f"{plus_minus(t.diff, t.ci, 2)} pts top-1 (McNemar p {t.p_value:.2g})</li>")
    if not items:
        return ""
    return ("<p class='note'>int8-qat is fine-tuned with fake-quantized activations before it is converted, so its "
            "difference from Keras above mixes what the extra training gained with what rounding lost. Against its "
            f"own fine-tuned weights in float (fake quantization passed through), on the same images:</p><ul>"
            f"{''.join(items)}</ul>")


def conversion_section(results: Results, evals: dict[tuple[str, str], EvalReport],
                       quant_debug: dict[tuple[str, str], QuantDebugReport] | None = None) -> str:
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
        no_keras = "no Keras evaluation to compare with"
        cells.append(_num_cell(ev.keras_top1, fmt(ev.keras_top1), no_keras))
        cells.append(_num_cell(ev.top1, plus_minus(ev.top1, ev.top1_ci, 2), "", title=_ci_title(ev.top1_ci, ev.count)))
        for drop, test in ((ev.drop_top1, ev.drop_top1_test), (ev.drop_top3, ev.drop_top3_test)):
            sub, tip = _test_sub(test)
            cells.append(_num_cell(drop, plus_minus(drop, test.ci, 2) if test else fmt(drop), no_keras,
                                   extra=sub, title=tip))
        cells.append(_num_cell(ev.agreement_with_keras, fmt(ev.agreement_with_keras), no_keras))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = f'<table class="sortable" id="conversion-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    table += finetuned_note(results, evals)
    table += worst_layers_table(quant_debug or {})
    return _section("conversion", "Accuracy lost by each conversion", table,
                    "TFLite model against the Keras model it was converted from, on the same validation images: "
                    "\u00b1 half the width of the seeded 95 % paired bootstrap interval, and the exact McNemar test "
                    "on the images only one of the two got right (p below 0.05: the loss is beyond chance).")


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
                "<th>paper: NPU s<br>ours: Core ML s</th><th>CPU RAM MB</th><th>Score</th></tr>")
        rows = []
        for pr in paper.ROWS:
            d = pr.devices[phone]
            cells = [f'<td rowspan="2" class="model">{e(pr.label)}</td>',
                     f'<td class="src paper-src">paper ({e(paper.SHORT_CITATION)}, {e(phone)})</td>',
                     f'<td class="num">{pr.size_mb:g}</td>', f'<td class="num">{pr.top1:g}</td>']
            for colname in ("cpu_s", "gpu_s", "npu_s"):
                v = getattr(d, colname)
                src = f"Table {'3' if phone == paper.IPHONE_12_PRO else '4'}"
                cells.append(f'<td class="num" title="{src}">{v:g}</td>' if v is not None
                             else f'<td class="num gapcell">{gap(paper.gap_reason(pr.arch, colname, phone))}</td>')
            cells.append(f'<td class="num">{d.cpu_ram_mb:g}</td>' if d.cpu_ram_mb is not None
                         else f'<td class="num gapcell">{gap("not reported in the paper")}</td>')
            score_tip = (f"Table 2, computed from its CPU time {pr.table2_cpu_s:g} s; implies top-3 "
                         f"{pr.top3:g} % (the paper gives no top-3)")
            score_cell = (f'<td class="num" title="{e(score_tip)}">{pr.score:g}'
                          f'<small class="sub">Table 2, {pr.table2_cpu_s:g} s</small></td>'
                          if phone == paper.IPHONE_12_PRO
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
                    # Beside the paper's "could not run on the GPU": whether ours can, by its file
                    verdict = (f'<small class="sub gpu-verdict">{e(gpu_verdict(m))}</small>'
                               if dlg == "gpu" else "")
                    if not ours_label:
                        ours.append(f'<td class="num gapcell">{gap("no " + phone + " in the device farm")}{verdict}</td>')
                    elif le is None or le.status != "ok" or le.mean_ms is None:
                        col = Column(dev_id, dlg, "", "", "", "host" if ours_host else "ios")
                        ours.append(f'<td class="num gapcell">{gap(gap_reason(results, m, col))}{verdict}</td>')
                    else:
                        ours.append(f'<td class="num{" hostcol" if ours_host else ""}">{fmt_s(le.mean_ms / 1000)}'
                                    f'{verdict}</td>')
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
    note = ("Which table each paper figure comes from: top-1, CPU/GPU/NPU seconds and RAM from Table 3 (iPhone 12 "
            "Pro) and Table 4 (iPhone X); the score from Table 2, which the paper computed from its own, rounded "
            "CPU times (EfficientNet 0.27 / 0.28 s where Table 3 has 0.272 / 0.283 s). The paper gives no top-3: "
            "hover a score for the top-3 it implies. "
            "Our latencies here are the mean of the raw samples in seconds, as the paper reports them; the paper "
            "measured with the TFLite iOS example app, memory for the whole app. \"NPU\" is the paper's word; "
            "beside it is our Core ML delegate, which asks Core ML for all compute units and lets Core ML run "
            "each part of the model on the Neural Engine, the GPU or the CPU, so it is not a Neural Engine "
            "number (see Measurement conditions for how much of each model the delegate took). Our 'float32' "
            "is the paper's 'float', our 'int8' its 'int'.")
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
        # the tag above names a build; the digest is the one that ran (a tag can be pushed again)
        ("Image digest", results.image_digest or "not recorded (run outside Kubernetes, or the pod could not "
                                                 "read its own status)"),
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
        *(("Reused results", line) for line in describe_reused(results.reused)),
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


def _state_text(st) -> str:
    if st is None:
        return ""
    parts = [st.thermal or "thermal ?"]
    if st.low_power_mode:
        parts.append("Low Power Mode")
    if st.battery_level is not None:
        parts.append(f"battery {st.battery_level:.0%}" + (f" {st.battery_state}" if st.battery_state else ""))
    return ", ".join(parts)


def conditions_section(results: Results) -> str:
    """How each measurement was taken: what ran the graph, how much of it, in which state of the phone."""
    head = ("<tr><th>Model</th><th>Device</th><th>Asked</th><th>Ran on</th><th>Delegated nodes</th>"
            "<th>GPU precision</th><th>Core ML compute units</th><th>Neural Engine in the phone</th>"
            "<th>Thermal before \u2192 after</th><th>Waited for nominal</th><th>Cooldown</th>"
            "<th>Timed runs</th><th>Memory</th><th>Samples</th><th>App</th><th>Read with care</th></tr>")
    rows = []
    for m in results.models:
        for le in m.latency:
            if le.status != "ok":
                continue
            c = le.conditions
            if c is None:
                continue

            def cell(text: str | None, why: str = "not reported") -> str:
                return f"<td>{e(text)}</td>" if text else f'<td class="gapcell">{gap(why)}</td>'

            nodes = (f"{c.delegated_nodes} of {c.total_nodes} ({c.coverage:.0%})" if c.coverage is not None
                     else f"{c.delegated_nodes} of ?" if c.delegated_nodes is not None else None)
            runs = (f"{c.runs_completed} of {c.runs_requested}" if c.runs_completed is not None
                    and c.runs_requested is not None else None)
            wait = (f"{c.thermal_wait_s:.0f} s (limit {c.thermal_wait_limit_s:.0f} s)" if c.thermal_wait_s is not None
                    and c.thermal_wait_limit_s is not None else None)
            before, after = _state_text(c.state_before), _state_text(c.state_after)
            app = " ".join(x for x in (f"TensorFlow {c.app_tf_tag}" if c.app_tf_tag else "",
                                       f"build {c.app_build_id}" if c.app_build_id else "") if x)
            dev = le.device_name + (f" \u00b7 iOS build {c.os_build}" if c.os_build else "")
            rows.append(
                f"<tr><td>{e(model_label(m))}</td><td>{e(dev)}{host_badge() if le.backend == 'host' else ''}</td>"
                f"<td>{e(DELEGATE_NAMES.get(le.delegate_requested, le.delegate_requested))}</td>"
                + cell(APPLIED_NAMES.get(le.delegate_applied or "", le.delegate_applied), "the log does not say")
                + (cell(nodes, "the log gives no node counts") if le.delegate_requested != "cpu" else "<td>\u2014</td>")
                + (cell({True: "FP16 allowed", False: "FP32"}.get(c.gpu_precision_loss_allowed))
                   if le.delegate_requested == "gpu" else "<td>\u2014</td>")
                + (cell(c.coreml_compute_units) if le.delegate_requested == "coreml" else "<td>\u2014</td>")
                + (cell({True: "yes (A12 or later)", False: "no"}.get(c.neural_engine), "unknown model")
                   if le.backend == "ios" else "<td>\u2014</td>")
                + (cell(f"{before} \u2192 {after}" if before or after else None, "no state lines (older app)")
                   if le.backend == "ios" else "<td>\u2014</td>")
                + (cell(wait, "no wait line (older app)") if le.backend == "ios" else "<td>\u2014</td>")
                + f"<td>{e(f'{c.cooldown_s:.0f} s' if c.cooldown_s else '')}</td>"
                + cell(runs) + cell(c.memory_pass and {"separate": "separate run", "same": "same run as timing",
                                                        "none": "not measured"}[c.memory_pass])
                + cell(c.samples_source, "none: the tool's mean and std only")
                + (cell(app, "not recorded") if le.backend == "ios" else "<td>\u2014</td>")
                + f"<td>{'<br>'.join(e(f) for f in le.flags)}</td></tr>")
    if not rows:
        return _section("conditions", "Measurement conditions", gap("no measurement recorded its conditions"))
    table = f'<table id="conditions"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    note = ("What ran each measurement and in what state. A delegate that took fewer nodes than the graph has "
            "ran the rest on the CPU; below the coverage threshold it is flagged \"mostly on CPU\". Metal with FP16 "
            "allowed computes in half precision. The phone's thermal state comes from iOS before and after the "
            "timed runs; a run that ends serious or critical was throttled.")
    return _section("conditions", "Measurement conditions", table, note)
