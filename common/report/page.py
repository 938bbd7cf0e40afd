"""The whole report page: banners, navigation, the sections in order, inline CSS and script."""

from __future__ import annotations

from common.regression import count_kinds
from common.report.cells import HOST_LABEL, e, host_badge
from common.report.files import files_section
from common.report.sections import (
    baseline_section,
    best_section,
    conditions_section,
    conversion_section,
    distribution_section,
    history_section,
    leaderboard,
    paper_section,
    pareto_section,
    provenance_section,
)
from common.schemas import BenchResult, EvalReport, Results


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
.mflag{display:block;font-size:10px;font-weight:600;color:#9a3412;white-space:normal;max-width:180px}
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
td.gpu-bad{background:var(--reg)}
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
        ("paper", "Paper"), ("best", "Best model"), ("conversion", "Conversion loss"), ("files", "Model files"),
        ("latency", "Latency samples"), ("conditions", "Measurement conditions"), ("provenance", "Provenance")))
    sections = [
        leaderboard(results),
        baseline_section(results, baseline),
        pareto_section(results),
        paper_section(results),
        best_section(results, evals),
        conversion_section(results, evals),
        files_section(results),
        distribution_section(results, benches),
        conditions_section(results),
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
