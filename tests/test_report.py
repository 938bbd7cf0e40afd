"""The HTML report, checked by parsing the page it renders from fixture runs."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from common import paper
from common.regression import Thresholds, check_regressions
from common.report import HOST_LABEL, pareto_front, pareto_png, pareto_points, render_report
from tests.fixtures.results import HOST, IPHONE, MISSING_KEY, MISSING_REASON, RunKnobs, build_history, build_run


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: "Node | None"):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.text_parts: list[str] = []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        return "".join(self.text_parts) + "".join(c.text() for c in self.children)

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list["Node"]:
        out = []
        for n in self.iter():
            if tag and n.tag != tag:
                continue
            if cls and cls not in n.classes:
                continue
            if any(n.attrs.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            out.append(n)
        return out

    def find(self, *args, **kwargs) -> "Node":
        found = self.find_all(*args, **kwargs)
        assert found, f"no element {args} {kwargs}"
        return found[0]


VOID = {"meta", "br", "img", "link", "input", "hr", "col", "area", "base", "wbr", "source"}
SVG_SELF_CLOSING = {"circle", "line", "rect", "path"}


class TreeBuilder(HTMLParser):
    """A small DOM from the stdlib parser; raises on mismatched tags so broken markup fails tests."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root
        self.raw_tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        self.raw_tags.append((tag, d))
        node = Node(tag, d, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        d = dict(attrs)
        self.raw_tags.append((tag, d))
        self.cur.children.append(Node(tag, d, self.cur))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.cur.tag == tag, f"</{tag}> closes <{self.cur.tag}>"
        self.cur = self.cur.parent

    def handle_data(self, data):
        self.cur.text_parts.append(data)


def parse(text: str) -> TreeBuilder:
    tb = TreeBuilder()
    tb.feed(text)
    tb.close()
    assert tb.cur is tb.root, f"unclosed <{tb.cur.tag}>"
    return tb


def with_regressions(cur, base):
    regs = check_regressions(cur.results, base.results, cur.benches, base.benches, Thresholds())
    return cur.results.model_copy(update={"regressions": regs, "baseline_run_id": base.results.run_id})


@pytest.fixture
def page(fixture_run, fixture_baseline):
    results = with_regressions(fixture_run, fixture_baseline)
    text = render_report(results, fixture_run.evals, fixture_run.benches, baseline=fixture_baseline.results,
                         history=[h.results for h in build_history(3)])
    return text, parse(text).root


def test_leaderboard_has_a_row_per_model_and_sortable_headers(page, fixture_run):
    _, root = page
    lb = root.find("table", id="leaderboard-table")
    rows = lb.find("tbody").find_all("tr")
    assert sorted(r.attrs["data-model"] for r in rows) == sorted(
        f"{m.arch}/{m.format}" for m in fixture_run.results.models)
    heads = lb.find("thead").find_all("th")
    titles = [h.text() for h in heads]
    for want in ("Architecture", "Format", "Size MB", "Top-1 %", "Top-3 %", "RAM MB", "Score"):
        assert any(t.startswith(want) for t in titles), want
    assert all(h.attrs.get("data-type") in ("num", "text") for h in heads)
    # one latency column per device and delegate
    assert sum("median ms" in t for t in titles) == 1 + 3
    # numbers sort by data-v, and each row's cells line up with the header
    assert all(len(r.find_all("td")) == len(heads) for r in rows)
    # default order: best score first
    scores = [float(r.find_all("td")[titles.index("Score")].attrs["data-v"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert "sortBy" in page[0] and "table.sortable" in page[0]


def test_pareto_points_and_front(page, fixture_run):
    _, root = page
    charts = root.find_all("svg", cls="pareto")
    assert len(charts) == 4  # host cpu + iPhone cpu/gpu/coreml
    pts = pareto_points(fixture_run.results)
    for svg in charts:
        col = next(c for c in pts if (c.device_id, c.delegate) == (svg.attrs["data-device"], svg.attrs["data-delegate"]))
        drawn = svg.find_all("g", cls="pt")
        assert len(drawn) == len(pts[col])
        want = {f"{pts[col][i].arch}/{pts[col][i].format}"
                for i in pareto_front([(p.latency_ms, p.top1) for p in pts[col]])}
        assert {g.attrs["data-model"] for g in drawn if "front" in g.classes} == want
        assert want
    # the missing coreml measurement of EfficientNet-B2 int8 is not a point
    coreml = next(s for s in charts if s.attrs["data-delegate"] == "coreml")
    assert "efficientnet_b2/int8" not in {g.attrs["data-model"] for g in coreml.find_all("g", cls="pt")}


def test_pareto_front_unit():
    pts = [(10, 90.0), (20, 95.0), (15, 89.0), (30, 94.0), (40, 96.0), (10, 91.0)]
    assert pareto_front(pts) == [5, 1, 4]


def test_host_cpu_numbers_are_labelled(page):
    text, root = page
    assert HOST_LABEL in text
    lb = root.find("table", id="leaderboard-table")
    heads = lb.find("thead").find_all("th")
    host_idx = [i for i, h in enumerate(heads) if HOST.name in h.text()]
    assert len(host_idx) == 1 and HOST_LABEL in heads[host_idx[0]].text()
    for row in lb.find("tbody").find_all("tr"):
        cell = row.find_all("td")[host_idx[0]]
        if cell.attrs.get("data-v"):
            assert cell.find_all("span", cls="host-mark"), "a host CPU number without its label"
    host_chart = [s for s in root.find_all("svg", cls="pareto") if s.attrs["data-device"] == HOST.id]
    assert HOST_LABEL in host_chart[0].text()
    dist = [s for s in root.find_all("svg", cls="dist") if s.attrs["data-device"] == HOST.id]
    assert HOST_LABEL in dist[0].text()
    devices = root.find("table", id="devices")
    assert HOST_LABEL in devices.text() and IPHONE.os in devices.text()


def test_missing_is_a_gap_with_its_reason(page):
    _, root = page
    lb = root.find("table", id="leaderboard-table")
    heads = [h.text() for h in lb.find("thead").find_all("th")]
    idx = next(i for i, t in enumerate(heads) if "Core ML" in t)
    arch, fmt, _, _ = MISSING_KEY
    row = lb.find("tr", data_model=f"{arch}/{fmt}")
    cell = row.find_all("td")[idx]
    assert "gapcell" in cell.classes and cell.attrs["data-v"] == ""
    assert MISSING_REASON in cell.text()
    assert not any(ch.isdigit() for ch in cell.text().replace(MISSING_REASON, "").strip("— "))
    assert MISSING_REASON in root.find("table", id="missing").text()


def test_failed_model_shows_reason_not_numbers(fixture_run):
    results = fixture_run.results
    m = results.models[0]
    results.models[0] = m.model_copy(update={"status": "failed", "reason": "conversion failed: <OOM> & more"})
    root = parse(render_report(results, fixture_run.evals, fixture_run.benches)).root
    row = root.find("table", id="leaderboard-table").find("tr", data_model=f"{m.arch}/{m.format}")
    cells = row.find_all("td")[2:-1]
    assert all(c.attrs.get("data-v") == "" for c in cells)
    assert all("conversion failed: <OOM> & more" in c.text() for c in cells)


def test_paper_table_is_labelled_as_the_papers(page):
    _, root = page
    t12 = root.find("table", id="paper-iphone-12-pro")
    cap = t12.find("caption").text()
    assert "paper" in cap.lower() and paper.SHORT_CITATION.split()[0] in cap and "not ours" in cap
    paper_rows = t12.find_all("tr", cls="paper-row")
    assert len(paper_rows) == 4
    assert all("paper (" in r.text() for r in paper_rows)
    text = t12.text()
    for v in ("8.6", "92.5", "0.083", "0.016", "0.014", "0.0941", "2.7", "91.3", "0.058", "0.093", "0.092",
              "0.0255", "29.5", "0.272", "3.7037", "9.1", "95.3", "0.283", "1.3533"):
        assert v in text, v
    # the paper's EfficientNet GPU/NPU cells are gaps with the paper's reason
    assert "could not run EfficientNet" in text
    ours = t12.find_all("tr", cls="ours-row")
    assert len(ours) == 4 and all(IPHONE.model in r.text() for r in ours)
    tx = root.find("table", id="paper-iphone-x")
    assert "0.432" in tx.text() and "No iPhone X in the device farm" in tx.find("caption").text()


def test_best_model_confusion_and_conversion(page, fixture_run):
    _, root = page
    best = root.find("section", id="best")
    assert "EfficientNet-B2 float32" in best.text()
    conf = best.find("svg", cls="confusion")
    n = len(fixture_run.results.classes)
    # a cell for every non-zero count
    nonzero = sum(1 for row in fixture_run.evals[("efficientnet_b2", "float32")].confusion for v in row if v)
    assert len(conf.find_all("rect")) == nonzero + 1
    assert len(best.find("svg", cls="per-class").find_all("rect")) == n
    conv = root.find("table", id="conversion-table")
    assert len(conv.find("tbody").find_all("tr")) == 6
    assert "94.70" in conv.text() and "0.50" in conv.text()  # resnet50 int8 lost half a point
    # what a conversion lost carries its paired interval and McNemar p
    row = next(r for r in conv.find("tbody").find_all("tr") if "MobileNetV2" in r.text() and "int8" in r.text())
    lost = row.find_all("td")[4]
    assert "\u00b1" in lost.text() and "McNemar p" in lost.text() and "paired bootstrap" in lost.attrs["title"]


def test_accuracy_cells_show_their_interval(page, fixture_run):
    _, root = page
    lb = root.find("table", id="leaderboard-table")
    titles = [h.text() for h in lb.find("thead").find_all("th")]
    for m in fixture_run.results.models:
        cells = lb.find("tr", data_model=f"{m.arch}/{m.format}").find_all("td")
        top1 = cells[titles.index("Top-1 %")]
        assert top1.text().startswith(f"{m.top1:.1f} \u00b1{(m.top1_ci.hi - m.top1_ci.lo) / 2:.1f}")
        assert f"{m.top1_ci.lo:.2f}..{m.top1_ci.hi:.2f}" in top1.attrs["title"]
        assert "\u00b1" in cells[titles.index("Top-3 %")].text()


def test_latency_distributions_from_raw_samples(page, fixture_run):
    _, root = page
    dists = root.find_all("svg", cls="dist")
    assert len(dists) == 4
    iphone_cpu = next(s for s in dists if s.attrs["data-device"] == IPHONE.id and s.attrs["data-delegate"] == "cpu")
    n_samples = sum(len(b.samples_ms) for b in fixture_run.benches
                    if b.device.id == IPHONE.id and b.delegate_requested == "cpu")
    dots = sum(len(g.find_all("circle")) for g in iphone_cpu.find_all("g", cls="samples"))
    assert dots == n_samples


def test_baseline_comparison_flags_regressions():
    base = build_run(run_id="base-run", seed=7)
    cur = build_run(knobs=RunKnobs(slowdown={("mobilenet_v2", "float32", IPHONE.id, "gpu"): 1.3},
                                   top1_delta={("resnet50", "int8"): -1.5}))
    results = with_regressions(cur, base)
    root = parse(render_report(results, cur.evals, cur.benches, baseline=base.results)).root
    sec = root.find("section", id="baseline")
    assert "base-run" in sec.text()
    regs = root.find("table", id="regressions").find_all("tr", cls="regression")
    assert {(r.find_all("td")[1].text(), r.find_all("td")[2].text()) for r in regs} == {
        ("MobileNetV2 float32", "latency_ms"), ("ResNet50 (BiT-style) int8", "top1")}
    flagged = root.find("table", id="leaderboard-table").find_all("td", cls="reg")
    assert len(flagged) == 2
    assert "2 regression(s)" in root.find("div", cls="bad").text()


def test_without_baseline_says_so(fixture_run):
    root = parse(render_report(fixture_run.results, fixture_run.evals, fixture_run.benches)).root
    assert "No baseline run" in root.find("section", id="baseline").text()
    assert not root.find_all("section", id="history")


def test_no_external_fetches(page):
    text, _ = page
    tb = parse(text)
    for tag, attrs in tb.raw_tags:
        assert tag not in ("link", "iframe", "object", "embed"), tag
        for key in ("src", "href", "xlink:href", "action", "poster"):
            v = (attrs.get(key) or "").strip().lower()
            if v:
                assert v.startswith("#") or v.startswith("data:"), f"<{tag} {key}={v}>"
        if tag == "script":
            assert "src" not in attrs
    assert "@import" not in text and "url(http" not in text


def test_text_is_escaped(fixture_run):
    evil = "<script>alert('x')</script>"
    results = fixture_run.results
    results.classes[0] = evil
    ev = fixture_run.evals[("efficientnet_b2", "float32")]
    ev.per_class[0] = ev.per_class[0].model_copy(update={"name": evil})
    results.code_version = 'v1 "><img src=x onerror=alert(1)>'
    results.missing[0] = results.missing[0].model_copy(update={"reason": "a <b>bold</b> & reason"})
    text = render_report(results, fixture_run.evals, fixture_run.benches)
    assert evil not in text and "<img src=x" not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    tb = parse(text)
    assert [t for t, _ in tb.raw_tags].count("script") == 2  # ours only
    assert "img" not in [t for t, _ in tb.raw_tags]


def test_host_only_run_is_labelled_everywhere():
    run = build_run(knobs=RunKnobs(drop_devices=(IPHONE.id,)))
    root = parse(render_report(run.results, run.evals, run.benches)).root
    assert "No iPhone in this run" in root.find("div", cls="warn").text()
    ours = root.find("table", id="paper-iphone-12-pro").find_all("tr", cls="ours-row")
    assert all(HOST_LABEL in r.text() for r in ours)


def test_synthetic_dataset_is_flagged(fixture_run):
    results = fixture_run.results.model_copy(update={"dataset_synthetic": True})
    root = parse(render_report(results, fixture_run.evals, fixture_run.benches)).root
    assert "Synthetic dataset" in root.find("div", cls="warn").text()
    assert "SYNTHETIC" in root.find("section", id="provenance").text()


def test_provenance(page, fixture_run):
    _, root = page
    prov = root.find("section", id="provenance").text()
    r = fixture_run.results
    for v in (r.code_version, r.image, r.dataset_fingerprint, IPHONE.model, IPHONE.os, HOST.model, "real images"):
        assert v in prov, v


def test_pareto_png(fixture_run):
    data = pareto_png(fixture_run.results)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_element_ids_are_unique(page):
    text, _ = page
    ids = [a["id"] for _, a in parse(text).raw_tags if "id" in a]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_degenerate_runs_render(fixture_run):
    r = fixture_run.results
    empty = r.model_copy(update={"models": [], "devices": [], "missing": []})
    root = parse(render_report(empty, {}, [])).root
    assert root.find("table", id="leaderboard-table").find("tbody").find_all("tr") == []
    assert pareto_png(empty)[:4] == b"\x89PNG"
    failed = r.model_copy(update={"models": [m.model_copy(update={"status": "failed", "reason": "OOM", "top1": None})
                                             for m in r.models]})
    text = render_report(failed, {}, [])
    assert "OOM" in text and not parse(text).root.find_all("svg", cls="pareto")
    one = r.model_copy(update={"models": r.models[:1]})
    bench = [b for b in fixture_run.benches if (b.arch, b.format) == (one.models[0].arch, one.models[0].format)]
    bench = [b.model_copy(update={"samples_ms": b.samples_ms[:1]}) for b in bench]
    root = parse(render_report(one, fixture_run.evals, bench)).root
    assert len(root.find_all("svg", cls="pareto")) == 4 and root.find_all("svg", cls="dist")


def test_files_left_out_and_dataset_warnings_are_in_the_provenance(fixture_run):
    warning = "validation holds the same picture twice: validation/2_b/001.jpg, validation/2_b/again.jpg"
    results = fixture_run.results.model_copy(update={"dataset_skipped": 7, "dataset_warnings": [warning]})
    prov = parse(render_report(results, fixture_run.evals, fixture_run.benches)).root.find(
        "section", id="provenance").text()
    assert f"7 (each with its reason in datasets/{results.dataset_fingerprint}/dataset.json)" in prov
    assert warning in prov


def test_model_files_show_static_shapes_gpu_verdict_and_input(fixture_run):
    from common.schemas import GpuCompatibility, GpuOpIssue

    results = fixture_run.results.model_copy(deep=True)
    m = next(m for m in results.models if (m.arch, m.format) == ("efficientnet_b2", "float32"))
    m.dynamic_tensors = 365
    m.gpu_compatibility = GpuCompatibility(compatible=False, tool="rules", ops=[
        GpuOpIssue(op="SHAPE", nodes=[12, 40], reason="Not supported op SHAPE")])
    root = parse(render_report(results, fixture_run.evals, fixture_run.benches)).root
    files = root.find("table", id="files-table")
    rows = {r.attrs["data-model"]: r for r in files.find("tbody").find_all("tr")}
    assert len(rows) == 6
    bad = rows["efficientnet_b2/float32"].find_all("td")
    assert bad[2].text() == "365" and "cannot take: SHAPE \u00d72" in bad[3].text()
    assert "Not supported op SHAPE" in bad[3].attrs["title"]
    ok = rows["mobilenet_v2/int8"].find_all("td")
    assert ok[2].text() == "0" and "takes every op" in ok[3].text()
    assert ok[4].text() == "uint8 RGB pixels, scale 1, zero point 0"
    # beside the paper's "could not run EfficientNet on the GPU": what our file allows
    t12 = root.find("table", id="paper-iphone-12-pro")
    verdicts = [v.text() for v in t12.find_all("small", cls="gpu-verdict")]
    assert len(verdicts) == 4 and any("cannot take: SHAPE" in v for v in verdicts)
