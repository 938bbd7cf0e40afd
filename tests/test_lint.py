"""The lint checks on Argo objects and rendered manifests: the repository is clean, and every kind
of mistake planted in a copy is caught (where the strict schema, or kubernetes-validate, lets it through)."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests import lint_argo, lint_k8s
from tests.test_argo import all_docs, argo_errors, workflow_template
from tests.test_manifests import OVERLAYS, kubernetes_errors, kubernetes_versions, render


def test_argo_folder_is_clean():
    problems = [e for _, doc in all_docs() for e in lint_argo.lint(doc)]
    (cron,) = [d for _, d in all_docs() if d["kind"] == "CronWorkflow"]
    problems += lint_argo.lint_workflow_arguments(cron["spec"]["workflowSpec"], workflow_template(), "cron")
    (repos,) = [d for _, d in all_docs() if d["kind"] == "ConfigMap"]
    for key, text in repos["data"].items():
        problems += lint_argo.lint_artifact_repository_text(text, f"artifact-repositories/{key}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_are_clean(overlay):
    docs = list(render(overlay))
    problems = lint_k8s.lint(docs) + [e for d in docs for e in lint_argo.lint(d)]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------- Argo: planted mistakes


def planted(edit) -> dict:
    doc = copy.deepcopy(workflow_template())
    edit({t["name"]: t for t in doc["spec"]["templates"]}, doc["spec"])
    return doc


def task(templates, dag, name):
    return next(t for t in templates[dag]["dag"]["tasks"] if t["name"] == name)


ARGO_MISTAKES = {
    "task names a missing template": (
        lambda t, s: task(t, "main", "aggregate").update(template="agregate"), "no template named 'agregate'"),
    "depends on a missing task": (
        lambda t, s: task(t, "model", "benchmark").update(depends="bench-plans.Succeeded"),
        "no task named 'bench-plans'"),
    "depends result misspelt": (
        lambda t, s: task(t, "model", "evaluate").update(depends="convert.Suceeded"), "'Suceeded' is not a task result"),
    "pod GC strategy misspelt": (
        lambda t, s: s["podGC"].update(strategy="OnPodSucess"), "'OnPodSucess' is not a pod GC strategy"),
    "retry policy misspelt": (
        lambda t, s: t["prepare"]["retryStrategy"].update(retryPolicy="Allways"), "'Allways' is not a retry policy"),
    "undeclared workflow parameter": (
        lambda t, s: t["prepare"]["container"]["args"].append("--epochs={{workflow.parameters.epoch}}"),
        "declares no parameter 'epoch'"),
    "undeclared input parameter": (
        lambda t, s: t["convert"]["container"]["args"].append("--arch={{inputs.parameters.archs}}"),
        "has no input parameter 'archs'"),
    "output the task's template does not declare": (
        lambda t, s: task(t, "main", "architecture").update(withParam="{{tasks.prepare.outputs.parameters.arch}}"),
        "declares no output parameter 'arch'"),
    "output of a task that is not a dependency": (
        lambda t, s: task(t, "model", "evaluate")["arguments"]["parameters"].append(
            {"name": "plan", "value": "{{tasks.bench-plan.outputs.parameters.plan}}"}),
        "is not among this task's dependencies"),
    "a workflow parameter inside an expression": (
        lambda t, s: t["aggregate"]["container"]["args"].append(
            "{{=workflow.parameters.regresions == 'fail' ? '--x' : '--y'}}"), "declares no parameter 'regresions'"),
    "exit-handler variable outside the exit handler": (
        lambda t, s: t["aggregate"]["container"]["args"].append("--status={{workflow.status}}"),
        "exists only in the exit handler"),
    "item outside a loop": (
        lambda t, s: task(t, "model", "evaluate")["arguments"]["parameters"].append({"name": "x", "value": "{{item}}"}),
        "outside a task with withItems"),
    "entrypoint names no template": (lambda t, s: s.update(entrypoint="mian"), "entrypoint: no template named 'mian'"),
    "parameter default outside its enum": (
        lambda t, s: next(p for p in s["arguments"]["parameters"] if p["name"] == "regressions").update(
            value="fial"), "is not in its enum"),
    "mutex name with an undeclared input": (
        lambda t, s: t["benchmark"]["synchronization"]["mutexes"][0].update(
            name="bench-device-{{inputs.parameters.devices}}"), "has no input parameter 'devices'"),
}


@pytest.mark.parametrize("case", ARGO_MISTAKES, ids=list(ARGO_MISTAKES))
def test_argo_lint_catches(case):
    edit, expected = ARGO_MISTAKES[case]
    bad = planted(edit)
    problems = lint_argo.lint(bad)
    assert any(expected in p for p in problems), f"{case} not caught: {problems}"
    assert argo_errors(bad) == [], "the strict schema caught this one already"


def test_cron_workflow_enum_and_arguments_are_checked():
    (cron,) = [copy.deepcopy(d) for _, d in all_docs() if d["kind"] == "CronWorkflow"]
    cron["spec"]["concurrencyPolicy"] = "Forbidden"
    assert any("'Forbidden' is not a concurrency policy" in p for p in lint_argo.lint(cron))
    assert argo_errors(cron) == []
    cron["spec"]["workflowSpec"]["arguments"]["parameters"].append({"name": "arch", "value": "all"})
    assert lint_argo.lint_workflow_arguments(cron["spec"]["workflowSpec"], workflow_template(), "cron")


def test_artifact_key_with_an_unknown_variable_is_caught():
    text = "s3:\n  keyFormat: runs/{{workflow.nmae}}/logs/{{pod.name}}\n"
    assert lint_argo.lint_artifact_repository_text(text, "x") == [
        "x: {{workflow.nmae}} is not a variable Argo fills in an artifact key"]


def test_depends_expression_is_read_like_argo():
    assert lint_argo.depends_names("prepare.Succeeded && (architecture.Succeeded || architecture.Failed)") == [
        ("prepare", "Succeeded"), ("architecture", "Succeeded"), ("architecture", "Failed")]
    assert lint_argo.depends_names("!a && b-c.AnySucceeded") == [("a", None), ("b-c", "AnySucceeded")]


# ---------------------------------------------------------------------------- manifests: planted mistakes


def kind_docs() -> list[dict]:
    return copy.deepcopy(list(render("kind")))


def named(docs, kind, name) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def minio_container(docs) -> dict:
    return named(docs, "Deployment", "minio")["spec"]["template"]["spec"]["containers"][0]


K8S_MISTAKES = {
    "Service selector matching no pod": (
        lambda d: named(d, "Service", "minio")["spec"]["selector"].update({"app.kubernetes.io/name": "mini0"}),
        "matches no pod template"),
    "named targetPort no container declares": (
        lambda d: named(d, "Service", "minio")["spec"]["ports"][0].update(targetPort="apii"),
        "targets 'apii', which no container"),
    "probe on an undeclared port name": (
        lambda d: minio_container(d)["readinessProbe"]["httpGet"].update(port="health"),
        "port 'health' is not a port this container names"),
    "memory quantity in lower case": (
        lambda d: minio_container(d)["resources"]["limits"].update(memory="2gi"), "'2gi' is not a quantity"),
    "CPU in millicores with a capital M": (
        lambda d: minio_container(d)["resources"]["requests"].update(cpu="100Mm"), "unknown suffix 'Mm'"),
    "memory in GB": (
        lambda d: minio_container(d)["resources"]["requests"].update(memory="256MB"), "'256MB' is not a quantity"),
    "storage with two dots": (
        lambda d: named(d, "PersistentVolumeClaim", "minio-data")["spec"]["resources"]["requests"].update(
            storage="5..0Gi"), "is not a number"),
    "emptyDir size limit with a space": (
        lambda d: named(d, "Deployment", "minio")["spec"]["template"]["spec"]["volumes"][1]["emptyDir"].update(
            sizeLimit="1 Gi"), "'1 Gi' is not a quantity"),
    "NetworkPolicy admitting pods that do not exist": (
        lambda d: named(d, "NetworkPolicy", "scenebench-runner")["spec"]["ingress"][0]["from"][0]["podSelector"][
            "matchLabels"].update({"app.kubernetes.io/component": "jobs"}), "matches no pod template"),
}


@pytest.mark.parametrize("case", K8S_MISTAKES, ids=list(K8S_MISTAKES))
def test_manifest_lint_catches(case):
    edit, expected = K8S_MISTAKES[case]
    docs, clean = kind_docs(), kind_docs()
    edit(docs)
    problems = lint_k8s.lint(docs)
    assert any(expected in p for p in problems), f"{case} not caught: {problems}"
    (changed,) = [d for d, c in zip(docs, clean) if d != c]
    assert kubernetes_errors(changed, kubernetes_versions()[-1]) == [], "kubernetes-validate caught this one already"


@pytest.mark.parametrize("value,ok", [
    ("500m", True), ("2Gi", True), ("1.5", True), ("8e3", True), ("1E-2", True), (3, True), ("0", True),
    ("2gi", False), ("256MB", False), ("1..5Gi", False), ("", False), ("Gi", False), ("1 Gi", False), (True, False),
])
def test_quantity_parser_follows_apimachinery(value, ok):
    assert (lint_k8s.quantity_error(value) is None) == ok


def test_training_pod_patch_quantities_are_checked_after_substitution():
    """The train step's resources are Argo parameters: a bad value in an overlay surfaces once substituted."""
    (wt,) = [d for d in render("gpu") if d["kind"] == "WorkflowTemplate"]
    text = next(t for t in wt["spec"]["templates"] if t["name"] == "train")["podSpecPatch"]
    params = {p["name"]: p["value"] for p in wt["spec"]["arguments"]["parameters"]}
    params["train-memory"] = "32gb"
    for name, value in params.items():
        text = text.replace("{{workflow.parameters.%s}}" % name, value)
    patch = yaml.safe_load(text)
    assert [p for p, v in lint_k8s.quantities({"spec": patch}) if lint_k8s.quantity_error(v)] == [
        "spec/containers/0/resources/requests/memory", "spec/containers/0/resources/limits/memory"]
