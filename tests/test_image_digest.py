"""The image a step actually ran: read from the pod's own status, recorded in run.json, shown in the report."""

from __future__ import annotations

import json

import pytest

from common import layout, provenance
from common.report.sections import provenance_section
from common.schemas import RunManifest
from common.store import LocalStore
from jobs import prepare
from tests.fixtures.results import build_run

NS, POD = "scenebench", "scenebench-x7k2p-prepare-1427563187"
DIGEST = "registry.example.com/scenebench@sha256:3f1d3a0c8b7e6f5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918070f6e5"
# The status of an Argo step's pod as `kubectl get pod -o json` shows it under containerd: the
# emissary's `wait` container and the step's `main`, each with the image it was started from and the
# imageID the runtime resolved (containerStatuses[]: containerID, image, imageID, lastState, name,
# ready, restartCount, started, state).
POD_DOC = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": POD, "namespace": NS, "labels": {"workflows.argoproj.io/workflow": "scenebench-x7k2p"}},
    "status": {
        "phase": "Running",
        "containerStatuses": [
            {"containerID": "containerd://5ef66bb91400fd10cc3d9b9f0bfb08fd4d640df0f2c2834ec6598eb54edd4efb",
             "image": "registry.example.com/scenebench:0.1.0-gpu", "imageID": DIGEST, "lastState": {},
             "name": "main", "ready": True, "restartCount": 0, "started": True,
             "state": {"running": {"startedAt": "2026-12-03T01:00:12Z"}}},
            {"containerID": "containerd://8c53372f890dcb300300d59f9f40c3c003dcfc44b1cc88159b22ae26b3a49929",
             "image": "quay.io/argoproj/argoexec:v4.1.5",
             "imageID": "quay.io/argoproj/argoexec@sha256:"
                        "0d3ac6d1c1a0bb37c82b1fbf9e2f5d4a4c8f0d2ee0e3f0fa1b2c3d4e5f60718f",
             "lastState": {}, "name": "wait", "ready": True, "restartCount": 0, "started": True,
             "state": {"running": {"startedAt": "2026-12-03T01:00:11Z"}}},
        ],
    },
}


def test_the_main_container_digest_is_picked():
    assert provenance.pod_image_id(POD_DOC) == DIGEST
    assert provenance.pod_image_id(POD_DOC, "wait").startswith("quay.io/argoproj/argoexec@sha256:")
    assert provenance.pod_image_id({"status": {}}) is None


@pytest.fixture
def in_a_pod(monkeypatch, kube_api):
    """The downward-API variables of the WorkflowTemplate, and the pod's own status served by the API."""
    monkeypatch.setenv("SCENEBENCH_POD_NAME", POD)
    monkeypatch.setenv("SCENEBENCH_POD_NAMESPACE", NS)
    monkeypatch.setenv("SCENEBENCH_IMAGE", "registry.example.com/scenebench:0.1.0-gpu")
    monkeypatch.delenv("SCENEBENCH_IMAGE_DIGEST", raising=False)
    monkeypatch.setattr(provenance, "_api_client", kube_api.client)
    kube_api.on("GET", f"/api/v1/namespaces/{NS}/pods/{POD}", (200, POD_DOC))
    return kube_api


def test_image_digest_comes_from_the_pod_status(in_a_pod):
    assert provenance.image_digest() == (DIGEST, None)


def test_a_pod_that_may_not_read_itself_says_why(in_a_pod):
    in_a_pod.on("GET", f"/api/v1/namespaces/{NS}/pods/{POD}", (403, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'pods "{POD}" is forbidden: User "system:serviceaccount:scenebench:scenebench-workflow" '
                   f'cannot get resource "pods" in API group "" in the namespace "{NS}"',
        "reason": "Forbidden", "details": {"name": POD, "kind": "pods"}, "code": 403}))
    digest, why = provenance.image_digest()
    assert digest is None and "403" in why


def test_outside_kubernetes_there_is_no_digest(monkeypatch):
    monkeypatch.delenv("SCENEBENCH_POD_NAME", raising=False)
    monkeypatch.delenv("SCENEBENCH_IMAGE_DIGEST", raising=False)
    assert provenance.image_digest()[0] is None
    monkeypatch.setenv("SCENEBENCH_IMAGE_DIGEST", "sha256:" + "a" * 64)
    assert provenance.image_digest() == ("sha256:" + "a" * 64, None)


def test_prepare_records_the_digest_in_run_json(in_a_pod, tmp_path):
    from common.schemas import ClassInfo, DatasetManifest, SplitInfo
    from common.settings import load

    store = LocalStore(tmp_path / "store")
    settings = load(prepare.PrepareSettings, {"store": store.uri, "data": "synthetic", "archs": "mobilenet_v2",
                                              "image_size": "64x96"})
    dataset = DatasetManifest(fingerprint="9f2c41d0a7be5e13c2d8", source="synthetic", synthetic=True,
                              layout="split-folders", numbered=True, split_method="folders", seed=0,
                              classes=[ClassInfo(index=0, name="Portrait", folder="1_Portrait")],
                              splits={"train": SplitInfo(count=2, per_class={"Portrait": 2})}, code_version="test")
    prepare.write_run(settings, store, "scenebench-x7k2p", dataset)
    run = store.get_model(layout.run_json("scenebench-x7k2p"), RunManifest)
    assert run.image == "registry.example.com/scenebench:0.1.0-gpu" and run.image_digest == DIGEST
    assert json.loads((store.root / layout.run_json("scenebench-x7k2p")).read_text())["image_digest"] == DIGEST


def test_report_provenance_shows_the_digest():
    results = build_run().results
    assert "not recorded" in provenance_section(results, [])
    results.image_digest = DIGEST
    html = provenance_section(results, [])
    assert "Image digest" in html and DIGEST in html
