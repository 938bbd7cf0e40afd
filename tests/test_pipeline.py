"""The whole study on one machine, tiny: the DESIGN.md tree, results last, re-runs cached, later runs reusing
the models of the first, runs compared."""

import io
import json

import numpy as np
import pytest
from structlog.testing import capture_logs

from common import layout
from common.schemas import ConvertReport, EvalReport, Pointer, Results, TrainReport
from common.store import LocalStore
from jobs import pipeline

pytestmark = pytest.mark.slow

TINY = ["--data", "synthetic", "--archs", "mobilenet_v2", "--formats", "float32,int8", "--image-size", "32x48",
        "--epochs", "1", "--weights", "none", "--synthetic-per-class", "3", "--num-runs", "5",
        "--warmup-runs", "1", "--calibration-samples", "20"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("pipeline")
    old = os.environ.get("SCENEBENCH_CACHE_DIR")
    os.environ["SCENEBENCH_CACHE_DIR"] = str(root / "cache")
    try:
        store_dir = root / "store"
        first = pipeline.main(["--store", str(store_dir), "--run-id", "run-a", *TINY])
        with capture_logs() as rerun_logs:
            rerun = pipeline.main(["--store", str(store_dir), "--run-id", "run-a", *TINY])
        # A new run with the same code, data and parameters: only the latency is measured again.
        with capture_logs() as second_logs:
            second = pipeline.main(["--store", str(store_dir), "--run-id", "run-b", *TINY])
        with capture_logs() as third_logs:
            third = pipeline.main(["--store", str(store_dir), "--run-id", "run-c", "--reuse", "train",
                                   "--baseline", "none", *TINY])
    finally:
        if old is None:
            os.environ.pop("SCENEBENCH_CACHE_DIR", None)
        else:
            os.environ["SCENEBENCH_CACHE_DIR"] = old
    return LocalStore(store_dir), (first, rerun, second, third), rerun_logs, second_logs, third_logs


def test_the_tree_of_a_run(two_runs):
    store, codes, *_ = two_runs
    assert codes == (0, 0, 0, 0)
    keys = set(store.list())
    run = "runs/run-a/"
    for key in ("run.json", "results.json", "leaderboard.md", "report.html", "pareto.png",
                "mobilenet_v2/train.json", "mobilenet_v2/model/model.keras", "mobilenet_v2/checkpoints/last.keras",
                "mobilenet_v2/float32/model.tflite", "mobilenet_v2/float32/convert.json",
                "mobilenet_v2/float32/eval.json", "mobilenet_v2/int8/model.tflite", "mobilenet_v2/int8/eval.json",
                "mobilenet_v2/int8/quant_debug.json"):
        assert run + key in keys, key
    assert any(k.startswith(run + "mobilenet_v2/int8/bench/host-") and k.endswith("/cpu.json") for k in keys)
    assert sum(k.startswith("datasets/") and k.endswith("dataset.json") for k in keys) == 1  # prepared once
    assert "results/latest.json" in keys and any(k.startswith("results/history/") for k in keys)


def test_results_json_is_the_last_object_of_the_run(two_runs):
    store, *_ = two_runs
    run = store.root / "runs" / "run-a"
    # logs/pipeline.jsonl records the run, aggregate included, so it is uploaded after it.
    files = [p for p in run.rglob("*") if p.is_file() and not p.name.endswith(".sha256")
             and p.parent != run / "logs"]
    newest = max(files, key=lambda p: p.stat().st_mtime_ns)
    assert newest.name == "results.json"
    assert (run / "logs" / "pipeline.jsonl").is_file()


def test_results_have_every_model_measured_and_scored(two_runs):
    store, *_ = two_runs
    r = store.get_model(layout.results_json("run-a"), Results)
    assert r.dataset_synthetic and len(r.classes) == 30
    assert {(m.arch, m.format) for m in r.models} == {("mobilenet_v2", "float32"), ("mobilenet_v2", "int8")}
    for m in r.models:
        assert m.status == "ok" and m.size_mb > 0 and 0 <= m.top1 <= m.top3 <= 100
        assert m.keras_top1 is not None and m.drop_top1 is not None
        assert m.count == r.dataset_counts["validation"] and m.per_image.count == m.count
        assert m.top1_ci.lo <= m.top1 <= m.top1_ci.hi and m.top3_ci.lo <= m.top3 <= m.top3_ci.hi
        assert m.drop_top1_test is not None and 0 < m.drop_top1_test.p_value <= 1
        eps = 1e-3  # rounding of the stored numbers
        assert m.ties.top1_min - eps <= m.top1 <= m.ties.top1_max + eps and m.ties.images >= 0
        conv = store.get_model(layout.convert_json("run-a", m.arch, m.format), ConvertReport)
        assert conv.dynamic_tensors == 0 == m.dynamic_tensors and conv.input.shape[0] == 1
        assert conv.gpu_compatibility.compatible and m.gpu_compatibility == conv.gpu_compatibility
        assert conv.max_output_difference is not None and conv.tensors > 0
        if m.format == "int8":  # raw camera bytes in
            assert conv.input.dtype == "uint8" and (conv.input.quantization.scale,
                                                    conv.input.quantization.zero_point) == (1.0, 0)
            assert m.input_quantization == conv.input.quantization
        assert m.score is not None and m.score > 0 and "not an iPhone" in m.score_basis
        (e,) = m.latency
        assert e.backend == "host" and e.status == "ok" and e.mean_ms > 0 and e.peak_memory_mb > 0
    int8 = next(m for m in r.models if m.format == "int8")
    f32 = next(m for m in r.models if m.format == "float32")
    assert int8.size_mb < f32.size_mb / 2
    board = store.get_bytes(layout.leaderboard_md("run-a")).decode()
    assert "Synthetic data" in board and "mobilenet_v2" in board and "not an iPhone" in board


def test_rerun_of_a_finished_run_skips_every_step(two_runs):
    _, _, logs, *_ = two_runs
    cached = {(e.get("step"), e.get("format")) for e in logs if e["event"] == "step_cached"}
    for step in ("train",):
        assert (step, None) in cached
    for step in ("convert", "evaluate", "benchmark"):
        assert (step, "float32") in cached and (step, "int8") in cached, step
    assert not [e for e in logs if e["event"] == "epoch_done"]


def test_a_second_run_reuses_the_models_of_the_first(two_runs):
    store, _, _, logs, _ = two_runs
    events = [e["event"] for e in logs]
    # no epoch trained, no model converted, no accuracy recomputed
    assert "epoch_done" not in events
    for step in ("train", "convert", "evaluate"):
        summaries = [e for e in logs if e["event"] == f"{step}_summary"]
        assert summaries and all(e["reused_from"] == "run-a" for e in summaries), (step, summaries)
    reused = {(e["step"], e["from_run"]) for e in logs if e["event"] == "step_reused"}
    assert reused == {("train", "run-a"), ("convert", "run-a"), ("evaluate", "run-a")}
    # the latency is measured again: a new night is for measuring the phones
    assert not [e for e in logs if e["event"] == "step_cached" and e.get("step") == "benchmark"]
    assert any(k.endswith("/cpu.json") for k in store.list("runs/run-b/mobilenet_v2/int8/bench/"))
    # run-b's documents say where their results come from; the model files are run-a's
    train = store.get_model(layout.train_json("run-b", "mobilenet_v2"), TrainReport)
    assert train.run_id == "run-b" and train.reused_from.run_id == "run-a"
    assert train.model.key == layout.keras_model("run-a", "mobilenet_v2")
    for fmt in ("float32", "int8"):
        conv = store.get_model(layout.convert_json("run-b", "mobilenet_v2", fmt), ConvertReport)
        assert conv.reused_from.run_id == "run-a" and conv.model.key == layout.tflite_model("run-a", "mobilenet_v2", fmt)
        assert store.get_model(layout.eval_json("run-b", "mobilenet_v2", fmt), EvalReport).reused_from.run_id == "run-a"
    assert not [k for k in store.list("runs/run-b/") if k.endswith((".keras", ".tflite"))]
    # results.json, the leaderboard and the report's provenance say so
    r = store.get_model(layout.results_json("run-b"), Results)
    assert {(x.step, x.format, x.from_run_id) for x in r.reused} == {
        ("train", None, "run-a"), ("convert", "float32", "run-a"), ("convert", "int8", "run-a"),
        ("evaluate", "float32", "run-a"), ("evaluate", "int8", "run-a")}
    assert all(m.status == "ok" and m.drop_top1 is not None and m.score for m in r.models)
    assert "reused from run run-a" in store.get_bytes(layout.leaderboard_md("run-b")).decode()
    html = store.get_bytes(layout.report_html("run-b")).decode()
    assert "Reused results" in html and "reused from run run-a: train mobilenet_v2" in html


def test_reuse_chooses_which_steps_may_be_reused(two_runs):
    store, _, _, _, logs = two_runs
    assert {e["step"] for e in logs if e["event"] == "step_reused"} == {"train"}
    assert "epoch_done" not in [e["event"] for e in logs]
    converted = [e for e in logs if e["event"] == "convert_summary"]
    assert len(converted) == 2 and not any("reused_from" in e for e in converted)
    assert all(store.exists(layout.tflite_model("run-c", "mobilenet_v2", f)) for f in ("float32", "int8"))
    r = store.get_model(layout.results_json("run-c"), Results)
    assert {x.step for x in r.reused} == {"train"}


def test_second_run_is_compared_with_the_first(two_runs):
    store, *_ = two_runs
    b = store.get_model(layout.results_json("run-b"), Results)
    assert b.baseline_run_id == "run-a"
    latest = store.get_model(layout.LATEST, Pointer)
    assert latest.run_id == "run-c" and latest.results_key == layout.results_json("run-c")
    html = store.get_bytes(layout.report_html("run-b")).decode()
    assert "run-a" in html
    history = [json.loads((store.root / k).read_text())["run_id"] for k in store.list("results/history/")]
    assert sorted(history) == ["run-a", "run-b", "run-c"]


def test_bad_setting_stops_at_start(tmp_path, capsys):
    assert pipeline.main(["--store", str(tmp_path), "--archs", "vgg", "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert "--archs" in err and "mobilenet_v2" in err
    assert not any(tmp_path.iterdir())


def test_convert_job_with_percentile_ranges_makes_another_int8_model_on_raw_pixels(two_runs, tmp_path, monkeypatch):
    """`--calibration-percentile 99` reaches the convert job: a new cache key and model, said in convert.json,
    and the input contract (raw uint8 pixels, scale 1, zero point 0) kept. On a copy of the store, so the
    other tests see run-a as the pipeline left it."""
    import shutil

    from jobs import convert

    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    store, *_ = two_runs
    copy_dir = tmp_path / "store"
    shutil.copytree(store.root, copy_dir)
    copy = LocalStore(copy_dir)
    doc_key = layout.convert_json("run-a", "mobilenet_v2", "int8")
    before = copy.get_model(doc_key, ConvertReport)
    assert convert.main(["--store", str(copy_dir), "--run-id", "run-a", "--arch", "mobilenet_v2", "--format", "int8",
                         "--calibration-samples", "20", "--calibration-percentile", "99", "--reuse", "none"]) == 0
    after = copy.get_model(doc_key, ConvertReport)
    assert after.cache_key != before.cache_key and after.reused_from is None
    assert after.model.sha256 != before.model.sha256
    assert "99th percentile of per-image extremes" in after.converter
    assert "percentile" not in before.converter
    assert after.input.dtype == "uint8"
    assert (after.input.quantization.scale, after.input.quantization.zero_point) == (1.0, 0)
    assert after.dynamic_tensors == 0


def test_calibration_sweep_converts_the_runs_model_at_another_sample_count(two_runs, tmp_path, monkeypatch):
    """bench.calsweep: the run's int8 conversion with another calibration count, a process of its
    own beside the bench's jobs; the model takes raw pixels and runs in LiteRT, the run is untouched."""
    from bench import calsweep
    from common.evaluation import TFLiteClassifier

    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    store, *_ = two_runs
    before = sorted(store.list("runs/run-a/"))
    out = tmp_path / "sweep" / "int8-cal7.tflite"
    assert calsweep.main(["--store", str(store.root), "--run-id", "run-a", "--arch", "mobilenet_v2",
                          "--samples", "7", "--out", str(out)]) == 0
    clf = TFLiteClassifier(out, num_threads=1)
    assert clf.input["dtype"] == np.uint8 and clf.input["quantization"] == (1.0, 0)
    probs = clf.predict_one(np.full((*clf.input_size, 3), 128.0, dtype=np.float32))
    assert probs.shape[-1] == 30 and np.isfinite(probs).all()
    assert sorted(store.list("runs/run-a/")) == before
    with pytest.raises(SystemExit):
        calsweep.main(["--store", str(store.root), "--run-id", "run-a", "--arch", "mobilenet_v2",
                       "--samples", "0", "--out", str(out)])


def test_convert_job_int8_qat_fine_tunes_then_converts_to_raw_pixel_int8(two_runs, tmp_path, monkeypatch):
    """`--format int8-qat`: a fine-tuning with fake-quantized activations on the run's training split,
    recorded in convert.json, then a full-integer model on raw pixels with its debugger report. The
    code before it refuses the format (exit 2)."""
    import shutil

    from common.schemas import QuantDebugReport
    from jobs import convert

    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    store, *_ = two_runs
    copy_dir = tmp_path / "store"
    shutil.copytree(store.root, copy_dir)
    copy = LocalStore(copy_dir)
    assert convert.main(["--store", str(copy_dir), "--run-id", "run-a", "--arch", "mobilenet_v2", "--format",
                         "int8-qat", "--calibration-samples", "20", "--reuse", "none"]) == 0
    doc = copy.get_model(layout.convert_json("run-a", "mobilenet_v2", "int8-qat"), ConvertReport)
    int8 = copy.get_model(layout.convert_json("run-a", "mobilenet_v2", "int8"), ConvertReport)
    assert doc.qat is not None and int8.qat is None
    assert doc.qat.epochs == 1 and doc.qat.steps >= 1 and doc.qat.fake_quant_layers > 40
    assert doc.qat.observed_images == 20 and len(doc.qat.loss_by_epoch) == 1
    assert "quantization-aware fine-tuning" in doc.converter
    assert doc.input.dtype == "uint8" and doc.output.dtype == "uint8"
    assert (doc.input.quantization.scale, doc.input.quantization.zero_point) == (1.0, 0)
    assert doc.dynamic_tensors == 0 and doc.weights_quantization == "per-channel"
    assert doc.model.sha256 != int8.model.sha256
    debug = copy.get_model(layout.quant_debug_json("run-a", "mobilenet_v2", "int8-qat"), QuantDebugReport)
    assert debug.layers and debug.model_sha256 == doc.model.sha256
    # the fine-tuned weights in float, scored on the validation split: int8-qat's own reference
    ref = doc.qat.finetuned_float
    assert ref is not None and ref.key == layout.qat_float_predictions("run-a", "mobilenet_v2")
    npz = np.load(io.BytesIO(copy.get_bytes(ref.key, sha256=ref.sha256)))
    keras_ref = np.load(io.BytesIO(copy.get_bytes(layout.keras_val_predictions("run-a", "mobilenet_v2"))))
    assert npz["labels"].tolist() == keras_ref["labels"].tolist()
    assert npz["probs"].shape == keras_ref["probs"].shape
    assert doc.qat.finetuned_float_val_top1 == round(float(100.0 * (npz["probs"].argmax(1) == npz["labels"]).mean()), 3)
    # the evaluate step compares the int8-qat model with those weights too, on the same images
    from jobs import evaluate

    assert evaluate.main(["--store", str(copy_dir), "--run-id", "run-a", "--arch", "mobilenet_v2", "--format",
                          "int8-qat", "--reuse", "none"]) == 0
    ev = copy.get_model(layout.eval_json("run-a", "mobilenet_v2", "int8-qat"), EvalReport)
    assert ev.finetuned_float_top1 == pytest.approx(doc.qat.finetuned_float_val_top1, abs=1e-3)
    t = ev.drop_top1_vs_finetuned_test
    assert t is not None and t.diff == pytest.approx(ev.finetuned_float_top1 - ev.top1, abs=1e-3)
    assert t.ci.lo <= t.diff <= t.ci.hi
    # a second call finds its own result
    assert convert.main(["--store", str(copy_dir), "--run-id", "run-a", "--arch", "mobilenet_v2", "--format",
                         "int8-qat", "--calibration-samples", "20", "--reuse", "none"]) == 0
    assert copy.get_model(layout.convert_json("run-a", "mobilenet_v2", "int8-qat"), ConvertReport) == doc
