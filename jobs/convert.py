"""Convert one trained architecture to one TFLite format and describe the result in convert.json."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field

from common import layout, stepcache
from common.archs import ARCH_NAMES
from common.errors import ConversionError
from common.hashing import stable_hash
from common.jobkit import StepSettings, parser_for, require_run_id, run_job
from common.logging import get_logger
from common.provenance import code_version
from common.schemas import FORMATS, ArtifactRef, ConvertReport, TrainReport
from common.store import ArtifactStore
from common.workspace import cache_dir
from jobs._io import load_run, load_train_report, local_model, shard_paths

STEP = "convert"


class ConvertSettings(StepSettings):
    arch: Literal[ARCH_NAMES] = Field(..., description="Architecture whose trained model is converted.")  # type: ignore[valid-type]
    format: Literal[FORMATS] = Field(..., description="TFLite format.")  # type: ignore[valid-type]
    calibration_samples: int = Field(200, ge=1, le=10000,
                                     description="Training images (stratified) used to calibrate int8.")
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
    from common import conversion

    run_id = require_run_id(settings)
    arch, fmt = settings.arch, settings.format
    log = get_logger(step=STEP, run_id=run_id, arch=arch, format=fmt)
    run, manifest = load_run(store, run_id)
    train = load_train_report(store, run_id, arch)
    n_cal = settings.calibration_samples if fmt == "int8" else 0
    cache_key = stable_hash({"step": STEP, "model": train.model.sha256, "format": fmt,
                             "calibration": n_cal, "seed": run.params.seed, "code": stepcache.code_fingerprint()})
    doc_key = layout.convert_json(run_id, arch, fmt)
    existing = store.try_get_model(doc_key, ConvertReport)
    if existing and existing.cache_key == cache_key and store.exists(existing.model.key) and not settings.force:
        log.info("step_cached", step=STEP, key=doc_key)
        if existing.reused_from is None:  # a retried pod may have stopped before publishing it
            stepcache.publish(store, STEP, cache_key, run_id, doc_key, [existing.model.key])
        return {"cached": True, "size_mb": existing.size_mb}
    reused = stepcache.reuse(store, STEP, cache_key, reuse_steps=settings.reuse, force=settings.force,
                             run_id=run_id, model=ConvertReport, dest_key=doc_key)
    if reused:
        return {"reused_from": reused.reused_from.run_id, "size_mb": reused.size_mb}

    import tensorflow as tf

    saved_model = saved_model_for(store, train)
    representative = None
    if fmt == "int8":
        shards = shard_paths(store, manifest, "train")
        images, _ = conversion.calibration_images(shards, tuple(train.image_size), n_cal, run.params.seed)
        representative = conversion.representative_from(images)
    t0 = time.monotonic()
    blob = conversion.convert(saved_model, fmt, representative)
    seconds = time.monotonic() - t0
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
    report = ConvertReport(
        run_id=run_id, arch=arch, format=fmt,
        model=ArtifactRef(key=info.key, sha256=info.sha256 or "", size=info.size),
        size_mb=round(info.size / 1e6, 3), input=inp, output=out, op_counts=ops,
        converter=f"tensorflow {tf.__version__} TFLiteConverter.from_saved_model (batch-1 input signature)",
        seconds=round(seconds, 2), calibration_samples=n_cal, tensors=conversion.tensor_count(blob),
        dynamic_tensors=dynamic, gpu_compatibility=gpu,
        max_output_difference=round(diff, 8),
        source_model_sha256=train.model.sha256,
        cache_key=cache_key, code_version=code_version(),
    )
    store.put_json(doc_key, report)
    stepcache.publish(store, STEP, cache_key, run_id, doc_key, [info.key])
    return {"cached": False, "size_mb": report.size_mb, "seconds": report.seconds,
            "input": f"{inp.dtype}{inp.shape}", "ops": sum(ops.values()), "dynamic_tensors": dynamic,
            "gpu_compatible": gpu.compatible, "gpu_unsupported_ops": sorted({i.op for i in gpu.ops})}


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(STEP, ConvertSettings, build_parser(), run_convert, argv)


if __name__ == "__main__":
    raise SystemExit(main())
