"""Compare two finished runs and print, for people, what changed: `python -m jobs.compare RUN_A RUN_B`.

RUN_A is the baseline, RUN_B the run judged against it. Accuracy, size, score and the
median latency per device and delegate are listed side by side; regressions are marked
with the same check the aggregate step applies (raw latency samples, not just means).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pydantic import Field

from common import layout
from common.errors import ConfigError, NotFoundError, ScenebenchError
from common.jobkit import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from common.logging import configure, get_logger
from common.regression import Change, Thresholds, check_regressions, count_kinds, diff_results, pick_baseline
from common.report import pareto_png, render_report
from common.schemas import BenchResult, EvalReport, Regression, Results
from common.settings import JobSettings, build_parser as settings_parser, load
from common.store import ArtifactStore, open_store

FLAG_TEXT = {"regression": "REGRESSION", "improvement": "improved", "missing": "MISSING", "new": "new", "": ""}


class CompareSettings(JobSettings):
    store: str = Field("file://./artifacts", description="Artifact store: file://PATH or s3://bucket/prefix.")
    fail_on_regression: bool = Field(False, description="Exit 1 when run B regressed against run A.")
    top1_drop_pts: float = Field(Thresholds().top1_drop_pts, ge=0, description="Top-1 drop (points) flagged.")
    top3_drop_pts: float = Field(Thresholds().top3_drop_pts, ge=0, description="Top-3 drop (points) flagged.")
    latency_rel: float = Field(Thresholds().latency_rel, ge=0, description="Smallest relative median latency growth flagged.")
    latency_noise_k: float = Field(Thresholds().latency_noise_k, ge=0,
                                   description="Growth must exceed this many robust sigmas of the samples.")
    size_rel: float = Field(Thresholds().size_rel, ge=0, description="Relative model size growth flagged.")

    def thresholds(self) -> Thresholds:
        return Thresholds(top1_drop_pts=self.top1_drop_pts, top3_drop_pts=self.top3_drop_pts,
                          latency_rel=self.latency_rel, latency_noise_k=self.latency_noise_k, size_rel=self.size_rel)


def build_parser() -> argparse.ArgumentParser:
    parser = settings_parser(CompareSettings, prog="python -m jobs.compare", description=__doc__)
    parser.add_argument("run_a", metavar="RUN_A", help="baseline run id")
    parser.add_argument("run_b", metavar="RUN_B", help="run judged against RUN_A")
    return parser


def load_results(store: ArtifactStore, run_id: str) -> Results:
    layout.check_id(run_id, "run id")
    try:
        return store.get_model(layout.results_json(run_id), Results)
    except NotFoundError:
        known = sorted({k.rsplit("/", 1)[-1][:-5] for k in store.list(layout.HISTORY_PREFIX) if k.endswith(".json")})
        hint = f"; runs in {layout.HISTORY_PREFIX}: {', '.join(known[-10:])}" if known else ""
        raise ConfigError(f"{store.describe(layout.results_json(run_id))} does not exist: run {run_id!r} "
                          f"did not finish (results.json is written last) or the id is wrong{hint}") from None


def load_benches(store: ArtifactStore, results: Results) -> list[BenchResult]:
    """The bench documents behind a run's latency entries; ones that are gone are skipped
    (the check then falls back to the summary numbers in results.json)."""
    out = []
    for m in results.models:
        for le in m.latency:
            if le.status == "ok" and le.key:
                b = store.try_get_model(le.key, BenchResult)
                if b is not None:
                    out.append(b)
    return out


def read_history(store: ArtifactStore) -> list[dict]:
    """The documents under results/history/, newest last; unreadable ones are skipped with a warning.

    Each is a copy of a finished run's results.json, or at least a summary with run_id and
    created_at; either is enough for `pick_baseline`.
    """
    log = get_logger(step="compare")
    docs = []
    for key in store.list(layout.HISTORY_PREFIX):
        if not key.endswith(".json"):
            continue
        try:
            doc = store.get_json(key)
        except (ScenebenchError, ValueError) as exc:
            log.warning("history_entry_unreadable", key=key, error=str(exc))
            continue
        if isinstance(doc, dict) and doc.get("run_id"):
            docs.append(doc)
    return sorted(docs, key=lambda d: str(d.get("created_at", "")))


def results_of(store: ArtifactStore, doc: dict) -> Results | None:
    """A history entry as Results: the entry itself when it is a full copy, else the run's results.json."""
    try:
        return Results.model_validate(doc)
    except ValueError:
        pass
    try:
        return store.get_model(layout.results_json(str(doc["run_id"])), Results)
    except (ScenebenchError, ValueError) as exc:
        get_logger(step="compare").warning("history_run_unreadable", run_id=doc.get("run_id"), error=str(exc))
        return None


def load_baseline(store: ArtifactStore, current: Results, named: str | None = "previous",
                  history: list[dict] | None = None) -> Results | None:
    """The baseline run's results: 'previous' (the latest successful run in results/history/
    before this one), 'none', or a run id (read from runs/<id>/results.json, so that a run
    missing from the history can still be named)."""
    if named == "none":
        return None
    if named not in (None, "", "previous"):
        if named == current.run_id:
            raise ConfigError(f"--baseline {named!r} is the run being aggregated; name an earlier run")
        return load_results(store, named)
    history = read_history(store) if history is None else history
    doc = pick_baseline(history, current.run_id, "previous", before=current.created_at)
    return results_of(store, doc) if doc is not None else None


def recent_results(store: ArtifactStore, history: list[dict], current_run_id: str, limit: int = 14) -> list[Results]:
    """Up to `limit` earlier runs from the history, oldest first, for the report's trend table."""
    out = []
    for doc in [d for d in history if d.get("run_id") != current_run_id][-limit:]:
        r = results_of(store, doc)
        if r is not None:
            out.append(r)
    return out


def attach_comparison(store: ArtifactStore, results: Results, benches: list[BenchResult],
                      baseline: str | None = "previous", thresholds: Thresholds | None = None,
                      history: list[dict] | None = None) -> tuple[Results, Results | None]:
    """Results with `baseline_run_id` and `regressions` filled in, and the baseline used.

    For the aggregate step: call before writing results.json (which stays the last object).
    """
    base = load_baseline(store, results, baseline, history)
    if base is None:
        return results.model_copy(update={"baseline_run_id": None, "regressions": []}), None
    regressions = check_regressions(results, base, benches, load_benches(store, base), thresholds or Thresholds())
    return results.model_copy(update={"baseline_run_id": base.run_id, "regressions": regressions}), base


def write_report(store: ArtifactStore, results: Results, evals: dict[tuple[str, str], EvalReport],
                 benches: list[BenchResult], baseline: Results | None = None,
                 history: list[dict] | None = None) -> dict[str, str]:
    """Render and store report.html and pareto.png next to results.json; returns their keys."""
    history = read_history(store) if history is None else history
    recent = recent_results(store, history, results.run_id)
    from common.schemas import QuantDebugReport

    debug = {(m.arch, m.format): d for m in results.models
             if (d := store.try_get_model(layout.quant_debug_json(results.run_id, m.arch, m.format), QuantDebugReport))}
    html_text = render_report(results, evals, benches, baseline=baseline, history=recent, quant_debug=debug)
    keys = {"report": layout.report_html(results.run_id), "pareto": layout.pareto_png(results.run_id)}
    store.put_bytes(keys["pareto"], pareto_png(results))
    store.put_bytes(keys["report"], html_text.encode("utf-8"))
    return keys


def _num(v: float | None, metric: str) -> str:
    if v is None:
        return "\u2014"
    if metric == "score":
        return f"{v:.4g}"
    return f"{v:.3f}" if metric == "latency_ms" and v < 10 else f"{v:.2f}"


def _change(c: Change) -> str:
    if c.change is None:
        return ""
    text = f"{c.change:+.4g}" if c.metric == "score" else f"{c.change:+.2f}"
    if c.baseline and c.metric in ("latency_ms", "size_mb", "score"):
        text += f" ({c.change / c.baseline:+.1%})"
    return text


def format_comparison(current: Results, baseline: Results, regressions: Sequence[Regression]) -> str:
    """The table printed for people: one block per model, regressions marked."""
    lines = [
        f"baseline  A  {baseline.run_id}  {baseline.created_at:%Y-%m-%d %H:%M} UTC  code {baseline.code_version}",
        f"current   B  {current.run_id}  {current.created_at:%Y-%m-%d %H:%M} UTC  code {current.code_version}",
    ]
    if baseline.dataset_fingerprint != current.dataset_fingerprint:
        lines.append(f"note: the dataset differs ({baseline.dataset_fingerprint[:12]} vs "
                     f"{current.dataset_fingerprint[:12]}); accuracy is not strictly comparable")
    rows = diff_results(current, baseline, regressions)
    width = max([len(r.label) for r in rows] + [20])
    header = f"  {'':<{width}}  {'A':>10}  {'B':>10}  {'change':<18}  flag"
    current_model = None
    for r in rows:
        if (r.arch, r.format) != current_model:
            current_model = (r.arch, r.format)
            lines += ["", f"{r.arch} {r.format}", header]
        flag = FLAG_TEXT.get(r.flag, r.flag)
        if r.current is None and r.detail and r.flag in ("", "missing"):
            # a gap is shown with its reason, shortened to keep the table readable
            reason = r.detail if len(r.detail) <= 70 else r.detail[:67] + "..."
            flag = f"{flag + ': ' if flag else ''}{reason}"
        lines.append(f"  {r.label:<{width}}  {_num(r.baseline, r.metric):>10}  {_num(r.current, r.metric):>10}  "
                     f"{_change(r):<18}  {flag}".rstrip())
    counts = count_kinds(regressions)
    lines += ["", f"{counts['regression']} regression(s), {counts['improvement']} improvement(s), "
              f"{counts['missing']} missing since A"]
    order = {"regression": 0, "missing": 1, "improvement": 2}
    for r in sorted(regressions, key=lambda r: (order.get(r.kind, 9), r.arch, r.format, r.metric)):
        lines.append(f"  {FLAG_TEXT.get(r.kind, r.kind):<10}  {r.arch} {r.format}: {r.detail}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    configure(stdout_is_data=True)  # stdout is the answer; logs go to stderr
    log = get_logger(step="compare")
    try:
        args = build_parser().parse_args(list(argv) if argv is not None else None)
        run_a, run_b = args.run_a, args.run_b
        fields = {k: v for k, v in vars(args).items() if k not in ("run_a", "run_b")}
        settings = load(CompareSettings, fields)
        store = open_store(settings.store)
        baseline = load_results(store, run_a)
        current = load_results(store, run_b)
    except ConfigError as exc:
        log.error("bad_configuration", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:  # a run id that cannot be a path
        log.error("bad_configuration", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        regressions = check_regressions(current, baseline, load_benches(store, current),
                                        load_benches(store, baseline), settings.thresholds())
    except ScenebenchError as exc:
        log.error("compare_failed", error=str(exc), error_type=type(exc).__name__)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(format_comparison(current, baseline, regressions))
    counts = count_kinds(regressions)
    log.info("compare_summary", baseline_run_id=run_a, run_id=run_b, regressions=counts["regression"],
             improvements=counts["improvement"], missing=counts["missing"])
    if settings.fail_on_regression and counts["regression"]:
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
