"""Checks on Argo objects that the strict JSON schema cannot make.

The schema says what keys exist and their types; it cannot say that a task's `template`
names a template that exists, that `depends` names tasks of the same DAG, that a string field
holds one of Argo's enum values, or that a `{{…}}` reference points at a parameter or output
that is declared. Each of those mistakes passes `kubectl apply` and fails at run time, hours
into a night. `lint(doc)` returns one readable line per mistake (empty when clean).

The enum values are Argo's own constants (pkg/apis/workflow/v1alpha1: RetryPolicy,
PodGCStrategy, ConcurrencyPolicy, and dag.go's TaskResults for `depends`); the variables are
those of Argo's docs/variables.md.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

RETRY_POLICIES = ("Always", "OnFailure", "OnError", "OnTransientError")
POD_GC_STRATEGIES = ("", "OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess")
CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
IMAGE_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TASK_RESULTS = ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed")
# Variables that exist in every template (docs/variables.md: Global, Container/Script Templates).
GLOBAL = re.compile(r"workflow\.(name|namespace|uid|mainEntrypoint|serviceAccountName|priority|duration|"
                    r"scheduledTime|creationTimestamp(\.[A-Za-z0-9]+)?|parameters(\.json)?|"
                    r"(annotations|labels)\.[A-Za-z0-9_./-]+|outputs\.(parameters|artifacts)\.[A-Za-z0-9_-]+)"
                    r"|pod\.name|retries|node\.name")
# Only the exit handler sees these (docs/variables.md: Exit Handler).
EXIT_HANDLER_ONLY = ("workflow.status", "workflow.failures")
LOOP_FIELDS = ("withItems", "withParam", "withSequence")

_SIMPLE = re.compile(r"\{\{\s*([^=}][^}]*?)\s*\}\}")
_EXPR = re.compile(r"\{\{=(.*?)\}\}", re.S)
# In an expression, names are dotted identifiers, or `['name-with-dashes']` subscripts.
_EXPR_NAME = re.compile(r"\b((?:workflow|inputs|outputs|tasks|steps)(?:\.[A-Za-z0-9_]+|\['[^']+'\])+|item\b(?:\.[A-Za-z0-9_]+)?)")
_DEPENDS_TOKEN = re.compile(r"([A-Za-z0-9_-]+)(?:\.([A-Za-z]+))?")


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a YAML tree with its path (a/b/0/c)."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(v, f"{path}/{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings(v, f"{path}/{i}")


def references(text: str) -> Iterator[str]:
    """The variable names a string refers to, in `{{x}}` tags and inside `{{= expr}}` expressions."""
    for m in _SIMPLE.finditer(text):
        yield m.group(1).strip()
    for m in _EXPR.finditer(text):
        for name in _EXPR_NAME.findall(m.group(1)):
            yield re.sub(r"\['([^']+)'\]", r".\1", name)


def depends_names(expression: str) -> list[tuple[str, str | None]]:
    """(task, result) pairs of a `depends` expression, e.g. 'a.Succeeded && !b' -> [('a','Succeeded'), ('b', None)]."""
    stripped = re.sub(r"&&|\|\||[!()]", " ", expression or "")
    out = []
    for token in stripped.split():
        m = _DEPENDS_TOKEN.fullmatch(token)
        out.append((m.group(1), m.group(2)) if m else (token, "?"))
    return out


def _names(items: list[dict] | None) -> set[str]:
    return {i["name"] for i in items or [] if "name" in i}


def _reachable(templates: dict[str, dict], start: str | None) -> set[str]:
    seen: set[str] = set()
    todo = [start] if start else []
    while todo:
        name = todo.pop()
        if name in seen or name not in templates:
            continue
        seen.add(name)
        t = templates[name]
        for task in (t.get("dag") or {}).get("tasks", []):
            todo.append(task.get("template"))
        for group in t.get("steps") or []:
            for step in group:
                todo.append(step.get("template"))
    return seen


class _Spec:
    """One WorkflowSpec under lint, with what a reference may point at."""

    def __init__(self, spec: dict, where: str):
        self.spec, self.where = spec, where
        self.templates = {t["name"]: t for t in spec.get("templates", [])}
        self.params = _names((spec.get("arguments") or {}).get("parameters"))
        exit_template = spec.get("onExit") or ((spec.get("hooks") or {}).get("exit") or {}).get("template")
        self.exit_handler = _reachable(self.templates, exit_template)
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{self.where}/{path}: {message}")

    def outputs_of(self, template_name: str | None) -> set[str]:
        t = self.templates.get(template_name or "", {})
        return _names((t.get("outputs") or {}).get("parameters"))

    def check_reference(self, path: str, ref: str, template: dict, task: dict | None = None,
                        siblings: dict[str, dict] | None = None, ancestors: set[str] | None = None) -> None:
        """One `{{ref}}` found in `template` (inside `task` of its DAG, if any)."""
        inputs = _names((template.get("inputs") or {}).get("parameters"))
        artifacts = _names((template.get("inputs") or {}).get("artifacts"))
        parts = ref.split(".")
        if ref.startswith("workflow.parameters.") and ref != "workflow.parameters.json":
            name = ref.split(".", 2)[2]
            if name not in self.params:
                self.error(path, f"{{{{{ref}}}}}: the workflow declares no parameter {name!r} "
                                 f"(declared: {', '.join(sorted(self.params)) or 'none'})")
        elif ref in EXIT_HANDLER_ONLY:
            if template["name"] not in self.exit_handler:
                self.error(path, f"{{{{{ref}}}}} exists only in the exit handler, not in template {template['name']!r}")
        elif parts[:2] == ["inputs", "parameters"] and len(parts) >= 3:
            if parts[2] not in inputs:
                self.error(path, f"{{{{{ref}}}}}: template {template['name']!r} has no input parameter {parts[2]!r} "
                                 f"(inputs: {', '.join(sorted(inputs)) or 'none'})")
        elif parts[:2] == ["inputs", "artifacts"] and len(parts) >= 3:
            if parts[2] not in artifacts:
                self.error(path, f"{{{{{ref}}}}}: template {template['name']!r} has no input artifact {parts[2]!r}")
        elif parts[0] == "item":
            if task is None or not any(task.get(k) for k in LOOP_FIELDS):
                self.error(path, f"{{{{{ref}}}}} outside a task with {' / '.join(LOOP_FIELDS)}")
        elif parts[0] in ("tasks", "steps") and len(parts) >= 2:
            self.check_task_reference(path, ref, parts, siblings or {}, ancestors)
        elif not GLOBAL.fullmatch(ref):
            self.error(path, f"{{{{{ref}}}}} is not a variable Argo defines here")

    def check_task_reference(self, path: str, ref: str, parts: list[str], siblings: dict[str, dict],
                             ancestors: set[str] | None) -> None:
        name = parts[1]
        if name not in siblings:
            self.error(path, f"{{{{{ref}}}}}: no task {name!r} in this DAG")
            return
        if ancestors is not None and name not in ancestors:
            self.error(path, f"{{{{{ref}}}}}: task {name!r} is not among this task's dependencies, "
                             "so its outputs are not there when it starts")
        if parts[2:4] == ["outputs", "parameters"] and len(parts) >= 5:
            declared = self.outputs_of(siblings[name].get("template"))
            if parts[4] not in declared:
                self.error(path, f"{{{{{ref}}}}}: template {siblings[name].get('template')!r} of task {name!r} "
                                 f"declares no output parameter {parts[4]!r} "
                                 f"(outputs: {', '.join(sorted(declared)) or 'none'})")

    def lint(self) -> list[str]:
        spec = self.spec
        for field in ("entrypoint", "onExit"):
            if spec.get(field) and spec[field] not in self.templates:
                self.error(field, f"no template named {spec[field]!r}")
        strategy = (spec.get("podGC") or {}).get("strategy", "")
        if strategy not in POD_GC_STRATEGIES:
            self.error("podGC/strategy", f"{strategy!r} is not a pod GC strategy; valid: "
                                         f"{', '.join(s for s in POD_GC_STRATEGIES if s)}")
        for i, p in enumerate((spec.get("arguments") or {}).get("parameters") or []):
            if p.get("enum") and "value" in p and p["value"] not in p["enum"]:
                self.error(f"arguments/parameters/{i}", f"default {p['value']!r} of {p['name']!r} is not in its "
                                                        f"enum {p['enum']}")
        for name, t in self.templates.items():
            self.lint_template(name, t)
        return self.errors

    def lint_template(self, name: str, t: dict) -> None:
        where = f"templates/{name}"
        policy = (t.get("retryStrategy") or {}).get("retryPolicy")
        if policy is not None and policy not in RETRY_POLICIES:
            self.error(f"{where}/retryStrategy/retryPolicy",
                       f"{policy!r} is not a retry policy; valid: {', '.join(RETRY_POLICIES)}")
        for kind in ("container", "script"):
            pull = (t.get(kind) or {}).get("imagePullPolicy")
            if pull is not None and pull not in IMAGE_PULL_POLICIES:
                self.error(f"{where}/{kind}/imagePullPolicy",
                           f"{pull!r} is not a pull policy; valid: {', '.join(IMAGE_PULL_POLICIES)}")
        own = {k: v for k, v in t.items() if k not in ("dag", "steps")}
        for path, text in strings(own, where):
            for ref in references(text):
                self.check_reference(path, ref, t)
        if "dag" in t:
            self.lint_dag(where, t)
        for g, group in enumerate(t.get("steps") or []):
            for s, step in enumerate(group):
                self.check_template_ref(f"{where}/steps/{g}/{s}", step)
                for path, text in strings(step, f"{where}/steps/{g}/{s}"):
                    for ref in references(text):
                        if not ref.startswith("steps."):
                            self.check_reference(path, ref, t, task=step)

    def check_template_ref(self, path: str, task: dict) -> None:
        if "template" in task and task["template"] not in self.templates:
            self.error(f"{path}/template", f"no template named {task['template']!r} "
                                           f"(templates: {', '.join(sorted(self.templates))})")
        if task.get("onExit") and task["onExit"] not in self.templates:
            self.error(f"{path}/onExit", f"no template named {task['onExit']!r}")

    def lint_dag(self, where: str, t: dict) -> None:
        tasks = {task["name"]: task for task in t["dag"].get("tasks", [])}
        parents: dict[str, set[str]] = {}
        for name, task in tasks.items():
            path = f"{where}/dag/tasks/{name}"
            self.check_template_ref(path, task)
            deps = set(task.get("dependencies") or [])
            for dep, result in depends_names(task.get("depends", "")):
                deps.add(dep)
                if result is not None and result not in TASK_RESULTS:
                    self.error(f"{path}/depends", f"{dep}.{result}: {result!r} is not a task result; valid: "
                                                  f"{', '.join(TASK_RESULTS)}")
            for dep in sorted(deps):
                if dep not in tasks:
                    self.error(f"{path}/depends", f"no task named {dep!r} in this DAG "
                                                  f"(tasks: {', '.join(sorted(tasks))})")
            parents[name] = deps & set(tasks)

        def ancestors(name: str, seen: set[str] | None = None) -> set[str]:
            seen = set() if seen is None else seen
            for p in parents.get(name, ()):
                if p not in seen:
                    seen.add(p)
                    ancestors(p, seen)
            return seen

        for name, task in tasks.items():
            for path, text in strings(task, f"{where}/dag/tasks/{name}"):
                for ref in references(text):
                    self.check_reference(path, ref, t, task=task, siblings=tasks, ancestors=ancestors(name))


def lint(doc: dict) -> list[str]:
    """Every mistake in one Argo document (Workflow, WorkflowTemplate, ClusterWorkflowTemplate, CronWorkflow)."""
    kind, name = doc.get("kind", "?"), (doc.get("metadata") or {}).get("name", "?")
    where = f"{kind}/{name}"
    if kind == "CronWorkflow":
        errors = []
        policy = doc["spec"].get("concurrencyPolicy")
        if policy is not None and policy not in CONCURRENCY_POLICIES:
            errors.append(f"{where}/spec/concurrencyPolicy: {policy!r} is not a concurrency policy; valid: "
                          f"{', '.join(CONCURRENCY_POLICIES)}")
        spec = doc["spec"].get("workflowSpec") or {}
        return errors + (_Spec(spec, f"{where}/spec/workflowSpec").lint() if spec.get("templates") else [])
    if kind in ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate"):
        return _Spec(doc.get("spec") or {}, f"{where}/spec").lint()
    return []


def lint_workflow_arguments(workflow_spec: dict, template: dict, where: str) -> list[str]:
    """A Workflow or CronWorkflow that runs a WorkflowTemplate by reference passes only parameters it declares."""
    declared = _names((template["spec"].get("arguments") or {}).get("parameters"))
    given = (workflow_spec.get("arguments") or {}).get("parameters") or []
    return [f"{where}: parameter {p['name']!r} is not declared by WorkflowTemplate "
            f"{template['metadata']['name']!r}" for p in given if p["name"] not in declared]


def lint_artifact_repository_text(text: str, where: str) -> list[str]:
    """keyFormat and the like may use only the variables Argo fills when it archives an artifact."""
    allowed = re.compile(r"workflow\.(name|namespace|uid|creationTimestamp(\.[A-Za-z0-9]+)?)|pod\.name")
    return [f"{where}: {{{{{ref}}}}} is not a variable Argo fills in an artifact key"
            for ref in references(text) if not allowed.fullmatch(ref)]
