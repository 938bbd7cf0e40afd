"""Convert one trained architecture to one TFLite format and describe the result in convert.json."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field

from common import layout, progress, stepcache
from common.archs import ARCH_NAMES
from common.errors import ConversionError
from common.hashing import stable_hash
from common.jobkit import StepSettings, parser_for, require_run_id, run_job
from common.logging import get_logger
from common.provenance import code_version
from common.schemas import (FORMATS, INTEGER_FORMATS, ArtifactRef, ConvertReport, QatInfo, QuantDebugReport,
                            TrainReport)
from common.store import ArtifactStore
from common.workspace import cache_dir
from jobs._io import load_run, load_train_report, local_model, shard_paths

STEP = "convert"
# The formats whose activation ranges --calibration-percentile sets (int16x8 keeps the converter's).
RANGED_FORMATS = ("int8", "int8-selective")


class ConvertSettings(StepSettings):
    arch: Literal[ARCH_NAMES] = Field(..., description="Architecture whose trained model is converted.")  # type: ignore[valid-type]
    format: Literal[FORMATS] = Field(..., description="TFLite format.")  # type: ignore[valid-type]
    calibration_samples: int = Field(200, ge=1, le=10000,
                                     description="Training images (stratified) used to calibrate integer formats.")
    float_layers: int = Field(5, ge=1, le=100,
                              description="int8-selective: at most this many of the debugger's worst layers stay float.")
    calibration_percentile: float = Field(
        100.0, ge=50, le=100,
        description="int8, int8-selective: each activation range from this percentile of the tensor's per-image "
                    "extremes over the calibration images (100: the converter's own min/max; 99 leaves out the "
                    "two most extreme of 200 images).")
    qat_epochs: int = Field(1, ge=1, le=50,
                            description="int8-qat: epochs of quantization-aware fine-tuning on the training split.")
    jit_compile: Literal["auto", "on", "off"] = Field(
        "auto", description="int8-qat: XLA-compile the fine-tuning step (auto: Keras's choice, off without a GPU).")
    reuse: stepcache.ReuseSteps = stepcache.reuse_field()


def build_parser():
    return parser_for(ConvertSettings, "jobs.convert", __doc__)


def saved_model_for(store: ArtifactStore, train: TrainReport) -> Path:
    """A batch-1 SavedModel export of the trained Keras model, shared by all formats of one model."""
    from common.conversion import export_saved_model
    from common.training import float32_copy, load_keras_model

    # "batch1": exports of older code had a dynamic batch and must not be reused.
    out = cache_dir() / "saved_models_batch1" / train.model.sha256
    if (out / "saved_model.pb").is_file():
        return out
    keras_path = local_model(store, train)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    model = float32_copy(load_keras_model(keras_path), train.arch, tuple(train.image_size), train.num_classes)
    export_saved_model(model, tmp / "sm")
    if not out.exists():
        shutil.move(str(tmp / "sm"), out)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def run_convert(settings: ConvertSettings, store: ArtifactStore) -> dict:
    from common import conversion, quantdebug

    run_id = require_run_id(settings)
    arch, fmt = settings.arch, settings.format
    log = get_logger(step=STEP, run_id=run_id, arch=arch, format=fmt)
    run, manifest = load_run(store, run_id)
    train = load_train_report(store, run_id, arch)
    n_cal = settings.calibration_samples if fmt in INTEGER_FORMATS else 0
    percentile = settings.calibration_percentile if fmt in RANGED_FORMATS else quantdebug.MINMAX_PERCENTILE
    cache_key = stable_hash({"step": STEP, "model": train.model.sha256, "format": fmt,
                             "calibration": n_cal, "seed": run.params.seed, "code": stepcache.code_fingerprint(step=STEP),
                             **({"float_layers": settings.float_layers} if fmt == "int8-selective" else {}),
                             **({"percentile": percentile} if percentile < quantdebug.MINMAX_PERCENTILE else {}),
                             **({"qat_epochs": settings.qat_epochs, "dataset": manifest.fingerprint,
                                 **({"jit": settings.jit_compile} if settings.jit_compile != "auto" else {})}
                                if fmt == "int8-qat" else {})})
    doc_key = layout.convert_json(run_id, arch, fmt)
    earlier = stepcache.earlier_result(store, STEP, cache_key, run_id=run_id, doc_key=doc_key, model=ConvertReport,
                                       force=settings.force, reuse_steps=settings.reuse, log=log,
                                       files=_files)
    if earlier:
        doc, how = earlier
        return {**how, "size_mb": doc.size_mb}

    import tensorflow as tf

    saved_model = saved_model_for(store, train)
    representative = None
    if fmt in INTEGER_FORMATS:
        shards = shard_paths(store, manifest, "train")
        images, _ = conversion.calibration_images(shards, tuple(train.image_size), n_cal, run.params.seed)
        images_one_by_one = conversion.representative_from(images)

        def representative():
            return progress.track(images_one_by_one(), "int8 calibration", total=len(images), unit="images")
    t0 = time.monotonic()
    debug_layers, float_layers, calibrated, qat = None, [], None, None
    tmp_dir = None
    if fmt == "int8-qat":
        tmp_dir = tempfile.TemporaryDirectory()
        saved_model, qat = _quantization_aware(store, run_id, run, manifest, train, images, settings.qat_epochs,
                                               Path(tmp_dir.name), log, settings.jit_compile)
    if percentile < quantdebug.MINMAX_PERCENTILE:
        calibrated = quantdebug.percentile_ranges(quantdebug.calibrate(saved_model, representative), representative,
                                                  percentile)
    if fmt == "int8-selective":
        sel = quantdebug.selective(saved_model, representative, settings.float_layers, calibrated=calibrated)
        blob, float_layers, calibrated = sel.model, [x.tensor for x in sel.float_layers], sel.calibrated
        log.info("float_layers", layers=[f"{x.op} {'/'.join(x.layers)} ({x.rmse_over_scale})" for x in sel.float_layers])
    elif calibrated is not None:  # int8 from the narrowed ranges: the converter's quantizer call, its checks
        blob = quantdebug.quantize(calibrated)
        conversion.check_int8(blob)
    else:  # int8-qat: the int8 conversion of the fine-tuned model, which carries its own ranges
        blob = conversion.convert(saved_model, "int8" if fmt == "int8-qat" else fmt, representative)
    seconds = time.monotonic() - t0
    if fmt in ("int8", "int8-selective", "int8-qat"):
        debug_layers = _diagnose(saved_model, representative, float_layers, calibrated)
    # The shapes are checked inside convert(); the network itself is checked here: a route
    # that keeps the shapes but loses the weights gives other outputs than the SavedModel.
    diff = conversion.max_output_difference(blob, saved_model)
    limit = conversion.OUTPUT_TOLERANCE.get(fmt, float("inf"))
    if not diff <= limit or diff == float("inf"):
        raise ConversionError(f"the {fmt} model computes other outputs than the Keras model it was converted "
                              f"from (largest difference {diff:.3g}, allowed {limit:g}; inf: NaN outputs): the "
                              "conversion lost part of the network")
    dynamic, _ = conversion.dynamic_tensors(blob)
    gpu = conversion.gpu_compatibility(blob)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.tflite"
        path.write_bytes(blob)
        inp, out, ops = conversion.inspect_tflite(path)
        info = store.put_file(layout.tflite_model(run_id, arch, fmt), path)
    if debug_layers is not None:
        _put_quant_debug(store, run_id, arch, fmt, n_cal, debug_layers, info.sha256 or "")
    report = ConvertReport(
        run_id=run_id, arch=arch, format=fmt,
        model=ArtifactRef(key=info.key, sha256=info.sha256 or "", size=info.size),
        size_mb=round(info.size / 1e6, 3), input=inp, output=out, op_counts=ops,
        converter=f"tensorflow {tf.__version__} TFLiteConverter.from_saved_model (batch-1 input signature)"
                  + (", calibrated, then quantized with the debugger's denylisted_nodes" if float_layers else "")
                  + (f", activation ranges at the {percentile:g}th percentile of per-image extremes"
                     if percentile < quantdebug.MINMAX_PERCENTILE else "")
                  + (f", after {qat.epochs} epoch(s) of quantization-aware fine-tuning (fake-quantized activations, "
                     "their learnt ranges kept)" if qat else ""),
        seconds=round(seconds, 2), calibration_samples=n_cal, tensors=conversion.tensor_count(blob),
        dynamic_tensors=dynamic, gpu_compatibility=gpu,
        max_output_difference=round(diff, 8),
        weights_quantization=quantdebug.weights_granularity(blob), float_layers=float_layers, qat=qat,
        source_model_sha256=train.model.sha256,
        cache_key=cache_key, code_version=code_version(),
    )
    store.put_json(doc_key, report)
    stepcache.publish(store, STEP, cache_key, run_id, doc_key, _files(report))
    if tmp_dir is not None:
        tmp_dir.cleanup()
    return {"cached": False, "size_mb": report.size_mb, "seconds": report.seconds,
            "input": f"{inp.dtype}{inp.shape}", "ops": sum(ops.values()), "dynamic_tensors": dynamic,
            "gpu_compatible": gpu.compatible, "gpu_unsupported_ops": sorted({i.op for i in gpu.ops})}


def _files(doc: ConvertReport) -> list[str]:
    """The store files a convert.json stands for."""
    return [doc.model.key] + ([doc.qat.finetuned_float.key] if doc.qat and doc.qat.finetuned_float else [])


def _quantization_aware(store: ArtifactStore, run_id: str, run, manifest, train: TrainReport, calibration,
                        epochs: int, work: Path, log, jit_compile: str = "auto") -> tuple[Path, QatInfo]:
    """Fine-tune the trained model with fake-quantized activations (common.qat); its SavedModel.

    The fine-tuned weights are also scored in float on the validation split (fake quantization
    passed through) and their probabilities stored: the extra epochs train as well as quantize,
    and only that reference tells the two apart.
    """
    import io

    import numpy as np

    from common import dataset as data
    from common import qat, training
    from common.archs import get_arch
    from common.conversion import export_saved_model

    size = tuple(train.image_size)
    shards = shard_paths(store, manifest, "train")
    model = training.float32_copy(training.load_keras_model(local_model(store, train)), train.arch, size,
                                  train.num_classes)
    recipe = training.effective_recipe(get_arch(train.arch), pretrained=train.weights != "none")
    out = qat.fine_tune(model, lambda b, s: data.load_split(shards, size, b, training=True, seed=s),
                        manifest.splits["train"].count, recipe=recipe, epochs=epochs, batch_size=train.batch_size,
                        seed=run.params.seed, calibration=calibration,
                        callbacks=[progress.keras_callback(epochs)], jit_compile=jit_compile)
    val = data.load_split(shard_paths(store, manifest, "validation"), size, 64, training=False)
    probs, labels = qat.float_predictions(out.model, val)
    buf = io.BytesIO()
    np.savez_compressed(buf, probs=probs, labels=labels)
    ref = store.put_bytes(layout.qat_float_predictions(run_id, train.arch), buf.getvalue())
    info = QatInfo(epochs=epochs, steps=out.steps, batch_size=out.batch_size, learning_rate=out.learning_rate,
                   optimizer=out.optimizer, ema_decay=out.ema_decay, fake_quant_layers=out.fake_quant_layers,
                   observed_images=out.observed_images, loss_by_epoch=out.loss_by_epoch, seconds=out.seconds,
                   finetuned_float=ArtifactRef(key=ref.key, sha256=ref.sha256 or "", size=ref.size),
                   finetuned_float_val_top1=round(float(100.0 * (probs.argmax(axis=1) == labels).mean()), 3))
    log.info("qat_done", **info.model_dump())
    return export_saved_model(out.model, work / "qat_saved_model"), info


def _diagnose(saved_model: Path, representative, float_layers: list[str], calibrated: bytes | None):
    """The debugger's per-layer errors of the integer model (its float layers have none).

    For int8 the debugger calibrates on the same images the converter did; calibration is
    deterministic, so the scales it debugs are the ones in model.tflite.
    """
    from common import quantdebug

    calibrated = calibrated or quantdebug.calibrate(saved_model, representative)
    return quantdebug.diagnose(calibrated, representative, denylisted_nodes=float_layers)


def _put_quant_debug(store: ArtifactStore, run_id: str, arch: str, fmt: str, n_cal: int, layers, sha256: str) -> None:
    import tensorflow as tf

    from common import quantdebug

    doc = QuantDebugReport(
        run_id=run_id, arch=arch, format=fmt, tool=f"tf.lite.experimental.QuantizationDebugger (tensorflow {tf.__version__})",
        calibration_samples=n_cal, images=n_cal, suspect_threshold=quantdebug.SUSPECT_RMSE_OVER_SCALE,
        layers=layers, worst=[x.tensor for x in quantdebug.worst(layers, 5)], model_sha256=sha256)
    store.put_json(layout.quant_debug_json(run_id, arch, fmt), doc)


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(STEP, ConvertSettings, build_parser(), run_convert, argv)


if __name__ == "__main__":
    raise SystemExit(main())
