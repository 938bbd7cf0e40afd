"""Prepare step: validate a dataset (folder, s3:// prefix or synthetic), store it as TFRecord shards, start a run.

Writes datasets/<fingerprint>/ (shards, then dataset.json) unless a dataset with the same
fingerprint is already stored, and runs/<run-id>/run.json with the run's parameters.
With --outputs-dir it also writes the Argo output parameters (archs, formats, models, fingerprint).
"""

from __future__ import annotations

import json
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal, Sequence

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from common import layout
from common.archs import ARCH_NAMES
from common.dataset import MAX_SIDE, build, scan
from common.errors import ConfigError
from common.jobkit import StepSettings, parser_for, run_job
from common.logging import get_logger
from common.provenance import code_version, container_image, image_digest
from common.schemas import FORMATS, DatasetManifest, RunManifest, RunParams
from common.settings import expand_choices, image_size_text, parse_image_size
from common.store import ArtifactStore, open_store

STEP = "prepare"
SKIPPED_LOG_LIMIT = 20


class PrepareSettings(StepSettings):
    data: str = Field(..., description="Dataset: a local folder, s3://bucket/prefix, or 'synthetic'.")
    archs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["all"], description="Architectures of the run: all, or a comma-separated list.")
    formats: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["float32", "int8"], description="TFLite formats: all, or a comma-separated list.")
    image_size: str = Field("384x576", description="Model input HEIGHTxWIDTH.")
    epochs: int = Field(10, ge=1, le=1000, description="Training epochs.")
    weights: str = Field("imagenet", description="Initial weights: none, imagenet, or a weights file path/URI.")
    runner_url: str | None = Field(None, description="Device-farm runner URL (empty: measure on this host).")
    c: float = Field(1.0, gt=0, description="The score formula's constant C.")
    trigger: Literal["manual", "nightly"] = Field("manual", description="What started the run.")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Hold-out share per class when there is no validation folder.")
    seed: int = Field(0, ge=0, description="Random seed (hold-out split, synthetic data, training).")
    synthetic_per_class: int = Field(20, ge=1, le=10000, description="Synthetic training images per class (validation: a third, at least 2).")
    synthetic_image_size: str | None = Field(None, description="Synthetic photo HEIGHTxWIDTH (default: --image-size).")
    max_side: int = Field(MAX_SIDE, ge=0, le=100_000, description=(
        "Photos longer than this on their longer side are stored downscaled to it (Lanczos, JPEG quality 95); "
        "0 keeps full size. The models take 384x576; a 12-megapixel photo kept losslessly is about 20 MB."))
    outputs_dir: str | None = Field(None, description="Folder for Argo output parameters (archs.json, formats.json, models.json, fingerprint).")

    @field_validator("archs", mode="before")
    @classmethod
    def _archs(cls, v):
        return expand_choices(v, ARCH_NAMES, "architecture(s)")

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, v):
        return expand_choices(v, FORMATS, "format(s)")

    @field_validator("image_size", "synthetic_image_size")
    @classmethod
    def _size(cls, v):
        if v is None or v == "":
            return None
        return image_size_text(v)

    @field_validator("data")
    @classmethod
    def _data(cls, v: str):
        v = v.strip()
        if not v:
            raise ValueError("empty; valid values: a folder path, s3://bucket/prefix, synthetic")
        if v.startswith("s3://") and len(v) <= len("s3://"):
            raise ValueError("an s3:// URI needs a bucket: s3://bucket/prefix")
        if "://" in v and not v.startswith(("s3://", "file://")):
            raise ValueError(f"unknown scheme in {v!r}; valid values: a folder path, file://PATH, s3://bucket/prefix, synthetic")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str):
        v = v.strip()
        if not v:
            raise ValueError("empty; valid values: none, imagenet, a weights file path, s3://bucket/key, https://...")
        if v.startswith("s3://") and "/" not in v[len("s3://"):].strip("/"):
            raise ValueError(f"{v!r} names no object; use s3://bucket/path/file.h5")
        if "://" in v and not v.startswith(("s3://", "http://", "https://", "file://")):
            raise ValueError(f"unknown scheme in {v!r}; valid values: none, imagenet, a path, s3://, https://")
        # A local path is not checked here: it must exist where training runs, which in the
        # cluster is another pod; the train step reports a missing file by name.
        return v

    @field_validator("runner_url")
    @classmethod
    def _runner(cls, v):
        if v is None or not v.strip():
            return None
        v = v.strip()
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v.rstrip("/")

    @property
    def size(self) -> tuple[int, int]:
        return parse_image_size(self.image_size)


def build_parser():
    return parser_for(PrepareSettings, "jobs.prepare", __doc__)


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def synthetic_counts(per_class: int) -> tuple[int, int]:
    """(training, validation) images per class of a synthetic set."""
    return per_class, max(2, per_class // 3)


def _materialise(settings: PrepareSettings, work: Path) -> tuple[Path, str, bool]:
    """A local folder holding the source data: (path, source label, synthetic?)."""
    data = settings.data
    if data == "synthetic":
        from common.synthetic import generate

        train_n, val_n = synthetic_counts(settings.synthetic_per_class)
        size = parse_image_size(settings.synthetic_image_size or settings.image_size)
        root = generate(work / "synthetic", train_n, val_n, settings.seed, size)
        label = f"synthetic(seed={settings.seed},per_class={train_n},size={size[0]}x{size[1]})"
        return root, label, True
    if data.startswith("s3://"):
        dest = work / "s3"
        files = open_store(data).get_prefix("", dest)
        get_logger(step=STEP).info("data_downloaded", source=data, files=len(files))
        return dest, data, False
    path = Path(data.removeprefix("file://")).expanduser()
    return path, str(path), False


def prepare_dataset(settings: PrepareSettings, store: ArtifactStore) -> tuple[DatasetManifest, bool]:
    """Scan and (unless stored already) prepare the dataset; returns (manifest, cached)."""
    log = get_logger(step=STEP)
    with tempfile.TemporaryDirectory(prefix="scenebench-prepare-") as tmp:
        work = Path(tmp)
        root, source, synthetic = _materialise(settings, work)
        s = scan(root, val_fraction=settings.val_fraction, seed=settings.seed, max_side=settings.max_side)
        key = layout.dataset_json(s.fingerprint)
        existing = None if settings.force else store.try_get_model(key, DatasetManifest)
        if existing is not None and all(store.exists(r.key) for sp in existing.splits.values() for r in sp.shards):
            return existing, True
        prepared = build(s, work / "out", source=source, synthetic=synthetic, code_version=code_version())
        for shard_key, path in prepared.shard_files:  # binaries first, the document that lists them last
            store.put_file(shard_key, path)
        store.put_json(key, prepared.manifest)
        m = prepared.manifest
        for w in m.warnings:
            log.warning("dataset_warning", detail=w)
        if m.skipped:
            log.warning("files_skipped", count=len(m.skipped),
                        files=[f"{f.path}: {f.reason}" for f in m.skipped[:SKIPPED_LOG_LIMIT]],
                        more=max(0, len(m.skipped) - SKIPPED_LOG_LIMIT), listed_in=store.describe(key))
        if prepared.ignored:
            log.info("files_ignored", count=len(prepared.ignored), examples=list(prepared.ignored[:5]),
                     why="not image files (system files, AppleDouble, hidden, text)")
        return m, False


def write_run(settings: PrepareSettings, store: ArtifactStore, run_id: str, manifest: DatasetManifest) -> RunManifest:
    h, w = settings.size
    extra = {"val_fraction": str(settings.val_fraction)}
    if manifest.synthetic:
        extra["synthetic_per_class"] = str(settings.synthetic_per_class)
    params = RunParams(
        data=settings.data, archs=list(settings.archs), formats=list(settings.formats), image_size=[h, w],
        epochs=settings.epochs, weights=settings.weights, seed=settings.seed, runner_url=settings.runner_url,
        c=settings.c, extra=extra,
    )
    key = layout.run_json(run_id)
    previous = store.try_get_model(key, RunManifest)
    if previous is not None:
        same = previous.params == params and previous.dataset_fingerprint == manifest.fingerprint
        if same:
            return previous  # a retried pod: the run is already started exactly like this
        if not settings.force:
            raise ConfigError(
                f"run {run_id} already exists at {store.describe(key)} with other parameters or data; "
                "use a new --run-id, or --force to overwrite it"
            )
    digest, why = image_digest()
    if why and container_image():
        get_logger(step=STEP, run_id=run_id).warning("image_digest_unknown", reason=why)
    run = RunManifest(
        run_id=run_id, code_version=code_version(), image=container_image(), image_digest=digest,
        trigger=settings.trigger, params=params, dataset_fingerprint=manifest.fingerprint,
        dataset_synthetic=manifest.synthetic,
    )
    store.put_json(key, run)
    return run


def write_outputs(outputs_dir: str | Path, run: RunManifest) -> None:
    """Argo output parameters: JSON lists for withParam fan-outs, the fingerprint as plain text."""
    d = Path(outputs_dir)
    d.mkdir(parents=True, exist_ok=True)
    archs, formats = run.params.archs, run.params.formats
    (d / "archs.json").write_text(json.dumps(archs))
    (d / "formats.json").write_text(json.dumps(formats))
    (d / "models.json").write_text(json.dumps([{"arch": a, "format": f} for a in archs for f in formats]))
    (d / "fingerprint").write_text(run.dataset_fingerprint)
    (d / "run_id").write_text(run.run_id)


def prepare(settings: PrepareSettings, store: ArtifactStore) -> tuple[DatasetManifest, RunManifest]:
    """The whole step, as the pipeline calls it: dataset, run.json, optional Argo outputs."""
    run_id = settings.run_id or new_run_id()
    log = get_logger(step=STEP, run_id=run_id)
    manifest, cached = prepare_dataset(settings, store)
    run = write_run(settings, store, run_id, manifest)
    if settings.outputs_dir:
        write_outputs(settings.outputs_dir, run)
    counts = {name: sp.count for name, sp in manifest.splits.items()}
    if cached:
        log.info("step_cached", step=STEP, fingerprint=manifest.fingerprint, counts=counts,
                 dataset=store.describe(layout.dataset_json(manifest.fingerprint)))
    log.info("prepare_done", fingerprint=manifest.fingerprint, cached=cached, classes=len(manifest.classes),
             counts=counts, skipped=len(manifest.skipped), synthetic=manifest.synthetic,
             run=store.describe(layout.run_json(run_id)))
    return manifest, run


def _body(settings: PrepareSettings, store: ArtifactStore) -> dict:
    manifest, run = prepare(settings, store)
    return {"run_id": run.run_id, "fingerprint": manifest.fingerprint}


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(STEP, PrepareSettings, build_parser(), _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
