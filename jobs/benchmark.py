"""Benchmark one converted model on the runner's devices and delegates; one bench JSON per pair."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pydantic import Field, field_validator

from common import layout
from common.archs import ARCH_NAMES
from common.errors import ConfigError, RunnerError
from common.jobkit import StepSettings, parser_for, require_run_id, run_job
from common.logging import get_logger
from common.provenance import code_version
from common.schemas import DELEGATES, FORMATS, BenchResult, ConvertReport, DeviceInfo
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


def emit_plan(settings: BenchmarkSettings) -> dict:
    log = get_logger(step=STEP)
    runner = make_runner(settings)
    try:
        devices = runner.devices()
    except RunnerError as exc:
        # An empty plan keeps the nightly going; the aggregate then shows no latency, not a made-up one.
        log.error("runner_unreachable", error=str(exc))
        devices = []
    plan, unknown = make_plan(devices, settings.devices, settings.delegates, log)
    doc = [{"device": p.device.id, "delegate": p.delegate} for p in plan]
    path = Path(settings.emit_plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return {"plan": str(path), "items": len(doc), "unknown_devices": unknown}


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
        return emit_plan(settings)
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
    return {**counts, "runner": runner.label, "devices": len({i.device.id for i in plan})}


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(STEP, BenchmarkSettings, build_parser(), run_benchmark, argv)


if __name__ == "__main__":
    raise SystemExit(main())
