"""Checks on rendered Kubernetes manifests that schema validation (kubernetes-validate) cannot make.

The OpenAPI schema types a Service's selector as a map and a quantity as "string or number",
so these pass it and fail only in a cluster: a Service whose selector matches no pod (no
endpoints, every connection refused), a named `targetPort` or probe port that no container
declares, a NetworkPolicy whose selectors match nothing, and a malformed quantity (`8gi`,
`2GB`), which the API server rejects at apply time. `lint(docs)` returns one line per mistake.

Quantities are parsed as k8s.io/apimachinery/pkg/api/resource/quantity.go does: the split
expression `^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$`, then the suffix must be a binary
(Ki..Ei), decimal (n, u, m, k, M..E) or exponent (e3, E-2) suffix, and the number one number.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

_SPLIT = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_SUFFIX = re.compile(r"(|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def quantity_error(value: Any) -> str | None:
    """Why `value` is not a Kubernetes quantity, or None when it is one."""
    if isinstance(value, bool):
        return f"{value!r} is a boolean, not a quantity"
    if isinstance(value, (int, float)):
        return None
    text = str(value)
    m = _SPLIT.match(text)
    if not m:
        return f"{text!r} is not a quantity (e.g. 500m, 2Gi, 1.5, 8e3)"
    number, suffix = m.groups()
    if not _NUMBER.fullmatch(number):
        return f"{text!r}: {number!r} is not a number"
    if not _SUFFIX.fullmatch(suffix):
        return f"{text!r}: unknown suffix {suffix!r} (binary Ki Mi Gi Ti Pi Ei, decimal m k M G T P E)"
    return None


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, str]]:
    """(path, value, key) of every leaf and dict under node."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{path}/{k}" if path else str(k)
            yield p, v, str(k)
            yield from _walk(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}/{i}")


def quantities(doc: dict) -> Iterator[tuple[str, Any]]:
    """Every value that Kubernetes reads as a quantity: resources, sizeLimit, storage requests."""
    for path, value, key in _walk(doc):
        parts = path.split("/")
        if len(parts) >= 3 and parts[-3] == "resources" and parts[-2] in ("requests", "limits"):
            yield path, value
        elif key in ("sizeLimit", "overhead") and not isinstance(value, (dict, list)):
            yield path, value


def doc_id(doc: dict) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '?')}"


class Pod:
    """A pod template of some workload: where, namespace, labels, containers."""

    def __init__(self, where: str, namespace: str | None, labels: dict, containers: list[dict]):
        self.where, self.namespace, self.labels, self.containers = where, namespace, labels or {}, containers

    def port_names(self) -> set[str]:
        return {p["name"] for c in self.containers for p in c.get("ports") or [] if p.get("name")}


def pods(docs: list[dict]) -> list[Pod]:
    """Every pod template: workloads, CronJobs, bare Pods, and the pods an Argo template starts."""
    out = []
    for doc in docs:
        kind, ns = doc.get("kind"), (doc.get("metadata") or {}).get("namespace")
        spec = doc.get("spec") or {}
        template = None
        if kind in WORKLOADS:
            template = spec.get("template")
        elif kind == "CronJob":
            template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        elif kind == "Pod":
            template = {"metadata": doc.get("metadata"), "spec": spec}
        if template:
            ps = template.get("spec") or {}
            out.append(Pod(doc_id(doc), ns, (template.get("metadata") or {}).get("labels"),
                           (ps.get("containers") or []) + (ps.get("initContainers") or [])))
        elif kind in ("WorkflowTemplate", "Workflow", "ClusterWorkflowTemplate"):
            common = (spec.get("podMetadata") or {}).get("labels") or {}
            for t in spec.get("templates", []):
                if "container" in t or "script" in t:
                    labels = {**common, **((t.get("metadata") or {}).get("labels") or {})}
                    out.append(Pod(f"{doc_id(doc)}:{t['name']}", ns, labels, [t.get("container") or t["script"]]))
    return out


def selects(selector: dict, labels: dict, label_selector: bool = False) -> bool:
    """Whether a Service selector (a plain map) or a LabelSelector (matchLabels, matchExpressions) picks these labels."""
    match = (selector.get("matchLabels") or {}) if label_selector else selector
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in (selector.get("matchExpressions") or []) if label_selector else []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def lint(docs: list[dict]) -> list[str]:
    errors: list[str] = []
    all_pods = pods(docs)
    for doc in docs:
        where, kind = doc_id(doc), doc.get("kind")
        ns = (doc.get("metadata") or {}).get("namespace")
        for path, value in quantities(doc):
            if isinstance(value, str) and "{{" in value:
                continue  # an Argo parameter: checked after substitution
            problem = quantity_error(value)
            if problem:
                errors.append(f"{where}/{path}: {problem}")
        if kind == "Service":
            errors += _lint_service(doc, where, [p for p in all_pods if p.namespace == ns])
        elif kind == "NetworkPolicy":
            errors += _lint_network_policy(doc, where, [p for p in all_pods if p.namespace == ns])
    for pod in all_pods:
        for c in pod.containers:
            names = {p["name"] for p in c.get("ports") or [] if p.get("name")}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    port = ((c.get(probe) or {}).get(handler) or {}).get("port")
                    if isinstance(port, str) and not port.isdigit() and port not in names:
                        errors.append(f"{pod.where}/{c.get('name')}/{probe}: port {port!r} is not a port this "
                                      f"container names (ports: {', '.join(sorted(names)) or 'none'})")
    return errors


def _lint_service(doc: dict, where: str, pods_in_ns: list[Pod]) -> list[str]:
    selector = (doc.get("spec") or {}).get("selector")
    if not selector:
        return []  # selector-less Service: its endpoints are managed by hand
    matched = [p for p in pods_in_ns if selects(selector, p.labels)]
    if not matched:
        return [f"{where}: selector {selector} matches no pod template in its namespace "
                "(the Service would have no endpoints)"]
    errors = []
    for port in (doc["spec"].get("ports") or []):
        target = port.get("targetPort")
        if isinstance(target, str) and not target.isdigit():
            for p in matched:
                if target not in p.port_names():
                    errors.append(f"{where}: port {port.get('name', port.get('port'))} targets {target!r}, which no "
                                  f"container of {p.where} declares (ports: {', '.join(sorted(p.port_names()))})")
    return errors


def _lint_network_policy(doc: dict, where: str, pods_in_ns: list[Pod]) -> list[str]:
    spec = doc.get("spec") or {}
    targets = [p for p in pods_in_ns if selects(spec.get("podSelector") or {}, p.labels, label_selector=True)]
    if not targets:
        return [f"{where}: podSelector {spec.get('podSelector')} matches no pod template in its namespace"]
    errors = []
    for direction in ("ingress", "egress"):
        for r, rule in enumerate(spec.get(direction) or []):
            for peer in rule.get("from" if direction == "ingress" else "to") or []:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    if not any(selects(peer["podSelector"], p.labels, label_selector=True) for p in pods_in_ns):
                        errors.append(f"{where}/{direction}/{r}: peer podSelector {peer['podSelector']} matches no "
                                      "pod template in the namespace (the rule would admit nothing)")
            for port in rule.get("ports") or []:
                named = port.get("port")
                if direction == "ingress" and isinstance(named, str) and not named.isdigit():
                    for p in targets:
                        if named not in p.port_names():
                            errors.append(f"{where}/{direction}/{r}: port {named!r} is not declared by {p.where}")
    return errors
