"""`python -m runner serve`: start the device-farm runner's HTTP API and its per-device workers."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Literal

from pydantic import Field

from common.errors import ConfigError
from common.logging import configure, get_logger
from common.settings import JobSettings, build_parser, load

USAGE = "usage: python -m runner serve [--host H] [--port P] [--db PATH] [--backend host|ios] [--token-env NAME] ..."


class ServeSettings(JobSettings):
    """Settings of `python -m runner serve`; each also reads SCENEBENCH_<NAME>."""

    host: str = Field(default="127.0.0.1", description="Address to listen on (0.0.0.0 for the farm network).")
    port: int = Field(default=8470, ge=0, le=65535, description="TCP port.")
    db: str = Field(default="./runner-data/jobs.sqlite",
                    description="SQLite job database; downloaded models are cached next to it.")
    backend: Literal["host", "ios"] = Field(default="host", description="Run on this machine's CPU or on attached iPhones.")
    token_env: str = Field(default="SCENEBENCH_RUNNER_TOKEN",
                           description="Name of the environment variable that holds the bearer token.")
    ios_app: str = Field(default="", description="Path to the runner-ready TFLiteBenchmark.app (backend ios).")
    ios_bundle_id: str = Field(default="", description="Bundle id of that app, if not the default.")
    xcrun: str = Field(default="xcrun", description="xcrun executable (backend ios).")
    job_timeout_s: float = Field(default=1800.0, gt=0, description="A job running longer than this fails.")


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
        from runner.backends import make_backend

        backend = make_backend(settings.backend, ios_app=settings.ios_app or None,
                               ios_bundle_id=settings.ios_bundle_id or None, xcrun=settings.xcrun,
                               job_timeout_s=settings.job_timeout_s)
    except ConfigError as exc:
        log.error("config_error", error=str(exc))
        return 2

    from runner.jobstore import JobStore
    from runner.service import RunnerHTTPServer, Scheduler

    db = Path(settings.db).expanduser().resolve()
    store = JobStore(db)
    scheduler = Scheduler(store, backend, cache_dir=db.parent / "models")
    server = RunnerHTTPServer((settings.host, settings.port), scheduler, token)
    log.info("runner_config", **{k: v for k, v in settings.model_dump().items()}, db_path=str(db),
             listening=f"http://{server.server_address[0]}:{server.server_address[1]}")
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
    log.info("runner_stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)  # CLI output for people
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        return serve(rest)
    print(f"unknown command {command!r}; the only command is 'serve'\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
