"""The Kubernetes manifests: every overlay renders and validates strictly, and every pod is locked down."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests import lint_k8s
from tests.test_argo import argo_errors

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
DEV_SECRETS = MANIFESTS / "overlays" / "kind" / "dev-secrets.yaml"
SENSITIVE_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", re.I)


# ---------------------------------------------------------------------------- rendering


def kubectl() -> str:
    """kubectl from PATH or from this virtualenv (a pip-installed kubectl lands there)."""
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("kubectl is not installed, and its built-in kustomize renders the overlays: "
                    "install kubectl (1.27 or newer) to run these checks")
    return found


@functools.lru_cache(maxsize=None)
def render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run([kubectl(), "kustomize", str(MANIFESTS / "overlays" / overlay)],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def kubernetes_versions() -> list[str]:
    """The kind node's Kubernetes (from mk/cluster.mk) and the newest that kubernetes-validate knows."""
    text = (REPO / "mk" / "cluster.mk").read_text()
    m = re.search(r"^KIND_NODE_IMAGE\s*\?=\s*kindest/node:v(\d+\.\d+)\.\d+@sha256:[0-9a-f]{64}\s*$", text, re.M)
    assert m, "mk/cluster.mk must pin KIND_NODE_IMAGE as kindest/node:vX.Y.Z@sha256:<digest>"
    return sorted({f"{m.group(1)}.0", kubernetes_validate.latest_version()})


def is_argo(doc: dict) -> bool:
    return doc["apiVersion"].startswith("argoproj.io/")


def doc_id(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def kubernetes_errors(doc: dict, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


# ---------------------------------------------------------------------------- strict validation


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(overlay):
    problems = []
    for doc in render(overlay):
        if is_argo(doc):
            problems += [f"{doc_id(doc)}: {e}" for e in argo_errors(doc)]
            continue
        for version in kubernetes_versions():
            problems += [f"{doc_id(doc)} (Kubernetes {version}): {e}" for e in kubernetes_errors(doc, version)]
    assert not problems, "\n".join(problems)


def test_overlays_are_kind_gpu_and_production():
    assert OVERLAYS == ["gpu", "kind", "production"]


def test_secret_templates_validate_strictly():
    for path in sorted((MANIFESTS / "secrets").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for version in kubernetes_versions():
                assert not kubernetes_errors(doc, version), path.name


def test_strict_validation_rejects_a_misspelt_field():
    doc = next(d for d in render("kind") if d["kind"] == "Service")
    bad = json.loads(json.dumps(doc))
    bad["spec"]["port"] = bad["spec"].pop("ports")
    assert kubernetes_errors(bad, kubernetes_versions()[0])


def by_kind(overlay: str, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in render(overlay) if d["kind"] == kind}


def template_params(overlay: str) -> dict[str, str]:
    (wt,) = by_kind(overlay, "WorkflowTemplate").values()
    return {p["name"]: p["value"] for p in wt["spec"]["arguments"]["parameters"]}


def test_everything_lands_in_the_scenebench_namespace():
    for overlay in OVERLAYS:
        for doc in render(overlay):
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == "scenebench", (overlay, doc_id(doc))


def test_kind_overlay_has_minio_runner_bucket_job_and_dev_secrets():
    assert {"minio", "scenebench-runner"} <= set(by_kind("kind", "Deployment"))
    assert {"minio", "scenebench-runner"} <= set(by_kind("kind", "Service"))
    assert "minio-create-bucket" in by_kind("kind", "Job")
    assert set(by_kind("kind", "Secret")) == {"scenebench-s3", "scenebench-runner"}
    runner = by_kind("kind", "Deployment")["scenebench-runner"]["spec"]["template"]["spec"]["containers"][0]
    assert runner["command"] == ["python", "-m", "runner", "serve"] and "--backend=host" in runner["args"]
    port = next(a for a in runner["args"] if a.startswith("--port=")).split("=")[1]
    assert template_params("kind")["runner-url"] == f"http://scenebench-runner:{port}"
    params = template_params("kind")
    assert params["gpus"] == "0" and params["image-size"] == "96x144"


def test_minio_ports_and_pinned_release():
    minio = by_kind("kind", "Deployment")["minio"]["spec"]["template"]["spec"]["containers"][0]
    assert re.fullmatch(r"quay\.io/minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", minio["image"])
    assert {p["containerPort"] for p in minio["ports"]} == {9000, 9001}
    mc = by_kind("kind", "Job")["minio-create-bucket"]["spec"]["template"]["spec"]["containers"][0]
    assert re.fullmatch(r"quay\.io/minio/mc:RELEASE\.[0-9T-]+Z", mc["image"])


@pytest.mark.parametrize("overlay", ["gpu", "production"])
def test_gpu_overlays_ask_for_gpus_and_bring_no_secret(overlay):
    assert by_kind(overlay, "Secret") == {}
    assert "scenebench-runner" not in by_kind(overlay, "Deployment")
    params = template_params(overlay)
    assert params["gpus"] == "1"
    assert json.loads(params["gpu-tolerations"])[0]["key"] == "nvidia.com/gpu"
    assert params["image"].endswith("-gpu")


def runner_serve_settings(args: list[str]):
    from common.settings import build_parser, load
    from runner.__main__ import ServeSettings

    return load(ServeSettings, build_parser(ServeSettings, "runner serve", "").parse_args(args))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_runner_url_speaks_what_the_runner_serves(overlay):
    """`python -m runner serve` speaks plain HTTP (it has no TLS settings) on --port, 8470 by default:
    a URL with https://, or another port than the runner's, can never connect."""
    url = urllib.parse.urlsplit(template_params(overlay)["runner-url"])
    served = runner_serve_settings([])
    assert not any("tls" in f or "cert" in f for f in type(served).model_fields), \
        "the runner has TLS settings now: let the overlays' URLs follow them"
    assert url.scheme == "http", f"{overlay}: the runner serves plain HTTP, not {url.scheme}"
    in_cluster = by_kind(overlay, "Deployment").get("scenebench-runner")
    if in_cluster:
        container = in_cluster["spec"]["template"]["spec"]["containers"][0]
        served = runner_serve_settings(container["args"])
        service = by_kind(overlay, "Service")[url.hostname]
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
        assert port["targetPort"] in ({p["name"] for p in container["ports"] if p["containerPort"] == served.port}
                                      | {served.port})
    else:
        assert url.port == served.port, f"{overlay}: the device farm's runner listens on {served.port}"


def test_in_cluster_runner_admits_only_the_workflow_pods():
    policy = by_kind("kind", "NetworkPolicy")["scenebench-runner"]
    runner = by_kind("kind", "Deployment")["scenebench-runner"]["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= runner["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    (wt,) = by_kind("kind", "WorkflowTemplate").values()
    assert peer["podSelector"]["matchLabels"] == wt["spec"]["podMetadata"]["labels"]
    assert "namespaceSelector" not in peer  # this namespace only
    assert [p["port"] for p in rule["ports"]] == [runner["spec"]["containers"][0]["ports"][0]["name"]]


@pytest.mark.parametrize("overlay", ["gpu", "kind"])
def test_log_archive_endpoint_resolves_from_argo_server_namespace(overlay):
    """argo-server (namespace argo) reads archived logs from the endpoint the ConfigMap names:
    it must be the Service's fully-qualified name, and its port the Service's API port."""
    repo = yaml.safe_load(by_kind(overlay, "ConfigMap")["artifact-repositories"]["data"]["artifacts"])
    host, _, port = repo["s3"]["endpoint"].partition(":")
    name, namespace, svc, *domain = host.split(".")
    assert (svc, domain) == ("svc", ["cluster", "local"]), f"{host} is not a fully-qualified Service name"
    service = by_kind(overlay, "Service")[name]
    assert service["metadata"]["namespace"] == namespace
    assert int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "api"}


def test_production_overlay_has_no_minio_and_archives_to_the_jobs_bucket():
    docs = render("production")
    assert not [doc_id(d) for d in docs if "minio" in json.dumps(d.get("metadata", {})).lower()]
    repo = yaml.safe_load(by_kind("production", "ConfigMap")["artifact-repositories"]["data"]["artifacts"])["s3"]
    assert repo["insecure"] is False and ".svc" not in repo["endpoint"] and repo["region"]
    store = urllib.parse.urlsplit(template_params("production")["store"])
    assert (store.scheme, store.netloc) == ("s3", repo["bucket"])
    from tests.test_argo import DEF
    assert argo_errors(yaml.safe_load(by_kind("production", "ConfigMap")["artifact-repositories"]["data"]["artifacts"]),
                       DEF + "ArtifactRepository") == []


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("template", ["train", "convert-qat"])
def test_training_pod_patch_is_a_valid_pod_spec(overlay, template):
    """Argo substitutes the parameters into the train step's podSpecPatch (and int8-qat's conversion,
    which fine-tunes on a training pod): the result must be a pod spec."""
    (wt,) = by_kind(overlay, "WorkflowTemplate").values()
    train = next(t for t in wt["spec"]["templates"] if t["name"] == template)
    text = train["podSpecPatch"]
    for name, value in template_params(overlay).items():
        text = text.replace("{{workflow.parameters.%s}}" % name, value)
    assert "{{" not in text, text
    patch = yaml.safe_load(text)
    (main,) = patch.pop("containers")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "train"},
           "spec": {**patch, "containers": [{**main, "image": "scenebench:0.1.0-cpu"}]}}
    for version in kubernetes_versions():
        assert not kubernetes_errors(pod, version)
    assert not [e for e in lint_k8s.lint([pod])], "a quantity in the patch does not parse"
    limits = main["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == template_params(overlay)["gpus"]
    assert limits["memory"] == main["resources"]["requests"]["memory"]


def test_executor_rbac_is_least_privilege():
    (role,) = [d for d in render("kind") if d["kind"] == "Role" and d["metadata"]["name"] == "scenebench-executor"]
    assert role["rules"] == [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"],
                              "verbs": ["create", "patch"]},
                             # its own pod's status: the digest of the image that ran
                             {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    (wt,) = by_kind("kind", "WorkflowTemplate").values()
    binding = by_kind("kind", "RoleBinding")["scenebench-executor"]
    assert binding["subjects"][0]["name"] == wt["spec"]["serviceAccountName"]
    for doc in render("kind"):
        assert doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"), doc_id(doc)


# ---------------------------------------------------------------------------- security


def pods(overlay: str):
    """(where, pod-level securityContext, containers, image parameters) of every pod an overlay starts."""
    for doc in render(overlay):
        if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            spec = doc["spec"]["template"]["spec"]
            yield doc_id(doc), spec.get("securityContext", {}), spec["containers"] + spec.get("initContainers", []), {}
        elif doc["kind"] == "WorkflowTemplate":
            params = {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}
            for t in doc["spec"]["templates"]:
                if "container" in t:
                    yield f"{doc_id(doc)}:{t['name']}", doc["spec"].get("securityContext", {}), [t["container"]], params


def resolve(value: str, params: dict[str, str]) -> str:
    return re.sub(r"\{\{workflow\.parameters\.([\w-]+)\}\}", lambda m: params[m.group(1)], value)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_container_runs_as_root_or_privileged(overlay):
    for where, pod_sc, containers, _ in pods(overlay):
        assert pod_sc.get("runAsNonRoot") is True, f"{where}: pod lacks runAsNonRoot"
        assert pod_sc.get("runAsUser", 1) != 0, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for c in containers:
            sc = c.get("securityContext", {})
            assert sc.get("privileged") is not True, f"{where}/{c['name']} is privileged"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}/{c['name']}"
            assert sc.get("runAsUser", 1) != 0, f"{where}/{c['name']} runs as root"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}/{c['name']} has a writable root filesystem"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}/{c['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned(overlay):
    for where, _, containers, params in pods(overlay):
        for c in containers:
            image = resolve(c["image"], params)
            name, _, digest = image.partition("@")
            tag = name.rsplit("/", 1)[-1].partition(":")[2]
            assert tag or digest, f"{where}: image {image!r} has no tag"
            assert tag != "latest", f"{where}: image {image!r} uses latest"
            assert c.get("imagePullPolicy") == "IfNotPresent", where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_resources(overlay):
    for where, _, containers, _ in pods(overlay):
        for c in containers:
            if where.endswith((":train", ":convert-qat")):
                continue  # their resources are parameters, set through podSpecPatch (checked above)
            resources = c.get("resources", {})
            assert resources.get("requests"), f"{where}/{c['name']} has no requests"
            assert resources.get("limits", {}).get("memory"), f"{where}/{c['name']} has no memory limit"


def yaml_docs_in_repo():
    for path in sorted(list(MANIFESTS.rglob("*.yaml")) + list((REPO / "argo").glob("*.yaml"))):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def test_no_secret_value_outside_the_kind_dev_secret():
    for path, doc in yaml_docs_in_repo():
        if doc.get("kind") == "Secret" and path != DEV_SECRETS:
            values = {**doc.get("data", {}), **doc.get("stringData", {})}
            filled = [k for k, v in values.items() if v and not k.endswith("ENDPOINT")]
            assert not filled, f"{path.relative_to(REPO)} holds values for {filled}"


def test_credentials_reach_containers_only_from_secrets():
    for overlay in OVERLAYS:
        for where, _, containers, _ in pods(overlay):
            for c in containers:
                for env in c.get("env", []):
                    if SENSITIVE_ENV.search(env["name"]):
                        assert "value" not in env, f"{where}: {env['name']} is written in the manifest"


def test_dev_secret_values_appear_nowhere_else():
    secrets = [d for d in yaml.safe_load_all(DEV_SECRETS.read_text()) if d]
    values = {v for d in secrets for k, v in d["stringData"].items() if SENSITIVE_ENV.search(k)}
    assert values
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        path = REPO / rel
        if path == DEV_SECRETS or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for value in values:
            assert value not in text, f"{rel} contains a dev secret value"


def test_runner_deployment_arguments_parse_with_the_runner_parser():
    from common.settings import build_parser, load
    from runner.__main__ import ServeSettings

    runner = by_kind("kind", "Deployment")["scenebench-runner"]["spec"]["template"]["spec"]["containers"][0]
    assert runner["command"][-1] == "serve"
    settings = load(ServeSettings, build_parser(ServeSettings, "runner serve", "").parse_args(runner["args"]))
    assert settings.backend == "host" and settings.host == "0.0.0.0"
    assert settings.port == runner["ports"][0]["containerPort"]
    token_env = {e["name"] for e in runner["env"]}
    assert settings.token_env in token_env, "the runner would start without its token"
    assert any(m["mountPath"] == str(Path(settings.db).parent) for m in runner["volumeMounts"])


# ---------------------------------------------------------------------------- submitting from CI

EXAMPLES = MANIFESTS / "examples"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def example_docs() -> list[dict]:
    return [d for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def test_examples_validate_strictly_and_pass_the_lint():
    docs = example_docs()
    assert docs
    for doc in docs:
        for version in kubernetes_versions():
            assert not kubernetes_errors(doc, version), doc_id(doc)
    assert not lint_k8s.lint(docs)


def test_ci_pod_gets_the_submitter_token_on_purpose():
    """scenebench-submitter does not automount its token; the CI Job mounts a projected one where the
    Kubernetes client's in-cluster configuration reads it (token, ca.crt, namespace)."""
    from jobs import submit

    (sa,) = [d for d in render("kind") if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "scenebench-submitter"]
    assert sa["automountServiceAccountToken"] is False
    (job,) = [d for d in example_docs() if d["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "scenebench-submitter" and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == SA_DIR]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    paths = set()
    for source in volume["projected"]["sources"]:
        if "serviceAccountToken" in source:
            paths.add(source["serviceAccountToken"]["path"])
            assert source["serviceAccountToken"]["expirationSeconds"] <= 3600 * 24
        for item in (source.get("configMap") or source.get("downwardAPI") or {}).get("items", []):
            paths.add(item["path"])
    assert paths == {"token", "ca.crt", "namespace"}
    assert container["command"] == ["python", "-m", "jobs.submit"]
    args = submit.build_parser().parse_args(container["args"])
    submit.check_parameters(yaml.safe_load((REPO / "argo" / "workflowtemplate.yaml").read_text()),
                            submit.parse_key_values(args.parameter, "parameter"))
    (sc,) = [pod["securityContext"]]
    assert sc["runAsNonRoot"] is True and container["securityContext"]["readOnlyRootFilesystem"] is True


def test_submitter_may_read_the_logs_of_failed_steps_and_nothing_more():
    (role,) = [d for d in render("kind") if d["kind"] == "Role" and d["metadata"]["name"] == "scenebench-submitter"]
    assert role["rules"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create", "get", "list", "watch"]},
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtemplates"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    (token,) = [d for d in yaml.safe_load_all((MANIFESTS / "secrets" / "submitter-token.example.yaml").read_text())]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "scenebench-submitter"
