"""The results object: built from step documents, gaps recorded, score basis, schema round trip."""

import json

import pytest

from common import layout
from common.errors import ConfigError
from common.results import HOST_LABEL, build_results, choose_basis, render_leaderboard
from common.schemas import (
    SCHEMA_VERSION,
    ArtifactRef,
    ClassInfo,
    ConvertReport,
    DatasetManifest,
    Results,
    RunManifest,
    RunParams,
    SplitInfo,
    TensorInfo,
)
from common.scoring import mai_score
from tests.fixtures.results import ARCHS, FORMATS, build_run

SHA = "ab" * 32


def _docs(synthetic=False, drop_ios=False):
    fx = build_run()
    run = RunManifest(run_id=fx.results.run_id, code_version="v1", dataset_fingerprint="fp",
                      params=RunParams(data="synthetic", archs=list(ARCHS), formats=list(FORMATS),
                                       image_size=[384, 576], epochs=1, weights="none"))
    ds = DatasetManifest(fingerprint="fp", source="x", synthetic=synthetic, layout="split-folders", numbered=True,
                         split_method="folders", seed=0,
                         classes=[ClassInfo(index=i, name=n, folder=f"{i+1}_{n}") for i, n in enumerate(fx.results.classes)],
                         splits={"train": SplitInfo(count=100, per_class={}), "validation": SplitInfo(count=30, per_class={})},
                         code_version="v1")
    t = TensorInfo(name="x", dtype="float32", shape=[1, 384, 576, 3])
    converts = {(a, f): ConvertReport(run_id=run.run_id, arch=a, format=f,
                                      model=ArtifactRef(key=layout.tflite_model(run.run_id, a, f), sha256=SHA, size=1000),
                                      size_mb=1.0, input=t, output=t, op_counts={"CONV_2D": 3}, converter="tf",
                                      seconds=1.0, source_model_sha256="cd" * 32, cache_key="k", code_version="v1")
                for a in ARCHS for f in FORMATS}
    evals = {k: v.model_copy(update={"model_sha256": SHA}) for k, v in fx.evals.items()}
    benches = {}
    for b in fx.benches:
        if drop_ios and b.device.backend == "ios":
            continue
        key = layout.bench_json(run.run_id, b.arch, b.format, b.device.id, b.delegate_requested)
        benches.setdefault((b.arch, b.format), []).append((key, b))
    return run, ds, converts, evals, benches


def test_scores_use_the_iphone_cpu_when_measured():
    run, ds, converts, evals, benches = _docs()
    r = build_results(run, ds, {a: None for a in ARCHS}, converts, evals, benches)
    m = next(m for m in r.models if (m.arch, m.format) == ("mobilenet_v2", "float32"))
    assert "iPhone" in m.score_basis and "host" not in m.score_basis.lower()
    ev = evals[("mobilenet_v2", "float32")]
    basis = next(e for e in m.latency if e.backend == "ios" and e.delegate_requested == "cpu")
    assert m.score == pytest.approx(mai_score(ev.top1, ev.top3, basis.mean_ms / 1000))
    # every ok entry carries its own score; missing ones carry none and are listed
    assert all((e.score is not None) == (e.status == "ok") for mm in r.models for e in mm.latency)
    assert any(x.step == "benchmark" and x.reason for x in r.missing)
    assert {x.arch for x in r.missing if x.step == "train"} == set(ARCHS)


def test_without_iphones_the_host_is_the_basis_and_labelled():
    run, ds, converts, evals, benches = _docs(drop_ios=True)
    r = build_results(run, ds, {}, converts, evals, benches)
    for m in r.models:
        assert m.score_basis and "not an iPhone" in m.score_basis
    board = render_leaderboard(r)
    assert "not an iPhone" in board


def test_explicit_basis_and_bad_basis():
    run, ds, converts, evals, benches = _docs()
    r = build_results(run, ds, {}, converts, evals, benches, score_basis="iphone13-3-00008101/gpu")
    m = next(m for m in r.models if (m.arch, m.format) == ("mobilenet_v2", "float32"))
    gpu = next(e for e in m.latency if e.device_id == "iphone13-3-00008101" and e.delegate_requested == "gpu")
    assert m.score == gpu.score and m.score_runtime_s == pytest.approx(gpu.mean_ms / 1000)
    assert m.score_basis.startswith("iPhone 12 Pro · gpu")
    r = build_results(run, ds, {}, converts, evals, benches, score_basis="host-amd-epyc-7b13/cpu")
    assert all("AMD EPYC" in m.score_basis and "not an iPhone" in m.score_basis for m in r.models if m.score_basis)
    r = build_results(run, ds, {}, converts, evals, benches, score_basis="no-such-device/cpu")
    assert all(m.score is None and m.score_basis is None for m in r.models)
    with pytest.raises(ConfigError, match="DEVICE_ID/DELEGATE"):
        choose_basis([], "nonsense")


def test_gaps_are_recorded_never_invented():
    run, ds, converts, evals, benches = _docs()
    converts[("resnet50", "int8")] = None
    evals[("mobilenet_v2", "int8")] = None
    stale = [(k, b.model_copy(update={"model_sha256": "ef" * 32})) for k, b in benches[("efficientnet_b2", "float32")]]
    benches[("efficientnet_b2", "float32")] = stale
    r = build_results(run, ds, {}, converts, evals, benches)
    by = {(m.arch, m.format): m for m in r.models}
    assert by[("resnet50", "int8")].status == "failed" and by[("resnet50", "int8")].top1 is None
    assert by[("mobilenet_v2", "int8")].top1 is None and by[("mobilenet_v2", "int8")].score is None
    assert by[("efficientnet_b2", "float32")].latency == []  # a measurement of another file is not ours
    steps = {(x.step, x.arch, x.format) for x in r.missing}
    assert ("convert", "resnet50", "int8") in steps and ("evaluate", "mobilenet_v2", "int8") in steps
    assert ("benchmark", "efficientnet_b2", "float32") in steps
    board = render_leaderboard(r)
    assert "## Missing" in board and "not converted" in board


def test_results_round_trip_and_strictness():
    run, ds, converts, evals, benches = _docs(synthetic=True)
    r = build_results(run, ds, {}, converts, evals, benches)
    text = r.model_dump_json()
    back = Results.model_validate_json(text)
    assert back == r and back.schema_version == SCHEMA_VERSION
    doc = json.loads(text)
    doc["surprise"] = 1
    with pytest.raises(ValueError):
        Results.model_validate(doc)
    assert "Synthetic data" in render_leaderboard(r)


def test_host_label_constant():
    assert HOST_LABEL == "host CPU, not an iPhone"


def test_accuracy_carries_its_interval_into_results_and_the_leaderboard():
    from common.stats import plus_minus

    run, ds, converts, evals, benches = _docs()
    r = build_results(run, ds, {}, converts, evals, benches)
    m = next(m for m in r.models if (m.arch, m.format) == ("mobilenet_v2", "int8"))
    ev = evals[("mobilenet_v2", "int8")]
    assert m.top1_ci == ev.top1_ci and m.top3_ci == ev.top3_ci and m.count == ev.count == 600
    assert m.top1_ci.lo < m.top1 < m.top1_ci.hi
    assert m.per_image == ev.per_image  # kept for paired comparisons with later runs
    t = m.drop_top1_test
    assert t is not None and t.p_value < 0.05 and t.first_only > t.second_only
    board = render_leaderboard(r)
    row = next(line for line in board.splitlines() if "| mobilenet_v2 | int8 |" in line)
    assert plus_minus(m.top1, m.top1_ci) in row and plus_minus(m.top3, m.top3_ci) in row
    assert f"{plus_minus(t.diff, t.ci)}, p " in row
    assert "bootstrap interval over the 600 validation images" in board and "McNemar" in board
