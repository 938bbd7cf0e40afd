"""Step results kept by the cache key of their inputs, so that no run computes what another already has.

train, convert and evaluate each compute a cache key from everything their result depends on
(dataset fingerprint, parameters, code version, the sha256 of the model they start from). When
one of them finishes, it publishes `cache/<step>/<key>.json`: the run that computed the result,
and the sha256 of its document and of every file the document needs. A later run with the same
key (a second `make run`, tomorrow's nightly, a pod of another workflow: the entry is in the
store) verifies each of those files against its sha256 and records the result in its own
layout, "reused from run X", instead of computing it again. The files stay where the producing
run wrote them; the new run's document points at them (small files that readers look up by the
run's own path are copied).

Runs that compute one key at the same time each write their files under their own run; the
entry is the only thing they share, and it is created only when absent: the first complete
result wins and nothing a run wrote is ever overwritten.

Benchmarks are not in the cache: a new night is for measuring the phones again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Callable, Literal, Mapping, Sequence, TypeVar

from pydantic import BaseModel, BeforeValidator, Field, ValidationError

from common import layout
from common.errors import ChecksumError, NotFoundError, StoreError
from common.logging import get_logger
from common.schemas import (ArtifactRef, ConvertReport, EvalReport, ReusedFrom, ReusedStep, TrainReport,
                            Versioned, utcnow)
from common.settings import split_list
from common.store import ArtifactStore
from common.workspace import cache_dir, fetch

Step = Literal["train", "convert", "evaluate"]
REUSABLE: tuple[str, ...] = ("train", "convert", "evaluate")
DEFAULT_REUSE = ",".join(REUSABLE)

M = TypeVar("M", bound=BaseModel)


def canonical_reuse(value: object) -> str:
    """'train,convert' / '["train"]' / 'all' / 'none' -> the steps in pipeline order, comma-separated."""
    items = split_list(value)
    if items in (["none"], []):
        return ""
    if items == ["all"]:
        return DEFAULT_REUSE
    bad = [i for i in items if i not in REUSABLE]
    if bad or "none" in items or "all" in items:
        raise ValueError(f"cannot reuse {', '.join(map(repr, bad or items))}; valid values: a comma-separated "
                         f"list of {', '.join(REUSABLE)}, or all, or none (benchmarks are always measured afresh)")
    return ",".join(s for s in REUSABLE if s in items)


ReuseSteps = Annotated[str, BeforeValidator(canonical_reuse)]
REUSE_HELP = (f"Steps whose results may be taken from an earlier run with the same inputs: a comma-separated "
              f"list of {', '.join(REUSABLE)}, all, or none. --force re-runs everything.")


def reuse_field() -> object:
    return Field(DEFAULT_REUSE, description=REUSE_HELP)


# Libraries whose version changes what training, conversion and evaluation produce.
KEY_LIBRARIES = ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "numpy")


PACKAGES = ("common", "jobs")


def step_sources(root: Path, step: str) -> list[Path]:
    """The project modules jobs/<step>.py can import, itself included: every `import common.x` /
    `from common import x` / `from jobs.y import z` in them, followed recursively, including the
    imports inside functions (read from the source, so a lazily imported module counts too)."""
    import ast

    def module_file(dotted: str) -> Path | None:
        base = root.joinpath(*dotted.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    start = root / "jobs" / f"{step}.py"
    if not start.is_file():
        raise ValueError(f"no job module for step {step!r} under {root / 'jobs'}; valid values: {', '.join(REUSABLE)}")
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] not in PACKAGES:
                    continue
                for i in range(1, len(parts) + 1):  # the packages on the way count: their __init__ runs
                    found = module_file(".".join(parts[:i]))
                    if found is not None:
                        todo.append(found)
    return sorted(seen)


def code_fingerprint(root: Path | None = None, step: str | None = None) -> str:
    """The code part of a cache key: the sources a step can import and the library versions.

    Not `git describe`: that reads `<sha>-dirty` for every uncommitted edit, and a run after an
    edit of the training code would reuse models trained before it. Not every source either:
    an edit of the conversion code would retrain every model. With a step, the modules of
    common/ and jobs/ that jobs/<step>.py imports, directly or not (step_sources); without
    one, all of them. The image holds the same files (installed), so a pod and a laptop on the
    same commit compute the same keys.
    """
    if root is None:
        return _installed_code_fingerprint(step)
    if step is None:
        paths = sorted(p for package in PACKAGES for p in (root / package).rglob("*.py"))
    else:
        paths = step_sources(root, step)
    h = hashlib.sha256()
    for path in paths:
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for dist in KEY_LIBRARIES:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        h.update(f"{dist}=={version}\n".encode())
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=None)
def _installed_code_fingerprint(step: str | None) -> str:
    return code_fingerprint(Path(__file__).resolve().parent.parent, step)


def may_reuse(step: str, reuse: str, force: bool) -> bool:
    return not force and step in reuse.split(",")


class Unusable(StoreError):
    """A cache entry that does not verify: the result is computed again."""


class CacheEntry(Versioned):
    """cache/<step>/<key>.json: which run computed the result with this key, and what it must hash to."""

    kind: Literal["cache-entry"] = "cache-entry"
    step: Step
    cache_key: str
    run_id: str = Field(description="the run that computed the result")
    document: ArtifactRef = Field(description="its train.json / convert.json / eval.json")
    files: list[ArtifactRef] = Field(default_factory=list, description="every file the document needs")
    created_at: datetime = Field(default_factory=utcnow)


@dataclass(frozen=True)
class Hit:
    entry: CacheEntry
    entry_key: str
    document: bytes


def _ref(store: ArtifactStore, key: str) -> ArtifactRef:
    info = store.stat(key)
    if info is None or not info.sha256:
        raise Unusable(f"{store.describe(key)} is missing or has no recorded sha256")
    return ArtifactRef(key=key, sha256=info.sha256, size=info.size)


def publish(store: ArtifactStore, step: str, cache_key: str, run_id: str, document_key: str,
            files: Sequence[str] = ()) -> bool:
    """Offer this run's finished result for cache_key; True when it became the cached one.

    Call after the document (written last, after its files) is in the store. An existing entry
    is kept unless it no longer verifies (its files were deleted or changed), then replaced.
    """
    log = get_logger(step=step, run_id=run_id)
    key = layout.cache_entry(step, cache_key)
    try:
        entry = CacheEntry(step=step, cache_key=cache_key, run_id=run_id, document=_ref(store, document_key),
                           files=[_ref(store, k) for k in files])
    except StoreError as exc:
        # The run's own result stands; only later runs lose the chance to reuse it.
        log.warning("cache_publish_failed", key=key, error=str(exc))
        return False
    data = (entry.model_dump_json(indent=2) + "\n").encode()
    if store.put_bytes_if_absent(key, data):
        log.info("cache_published", key=key)
        return True
    existing = lookup(store, step, cache_key, fetch_files=False)
    if existing is None:
        # The entry there points at nothing usable: this complete result takes its place.
        store.put_bytes(key, data)
        log.info("cache_published", key=key, replaced="an entry whose files no longer verify")
        return True
    log.info("cache_entry_kept", key=key, computed_by=existing.entry.run_id,
             detail="another run published this result first; this run keeps its own files")
    return False


def lookup(store: ArtifactStore, step: str, cache_key: str, *, fetch_files: bool = True) -> Hit | None:
    """The cached result for cache_key, every file verified against its sha256; None when there is
    none or it does not verify (logged: the step then computes the result again)."""
    key = layout.cache_entry(step, cache_key)
    log = get_logger(step=step)
    try:
        if not store.exists(key):
            return None
        entry = CacheEntry.model_validate_json(store.get_bytes(key))
        if entry.step != step or entry.cache_key != cache_key:
            raise Unusable(f"the entry is for {entry.step} {entry.cache_key}")
        document = store.get_bytes(entry.document.key, sha256=entry.document.sha256)
        for ref in entry.files:
            # What the store records first (an overwrite records its own sha256), then the bytes.
            info = store.stat(ref.key)
            if info is None or info.sha256 != ref.sha256 or info.size != ref.size:
                raise Unusable(f"{store.describe(ref.key)} is missing or changed since run {entry.run_id} "
                               f"wrote it (sha256 {info.sha256 if info else None}, expected {ref.sha256})")
            if fetch_files:
                # Verified into the job's working cache, where this process's next step looks first.
                fetch(store, ref, cache_dir() / "models")
    except (Unusable, ChecksumError, NotFoundError, ValidationError, ValueError) as exc:
        log.warning("cache_entry_unusable", key=key, error=str(exc), detail="computing the result again")
        return None
    return Hit(entry=entry, entry_key=key, document=document)


def adopt(store: ArtifactStore, hit: Hit, model: type[M], run_id: str, dest_key: str,
          copies: Mapping[str, str] | None = None) -> M:
    """Write the cached result into this run's layout as reused from the run that computed it.

    copies: {key of a file of the entry: key in this run} for files readers look up by this
    run's path; everything else is referenced where it is.
    """
    refs = {r.key: r for r in hit.entry.files}
    for src, dst in (copies or {}).items():
        if src not in refs:
            raise Unusable(f"{src} is not a file of cache entry {hit.entry_key}")
        store.put_bytes(dst, store.get_bytes(src, sha256=refs[src].sha256))
    doc = model.model_validate_json(hit.document)
    doc = doc.model_copy(update={"run_id": run_id, "reused_from": ReusedFrom(
        run_id=hit.entry.run_id, document=hit.entry.document.key, cache_entry=hit.entry_key)})
    store.put_json(dest_key, doc)
    get_logger(step=hit.entry.step, run_id=run_id).info(
        "step_reused", step=hit.entry.step, from_run=hit.entry.run_id, key=dest_key, cache_entry=hit.entry_key)
    return doc


def reuse(store: ArtifactStore, step: str, cache_key: str, *, reuse_steps: str, force: bool, run_id: str,
          model: type[M], dest_key: str, copies: Callable[[str], Mapping[str, str]] | None = None) -> M | None:
    """The step's hook: the cached result adopted into this run, or None when the step must compute.

    copies(producing run id) -> {that run's key: this run's key} of files to copy (see adopt).
    """
    if not may_reuse(step, reuse_steps, force):
        return None
    hit = lookup(store, step, cache_key)
    if hit is None:
        return None
    return adopt(store, hit, model, run_id, dest_key, copies(hit.entry.run_id) if copies else None)


def earlier_result(store: ArtifactStore, step: str, cache_key: str, *, run_id: str, doc_key: str, model: type[M],
                   force: bool, reuse_steps: str, log, files: Callable[[M], Sequence[str]] = lambda doc: (),
                   copies: Callable[[str], Mapping[str, str]] | None = None) -> tuple[M, dict] | None:
    """A step's result that need not be computed again, with how it was found; None: compute it.

    First this run's own document, when it has this cache key and its files are all in the store
    ({"cached": True}; offered to the cache again if this run computed it, since a retried pod
    may have stopped before publishing it); then another run's through the cache, when the
    step may reuse ({"reused_from": run id}). `files(doc)`: the document's files.
    """
    if not force:
        existing = store.try_get_model(doc_key, model)
        if existing is not None and existing.cache_key == cache_key and all(store.exists(k) for k in files(existing)):
            log.info("step_cached", step=step, key=doc_key)
            if existing.reused_from is None:
                publish(store, step, cache_key, run_id, doc_key, list(files(existing)))
            return existing, {"cached": True}
    reused = reuse(store, step, cache_key, reuse_steps=reuse_steps, force=force, run_id=run_id, model=model,
                   dest_key=doc_key, copies=copies)
    if reused is None:
        return None
    return reused, {"reused_from": reused.reused_from.run_id}


def reused_steps(trains: Mapping[str, TrainReport | None],
                 converts: Mapping[tuple[str, str], ConvertReport | None],
                 evals: Mapping[tuple[str, str], EvalReport | None]) -> list[ReusedStep]:
    """What of a run was computed by earlier runs, for results.json and the report."""
    out = [ReusedStep(step="train", arch=a, from_run_id=t.reused_from.run_id)
           for a, t in trains.items() if t is not None and t.reused_from is not None]
    for step, docs in (("convert", converts), ("evaluate", evals)):
        out += [ReusedStep(step=step, arch=a, format=f, from_run_id=d.reused_from.run_id)
                for (a, f), d in docs.items() if d is not None and d.reused_from is not None]
    return out


def describe_reused(reused: Sequence[ReusedStep]) -> list[str]:
    """One line per earlier run whose results this run reused, for the leaderboard and the report."""
    by_run: dict[str, dict[str, list[str]]] = {}
    for r in reused:
        what = r.arch + (f"/{r.format}" if r.format else "")
        by_run.setdefault(r.from_run_id, {}).setdefault(r.step, []).append(what)
    return [f"reused from run {run}: " + "; ".join(f"{step} {', '.join(items)}"
                                                 for step, items in steps.items())
            for run, steps in by_run.items()]
