"""Decide, after aggregate has published, whether the run is green or red: `python -m jobs.verdict`.

The WorkflowTemplate's exit handler. Argo takes a DAG's phase from its leaf tasks, and the
leaf is `aggregate`, which runs whatever the branches did; so without this step a night
where every architecture failed would end Succeeded. It exits 1 when a step failed, when
aggregate did not write results.json, or when results.json lists a gap that a phone being
offline does not explain; Argo then marks the workflow Failed (a failed exit handler fails a
workflow whose main part succeeded). Run by hand it judges any stored run (`--run-id`).
"""

from __future__ import annotations

from typing import Sequence

from pydantic import Field, field_validator

from common import layout
from common.errors import StepFailed
from common.jobkit import StepSettings, parser_for, require_run_id, run_job
from common.logging import get_logger
from common.schemas import Results
from common.store import ArtifactStore
from common.verdict import ARGO_PHASES, describe, judge, parse_failures

STEP = "verdict"
# The WorkflowTemplate's pod steps: their final failures are named one by one.
STEP_TEMPLATES = frozenset({"prepare", "train", "convert", "evaluate", "bench-plan", "benchmark", "aggregate"})


class VerdictSettings(StepSettings):
    workflow_status: str = Field("", description="Argo's {{workflow.status}}: Succeeded, Failed or Error "
                                                 "(empty outside Argo).")
    failures: str = Field("", description="Argo's {{workflow.failures}}: the failed nodes as JSON (empty: none).")

    @field_validator("workflow_status")
    @classmethod
    def _status(cls, v: str) -> str:
        if v and v not in ARGO_PHASES:
            raise ValueError(f"unknown workflow status {v!r}; valid values: {', '.join(ARGO_PHASES)}, "
                             "or empty outside Argo")
        return v


def build_parser():
    return parser_for(VerdictSettings, "jobs.verdict", __doc__)


def run_verdict(settings: VerdictSettings, store: ArtifactStore) -> dict:
    run_id = require_run_id(settings)
    log = get_logger(step=STEP, run_id=run_id)
    failures = parse_failures(settings.failures)
    results = store.try_get_model(layout.results_json(run_id), Results)
    verdict = judge(settings.workflow_status, failures, results, STEP_TEMPLATES)
    summary = {
        "run_id": run_id, "ok": verdict.ok, "workflow_status": settings.workflow_status or None,
        "failed_steps": [f"{f.display_name} [{f.template}]" for f in verdict.failed_steps],
        "unexplained_missing": [describe(m) for m in verdict.unexplained],
        "offline_missing": [describe(m) for m in verdict.explained],
        "results": store.describe(layout.results_json(run_id)) if results else None,
    }
    # One JSON line with the outcome, kept by the log archive next to the run's artifacts.
    log.info("run_finished", **summary)
    if not verdict.ok:
        problems = verdict.problems()
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        where = (f"; the partial leaderboard is at {store.describe(layout.leaderboard_md(run_id))}"
                 if results else "")
        raise StepFailed(f"run {run_id} is not a success ({len(problems)} problem(s)){where}:\n  "
                         + "\n  ".join(shown))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(STEP, VerdictSettings, build_parser(), run_verdict, argv)


if __name__ == "__main__":
    raise SystemExit(main())
