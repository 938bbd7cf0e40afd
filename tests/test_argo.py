"""The Argo templates: strict schema validation, job CLIs that really parse, registry-driven fan-out."""

from __future__ import annotations

import argparse
import copy
import functools
import importlib
import itertools
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from common.archs import ARCH_NAMES
from common.errors import ConfigError
from common.schemas import FORMATS
from common.settings import JobSettings, load
from tests.fixtures.argo_failures import FAILED_NODES

REPO = Path(__file__).resolve().parents[1]
ARGO_DIR = REPO / "argo"
SCHEMA_ENV = "SCENEBENCH_ARGO_SCHEMA"
DEFAULT_SCHEMA = REPO / "tests" / "data" / "argo" / "argo-workflows.schema.json"
DEF = "io.argoproj.workflow.v1alpha1."
KIND_DEFINITIONS = {
    kind: DEF + kind
    for kind in ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow", "WorkflowEventBinding")
}
# Files in argo/ that are not Argo objects, and what they are checked as instead.
NOT_ARGO = {"kustomization.yaml", "README.md"}


# ---------------------------------------------------------------------------- schema


def schema_path() -> Path:
    return Path(os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA)


@functools.lru_cache(maxsize=1)
def strict_definitions() -> dict:
    """The Argo v4.1 schema's definitions with the two in-memory patches of its README:
    IntOrString accepts integers, and every object with properties rejects unknown keys."""
    path = schema_path()
    if not path.is_file():
        pytest.fail(
            f"Argo JSON schema not found at {path}: the repository keeps it in "
            f"tests/data/argo/ (see its README), or set {SCHEMA_ENV}=/path/to/schema.json"
        )
    definitions = copy.deepcopy(json.loads(path.read_text())["definitions"])
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"type": ["string", "integer"]}
    for definition in definitions.values():
        if "properties" in definition:
            definition["additionalProperties"] = False
    return definitions


def argo_validator(definition: str) -> jsonschema.protocols.Validator:
    definitions = strict_definitions()
    assert definition in definitions, f"no definition {definition} in the Argo schema"
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "definitions": definitions,
        "$ref": f"#/definitions/{definition}",
    }
    return jsonschema.Draft202012Validator(schema)


def argo_errors(doc: dict, definition: str | None = None) -> list[str]:
    """Every schema violation of one document, as readable lines (empty when valid)."""
    definition = definition or KIND_DEFINITIONS.get(doc.get("kind", ""))
    if definition is None:
        return [f"{doc.get('kind')!r} is not an Argo kind"]
    errors = sorted(argo_validator(definition).iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


# ---------------------------------------------------------------------------- documents


def argo_files() -> list[Path]:
    return sorted(p for p in ARGO_DIR.glob("*.yaml") if p.name not in NOT_ARGO)


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_docs() -> list[tuple[str, dict]]:
    return [(f"{p.name}#{i}", d) for p in argo_files() for i, d in enumerate(load_docs(p))]


def workflow_template() -> dict:
    (doc,) = [d for _, d in all_docs() if d["kind"] == "WorkflowTemplate"]
    return doc


def default_parameters(template: dict | None = None) -> dict[str, str]:
    template = template or workflow_template()
    return {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}


def containers(template: dict) -> dict[str, dict]:
    return {t["name"]: t["container"] for t in template["spec"]["templates"] if "container" in t}


def test_argo_folder_has_the_expected_objects():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for _, d in all_docs())
    assert kinds == [
        ("ConfigMap", "artifact-repositories"),
        ("CronWorkflow", "scenebench-nightly"),
        ("WorkflowTemplate", "scenebench"),
    ]


@pytest.mark.parametrize("name,doc", all_docs(), ids=[n for n, _ in all_docs()])
def test_argo_documents_validate_strictly(name, doc):
    if doc["kind"] == "ConfigMap":
        # The artifact repository lives as YAML inside the ConfigMap: check that YAML.
        for key, text in doc["data"].items():
            errors = argo_errors(yaml.safe_load(text), DEF + "ArtifactRepository")
            assert not errors, f"{name} data.{key}:\n" + "\n".join(errors)
        return
    errors = argo_errors(doc)
    assert not errors, f"{name}:\n" + "\n".join(errors)


def test_strict_schema_rejects_a_misspelt_key():
    doc = copy.deepcopy(workflow_template())
    doc["spec"]["templates"][0]["dag"]["tasks"][1]["withParams"] = "[]"
    assert any("withParams" in e for e in argo_errors(doc))


def test_strict_schema_accepts_integer_retry_limit():
    doc = copy.deepcopy(workflow_template())
    prepare = next(t for t in doc["spec"]["templates"] if t["name"] == "prepare")
    assert isinstance(prepare["retryStrategy"]["limit"], int)
    assert argo_errors(doc) == []


def test_cron_workflow_runs_the_template_nightly_with_all_architectures():
    (cron,) = [d for _, d in all_docs() if d["kind"] == "CronWorkflow"]
    spec = cron["spec"]
    assert spec["schedules"] and spec["timezone"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["workflowSpec"]["workflowTemplateRef"]["name"] == workflow_template()["metadata"]["name"]
    params = {p["name"]: p["value"] for p in spec["workflowSpec"]["arguments"]["parameters"]}
    assert params["archs"] == "all"
    assert params["trigger"] == "nightly"
    unknown = set(params) - set(default_parameters())
    assert not unknown, f"CronWorkflow passes parameters the template does not declare: {unknown}"


def test_template_has_the_run_controls():
    spec = workflow_template()["spec"]
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["archiveLogs"] is True
    assert spec["podGC"]["strategy"]
    assert spec["ttlStrategy"]
    assert spec["onExit"] in {t["name"] for t in spec["templates"]}
    for name, c in containers(workflow_template()).items():
        t = next(t for t in spec["templates"] if t["name"] == name)
        if name != spec["onExit"]:
            assert "retryStrategy" in t and "backoff" in t["retryStrategy"], f"{name} has no retry with backoff"
            assert t.get("activeDeadlineSeconds"), f"{name} has no deadline"


def test_template_parameters_cover_the_issue():
    params = default_parameters()
    for name in ("archs", "formats", "data", "epochs", "image-size", "weights", "runner-url", "store", "gpus", "c"):
        assert name in params, name
    assert params["archs"] == "all"
    assert params["gpus"] == "0"


def test_every_parameter_reference_is_declared():
    text = (ARGO_DIR / "workflowtemplate.yaml").read_text()
    used = set(re.findall(r"workflow\.parameters\.([A-Za-z0-9_-]+)", text))
    assert used <= set(default_parameters()), used - set(default_parameters())


# ---------------------------------------------------------------------------- fan-out from the registry


def test_no_architecture_is_written_in_argo():
    """The fan-out list comes from the registry through prepare's output, never a copy."""
    for path in ARGO_DIR.iterdir():
        if path.is_file() and path.name != "README.md":
            text = path.read_text()
            for arch in ARCH_NAMES:
                assert arch not in text, f"{path.name} names the architecture {arch!r}"


def test_fan_out_reads_prepare_outputs():
    spec = workflow_template()["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    main = {t["name"]: t for t in templates[spec["entrypoint"]]["dag"]["tasks"]}
    assert main["architecture"]["withParam"] == "{{tasks.prepare.outputs.parameters.archs}}"
    outputs = {p["name"]: p["valueFrom"]["path"] for p in templates["prepare"]["outputs"]["parameters"]}
    outputs_dir = next(a.split("=", 1)[1] for a in templates["prepare"]["container"]["args"]
                       if a.startswith("--outputs-dir="))
    assert outputs["archs"] == f"{outputs_dir}/archs.json"
    assert outputs["formats"] == f"{outputs_dir}/formats.json"
    arch_dag = {t["name"]: t for t in templates["architecture"]["dag"]["tasks"]}
    assert arch_dag["model"]["withParam"] == "{{inputs.parameters.formats}}"
    model_dag = {t["name"]: t for t in templates["model"]["dag"]["tasks"]}
    assert model_dag["benchmark"]["withParam"] == "{{tasks.bench-plan.outputs.parameters.plan}}"
    plan_path = templates["bench-plan"]["outputs"]["parameters"][0]["valueFrom"]["path"]
    assert f"--emit-plan={plan_path}" in templates["bench-plan"]["container"]["args"]


def test_aggregate_runs_when_branches_fail():
    spec = workflow_template()["spec"]
    main = {t["name"]: t for t in next(t for t in spec["templates"] if t["name"] == spec["entrypoint"])["dag"]["tasks"]}
    depends = main["aggregate"]["depends"]
    assert "architecture.Failed" in depends and "architecture.Errored" in depends


# ---------------------------------------------------------------------------- job command lines


EXPR = re.compile(r"\{\{=(.*?)\}\}")
SIMPLE = re.compile(r"\{\{\s*([^}=][^}]*?)\s*\}\}")
# Commands that are not scenebench jobs, and the template that may use each (none today).
NON_JOB_COMMANDS: dict[str, list[str]] = {}


def expand(arg: str, values: dict[str, str]) -> list[str]:
    """Every concrete string an Argo argument can become: simple `{{x}}` references are
    replaced from `values`; a `{{= cond ? 'a' : 'b'}}` expression yields both branches."""
    variants = [arg]
    m = EXPR.search(arg)
    if m:
        branches = re.findall(r"'([^']*)'", m.group(1).split("?", 1)[1])
        assert branches, f"cannot read the branches of {m.group(0)}"
        variants = [arg[: m.start()] + b + arg[m.end():] for b in branches]

    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise AssertionError(f"no representative value for {{{{{key}}}}} in {arg!r}")
        return values[key]

    return [SIMPLE.sub(sub, v) for v in variants]


def representative_values(params: dict[str, str], arch: str, fmt: str) -> dict[str, str]:
    values = {f"workflow.parameters.{k}": v for k, v in params.items()}
    values.update({
        "workflow.name": "scenebench-x7k2p",
        "inputs.parameters.arch": arch,
        "inputs.parameters.format": fmt,
        "inputs.parameters.device": "host",
        "inputs.parameters.delegate": "cpu",
        # what the exit handler receives: Argo's phase, and the failed nodes quoted as Argo quotes them
        "workflow.status": "Succeeded",
        "workflow.failures": json.dumps(json.dumps(FAILED_NODES)),
    })
    return values


def parameter_sets() -> list[tuple[str, dict[str, str]]]:
    """The template defaults, and a submission that lists architectures as Argo passes JSON."""
    defaults = default_parameters()
    listed = dict(defaults, archs=json.dumps(list(ARCH_NAMES)), formats='["float32","int8","float16","dynamic"]',
                  data="s3://scenebench/sources/camsdd/", **{"image-size": "96x144"}, weights="none",
                  trigger="nightly", regressions="fail")
    return [("defaults", defaults), ("listed", listed)]


def job_cases():
    for set_name, params in parameter_sets():
        for template_name, container in containers(workflow_template()).items():
            # Steps that take an architecture are checked with every one in the registry.
            per_arch = "inputs.parameters.arch" in json.dumps(container)
            for arch in ARCH_NAMES if per_arch else ARCH_NAMES[:1]:
                case_id = f"{set_name}-{template_name}" + (f"-{arch}" if per_arch else "")
                yield pytest.param(template_name, container, params, arch, id=case_id)


def parse_job_args(module_name: str, argv: list[str]) -> argparse.Namespace:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            pytest.fail(f"{module_name} does not exist yet, but argo/ calls it")
        raise
    parser = module.build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{module_name} rejected the arguments argo/ gives it (exit {exc.code}): {argv}")
    # Parsing only checks the flags; the job's settings model checks the values (closed
    # sets such as --arch or --format), as the job does at start.
    settings_classes = [v for v in vars(module).values()
                        if isinstance(v, type) and issubclass(v, JobSettings) and v.__module__ == module_name]
    if len(settings_classes) == 1:
        try:
            load(settings_classes[0], ns)
        except ConfigError as exc:
            pytest.fail(f"{module_name} settings reject the values argo/ gives: {exc}\nargs: {argv}")
    return ns


@pytest.mark.parametrize("template_name,container,params,arch", job_cases())
def test_container_arguments_parse_with_the_real_job_parser(template_name, container, params, arch):
    command = container["command"]
    if template_name in NON_JOB_COMMANDS:
        assert command == NON_JOB_COMMANDS[template_name]
        return
    assert command[:2] == ["python", "-m"] and command[2].startswith("jobs."), command
    module_name = command[2]
    per_format = "inputs.parameters.format" in json.dumps(container)
    formats = [f.strip().strip('"') for f in params["formats"].strip("[]").split(",")] if per_format else ["-"]
    for fmt in formats:
        variants = [expand(a, representative_values(params, arch, fmt)) for a in container.get("args", [])]
        for argv in itertools.product(*variants):
            ns = parse_job_args(module_name, list(argv))
            assert getattr(ns, "run_id", None) == "scenebench-x7k2p"


def test_int8_qat_fine_tunes_on_a_training_pod_and_every_other_format_converts_on_a_conversion_pod():
    """int8-qat trains before it converts: a CPU conversion pod with a 45-minute deadline cannot
    fine-tune a full-size network. Exactly one of the two conversions runs for each format, and
    what follows waits for whichever ran."""
    from jobs.convert import ConvertSettings

    templates = templates_by_name()
    tasks = {t["name"]: t for t in templates["model"]["dag"]["tasks"]}
    def when(expr: str, fmt: str) -> bool:  # the one form used: 'a' == 'b' or 'a' != 'b' (govaluate)
        m = re.fullmatch(r"'([^']*)' (==|!=) '([^']*)'", expr.replace("{{inputs.parameters.format}}", fmt))
        assert m, expr
        return (m[1] == m[3]) == (m[2] == "==")

    for fmt in FORMATS:
        ran = [name for name in ("convert", "convert-qat") if when(tasks[name]["when"], fmt)]
        assert ran == (["convert-qat"] if fmt == "int8-qat" else ["convert"]), (fmt, ran)
    for name in ("evaluate", "bench-plan"):
        assert tasks[name]["depends"] == "convert.Succeeded || convert-qat.Succeeded"
    qat, train = templates["convert-qat"], templates["train"]
    assert qat["podSpecPatch"] == train["podSpecPatch"]  # a GPU when the training pods have one
    assert "--qat-epochs={{workflow.parameters.qat-epochs}}" in qat["container"]["args"]
    assert qat["container"]["command"] == templates["convert"]["container"]["command"]
    assert default_parameters()["qat-epochs"] == str(ConvertSettings.model_fields["qat_epochs"].default)
    assert seconds(qat["timeout"]) > seconds(templates["convert"]["timeout"])


def test_expand_yields_both_branches_of_an_expression():
    arg = "{{=workflow.parameters.regressions == 'fail' ? '--fail-on-regression' : '--no-fail-on-regression'}}"
    assert expand(arg, {}) == ["--fail-on-regression", "--no-fail-on-regression"]
    assert expand("--arch={{inputs.parameters.arch}}", {"inputs.parameters.arch": "a"}) == ["--arch=a"]


def test_benchmark_fan_out_reads_the_keys_the_plan_has(tmp_path):
    """The plan jobs.benchmark writes (here from its in-process host runner) has every key
    the template's benchmark fan-out reads as {{item.<key>}}."""
    from jobs import benchmark

    path = tmp_path / "plan.json"
    benchmark.emit_plan(load(benchmark.BenchmarkSettings, {"emit_plan": str(path), "devices": "all"}))
    plan = json.loads(path.read_text())
    assert plan and all(isinstance(item, dict) for item in plan)
    templates = {t["name"]: t for t in workflow_template()["spec"]["templates"]}
    (task,) = [t for t in templates["model"]["dag"]["tasks"] if t["name"] == "benchmark"]
    used = set(re.findall(r"\{\{item\.(\w+)\}\}", json.dumps(task)))
    assert used and used <= set(plan[0]), (used, plan[0])
    # ... and each planned pair is accepted back by the benchmark step's own settings.
    for item in plan:
        load(benchmark.BenchmarkSettings, {"devices": item["device"], "delegates": item["delegate"]})


def test_prepare_as_the_template_calls_it_writes_the_fan_out_from_the_registry(tmp_path):
    """Run jobs.prepare with the template's own arguments (a local store, tiny synthetic data):
    every output parameter file appears, and `archs=all` becomes the registry's list."""
    from jobs import prepare

    templates = {t["name"]: t for t in workflow_template()["spec"]["templates"]}
    params = dict(default_parameters(), store=(tmp_path / "store").as_uri(), **{"image-size": "64x96"})
    values = representative_values(params, ARCH_NAMES[0], "float32")
    argv = [expand(a, values)[0] for a in templates["prepare"]["container"]["args"]]
    outputs_dir = next(a.split("=", 1)[1] for a in argv if a.startswith("--outputs-dir="))
    argv = [a.replace(outputs_dir, str(tmp_path / "outputs")) for a in argv] + ["--synthetic-per-class=2"]
    assert prepare.main(argv) == 0
    for output in templates["prepare"]["outputs"]["parameters"]:
        path = Path(output["valueFrom"]["path"].replace(outputs_dir, str(tmp_path / "outputs")))
        assert path.is_file(), f"prepare did not write {output['name']} ({path.name})"
    assert json.loads((tmp_path / "outputs" / "archs.json").read_text()) == list(ARCH_NAMES)
    formats = json.loads((tmp_path / "outputs" / "formats.json").read_text())
    assert formats == [f for f in params["formats"].split(",")]


# ---------------------------------------------------------------------------- a failed night is red


def templates_by_name(template: dict | None = None) -> dict[str, dict]:
    return {t["name"]: t for t in (template or workflow_template())["spec"]["templates"]}


def leaves(dag: dict) -> set[str]:
    """A DAG's leaf tasks, as Argo finds them (findLeafTaskNames): no other task depends on them."""
    names = {t["name"] for t in dag["tasks"]}
    used = {n for t in dag["tasks"] for n in re.findall(r"[A-Za-z0-9_-]+", t.get("depends", "")) if n in names}
    used |= {d for t in dag["tasks"] for d in t.get("dependencies", [])}
    return names - used


def test_the_verdict_exit_handler_decides_the_workflow_phase():
    """`aggregate` is main's only leaf and runs whatever the branches did, so main alone would end
    Succeeded on a night where every branch failed. The exit handler judges the run; Argo fails a
    workflow whose exit handler failed."""
    spec = workflow_template()["spec"]
    templates = templates_by_name()
    assert leaves(templates[spec["entrypoint"]]["dag"]) == {"aggregate"}
    verdict = templates[spec["onExit"]]
    assert verdict["container"]["command"] == ["python", "-m", "jobs.verdict"]
    args = verdict["container"]["args"]
    assert "--workflow-status={{workflow.status}}" in args and "--failures={{workflow.failures}}" in args
    assert verdict["retryStrategy"]["retryPolicy"] == "OnError"  # a red verdict is not retried


def test_exit_handler_as_the_template_calls_it_fails_a_run_with_a_failed_branch(tmp_path):
    from common import layout
    from common.store import LocalStore
    from jobs import verdict as verdict_job
    from tests.test_verdict import green_results

    store = LocalStore(tmp_path / "store")
    results = green_results().model_copy(update={"run_id": "scenebench-x7k2p"})
    store.put_json(layout.results_json(results.run_id), results)
    params = dict(default_parameters(), store=store.uri)
    values = representative_values(params, ARCH_NAMES[0], "float32")
    argv = [expand(a, values)[0] for a in templates_by_name()["verdict"]["container"]["args"]]
    assert verdict_job.main(argv) == 1  # Argo said Succeeded, but ResNet50's training failed for good
    values["workflow.failures"] = json.dumps("null")  # Argo's value when nothing failed
    argv = [expand(a, values)[0] for a in templates_by_name()["verdict"]["container"]["args"]]
    assert verdict_job.main(argv) == 0


def test_bench_plan_failures_are_retried_and_configuration_errors_are_not():
    retry = templates_by_name()["bench-plan"]["retryStrategy"]
    assert retry["retryPolicy"] == "Always" and int(retry["limit"]) >= 1
    # Argo's expression language (expr) on lastRetry.exitCode, evaluated for the two exit codes jobs use
    expression = retry["expression"].replace("asInt(lastRetry.exitCode)", "{code}")
    assert expression == "{code} != 2"
    assert eval(expression.format(code=1)) is True and eval(expression.format(code=2)) is False


# ---------------------------------------------------------------------------- deadlines


def seconds(duration: str | int) -> int:
    """A Go duration as Argo's timeout, backoff and maxDuration take it (e.g. 1h30m, 45m, 30s, 600)."""
    if isinstance(duration, int) or str(duration).isdigit():
        return int(duration)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a duration: {duration!r}"
    h, m, s = (int(x or 0) for x in parts.groups())
    return h * 3600 + m * 60 + s


def worst_case_s(template: dict) -> int:
    """The longest a step can take, all attempts included, as Argo bounds it.

    Each attempt ends within `timeout` of its node's start (it counts Pending: an unscheduled
    pod, a wait for a lock), and within activeDeadlineSeconds of the pod's start. Attempts after
    the first end by first start + backoff.maxDuration (Argo cuts their deadline to it and
    starts none after it); without maxDuration every attempt and back-off adds up.
    """
    attempt = seconds(template.get("timeout") or template["activeDeadlineSeconds"])
    assert seconds(template["activeDeadlineSeconds"]) <= attempt, f"{template['name']}: deadline beyond its timeout"
    retry = template.get("retryStrategy")
    if not retry:
        return attempt
    limit, backoff = int(retry["limit"]), retry["backoff"]
    waits = [seconds(backoff["duration"]) * int(backoff.get("factor", 1)) ** i for i in range(limit)]
    total = attempt * (limit + 1) + sum(waits)
    if backoff.get("maxDuration"):
        total = min(total, max(attempt, seconds(backoff["maxDuration"])))
    return total


def critical_path_s(template: dict, dag_name: str) -> tuple[int, list[str]]:
    """The longest chain through a DAG, nested DAGs expanded, with the steps on it."""
    templates = templates_by_name(template)
    tasks = {t["name"]: t for t in templates[dag_name]["dag"]["tasks"]}
    memo: dict[str, tuple[int, list[str]]] = {}

    def cost(name: str) -> tuple[int, list[str]]:
        t = templates[tasks[name]["template"]]
        return critical_path_s(template, t["name"]) if "dag" in t else (worst_case_s(t), [t["name"]])

    def finish(name: str) -> tuple[int, list[str]]:
        if name not in memo:
            deps = [d for d in re.findall(r"[A-Za-z0-9_-]+", tasks[name].get("depends", "")) if d in tasks]
            before = max((finish(d) for d in deps), default=(0, []))
            own = cost(name)
            memo[name] = (before[0] + own[0], before[1] + own[1])
        return memo[name]

    return max(finish(n) for n in tasks)


def test_deadlines_leave_aggregate_its_time():
    """The slowest possible branch (every step at its worst, all retries used), then aggregate and
    the verdict, end inside the workflow's deadline: a night of failures and timeouts still
    publishes a leaderboard and a verdict. Assumes pods are not held back by the workflow's own
    `parallelism` (a queued node has not started, so no timeout counts for it)."""
    spec = workflow_template()["spec"]
    total, path = critical_path_s(workflow_template(), spec["entrypoint"])
    verdict = worst_case_s(templates_by_name()[spec["onExit"]])
    deadline = spec["activeDeadlineSeconds"]
    assert path[-1] == "aggregate" and "train" in path and "benchmark" in path, path
    assert total + verdict <= deadline, (
        f"worst case {total + verdict} s ({' → '.join(path)} → verdict) exceeds the workflow deadline {deadline} s")
    # and no single step may eat the whole night, as training's 12 h retry budget once did
    for name, t in templates_by_name().items():
        if "container" in t:
            assert worst_case_s(t) <= deadline / 2, f"{name} may run {worst_case_s(t)} s"
            assert t.get("timeout"), f"{name} has no timeout: a Pending pod would wait for ever"


def test_budget_counts_retries_the_way_argo_bounds_them():
    t = {"name": "x", "timeout": "1h", "activeDeadlineSeconds": 3600,
         "retryStrategy": {"limit": 2, "backoff": {"duration": "30s", "factor": 2}}}
    assert worst_case_s(t) == 3 * 3600 + 30 + 60
    t["retryStrategy"]["backoff"]["maxDuration"] = "90m"
    assert worst_case_s(t) == 5400
    t["retryStrategy"]["backoff"]["maxDuration"] = "12h"  # the old training budget: the whole night
    assert worst_case_s(t) == 3 * 3600 + 90
    assert seconds("1h30m") == 5400 and seconds(600) == 600


# ---------------------------------------------------------------------------- one run at a time on a phone


def test_benchmark_steps_hold_a_mutex_per_phone_in_the_v4_form():
    templates = templates_by_name()
    sync = templates["benchmark"]["synchronization"]
    (mutex,) = sync["mutexes"]
    assert mutex["name"] == "bench-device-{{inputs.parameters.device}}"
    assert "namespace" not in mutex  # the namespace of the workflow: nightly, manual and CI runs alike
    for name, t in templates.items():
        if name != "benchmark":
            assert "synchronization" not in t, f"{name} would hold a phone's lock without measuring"
    # v4 has only the list forms; the singular `mutex` of Argo < 3.6 is refused by the strict schema
    legacy = copy.deepcopy(workflow_template())
    bench = next(t for t in legacy["spec"]["templates"] if t["name"] == "benchmark")
    bench["synchronization"] = {"mutex": {"name": "phones"}}
    assert any("mutex" in e for e in argo_errors(legacy))
