"""The device-farm runner's command line.

`python -m runner serve`    the HTTP API and its per-device workers (RUNNER.md)
`python -m runner devices`  what a backend sees now, with the reason a device is offline
`python -m runner try`      one measurement through a backend, no server: the first check on a new Mac
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Literal

from pydantic import Field

from common.errors import ConfigError, ScenebenchError
from common.jobkit import run_job
from common.logging import configure, get_logger
from common.settings import JobSettings, build_parser, load

USAGE = """usage: python -m runner serve   [--host H] [--port P] [--db PATH] [--backend host|ios] ...
       python -m runner devices [--backend host|ios] [--ios-app PATH] ...
       python -m runner try     --model FILE [--device ID] [--delegate cpu|gpu|coreml] [--backend host|ios] ...
each command's --help lists its flags"""


class DeviceBusy(ScenebenchError):
    """Another runner process (a served job, another `try`) is using the phone."""


class BackendSettings(JobSettings):
    """Which backend, and how to reach the phones; each also reads SCENEBENCH_<NAME>."""

    backend: Literal["host", "ios"] = Field(default="host", description="Run on this machine's CPU or on attached iPhones.")
    ios_app: str = Field(default="", description="Path to the runner-ready TFLiteBenchmark.app (backend ios).")
    ios_bundle_id: str = Field(default="", description="Bundle id of that app; empty: the one in its Info.plist.")
    xcrun: str = Field(default="xcrun", description="xcrun executable (backend ios).")
    job_timeout_s: float = Field(default=1800.0, gt=0,
                                 description="A launch of the benchmark app running longer than this is ended "
                                             "(on the phone too) and the job fails.")
    thermal_wait_s: float = Field(default=300.0, ge=0, description="Before a job, wait up to this long for the "
                                                                   "phone to report nominal thermal state.")
    cooldown_s: float = Field(default=60.0, ge=0, description="Pause between the delegates (cpu, gpu, coreml) "
                                                              "of one model on one phone.")
    memory_runs: int = Field(default=10, ge=0, le=10_000, description="Runs of the separate memory pass "
                                                                      "(0: no peak memory, timing pass only).")

    def make(self, *, need_app: bool = True):
        from runner.backends import make_backend

        if self.backend == "ios" and need_app and not self.ios_app:
            raise ConfigError("missing setting --ios-app / SCENEBENCH_IOS_APP: the ios backend installs the "
                              "runner-ready TFLiteBenchmark.app on each phone (RUNNER.md, step 5)")

        return make_backend(self.backend, ios_app=self.ios_app or None, ios_bundle_id=self.ios_bundle_id or None,
                            xcrun=self.xcrun, job_timeout_s=self.job_timeout_s, thermal_wait_s=self.thermal_wait_s,
                            cooldown_s=self.cooldown_s, memory_runs=self.memory_runs)


class LockedSettings(BackendSettings):
    """Settings of the commands that run jobs: they take a phone's lock first."""

    lock_dir: str = Field(default="", description="Directory of the per-device lock files that keep `serve` and "
                                                  "`try` off each other's phones; every runner process on this "
                                                  "machine must use the same one. Empty: "
                                                  "$XDG_CACHE_HOME (or ~/.cache)/scenebench-runner/locks.")


class ServeSettings(LockedSettings):
    """Settings of `python -m runner serve`; each also reads SCENEBENCH_<NAME>."""

    host: str = Field(default="127.0.0.1", description="Address to listen on (0.0.0.0 for the farm network).")
    port: int = Field(default=8470, ge=0, le=65535, description="TCP port.")
    db: str = Field(default="./runner-data/jobs.sqlite",
                    description="SQLite job database; downloaded models are cached next to it.")
    token_env: str = Field(default="SCENEBENCH_RUNNER_TOKEN",
                           description="Name of the environment variable that holds the bearer token.")
    max_attempts: int = Field(default=3, ge=1, le=100,
                              description="A job cut short by a runner stop this many times fails instead of "
                                          "running again.")
    model_dir: str = Field(default="", description="Directory that file:// model URLs may point into (symlinks "
                                                   "resolved); empty: file:// URLs are refused.")
    max_model_mb: float = Field(default=1024.0, gt=0, description="A model download larger than this fails.")
    http_timeout_s: float = Field(default=30.0, gt=0, le=3600,
                                  description="A request must arrive in full within this time, and an idle "
                                              "connection is closed after it.")
    max_connections: int = Field(default=32, ge=1, le=10_000,
                                 description="Connections served at once; more are answered 503 at once.")


class TrySettings(LockedSettings):
    """Settings of `python -m runner try`; each also reads SCENEBENCH_<NAME>."""

    model: str = Field(default="", description="The .tflite file to measure (required).")
    device: str = Field(default="", description="A device id from `python -m runner devices`; empty: the first idle one.")
    delegate: Literal["cpu", "gpu", "coreml"] = Field(default="cpu", description="Delegate to ask for.")
    num_threads: int = Field(default=2, ge=1, le=64, description="CPU threads.")
    warmup_runs: int = Field(default=5, ge=0, le=100_000, description="Warm-up runs before timing.")
    num_runs: int = Field(default=50, ge=1, le=10_000_000, description="Timed runs.")
    lock_wait_s: float = Field(default=0.0, ge=0, description="How long to wait for a phone that another runner "
                                                             "process is using; 0: fail at once, naming it.")


def serve(argv: list[str] | None = None) -> int:
    configure()
    parser = build_parser(ServeSettings, prog="python -m runner serve",
                          description="Serve the scenebench runner API (see RUNNER.md).")
    log = get_logger(component="runner")
    try:
        settings = load(ServeSettings, parser.parse_args(argv))
        token = os.environ.get(settings.token_env, "")
        if not token:
            raise ConfigError(f"no token: set {settings.token_env} (the runner refuses to serve without one)")
        backend = settings.make()
    except ConfigError as exc:
        log.error("config_error", error=str(exc))
        return 2

    from runner.jobstore import JobStore
    from runner.locks import DeviceLocks, FileLock, describe, this_process
    from runner.service import RunnerHTTPServer, Scheduler

    db = Path(settings.db).expanduser().resolve()
    # One runner per database: a second one would requeue the first one's running jobs at
    # start and claim its queue, so every job could run twice. The lock is taken first of all.
    db_lock = FileLock(db.with_name(db.name + ".lock"), f"job database {db}")
    try:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            taken = db_lock.try_acquire(this_process())
        except OSError as exc:
            raise ConfigError(f"cannot use the job database's folder {db.parent}: {exc.strerror or exc}") from None
        if not taken:
            raise ConfigError(f"another runner already serves the job database {db}: {describe(db_lock.holder())}. "
                              f"Two runners on one queue would run its jobs twice: stop that one, or give this "
                              f"one its own --db")
        locks = DeviceLocks(settings.lock_dir or None)
        model_dir = None
        if settings.model_dir:
            model_dir = Path(settings.model_dir).expanduser().resolve()
            if not model_dir.is_dir():
                raise ConfigError(f"--model-dir / SCENEBENCH_MODEL_DIR {settings.model_dir!r} is not a directory")
    except ConfigError as exc:
        log.error("config_error", error=str(exc))
        db_lock.release()
        return 2

    store = JobStore(db)
    scheduler = Scheduler(store, backend, cache_dir=db.parent / "models", locks=locks, model_dir=model_dir,
                          max_model_bytes=int(settings.max_model_mb * 1e6), max_attempts=settings.max_attempts)
    try:
        server = RunnerHTTPServer((settings.host, settings.port), scheduler, token,
                                  timeout_s=settings.http_timeout_s, max_connections=settings.max_connections)
    except OSError as exc:
        log.error("config_error", error=f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
        store.close()
        db_lock.release()
        return 2
    listening = f"http://{server.server_address[0]}:{server.server_address[1]}"
    db_lock.note(**this_process(listening=listening))
    log.info("runner_config", **{**settings.model_dump(), "lock_dir": str(locks.dir)}, db_path=str(db),
             listening=listening)
    scheduler.start()

    def _stop(signum, _frame):
        log.info("runner_stopping", signal=signal.Signals(signum).name)
        scheduler.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        store.close()
        db_lock.release()
    log.info("runner_stopped")
    return 0


def _devices(settings: BackendSettings, _store: None) -> dict:
    """Print the devices a backend sees, one line each, and the reason an offline one is offline."""
    found = settings.make(need_app=False).devices()
    if not found:
        print("no devices: plug in an iPhone, unlock it and tap Trust (RUNNER.md, step 3)")  # CLI output for people
        raise ScenebenchError(f"the {settings.backend} backend sees no device")
    for d in found:
        why = f"  ({d.state_reason})" if d.state_reason else ""
        print(f"{d.id}\t{d.state}\t{d.name}\t{d.model}\t{d.os}\t{','.join(d.delegates)}{why}")
    return {"devices": len(found), "idle": sum(d.state == "idle" for d in found)}


def devices(argv: list[str] | None = None) -> int:
    parser = build_parser(BackendSettings, prog="python -m runner devices",
                          description="List the devices a backend can run on (what GET /v1/devices would say).")
    return run_job("devices", BackendSettings, parser, _devices, argv, stdout_is_data=True)


def _lock_first(candidates: list, locks, wait_s: float):
    """The first device whose lock is free, locked; else wait up to wait_s for the first one.

    A served job holds its phone's lock for the whole job, so `try` never shares a phone with it.
    """
    from runner.locks import LockBusy, describe, this_process

    for device in candidates:
        lock = locks.lock(device.id)
        if lock.try_acquire(this_process()):
            return device, lock
    device = candidates[0]
    lock = locks.lock(device.id)
    if wait_s:
        get_logger(step="try").info("waiting_for_device", device=device.id, holder=describe(lock.holder()),
                                    wait_s=wait_s)
    try:
        lock.acquire(this_process(), wait_s=wait_s)
    except LockBusy as exc:
        waited = f" (waited {wait_s:g} s)" if wait_s else ""
        raise DeviceBusy(f"{exc}{waited}; let it finish, or pass --lock-wait-s SECONDS to wait for it") from None
    return device, lock


def _try_one(settings: TrySettings, _store: None) -> dict:
    """One measurement through a backend, printed as the JobResult JSON on stdout."""
    from common.hashing import sha256_file
    from runner.api import JobRequest
    from runner.locks import DeviceLocks

    model = Path(settings.model).expanduser()
    if not settings.model or not model.is_file():
        raise ConfigError(f"--model must name a .tflite file (got {settings.model!r})")
    backend = settings.make()
    locks = DeviceLocks(settings.lock_dir or None)
    found = backend.devices()
    if settings.device:
        matches = [d for d in found if d.id == settings.device]
        if not matches:
            raise ConfigError(f"no device {settings.device!r}; devices: {', '.join(d.id for d in found) or 'none'}")
        candidates = matches
    else:
        candidates = [d for d in found if d.state == "idle"]
        if not candidates:
            raise ConfigError("no idle device: " + ("; ".join(f"{d.id} {d.state} {d.state_reason}".strip()
                                                            for d in found) or "none found"))
    if candidates[0].state == "offline":
        raise ConfigError(f"{candidates[0].id} is offline: {candidates[0].state_reason or 'no reason given'}")
    device, lock = _lock_first(candidates, locks, settings.lock_wait_s)
    try:
        request = JobRequest(model_url=model.resolve().as_uri(), model_sha256=sha256_file(model),
                             device=device.id, delegate=settings.delegate, num_threads=settings.num_threads,
                             warmup_runs=settings.warmup_runs, num_runs=settings.num_runs)
        result = backend.run(device, model, request)
    finally:
        lock.release()
    print(result.model_dump_json(indent=2))  # CLI output: the result document
    t = result.timings_ms
    return {"device": result.device.name, "delegate_requested": result.delegate_requested,
            "delegate_applied": result.delegate_applied, "mean_ms": t.mean if t else None,
            "count": t.count if t else None, "peak_mb": result.memory.peak_mb if result.memory else None}


def try_one(argv: list[str] | None = None) -> int:
    parser = build_parser(TrySettings, prog="python -m runner try",
                          description="Measure one model once through a backend, without the server.")
    return run_job("try", TrySettings, parser, _try_one, argv, stdout_is_data=True)


COMMANDS = {"serve": serve, "devices": devices, "try": try_one}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)  # CLI output for people
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        return COMMANDS[command](rest)
    print(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
