"""The report opened in a real headless Chromium: no script errors, sorting works, a screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from common.regression import Thresholds, check_regressions
from common.report import render_report
from tests.fixtures.results import IPHONE, RunKnobs, build_history, build_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_COPY = Path("/tmp/scenebench-report.png")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")


def chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def console_problems(stderr: str) -> list[str]:
    # Chromium logs page console output as "...:CONSOLE..." lines; the page logs nothing itself,
    # so any such line, or any uncaught exception, is a fault of the page.
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    base = build_run(run_id="20261124-020000-nightly", seed=7)
    cur = build_run(knobs=RunKnobs(slowdown={("mobilenet_v2", "float32", IPHONE.id, "gpu"): 1.3},
                                   top1_delta={("resnet50", "int8"): -1.5}))
    regs = check_regressions(cur.results, base.results, cur.benches, base.benches, Thresholds())
    results = cur.results.model_copy(update={"regressions": regs, "baseline_run_id": base.results.run_id})
    text = render_report(results, cur.evals, cur.benches, baseline=base.results,
                         history=[h.results for h in build_history(3)])
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(text, encoding="utf-8")
    return path


def leaderboard_order(dom: str) -> list[str]:
    table = dom[dom.index('id="leaderboard-table"'):]
    table = table[:table.index("</table>")]
    return re.findall(r'<tr data-model="([^"]+)"', table)


def top1_of(dom: str) -> dict[str, float]:
    table = dom[dom.index('id="leaderboard-table"'):]
    table = table[:table.index("</table>")]
    out = {}
    for model, row in re.findall(r'<tr data-model="([^"]+)"[^>]*>(.*?)</tr>', table, flags=re.S):
        values = re.findall(r'data-v="([^"]*)"', row)
        out[model] = float(values[3])  # architecture, format, size, top-1
    return out


def test_page_runs_its_script_without_errors(tmp_path, report_file):
    proc = chromium(tmp_path, report_file.as_uri(), "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert console_problems(proc.stderr) == []
    assert "data-js-error=" not in dom
    # the sorting script ran and wired the leaderboard and conversion tables
    assert 'data-sort-ready="2"' in dom


def test_sorting_in_the_browser(tmp_path, report_file):
    proc = chromium(tmp_path, report_file.as_uri() + "#sort=top1,asc", "--dump-dom")
    assert proc.returncode == 0 and console_problems(proc.stderr) == []
    order = leaderboard_order(proc.stdout)
    top1 = top1_of(proc.stdout)
    assert [top1[m] for m in order] == sorted(top1.values())
    assert 'aria-sort="ascending"' in proc.stdout
    proc = chromium(tmp_path, report_file.as_uri() + "#sort=top1,desc", "--dump-dom")
    order = leaderboard_order(proc.stdout)
    assert [top1[m] for m in order] == sorted(top1.values(), reverse=True)


def test_screenshot(tmp_path, report_file):
    shot = tmp_path / "report.png"
    proc = chromium(tmp_path, report_file.as_uri(), f"--screenshot={shot}", "--window-size=1400,2400")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_problems(proc.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    try:
        shutil.copyfile(shot, SCREENSHOT_COPY)  # kept for people to look at after the run
    except OSError:
        pass
