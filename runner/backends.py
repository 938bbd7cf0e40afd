"""What a runner backend must do (list devices, run one job) and the `host` backend on LiteRT."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from common import hostbench
from common.errors import ConfigError
from common.schemas import Conditions, DeviceInfo
from runner.api import JobRequest, JobResult

BackendName = Literal["host", "ios"]
BACKENDS: tuple[str, ...] = ("host", "ios")


class Backend(Protocol):
    name: str

    def devices(self, busy: set[str] | None = None) -> list[DeviceInfo]:
        """Devices this backend can run on now, with their state."""

    def run(self, device: DeviceInfo, model_path: Path, request: JobRequest) -> JobResult:
        """Run one job to completion; raise a ScenebenchError with a clear message on failure."""


class HostBackend:
    """The runner machine's own CPU through common.hostbench, labelled as the host and never as an iPhone."""

    name = "host"

    def __init__(self, timeout_s: float | None = None):
        self.timeout_s = timeout_s
        self._device = hostbench.host_device()

    def devices(self, busy: set[str] | None = None) -> list[DeviceInfo]:
        state = "busy" if self._device.id in (busy or set()) else "idle"
        return [self._device.model_copy(update={"state": state})]

    def run(self, device: DeviceInfo, model_path: Path, request: JobRequest) -> JobResult:
        if request.delegate != "cpu":
            raise hostbench.HostBenchError(
                f"the host backend runs on the CPU only; delegate {request.delegate!r} is not available here")
        m = hostbench.measure(model_path, num_threads=request.num_threads, warmup_runs=request.warmup_runs,
                              num_runs=request.num_runs, isolate=True, timeout_s=self.timeout_s)
        return JobResult(
            device=device.model_copy(update={"state": "idle"}),
            delegate_requested=request.delegate,
            delegate_applied="cpu",
            timings_ms=m.timings,
            samples_ms=m.samples_ms,
            memory=m.memory,
            conditions=Conditions(runs_requested=request.num_runs, runs_completed=m.timings.count,
                                  samples_source="LiteRT invoke() timed with perf_counter, in a child process",
                                  memory_pass="same"),
            notes=[f"LiteRT Interpreter on the host CPU ({m.cpu_model}), {m.num_threads} threads"],
        )


def make_backend(name: str, *, ios_app: str | None = None, ios_bundle_id: str | None = None,
                 xcrun: str = "xcrun", job_timeout_s: float | None = None, thermal_wait_s: float = 300.0,
                 cooldown_s: float = 60.0, memory_runs: int = 10) -> Backend:
    if name == "host":
        return HostBackend(timeout_s=job_timeout_s)
    if name == "ios":
        from runner.ios import IosBackend

        return IosBackend(ios_app, bundle_id=ios_bundle_id or None, xcrun=xcrun,
                          run_timeout_s=job_timeout_s or 1800.0, thermal_wait_s=thermal_wait_s,
                          cooldown_s=cooldown_s, memory_runs=memory_runs)
    raise ConfigError(f"backend {name!r} is unknown: use one of {', '.join(BACKENDS)}")
