"""Benchmark one converted model on the runner's devices and delegates; one bench JSON per pair."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pydantic import Field, field_validator

from common import layout, progress
from common.archs import ARCH_NAMES
from common.errors import ConfigError, RunnerError
from common.jobkit import StepSettings, parser_for, require_run_id, run_job
from common.logging import get_logger
from common.provenance import code_version
from common.schemas import (DELEGATES, FORMATS, BenchPlan, BenchPlanItem, BenchResult, ConvertReport,
                            DeviceInfo)
from common.settings import split_list
from common.store import ArtifactStore
from common.workspace import cache_dir
from jobs._io import load_convert_report, local_model
from runner.api import JobRequest, JobView
from runner.client import (LocalHostRunner, Runner, RunnerAuthError, RunnerClient, RunnerJobFailed,
                           RunnerNotFound, RunnerRequestError, RunnerTimeout, RunnerUnavailable, wait_for_job)

STEP = "benchmark"
DEFAULT_DELEGATES = {"ios": ["cpu", "gpu", "coreml"], "host": ["cpu"]}


class BenchmarkSettings(StepSettings):
    arch: str = Field("", description=f"Architecture whose converted model is measured: {', '.join(ARCH_NAMES)}.")
    format: str = Field("", description=f"TFLite format: {', '.join(FORMATS)}.")
    runner_url: str = Field("", description="Runner base URL; empty = the host backend in this process.")
    runner_token: str = Field("", description="Bearer token of the runner.")
    devices: str = Field("all", description="'all' (every device the runner lists) or device ids, a,b.")
    delegates: str = Field("", description="Delegates among cpu,gpu,coreml; empty = cpu,gpu,coreml on iOS "
                                           "devices and cpu on the host.")
    num_threads: int = Field(2, ge=1, le=64, description="CPU threads of the interpreter.")
    warmup_runs: int = Field(5, ge=0, le=100_000, description="Warm-up runs before timing.")
    num_runs: int = Field(50, ge=1, le=10_000_000, description="Timed runs.")
    timeout_s: float = Field(3600.0, gt=0, description="Time budget of the whole step, all jobs included.")
    retries: int = Field(2, ge=0, le=10, description="Re-submissions of a job that failed or could not be sent.")
    emit_plan: str = Field("", description="Write the device x delegate plan as JSON to this path and exit.")

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        if v and v not in ARCH_NAMES:
            raise ValueError(f"unknown architecture {v!r}; valid values: {', '.join(ARCH_NAMES)}")
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v and v not in FORMATS:
            raise ValueError(f"unknown format {v!r}; valid values: {', '.join(FORMATS)}")
        return v

    @field_validator("delegates")
    @classmethod
    def _delegates(cls, v: str) -> str:
        bad = [d for d in split_list(v) if d not in DELEGATES]
        if bad:
            raise ValueError(f"unknown delegate(s) {', '.join(bad)}; valid values: {', '.join(DELEGATES)}")
        return ",".join(split_list(v))

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: str) -> str:
        items = split_list(v) or ["all"]
        if items != ["all"]:
            for item in items:
                layout.check_id(item, "device id")
        return ",".join(items)


def build_parser():
    return parser_for(BenchmarkSettings, "jobs.benchmark", __doc__)


def make_runner(settings: BenchmarkSettings) -> Runner:
    if settings.runner_url:
        if not settings.runner_token:
            raise ConfigError("missing setting --runner-token / SCENEBENCH_RUNNER_TOKEN: the runner at "
                              f"{settings.runner_url} needs its bearer token")
        return RunnerClient(settings.runner_url, settings.runner_token)
    return LocalHostRunner(cache_dir=cache_dir() / "runner-models")


@dataclass(frozen=True)
class PlanItem:
    device: DeviceInfo
    delegate: str


def placeholder_device(device_id: str) -> DeviceInfo:
    """A device we could not ask the runner about; the id prefix is ours (host-… / ios-…), nothing else is known."""
    backend = "ios" if device_id.startswith("ios-") else "host"
    return DeviceInfo(id=device_id, name=f"{device_id} (not reachable, details unknown)", backend=backend,
                      model="unknown", os="unknown", delegates=DEFAULT_DELEGATES[backend], state="offline")


def make_plan(devices: list[DeviceInfo], wanted_devices: str, wanted_delegates: str,
              log=None) -> tuple[list[PlanItem], list[str]]:
    """(device, delegate) pairs to run, and the requested device ids the runner does not list."""
    ids = split_list(wanted_devices)
    chosen = devices if ids in ([], ["all"]) else [d for d in devices if d.id in ids]
    unknown = [] if ids in ([], ["all"]) else [i for i in ids if i not in {d.id for d in devices}]
    asked = split_list(wanted_delegates)
    plan = []
    for dev in chosen:
        for delegate in asked or DEFAULT_DELEGATES[dev.backend]:
            if delegate in dev.delegates:
                plan.append(PlanItem(dev, delegate))
            elif log is not None:
                log.info("delegate_unsupported", device=dev.id, delegate=delegate, supported=dev.delegates)
    return plan, unknown


def plan_items(devices: list[DeviceInfo], wanted_devices: str, wanted_delegates: str,
               log=None) -> list[dict[str, str]]:
    """The benchmark fan-out: one {device, delegate} per pair to measure.

    Requested device ids the runner does not list are planned too: their benchmark pod then
    records them missing with that reason, instead of the gap going unnoticed.
    """
    plan, unknown = make_plan(devices, wanted_devices, wanted_delegates, log)
    items = [{"device": p.device.id, "delegate": p.delegate} for p in plan]
    for dev_id in unknown:
        for delegate in split_list(wanted_delegates) or DEFAULT_DELEGATES[placeholder_device(dev_id).backend]:
            items.append({"device": dev_id, "delegate": delegate})
    return items


def empty_plan_reason(devices: list[DeviceInfo], runner_label: str, wanted_delegates: str) -> str:
    """Why a runner that answered gave nothing to measure, in words for results.json."""
    if not devices:
        return f"the runner {runner_label} lists no devices"
    supported = "; ".join(f"{d.id}: {', '.join(d.delegates) or 'none'}" for d in devices)
    return (f"no device of the runner {runner_label} supports the delegates asked for "
            f"({wanted_delegates or 'the defaults'}); supported: {supported}")


def emit_plan(settings: BenchmarkSettings, store: ArtifactStore | None = None) -> dict:
    """Write the plan for Argo's benchmark fan-out (and, with a store and a run, bench-plan.json).

    A runner that cannot be asked (unreachable, TLS, 401) is an error, never an empty plan:
    the step exits 1 and Argo retries it, and if it keeps failing the night is red. Only a
    runner that answers with nothing to measure gives an empty plan, and its reason is stored.
    """
    log = get_logger(step=STEP, arch=settings.arch or None, format=settings.format or None)
    runner = make_runner(settings)
    try:
        devices = runner.devices()
    except RunnerError as exc:
        raise RunnerError(f"cannot plan the benchmarks: the runner {runner.label} did not list its devices "
                          f"({type(exc).__name__}: {exc})") from exc
    items = plan_items(devices, settings.devices, settings.delegates, log)
    reason = None if items else empty_plan_reason(devices, runner.label, settings.delegates)
    if reason:
        log.warning("empty_plan", reason=reason, runner=runner.label)
    path = Path(settings.emit_plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items, indent=2) + "\n")
    recorded = None
    if store is not None and settings.run_id and settings.arch and settings.format:
        recorded = layout.bench_plan_json(settings.run_id, settings.arch, settings.format)
        store.put_json(recorded, BenchPlan(
            run_id=settings.run_id, arch=settings.arch, format=settings.format, runner=runner.label,
            requested_devices=settings.devices, requested_delegates=settings.delegates, devices=devices,
            items=[BenchPlanItem(**i) for i in items], reason=reason))
    return {"plan": str(path), "items": len(items), "devices": len(devices), "empty_reason": reason,
            "recorded": store.describe(recorded) if recorded else None}


def _same_params(existing: BenchResult, sha: str, s: BenchmarkSettings) -> bool:
    return (existing.status == "ok" and existing.model_sha256 == sha and existing.num_threads == s.num_threads
            and existing.warmup_runs == s.warmup_runs and existing.num_runs == s.num_runs)


def _missing(settings: BenchmarkSettings, report: ConvertReport, device: DeviceInfo, delegate: str,
             reason: str, runner: Runner, jid: str | None = None) -> BenchResult:
    return BenchResult(run_id=settings.run_id, arch=settings.arch, format=settings.format,
                       model_sha256=report.model.sha256, device=device, delegate_requested=delegate,
                       status="missing", reason=reason, num_threads=settings.num_threads,
                       warmup_runs=settings.warmup_runs, num_runs=settings.num_runs,
                       runner=runner.label, runner_job_id=jid, code_version=code_version())


def _from_job(settings: BenchmarkSettings, report: ConvertReport, item: PlanItem, job: JobView,
              runner: Runner) -> BenchResult:
    res = job.result
    if res is None:
        return _missing(settings, report, item.device, item.delegate, "the runner reported success without a result",
                        runner, job.id)
    if res.timings_ms is None:
        return _missing(settings, report, res.device, item.delegate,
                        "the device ran the model but its log lacks the statistics a bench record needs "
                        f"(mean, std, min, max, count of the timed runs); what it printed: {res.partial_timings_ms}", runner, job.id)
    return BenchResult(
        run_id=settings.run_id, arch=settings.arch, format=settings.format, model_sha256=report.model.sha256,
        device=res.device, delegate_requested=item.delegate, delegate_applied=res.delegate_applied,
        # A delegate that did not take the whole graph ("partial", or the CPU) says why, from the tool's words.
        status="ok", reason="; ".join(res.notes[-2:]) if res.delegate_applied not in (item.delegate,) else None,
        num_threads=settings.num_threads, warmup_runs=settings.warmup_runs, num_runs=settings.num_runs,
        timings_ms=res.timings_ms, samples_ms=res.samples_ms, memory=res.memory, conditions=res.conditions,
        runner=runner.label, runner_job_id=job.id, measured_at=job.finished_at or job.created_at,
        code_version=code_version(),
    )


def run_benchmark(settings: BenchmarkSettings, store: ArtifactStore, runner: Runner | None = None) -> dict:
    """The whole step; also what jobs.pipeline calls (optionally with its own runner)."""
    if settings.emit_plan:
        return emit_plan(settings, store)
    run_id = require_run_id(settings)
    if not settings.arch or not settings.format:
        raise ConfigError("missing setting --arch / --format: which converted model to benchmark "
                          f"(architectures: {', '.join(ARCH_NAMES)}; formats: {', '.join(FORMATS)})")
    arch, fmt = settings.arch, settings.format
    log = get_logger(step=STEP, run_id=run_id, arch=arch, format=fmt)
    report = load_convert_report(store, run_id, arch, fmt)
    runner = runner or make_runner(settings)
    deadline = time.monotonic() + settings.timeout_s
    counts = {"ok": 0, "missing": 0, "cached": 0}

    def write(result: BenchResult) -> None:
        key = layout.bench_json(run_id, arch, fmt, result.device.id, result.delegate_requested)
        store.put_json(key, result)
        counts[result.status] += 1
        log.info("bench_recorded", device=result.device.id, delegate=result.delegate_requested,
                 status=result.status, delegate_applied=result.delegate_applied, reason=result.reason,
                 mean_ms=result.timings_ms.mean if result.timings_ms else None, key=key)

    def write_missing_for(dev_ids: list[str], reason: str) -> None:
        """A missing record per requested delegate of devices the runner cannot measure."""
        for dev_id in dev_ids:
            device = placeholder_device(dev_id)
            for delegate in split_list(settings.delegates) or DEFAULT_DELEGATES[device.backend]:
                write(_missing(settings, report, device, delegate, reason, runner))

    try:
        devices = runner.devices()
    except RunnerError as exc:
        log.warning("runner_unreachable", runner=runner.label, error=str(exc))
        ids = [i for i in split_list(settings.devices) if i != "all"]
        write_missing_for(ids, f"runner unreachable: {exc}")
        return {**counts, "runner": runner.label, "runner_error": str(exc),
                "note": "" if ids else "no device ids given, so no per-device record could be written"}

    plan, unknown = make_plan(devices, settings.devices, settings.delegates, log)
    for dev_id in unknown:
        write_missing_for([dev_id], f"device {dev_id} is not listed by the runner {runner.label}")

    todo: list[PlanItem] = []
    for item in plan:
        key = layout.bench_json(run_id, arch, fmt, item.device.id, item.delegate)
        existing = store.try_get_model(key, BenchResult)
        if existing and _same_params(existing, report.model.sha256, settings) and not settings.force:
            log.info("step_cached", step=STEP, device=item.device.id, delegate=item.delegate, key=key)
            counts["cached"] += 1
        elif item.device.state == "offline":
            # The runner would fail the job at once (after our retries); say why without asking.
            write(_missing(settings, report, item.device, item.delegate,
                           f"device offline on the runner: {item.device.state_reason or 'no reason given'}", runner))
        else:
            todo.append(item)
    if not todo:
        return {**counts, "runner": runner.label}

    if isinstance(runner, LocalHostRunner):
        model_url = local_model(store, report).resolve().as_uri()
    else:
        model_url = store.url(report.model.key)
    # The run id makes each run measure afresh while a retried step finds its jobs; --force adds a stamp.
    client_key = run_id + (f"/force-{time.time_ns()}" if settings.force else "")

    def request_for(item: PlanItem) -> JobRequest:
        return JobRequest(model_url=model_url, model_sha256=report.model.sha256, device=item.device.id,
                          delegate=item.delegate, num_threads=settings.num_threads,
                          warmup_runs=settings.warmup_runs, num_runs=settings.num_runs, client_key=client_key)

    def submit(item: PlanItem) -> JobView | str:
        """The job, or why it could not be submitted (after bounded retries on transient errors)."""
        last = ""
        for attempt in range(settings.retries + 1):
            try:
                return runner.submit(request_for(item))
            except (RunnerAuthError, RunnerRequestError, RunnerNotFound) as exc:
                return f"runner refused the job: {exc}"
            except RunnerUnavailable as exc:
                last = str(exc)
                log.warning("submit_retry", device=item.device.id, delegate=item.delegate, attempt=attempt + 1,
                            error=last)
                if time.monotonic() + 2 ** attempt > deadline:
                    break
                time.sleep(2 ** attempt)
        return f"runner unreachable after {settings.retries + 1} attempts: {last}"

    measured = progress.task(f"{settings.num_runs} timed runs per device and delegate", total=len(todo),
                             unit="measurements")
    # Submit everything first: the runner runs different devices in parallel.
    submitted = [submit(item) for item in todo]
    for item, job in zip(todo, submitted):
        failures = 0
        while True:
            if isinstance(job, str):
                write(_missing(settings, report, item.device, item.delegate, job, runner))
                break
            try:
                done = wait_for_job(runner, job, timeout_s=max(0.0, deadline - time.monotonic()))
                write(_from_job(settings, report, item, done, runner))
                break
            except RunnerJobFailed as exc:
                failures += 1
                if failures > settings.retries:
                    write(_missing(settings, report, item.device, item.delegate,
                                   f"job failed {failures} times; last error: {exc.job.error}", runner, exc.job.id))
                    break
                log.warning("job_retry", device=item.device.id, delegate=item.delegate, attempt=failures,
                            error=exc.job.error)
                job = submit(item)  # the runner re-queues a failed job submitted again
            except RunnerTimeout as exc:
                write(_missing(settings, report, item.device, item.delegate, f"timed out: {exc}", runner, job.id))
                break
            except RunnerError as exc:
                write(_missing(settings, report, item.device, item.delegate, str(exc), runner, job.id))
                break
        measured.advance()
    measured.close()
    return {**counts, "runner": runner.label, "devices": len({i.device.id for i in plan})}


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(STEP, BenchmarkSettings, build_parser(), run_benchmark, argv)


if __name__ == "__main__":
    raise SystemExit(main())
