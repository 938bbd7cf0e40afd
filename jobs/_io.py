"""Store reads that several jobs share: the run, its dataset, and earlier steps' reports."""

from __future__ import annotations

from pathlib import Path

from common import layout
from common.errors import NotFoundError
from common.schemas import ConvertReport, DatasetManifest, RunManifest, TrainReport
from common.store import ArtifactStore
from common.workspace import cache_dir, fetch


def load_run(store: ArtifactStore, run_id: str) -> tuple[RunManifest, DatasetManifest]:
    try:
        run = store.get_model(layout.run_json(run_id), RunManifest)
    except NotFoundError:
        raise NotFoundError(
            f"{store.describe(layout.run_json(run_id))} does not exist: run `python -m jobs.prepare "
            f"--run-id {run_id} --store {store.uri} --data ...` first") from None
    manifest = store.get_model(layout.dataset_json(run.dataset_fingerprint), DatasetManifest)
    return run, manifest


def shard_paths(store: ArtifactStore, manifest: DatasetManifest, split: str) -> list[str]:
    """Local, verified copies of a split's shards."""
    if split not in manifest.splits:
        raise NotFoundError(f"dataset {manifest.fingerprint} has no {split!r} split")
    return [str(fetch(store, ref, cache_dir() / "data")) for ref in manifest.splits[split].shards]


def load_train_report(store: ArtifactStore, run_id: str, arch: str) -> TrainReport:
    try:
        return store.get_model(layout.train_json(run_id, arch), TrainReport)
    except NotFoundError:
        raise NotFoundError(
            f"{store.describe(layout.train_json(run_id, arch))} does not exist: train {arch} first "
            f"(python -m jobs.train --run-id {run_id} --arch {arch})") from None


def load_convert_report(store: ArtifactStore, run_id: str, arch: str, fmt: str) -> ConvertReport:
    try:
        return store.get_model(layout.convert_json(run_id, arch, fmt), ConvertReport)
    except NotFoundError:
        raise NotFoundError(
            f"{store.describe(layout.convert_json(run_id, arch, fmt))} does not exist: convert first "
            f"(python -m jobs.convert --run-id {run_id} --arch {arch} --format {fmt})") from None


def local_model(store: ArtifactStore, report: ConvertReport | TrainReport) -> Path:
    return fetch(store, report.model, cache_dir() / "models")
