"""Whether a finished run may be called a success: the steps that failed, and the gaps nothing excuses.

A night is green only when every step of every branch succeeded and every gap in
results.json is a measurement that a phone being offline explains. Pure functions over
what Argo hands the exit handler (`{{workflow.status}}`, `{{workflow.failures}}`) and the
results document, so that the same rule can be tested without a cluster.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from common.errors import ConfigError
from common.schemas import Missing, Results

# jobs.benchmark writes this reason for a device the runner lists as offline: the only gap a
# night may have and still be green (the phone on the shelf is not the pipeline's fault).
OFFLINE_REASON = "device offline on the runner"
# The DAG templates of the WorkflowTemplate that hold one branch each: when one ends Failed,
# a step inside it failed for good (a retried attempt that later succeeded leaves it Succeeded).
BRANCH_TEMPLATES = frozenset({"architecture", "model"})
# Argo names the attempts of a retried step `<step>(<n>)`; the retry node itself carries the outcome.
_ATTEMPT = re.compile(r"\(\d+\)$")
ARGO_PHASES = ("Succeeded", "Failed", "Error")


@dataclass(frozen=True)
class FailedNode:
    """One entry of `{{workflow.failures}}` (Argo's failedNodeStatus)."""

    display_name: str
    template: str
    phase: str
    message: str = ""
    pod_name: str = ""

    @property
    def is_attempt(self) -> bool:
        return bool(_ATTEMPT.search(self.display_name))


@dataclass(frozen=True)
class Verdict:
    workflow_status: str
    failed_steps: list[FailedNode] = field(default_factory=list)
    failed_branches: list[FailedNode] = field(default_factory=list)
    unexplained: list[Missing] = field(default_factory=list)
    explained: list[Missing] = field(default_factory=list)
    results_found: bool = True

    @property
    def ok(self) -> bool:
        return (self.workflow_status in ("", "Succeeded") and not self.failed_steps and not self.failed_branches
                and self.results_found and not self.unexplained)

    def problems(self) -> list[str]:
        """One sentence per reason the run is not a success, in the order a person fixes them."""
        out = []
        if self.workflow_status not in ("", "Succeeded"):
            out.append(f"the workflow ended {self.workflow_status}")
        for node in self.failed_steps:
            out.append(f"step {node.display_name} [{node.template}] {node.phase}"
                       + (f": {node.message}" if node.message else ""))
        if self.failed_branches and not self.failed_steps:
            names = ", ".join(n.display_name for n in self.failed_branches)
            out.append(f"branch(es) {names} failed")
        if not self.results_found:
            out.append("results.json was not written (aggregate did not finish)")
        for miss in self.unexplained:
            out.append(f"missing {describe(miss)}: {miss.reason}")
        return out


def describe(miss: Missing) -> str:
    return " ".join(x for x in (miss.step, miss.arch, miss.format, miss.device_id, miss.delegate) if x)


def parse_failures(text: str) -> list[FailedNode]:
    """`{{workflow.failures}}` as the exit handler receives it.

    Argo marshals the failed nodes to a JSON list and then quotes that text (strconv.Quote in
    the controller's operator.go), so the argument is a JSON string holding a JSON list; with no
    failure it is the quoted `null`. A plain list is accepted too.
    """
    text = (text or "").strip()
    if not text:
        return []
    try:
        value = json.loads(text)
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"bad setting --failures: not the JSON list Argo gives as {{{{workflow.failures}}}} "
                          f"({exc}); got {text[:120]!r}") from None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"bad setting --failures: expected a JSON list of failed nodes, got {text[:120]!r}")
    return [FailedNode(display_name=str(v.get("displayName", "?")), template=str(v.get("templateName", "")),
                       phase=str(v.get("phase", "")), message=str(v.get("message", "") or ""),
                       pod_name=str(v.get("podName", "") or "")) for v in value]


def is_explained(miss: Missing, results: Results) -> bool:
    """A gap is excused only when it is a measurement on a phone the runner listed as offline."""
    if miss.step != "benchmark" or not miss.device_id or not (miss.reason or "").startswith(OFFLINE_REASON):
        return False
    device = next((d for d in results.devices if d.id == miss.device_id), None)
    return device is None or device.state == "offline"


def judge(workflow_status: str, failures: list[FailedNode], results: Results | None,
          step_templates: frozenset[str] | set[str] | None = None) -> Verdict:
    """The verdict on one run.

    workflow_status: Argo's `{{workflow.status}}` ("" outside Argo). failures: parse_failures().
    results: the run's results.json, None when it was not written. step_templates: the
    templates that are steps (pods); their final failures are listed by name. None: every
    template that is not a branch DAG.
    """
    if workflow_status and workflow_status not in ARGO_PHASES:
        raise ConfigError(f"bad setting --workflow-status {workflow_status!r}; valid values: "
                          f"{', '.join(ARGO_PHASES)} (Argo's {{{{workflow.status}}}}), or empty outside Argo")
    final = [f for f in failures if f.phase in ("Failed", "Error") and not f.is_attempt]
    branches = [f for f in final if f.template in BRANCH_TEMPLATES]
    steps = [f for f in final if f.template not in BRANCH_TEMPLATES
             and (step_templates is None or f.template in step_templates)]
    # Each step failure appears twice (the retry node and, for an expanded task, its group);
    # one line per distinct name is enough to act on.
    seen, unique_steps = set(), []
    for f in sorted(steps, key=lambda f: (f.template, f.display_name)):
        if (f.template, f.display_name) not in seen:
            seen.add((f.template, f.display_name))
            unique_steps.append(f)
    explained, unexplained = [], []
    for miss in (results.missing if results else []):
        (explained if is_explained(miss, results) else unexplained).append(miss)
    return Verdict(workflow_status=workflow_status, failed_steps=unique_steps, failed_branches=branches,
                   unexplained=unexplained, explained=explained, results_found=results is not None)
