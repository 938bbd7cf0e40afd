"""Submit a scenebench run from the Argo WorkflowTemplate and wait for its outcome: `python -m jobs.submit`.

Built on the `kubernetes` client alone (a Workflow is a custom object), so that any CI
system with a kubeconfig or an in-cluster service account can start a run and gate on it:

    python -m jobs.submit -p archs='["mobilenet_v2"]' -p epochs=1        # waits
    python -m jobs.submit --no-wait -p archs=all                         # returns the name

Exit codes: 0 the run succeeded (or was submitted, with --no-wait); 1 it failed or errored;
2 bad arguments, unknown parameter, no template or no cluster; 3 it did not finish in
--timeout-s, or the API stayed unreachable for --api-retry-s (it keeps running in the
cluster); 4 the workflow was deleted before it finished; 130 interrupted (likewise).

While waiting, connection errors, 5xx and 429 answers are retried with back-off (for
--api-retry-s, 6 h by default): an API server restart or a flaky VPN does not fail a CI job
whose run is fine. On failure it prints the last log lines of each failed step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from common.logging import configure, get_logger

GROUP = "argoproj.io"
VERSION = "v1alpha1"
DONE_PHASES = ("Succeeded", "Failed", "Error")
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_DELETED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
DEFAULT_NAMESPACE = "scenebench"
DEFAULT_TEMPLATE = "scenebench"
# Kubernetes object names: what Argo accepts as a workflow name, and so as a run id.
_MAX_NAME = 63
# What `kubectl -n argo port-forward svc/argo-server 2746:2746` serves; an Ingress in production.
DEFAULT_UI = "https://localhost:2746"
# Before anything is submitted, an API that does not answer is more likely a wrong cluster than a blip.
_PRESUBMIT_RETRY_S = 120.0
# Where the kubelet mounts a pod's service account token, and where a CI pod mounts a projected one.
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
_REQUEST_TIMEOUT_S = 30


class SubmitError(Exception):
    """A submission that cannot go ahead; carries the exit code to end with."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


class TransientApiError(Exception):
    """The API did not answer, or answered 5xx or 429: asking again later may work."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


# ------------------------------------------------------------------------ pure functions


def parse_key_values(items: Sequence[str] | None, what: str) -> dict[str, str]:
    """['a=1', 'b=x=y'] -> {'a': '1', 'b': 'x=y'}; a missing '=' or a repeated key is an error."""
    result: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SubmitError(f"{what} {item!r} is not KEY=VALUE")
        if key in result:
            raise SubmitError(f"{what} {key!r} is given twice")
        result[key] = value
    return result


def build_workflow(template: str, parameters: dict[str, str], *, name: str | None = None,
                   generate_name: str | None = None, labels: dict[str, str] | None = None) -> dict:
    """The Workflow object that runs `template` with `parameters` (everything else is the template's)."""
    if bool(name) == bool(generate_name):
        raise SubmitError("give exactly one of a name or a generateName prefix")
    if name and len(name) > _MAX_NAME:
        raise SubmitError(f"workflow name {name!r} is longer than {_MAX_NAME} characters")
    metadata: dict = {"name": name} if name else {"generateName": generate_name}
    metadata["labels"] = {
        "app.kubernetes.io/name": "scenebench",
        "scenebench.dev/submitted-by": "jobs.submit",
        **(labels or {}),
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": {
            "workflowTemplateRef": {"name": template},
            "arguments": {"parameters": [{"name": k, "value": v} for k, v in parameters.items()]},
        },
    }


def template_parameters(template: dict) -> list[str]:
    """The parameter names a WorkflowTemplate object declares, in order."""
    return [p["name"] for p in template.get("spec", {}).get("arguments", {}).get("parameters", [])]


def check_parameters(template: dict, parameters: dict[str, str]) -> None:
    """Argo would ignore an unknown parameter silently; a typo must fail before the run."""
    declared = template_parameters(template)
    unknown = [k for k in parameters if k not in declared]
    if unknown:
        name = template.get("metadata", {}).get("name", "?")
        raise SubmitError(f"WorkflowTemplate {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                          f"valid parameters: {', '.join(declared)}")


@dataclass(frozen=True)
class FailedNode:
    display_name: str
    template: str
    phase: str
    message: str
    exit_code: str | None
    pod_name: str | None


@dataclass(frozen=True)
class Outcome:
    name: str
    phase: str
    progress: str
    message: str
    failed: list[FailedNode] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.phase in DONE_PHASES

    @property
    def exit_code(self) -> int:
        if self.phase == "Succeeded":
            return EXIT_SUCCEEDED
        return EXIT_FAILED if self.done else EXIT_TIMEOUT


def _fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def pod_name(workflow_name: str, node_name: str, template_name: str, node_id: str = "",
             version: str = "v2") -> str:
    """The pod name Argo gives a node (its pod-name formats v1 and v2), so that a failure
    points at `kubectl logs`."""
    if version == "v1":
        return node_id
    if workflow_name == node_name:
        return workflow_name
    prefix = f"{workflow_name}-{template_name}" if template_name else workflow_name
    prefix = prefix[: 253 - 10 - 1]  # room for "-" and the hash within Kubernetes' 253
    return f"{prefix}-{_fnv32a(node_name)}"


def _final(node: dict, nodes: dict) -> bool:
    """A failed pod that is the step's outcome: not an attempt whose retry then succeeded or goes on."""
    parent = next((n for n in nodes.values() if node.get("id") in (n.get("children") or [])), None)
    if parent is None or parent.get("type") != "Retry":
        return True
    return parent.get("phase") in ("Failed", "Error") and (parent.get("children") or [None])[-1] == node.get("id")


def outcome(workflow: dict) -> Outcome:
    """Phase, progress and the failed steps of a Workflow object as the API returns it.

    A step that failed and then succeeded on a retry is not a failed step; of a step that
    failed for good, only its last attempt is listed.
    """
    meta, status = workflow.get("metadata", {}), workflow.get("status") or {}
    name = meta.get("name", "?")
    version = (meta.get("annotations") or {}).get("workflows.argoproj.io/pod-name-format", "v2")
    failed = []
    nodes = status.get("nodes") or {}
    for node in nodes.values():
        if node.get("type") == "Pod" and node.get("phase") in ("Failed", "Error") and _final(node, nodes):
            failed.append(FailedNode(
                display_name=node.get("displayName", node.get("name", "?")),
                template=node.get("templateName", ""),
                phase=node["phase"],
                message=node.get("message", ""),
                exit_code=(node.get("outputs") or {}).get("exitCode"),
                pod_name=pod_name(name, node.get("name", ""), node.get("templateName", ""),
                                  node.get("id", ""), version) or None,
            ))
    failed.sort(key=lambda f: (f.template, f.display_name))
    return Outcome(name=name, phase=status.get("phase") or "Pending", progress=status.get("progress", ""),
                   message=status.get("message", ""), failed=failed)


def wait_for(get: Callable[[], dict], *, timeout_s: float, poll_s: float, log,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Poll until the workflow is done or `timeout_s` passed (0: no limit); log each change.

    Polling with GET, rather than a watch, survives API-server restarts and the watch
    expiry of multi-hour runs without any reconnect logic, at one small request per poll.
    """
    deadline = clock() + timeout_s if timeout_s > 0 else None
    last = None
    while True:
        current = outcome(get())
        if (current.phase, current.progress) != last:
            log.info("workflow_progress", phase=current.phase, progress=current.progress)
            last = (current.phase, current.progress)
        if current.done or (deadline is not None and clock() >= deadline):
            return current
        sleep(poll_s)


def retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (the delta-seconds form the API server sends with 429)."""
    value = (headers or {}).get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def call_with_retries(fn: Callable[[], dict], *, what: str, retry_s: float, log,
                      clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                      first_s: float = 2.0, cap_s: float = 300.0, give_up_code: int = EXIT_TIMEOUT) -> dict:
    """fn(), retried with exponential back-off (or Retry-After) while it raises TransientApiError,
    for up to retry_s seconds of consecutive failure; then a SubmitError with give_up_code."""
    failing_since, attempt = None, 0
    while True:
        try:
            return fn()
        except TransientApiError as exc:
            now = clock()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since >= retry_s:
                raise SubmitError(f"{what}: the Kubernetes API has not answered for {now - failing_since:.0f} s "
                                  f"({exc}); stopped waiting (raise --api-retry-s to wait longer)",
                                  code=give_up_code) from None
            delay = exc.retry_after_s if exc.retry_after_s is not None else min(cap_s, first_s * 2 ** attempt)
            delay = min(delay, max(0.0, retry_s - (now - failing_since)))
            attempt += 1
            log.warning("api_retry", what=what, error=str(exc), attempt=attempt, retry_in_s=round(delay, 1))
            sleep(delay)


def status_details(exc) -> dict:
    """The `details` of the Kubernetes Status object an API error carries (empty when there is none)."""
    try:
        body = json.loads(getattr(exc, "body", None) or "{}")
    except (TypeError, ValueError):
        return {}
    return (body.get("details") or {}) if isinstance(body, dict) else {}


def ui_url(base: str, namespace: str, name: str) -> str:
    """The workflow's page in the Argo UI."""
    return f"{base.rstrip('/')}/workflows/{namespace}/{name}"


def report(result: Outcome, namespace: str, ui: str | None = None, logs: dict[str, str] | None = None) -> str:
    """What a person reads at the end: the outcome and, when it failed, where to look."""
    lines = [f"workflow {result.name}: {result.phase}" + (f" ({result.progress})" if result.progress else "")]
    if ui:
        lines.append(f"  {ui}")
    if result.message and result.phase != "Succeeded":
        lines.append(f"  {result.message}")
    for node in result.failed:
        code = f" exit {node.exit_code}" if node.exit_code not in (None, "") else ""
        lines.append(f"  {node.phase:<6} {node.display_name} [{node.template}]{code}: {node.message}")
        if node.pod_name:
            lines.append(f"         logs: kubectl -n {namespace} logs {node.pod_name} -c main")
            tail = (logs or {}).get(node.pod_name)
            if tail:
                lines += [f"         | {line}" for line in tail.rstrip("\n").splitlines()]
    if result.failed:
        lines.append(f"  archived logs: runs/{result.name}/logs/ in the artifact store")
    if result.exit_code == EXIT_TIMEOUT:
        lines.append(f"  still running; follow it with: kubectl -n {namespace} get workflow {result.name} -w")
    return "\n".join(lines)


# ------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.submit",
        description="Submit a run of the scenebench WorkflowTemplate and wait for it.",
        epilog="Exit codes: 0 succeeded, 1 failed, 2 bad usage or no cluster/template, 3 timed out.",
    )
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="Workflow parameter, repeatable (e.g. -p archs='[\"mobilenet_v2\"]' -p epochs=1).")
    parser.add_argument("-n", "--namespace", default=os.environ.get("SCENEBENCH_NAMESPACE", DEFAULT_NAMESPACE),
                        help=f"Namespace of the template and the run. Default: {DEFAULT_NAMESPACE}. "
                             "Env: SCENEBENCH_NAMESPACE.")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help=f"WorkflowTemplate. Default: {DEFAULT_TEMPLATE}.")
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--name", help="Workflow name, which is also the run id. Default: generated.")
    names.add_argument("--generate-name", help="Prefix of a generated name. Default: '<template>-'.")
    parser.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE",
                        help="Extra label on the Workflow, repeatable.")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                        help="Wait for the outcome and exit by it. Default: wait.")
    parser.add_argument("--timeout-s", type=float, default=43200.0,
                        help="Stop waiting after this many seconds (0: no limit). Default: 43200.")
    parser.add_argument("--poll-s", type=float, default=10.0, help="Seconds between status polls. Default: 10.")
    parser.add_argument("--api-retry-s", type=float, default=21600.0,
                        help="How long to keep retrying while the Kubernetes API does not answer, or answers 5xx "
                             "or 429. Default: 21600 (6 h).")
    parser.add_argument("--log-lines", type=int, default=20,
                        help="Last log lines shown of each failed step (0: none). Default: 20.")
    parser.add_argument("--ui", default=os.environ.get("SCENEBENCH_ARGO_UI", DEFAULT_UI),
                        help=f"Base URL of the Argo UI, for the link printed. Default: {DEFAULT_UI} "
                             "(kubectl -n argo port-forward svc/argo-server 2746:2746). Env: SCENEBENCH_ARGO_UI.")
    parser.add_argument("--check-parameters", action=argparse.BooleanOptionalAction, default=True,
                        help="Read the template first and refuse parameters it does not declare. Default: on.")
    parser.add_argument("--context", help="kubeconfig context. Default: the current one (or in-cluster).")
    parser.add_argument("--kubeconfig", help="kubeconfig file. Default: $KUBECONFIG or ~/.kube/config.")
    return parser


def workflow_from_args(args: argparse.Namespace) -> dict:
    if args.timeout_s < 0 or args.poll_s <= 0 or args.api_retry_s < 0 or args.log_lines < 0:
        raise SubmitError("--timeout-s, --api-retry-s and --log-lines must be >= 0, and --poll-s > 0")
    return build_workflow(
        args.template,
        parse_key_values(args.parameter, "parameter"),
        name=args.name,
        generate_name=None if args.name else (args.generate_name or f"{args.template}-"),
        labels=parse_key_values(args.label, "label"),
    )


def api_client(context: str | None, kubeconfig: str | None):
    """An ApiClient for the chosen kubeconfig context, or in-cluster when running in a pod."""
    from kubernetes import client, config

    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not (context or kubeconfig)
    if in_cluster and not os.path.exists(SA_TOKEN):
        raise SubmitError(
            f"running in a pod without a service account token ({SA_TOKEN} is missing): the "
            "scenebench-submitter account does not automount it; mount a projected token as "
            "manifests/examples/ci-submit.yaml does, or give --kubeconfig")
    try:
        if in_cluster:
            config.load_incluster_config()
        else:
            config.load_kube_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError) as exc:
        raise SubmitError(f"no Kubernetes cluster configured ({exc}); give --context or --kubeconfig") from None
    return client.ApiClient()


def custom_objects_api(context: str | None, kubeconfig: str | None):
    from kubernetes import client

    return client.CustomObjectsApi(api_client(context, kubeconfig))


def api_failure(exc, what: str, deleted: str | None = None) -> Exception:
    """An API error as what to do about it: TransientApiError to retry, or a SubmitError to end with.

    deleted: the message for a 404 on the object being followed (it existed, so it was deleted).
    """
    from kubernetes.client.exceptions import ApiException

    if not isinstance(exc, ApiException):  # urllib3 / socket: no answer at all
        return TransientApiError(f"cannot reach the Kubernetes API: {exc}")
    status = exc.status
    if status == 429 or (status or 0) >= 500:
        return TransientApiError(f"HTTP {status} {exc.reason}", retry_after(exc.headers))
    if status == 404:
        details = status_details(exc)
        if deleted:
            return SubmitError(deleted, code=EXIT_DELETED)
        if details.get("kind") == "workflowtemplates":
            return SubmitError(f"{what}: no such WorkflowTemplate in that namespace (install it: "
                               "`make cluster-apply`, or pick --namespace / --template)")
        return SubmitError(f"{what}: the API has no Argo {details.get('kind') or 'Workflow'} resource there "
                           "(is Argo Workflows installed? `make argo-install`; does the namespace exist?)")
    if status == 409:
        return SubmitError(f"{what}: a workflow of that name already exists; choose another --name")
    if status in (401, 403):
        return SubmitError(f"{what}: not allowed ({exc.reason}); the scenebench-submitter Role lists what is needed")
    return SubmitError(f"{what}: HTTP {status} {exc.reason}", code=EXIT_FAILED)


def tail_logs(core, namespace: str, pods: Sequence[str], lines: int, log) -> dict[str, str]:
    """The last `lines` lines of each pod's main container; what went wrong instead, when they cannot be read."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    out = {}
    for pod in pods:
        try:
            out[pod] = core.read_namespaced_pod_log(pod, namespace, container="main", tail_lines=lines,
                                                    _request_timeout=_REQUEST_TIMEOUT_S)
        except ApiException as exc:
            why = {404: "the pod is gone (garbage-collected); its log is archived under runs/<run>/logs/ in the store",
                   403: "not allowed to read pod logs (the scenebench-submitter Role grants pods/log get)"}
            out[pod] = f"(no log: {why.get(exc.status, f'HTTP {exc.status} {exc.reason}')})"
        except (HTTPError, OSError) as exc:
            out[pod] = f"(no log: cannot reach the Kubernetes API: {exc})"
        log.info("step_log", pod=pod, lines=out[pod].count("\n"))
    return out


def main(argv: Sequence[str] | None = None, client=None, *, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> int:
    """client: a kubernetes ApiClient to use instead of the kubeconfig's (tests point one at a local server)."""
    configure(stdout_is_data=True)  # stdout is the answer; logs go to stderr
    log = get_logger(component="submit")
    args = build_parser().parse_args(argv)
    try:
        workflow = workflow_from_args(args)
        log.info("submit_config", namespace=args.namespace, template=args.template,
                 parameters=workflow["spec"]["arguments"]["parameters"], wait=args.wait,
                 timeout_s=args.timeout_s, context=args.context)
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        client = client or api_client(args.context, args.kubeconfig)
        api, core = k8s.CustomObjectsApi(client), k8s.CoreV1Api(client)
        what = f"WorkflowTemplate {args.namespace}/{args.template}"

        def retried(fn, what_: str, retry_s: float, deleted: str | None = None, give_up_code: int = EXIT_TIMEOUT):
            def once():
                try:
                    return fn()
                except (ApiException, HTTPError, OSError) as exc:
                    raise api_failure(exc, what_, deleted) from None
            return call_with_retries(once, what=what_, retry_s=retry_s, log=log, sleep=sleep, clock=clock,
                                     give_up_code=give_up_code)

        if args.check_parameters:
            template = retried(lambda: api.get_namespaced_custom_object(
                GROUP, VERSION, args.namespace, "workflowtemplates", args.template,
                _request_timeout=_REQUEST_TIMEOUT_S), what, min(args.api_retry_s, _PRESUBMIT_RETRY_S),
                give_up_code=EXIT_USAGE)
            check_parameters(template, parse_key_values(args.parameter, "parameter"))
        try:
            # Not retried: a create whose answer was lost may have created the workflow already.
            created = api.create_namespaced_custom_object(GROUP, VERSION, args.namespace, "workflows", workflow,
                                                          _request_timeout=_REQUEST_TIMEOUT_S)
        except (ApiException, HTTPError, OSError) as exc:
            failure = api_failure(exc, what)
            raise (failure if isinstance(failure, SubmitError) else SubmitError(str(failure))) from None
        name = created["metadata"]["name"]
        link = ui_url(args.ui, args.namespace, name)
        log = log.bind(workflow=name, run_id=name)
        log.info("workflow_submitted", namespace=args.namespace, ui=link)
        if not args.wait:
            print(name)
            return EXIT_SUCCEEDED
        print(f"workflow {name} submitted: {link}", file=sys.stderr)
        deleted = (f"workflow {args.namespace}/{name} was deleted before it finished (by a person, or "
                   f"`argo delete`); its outcome is unknown, its artifacts stay under runs/{name}/ in the store")

        deadline = clock() + args.timeout_s if args.timeout_s > 0 else None

        def get() -> dict:
            # an outage is ridden out for --api-retry-s, but never past --timeout-s
            budget = args.api_retry_s if deadline is None else max(0.0, min(args.api_retry_s, deadline - clock()))
            return retried(lambda: api.get_namespaced_custom_object(
                GROUP, VERSION, args.namespace, "workflows", name, _request_timeout=_REQUEST_TIMEOUT_S),
                f"workflow {args.namespace}/{name}", budget, deleted)

        try:
            result = wait_for(get, timeout_s=args.timeout_s, poll_s=args.poll_s, log=log, sleep=sleep, clock=clock)
        except KeyboardInterrupt:
            print(f"stopped waiting; workflow {name} keeps running in namespace {args.namespace}: {link}",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
    except SubmitError as exc:
        log.error("submit_failed", error=str(exc), exit_code=exc.code)
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    log.info("workflow_finished", phase=result.phase, progress=result.progress, failed_steps=len(result.failed),
             exit_code=result.exit_code, ui=link)
    logs = {}
    if result.failed and args.log_lines:
        logs = tail_logs(core, args.namespace, [f.pod_name for f in result.failed if f.pod_name], args.log_lines, log)
    print(report(result, args.namespace, link, logs))
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
