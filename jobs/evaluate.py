"""Evaluate one .tflite model with the LiteRT interpreter over the whole validation split."""

from __future__ import annotations

import io
import time
from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from common import layout, progress, stepcache
from common.archs import ARCH_NAMES
from common.hashing import stable_hash
from common.jobkit import StepSettings, parser_for, require_run_id, run_job
from common.logging import get_logger
from common.provenance import code_version
from common.schemas import FORMATS, ClassAccuracy, EvalReport
from common.store import ArtifactStore
from jobs._io import load_convert_report, load_run, local_model, shard_paths

STEP = "evaluate"


class EvaluateSettings(StepSettings):
    arch: Literal[ARCH_NAMES] = Field(..., description="Architecture.")  # type: ignore[valid-type]
    format: Literal[FORMATS] = Field(..., description="TFLite format.")  # type: ignore[valid-type]
    num_threads: int = Field(2, ge=1, le=64, description="LiteRT interpreter threads.")
    reuse: stepcache.ReuseSteps = stepcache.reuse_field()


def build_parser():
    return parser_for(EvaluateSettings, "jobs.evaluate", __doc__)


def run_evaluate(settings: EvaluateSettings, store: ArtifactStore) -> dict:
    from common import dataset as data
    from common.evaluation import TFLiteClassifier, agreement, paired_test, summarize
    from common.metrics import accuracy, topk_correct

    run_id = require_run_id(settings)
    arch, fmt = settings.arch, settings.format
    log = get_logger(step=STEP, run_id=run_id, arch=arch, format=fmt)
    run, manifest = load_run(store, run_id)
    conv = load_convert_report(store, run_id, arch, fmt)
    cache_key = stable_hash({"step": STEP, "model": conv.model.sha256, "dataset": manifest.fingerprint,
                             "code": stepcache.code_fingerprint(step=STEP)})
    doc_key = layout.eval_json(run_id, arch, fmt)
    earlier = stepcache.earlier_result(store, STEP, cache_key, run_id=run_id, doc_key=doc_key, model=EvalReport,
                                       force=settings.force, reuse_steps=settings.reuse, log=log)
    if earlier:
        doc, how = earlier
        return {**how, "top1": doc.top1, "top3": doc.top3}

    t0 = time.monotonic()
    clf = TFLiteClassifier(local_model(store, conv), num_threads=settings.num_threads)
    val = data.load_split(shard_paths(store, manifest, "validation"), clf.input_size, 16, training=False)
    batches = progress.track(((x.numpy(), y.numpy()) for x, y in val), "validation",
                             total=manifest.splits["validation"].count, unit="images", count=lambda b: len(b[1]))
    probs, labels = clf.predict(batches)
    num_classes = len(manifest.classes)
    s = summarize(probs, labels, num_classes)

    keras_top1 = keras_top3 = agree = test1 = test3 = None
    ref_key = layout.keras_val_predictions(run_id, arch)
    if store.exists(ref_key):
        ref = np.load(io.BytesIO(store.get_bytes(ref_key)))
        if ref["labels"].shape == labels.shape and (ref["labels"] == labels).all():
            keras_top1 = accuracy(ref["probs"], labels, 1)
            keras_top3 = accuracy(ref["probs"], labels, 3)
            agree = agreement(ref["probs"], probs)
            # Keras minus TFLite on the same images: is what the conversion lost more than chance?
            test1 = paired_test(topk_correct(ref["probs"], labels, 1), s["top1_correct"])
            test3 = paired_test(topk_correct(ref["probs"], labels, 3), s["top3_correct"])
        else:
            log.warning("keras_reference_mismatch", detail="validation labels differ; no drop computed")
    finetuned_top1 = finetuned_test = None
    tuned_ref = conv.qat.finetuned_float if conv.qat else None
    if tuned_ref is not None:  # int8-qat: its own fine-tuned weights in float, on the same images
        tuned = np.load(io.BytesIO(store.get_bytes(tuned_ref.key, sha256=tuned_ref.sha256)))
        if tuned["labels"].shape == labels.shape and (tuned["labels"] == labels).all():
            finetuned_top1 = accuracy(tuned["probs"], labels, 1)
            finetuned_test = paired_test(topk_correct(tuned["probs"], labels, 1), s["top1_correct"])
        else:
            log.warning("finetuned_reference_mismatch", detail="validation labels differ; no drop computed")
    names = [c.name for c in sorted(manifest.classes, key=lambda c: c.index)]
    report = EvalReport(
        run_id=run_id, arch=arch, format=fmt, model_sha256=conv.model.sha256, count=s["count"],
        top1=round(s["top1"], 4), top3=round(s["top3"], 4),
        per_class=[ClassAccuracy(index=i, name=names[i], count=n, top1=round(acc, 4) if n else 0.0)
                   for i, (n, acc) in enumerate(s["per_class"])],
        confusion=s["confusion"].tolist(),
        keras_top1=None if keras_top1 is None else round(keras_top1, 4),
        keras_top3=None if keras_top3 is None else round(keras_top3, 4),
        drop_top1=None if keras_top1 is None else round(keras_top1 - s["top1"], 4),
        drop_top3=None if keras_top3 is None else round(keras_top3 - s["top3"], 4),
        agreement_with_keras=None if agree is None else round(agree, 4),
        top1_ci=s["top1_ci"], top3_ci=s["top3_ci"], drop_top1_test=test1, drop_top3_test=test3,
        finetuned_float_top1=None if finetuned_top1 is None else round(finetuned_top1, 4),
        drop_top1_vs_finetuned_test=finetuned_test,
        per_image=s["per_image"], ties=s["ties"],
        seconds=round(time.monotonic() - t0, 2), cache_key=cache_key, code_version=code_version(),
    )
    store.put_json(doc_key, report)
    stepcache.publish(store, STEP, cache_key, run_id, doc_key)
    return {"cached": False, "count": report.count, "top1": report.top1, "top3": report.top3,
            "top1_ci": [report.top1_ci.lo, report.top1_ci.hi], "drop_top1": report.drop_top1,
            "drop_top1_p": test1.p_value if test1 is not None else None, "tied_images": report.ties.images,
            "top1_over_ties": [report.ties.top1_min, report.ties.top1_max], "seconds": report.seconds}


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(STEP, EvaluateSettings, build_parser(), run_evaluate, argv)


if __name__ == "__main__":
    raise SystemExit(main())
