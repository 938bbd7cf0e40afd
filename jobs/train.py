"""Train one architecture on a prepared dataset; checkpoint every epoch and resume after a restart."""

from __future__ import annotations

import io
import shutil
import urllib.request
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import Field, field_validator

from common import layout, progress, stepcache
from common.archs import ARCH_NAMES, get_arch
from common.errors import ConfigError, NotFoundError
from common.hashing import sha256_file, stable_hash
from common.jobkit import StepSettings, parser_for, require_run_id, run_job
from common.logging import get_logger
from common.provenance import code_version
from common.schemas import ArtifactRef, TrainReport
from common.settings import image_size_text, parse_image_size
from common.store import ArtifactStore, open_store
from common.workspace import cache_dir
from jobs._io import load_run, shard_paths

STEP = "train"


class TrainSettings(StepSettings):
    arch: Literal[ARCH_NAMES] = Field(..., description="Architecture to train.")  # type: ignore[valid-type]
    epochs: int | None = Field(None, ge=1, le=1000, description="Epochs (default: the run's).")
    image_size: str | None = Field(None, description="Input HEIGHTxWIDTH (default: the run's).")
    weights: str | None = Field(None, description="none, imagenet, or a weights file path/URI (default: the run's).")
    batch_size: int | None = Field(None, ge=1, le=4096, description="Global batch size (default: the recipe's).")
    seed: int | None = Field(None, description="Random seed (default: the run's).")
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto", description="mixed_float16 training: auto = on when TensorFlow sees a GPU.")
    jit_compile: Literal["auto", "on", "off"] = Field(
        "auto", description="XLA-compile the training step: auto = Keras's choice (off without a GPU). "
                            "ResNet50 on a CPU trains about twice as fast with it.")
    reuse: stepcache.ReuseSteps = stepcache.reuse_field()

    @field_validator("image_size")
    @classmethod
    def _size(cls, v):
        if v is None:
            return v
        return image_size_text(v)


def build_parser():
    return parser_for(TrainSettings, "jobs.train", __doc__)


def resolve_weights(weights: str, workdir: Path) -> tuple[str, str | None]:
    """(value for build_model, sha256 of the weights file when it is a file). Fetches URIs."""
    if weights in ("none", "imagenet"):
        return weights, None
    name = Path(weights.split("?")[0]).name
    if weights.startswith("s3://"):
        bucket_and_key = weights[len("s3://"):]
        bucket, _, key = bucket_and_key.partition("/")
        if not key:
            raise ConfigError(f"weights URI {weights!r} names no object: use s3://bucket/path/file.h5")
        local = workdir / "weights" / name
        open_store(f"s3://{bucket}").get_file(key, local)
    elif weights.startswith(("http://", "https://")):
        local = workdir / "weights" / name
        local.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(weights, timeout=120) as resp, open(local, "wb") as f:
            shutil.copyfileobj(resp, f)
    else:
        local = Path(weights.removeprefix("file://")).expanduser()
        if not local.is_file():
            raise ConfigError(f"bad setting --weights: file {str(local)!r} does not exist; "
                              "valid values: none, imagenet, a path or s3:// / https:// URI of a weights file")
    return str(local), sha256_file(local)


def run_train(settings: TrainSettings, store: ArtifactStore) -> dict:
    from common import dataset as data
    from common import training

    run_id = require_run_id(settings)
    arch = get_arch(settings.arch)
    log = get_logger(step=STEP, run_id=run_id, arch=arch.name)
    run, manifest = load_run(store, run_id)
    epochs = settings.epochs or run.params.epochs
    image_size = parse_image_size(settings.image_size or run.params.image_size)
    weights = settings.weights or run.params.weights
    seed = run.params.seed if settings.seed is None else settings.seed
    batch_size = settings.batch_size or run.params.batch_size

    workdir = cache_dir() / "work" / run_id / arch.name
    weights_value, weights_sha = resolve_weights(weights, workdir)
    cache_key = stable_hash({
        "step": STEP, "dataset": manifest.fingerprint, "arch": arch.name, "image_size": image_size,
        "epochs": epochs, "weights": weights if weights_sha is None else weights_sha, "batch": batch_size,
        "seed": seed, "code": stepcache.code_fingerprint(step=STEP), "mixed_precision": settings.mixed_precision,
        **({"jit_compile": settings.jit_compile} if settings.jit_compile != "auto" else {}),
    })

    doc_key, val_key = layout.train_json(run_id, arch.name), layout.keras_val_predictions(run_id, arch.name)
    earlier = stepcache.earlier_result(
        store, STEP, cache_key, run_id=run_id, doc_key=doc_key, model=TrainReport, force=settings.force,
        reuse_steps=settings.reuse, log=log, files=lambda doc: [doc.model.key, val_key],
        # evaluate reads the Keras reference predictions by this run's path: copied (small)
        copies=lambda src: {layout.keras_val_predictions(src, arch.name): val_key})
    if earlier:
        doc, how = earlier
        return {**how, "val_top1": doc.last_val_top1, "val_top3": doc.last_val_top3}

    train_shards = shard_paths(store, manifest, "train")
    val_shards = shard_paths(store, manifest, "validation")
    num_train = manifest.splits["train"].count
    num_classes = len(manifest.classes)

    # Resume: bring back the last checkpoint of this run if it was made with the same inputs.
    ckpt_dir = workdir / "checkpoints"
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True)
    if not settings.force and store.exists(layout.checkpoint_state(run_id, arch.name)):
        try:
            store.get_file(layout.checkpoint_state(run_id, arch.name), ckpt_dir / "state.json")
            store.get_file(layout.checkpoint_model(run_id, arch.name), ckpt_dir / "last.keras")
        except NotFoundError:
            log.warning("checkpoint_incomplete", detail="state without model; starting over")

    def upload_checkpoint(model_path: Path, state_path: Path) -> None:
        # model first, state last: a state never points at an older model
        store.put_file(layout.checkpoint_model(run_id, arch.name), model_path)
        store.put_file(layout.checkpoint_state(run_id, arch.name), state_path)

    config = training.TrainConfig(arch=arch.name, image_size=image_size, epochs=epochs,
                                  num_classes=num_classes, weights=weights_value, batch_size=batch_size,
                                  seed=seed, mixed_precision=settings.mixed_precision,
                                  jit_compile=settings.jit_compile)
    outcome = training.train(
        config,
        make_train_ds=lambda b, s: data.load_split(train_shards, image_size, b, training=True, seed=s),
        make_val_ds=lambda b: data.load_split(val_shards, image_size, b, training=False),
        num_train=num_train, workdir=ckpt_dir, cache_key=cache_key,
        on_checkpoint=upload_checkpoint, resume=not settings.force,
        callbacks=[progress.keras_callback(epochs)],
    )

    model_info = store.put_file(layout.keras_model(run_id, arch.name), outcome.model_path)
    buf = io.BytesIO()
    np.savez_compressed(buf, probs=outcome.val_probs, labels=outcome.val_labels)
    store.put_bytes(val_key, buf.getvalue())

    import keras
    import tensorflow as tf

    hist = outcome.history
    best = max(hist, key=lambda r: (r.val_top1, r.val_top3))
    from common.metrics import accuracy

    last_top1 = accuracy(outcome.val_probs, outcome.val_labels, 1)
    last_top3 = accuracy(outcome.val_probs, outcome.val_labels, 3)
    report = TrainReport(
        run_id=run_id, arch=arch.name, weights=weights, image_size=list(image_size), num_classes=num_classes,
        epochs=epochs, batch_size=outcome.batch_size, recipe=outcome.recipe, history=hist,
        best_epoch=best.epoch, best_val_top1=best.val_top1, best_val_top3=best.val_top3,
        last_val_top1=last_top1, last_val_top3=last_top3, images_per_s=outcome.images_per_s,
        wall_time_s=outcome.wall_time_s, resumed_from_epoch=outcome.resumed_from_epoch,
        hardware=outcome.hardware,
        model=ArtifactRef(key=model_info.key, sha256=model_info.sha256 or "", size=model_info.size),
        dataset_fingerprint=manifest.fingerprint, cache_key=cache_key,
        tensorflow_version=tf.__version__, keras_version=keras.__version__, code_version=code_version(),
    )
    store.put_json(doc_key, report)
    stepcache.publish(store, STEP, cache_key, run_id, doc_key, [model_info.key, val_key])
    return {"cached": False, "epochs": epochs, "val_top1": round(last_top1, 2), "val_top3": round(last_top3, 2),
            "images_per_s": outcome.images_per_s, "wall_time_s": outcome.wall_time_s,
            "resumed_from_epoch": outcome.resumed_from_epoch}


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(STEP, TrainSettings, build_parser(), run_train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
