"""Collect a run's step documents into results.json, the leaderboard and the report; update latest."""

from __future__ import annotations

from typing import Sequence

from pydantic import Field, field_validator

from common import layout, stepcache
from common.errors import StepFailed
from common.jobkit import StepSettings, parser_for, require_run_id, run_job
from common.logging import get_logger
from common.regression import Thresholds, count_kinds
from common.results import build_results, ranked, render_leaderboard
from common.schemas import BenchPlan, BenchResult, ConvertReport, EvalReport, Pointer, Results, TrainReport
from common.store import ArtifactStore
from common.verdict import is_explained
from jobs._io import load_run

STEP = "aggregate"


class AggregateSettings(StepSettings):
    c: float = Field(1.0, gt=0, description="The score's normalisation constant C.")
    score_basis: str = Field("auto", description="Measurement the score uses: auto (iPhone CPU when measured, "
                                                 "else host CPU) or DEVICE_ID/DELEGATE.")
    baseline: str = Field("previous", description="Run to compare with: previous (last run in results/history/), "
                                                  "none, or a run id.")
    fail_on_regression: bool = Field(False, description="Exit non-zero when regressions are flagged (for CI gates).")
    top1_drop_pts: float = Field(1.0, ge=0, description="Top-1 drop (points) flagged as a regression.")
    top3_drop_pts: float = Field(1.0, ge=0, description="Top-3 drop (points) flagged as a regression.")
    accuracy_alpha: float = Field(0.05, gt=0, lt=1, description="An accuracy change is flagged only when the exact "
                                  "McNemar test on the same images gives p below this (or, on different images, "
                                  "the unpaired bootstrap interval excludes 0).")
    latency_rel: float = Field(0.10, ge=0, description="Relative latency growth (beyond noise) flagged.")
    latency_noise_k: float = Field(2.0, ge=0, description="Latency growth must also exceed this many robust "
                                                          "sigmas of the device's samples.")
    size_rel: float = Field(0.05, ge=0, description="Relative model size growth flagged.")
    coverage_threshold: float = Field(0.9, ge=0, le=1, description="A delegate that took a smaller share of the "
                                                                   "graph's nodes is flagged 'mostly on CPU'.")

    @field_validator("score_basis")
    @classmethod
    def _basis(cls, v: str) -> str:
        if v != "auto" and v.count("/") != 1:
            raise ValueError("use auto or DEVICE_ID/DELEGATE, e.g. host-amd-epyc/cpu")
        return v


def build_parser():
    return parser_for(AggregateSettings, "jobs.aggregate", __doc__)


def collect(store: ArtifactStore, run_id: str, archs: list[str], formats: list[str]):
    trains = {a: store.try_get_model(layout.train_json(run_id, a), TrainReport) for a in archs}
    converts = {(a, f): store.try_get_model(layout.convert_json(run_id, a, f), ConvertReport)
                for a in archs for f in formats}
    evals = {(a, f): store.try_get_model(layout.eval_json(run_id, a, f), EvalReport)
             for a in archs for f in formats}
    benches: dict[tuple[str, str], list[tuple[str, BenchResult]]] = {}
    for a in archs:
        for f in formats:
            for key in store.list(layout.bench_prefix(run_id, a, f)):
                if key.endswith(".json"):
                    benches.setdefault((a, f), []).append((key, store.get_model(key, BenchResult)))
    return trains, converts, evals, benches


def explain_empty_plans(store: ArtifactStore, results: Results) -> None:
    """Say why a model has no latency when its bench-plan found nothing to measure (bench-plan.json).

    The reason (e.g. "the runner ... lists no devices") replaces the bare "no latency measured",
    so that the leaderboard, the report and the verdict name the cause.
    """
    for miss in results.missing:
        if miss.step != "benchmark" or miss.device_id or not miss.arch or not miss.format:
            continue
        plan = store.try_get_model(layout.bench_plan_json(results.run_id, miss.arch, miss.format), BenchPlan)
        if plan is not None and plan.reason:
            miss.reason = f"{miss.reason}: {plan.reason}"


def run_aggregate(settings: AggregateSettings, store: ArtifactStore) -> dict:
    from jobs.compare import attach_comparison, read_history, write_report

    run_id = require_run_id(settings)
    log = get_logger(step=STEP, run_id=run_id)
    run, manifest = load_run(store, run_id)
    trains, converts, evals, benches = collect(store, run_id, run.params.archs, run.params.formats)
    results = build_results(run, manifest, trains, converts, evals, benches, c=settings.c,
                            score_basis=settings.score_basis, coverage_threshold=settings.coverage_threshold)
    explain_empty_plans(store, results)
    results = results.model_copy(update={"reused": stepcache.reused_steps(trains, converts, evals)})
    bench_docs = [b for pairs in benches.values() for _, b in pairs]
    thresholds = Thresholds(top1_drop_pts=settings.top1_drop_pts, top3_drop_pts=settings.top3_drop_pts,
                            accuracy_alpha=settings.accuracy_alpha,
                            latency_rel=settings.latency_rel, latency_noise_k=settings.latency_noise_k,
                            size_rel=settings.size_rel)
    history = read_history(store)
    results, baseline = attach_comparison(store, results, bench_docs, baseline=settings.baseline,
                                          thresholds=thresholds, history=history)

    # Everything the results point at first; results.json last (its presence = run complete).
    store.put_bytes(layout.leaderboard_md(run_id), render_leaderboard(results).encode())
    report_keys = write_report(store, results, {k: v for k, v in evals.items() if v is not None},
                               bench_docs, baseline=baseline, history=history)
    store.put_json(layout.results_json(run_id), results)
    store.put_json(layout.history_json(results.created_at.strftime("%Y%m%d"), run_id), results)
    store.put_json(layout.LATEST, Pointer(run_id=run_id, results_key=layout.results_json(run_id),
                                          report_key=report_keys.get("report"),
                                          leaderboard_key=layout.leaderboard_md(run_id)))
    kinds = count_kinds(results.regressions)
    best = next((m for m in ranked(results) if m.score is not None), None)
    summary = {
        "results": store.describe(layout.results_json(run_id)), "models": len(results.models),
        "missing": len(results.missing), "baseline": results.baseline_run_id,
        # gaps a phone being offline does not explain: the exit handler (jobs.verdict) fails the run on them
        "unexplained_missing": sum(not is_explained(m, results) for m in results.missing),
        "regressions": kinds.get("regression", 0), "improvements": kinds.get("improvement", 0),
        "missing_since_baseline": kinds.get("missing", 0),
        # what regressed, in short, so that the summary line alone tells a CI log reader
        "regressed": [f"{r.arch}/{r.format} {r.metric}"
                      + (f" {r.device_id}/{r.delegate}" if r.device_id else "")
                      + (f" {r.change:+.3g}" if r.change is not None else "")
                      for r in results.regressions if r.kind == "regression"],
        "best": f"{best.arch}/{best.format} score {best.score:.4g} on {best.score_basis}" if best else None,
        "reused": sorted({f"{r.step} from {r.from_run_id}" for r in results.reused}),
    }
    if kinds.get("regression") and settings.fail_on_regression:
        log.error("regressions_found", **summary)
        raise StepFailed(f"{kinds['regression']} regression(s) against run {results.baseline_run_id} "
                         f"(see {store.describe(report_keys.get('report', layout.leaderboard_md(run_id)))}); "
                         "--fail-on-regression is set")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(STEP, AggregateSettings, build_parser(), run_aggregate, argv)


if __name__ == "__main__":
    raise SystemExit(main())
