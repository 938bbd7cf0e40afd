"""What every job's entry point shares: settings parsing, logging set-up, exit codes, caching."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, Sequence, TypeVar

from pydantic import Field, field_validator

from common import layout
from common.errors import ConfigError, DatasetError, ScenebenchError
from common.logging import configure, get_logger
from common.settings import JobSettings, build_parser, load
from common.store import ArtifactStore, open_store

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class StepSettings(JobSettings):
    """Flags every step takes."""

    store: str = Field("file://./artifacts", description="Artifact store: file://PATH or s3://bucket/prefix.")
    run_id: str = Field("", description="Run id; steps of one run share it (Argo: the workflow name).")
    force: bool = Field(False, description="Re-run the step even when a cached result matches its inputs.")

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, v: str) -> str:
        return layout.check_id(v, "run id") if v else v


S = TypeVar("S", bound=JobSettings)


def require_run_id(settings: StepSettings) -> str:
    if not settings.run_id:
        raise ConfigError("missing setting --run-id / SCENEBENCH_RUN_ID: the run whose artifacts this step uses")
    return settings.run_id


def parser_for(settings_cls: type[JobSettings], module: str, description: str) -> argparse.ArgumentParser:
    return build_parser(settings_cls, prog=f"python -m {module}", description=description)


def run_job(
    step: str,
    settings_cls: type[S],
    parser: argparse.ArgumentParser,
    body: Callable[[S, ArtifactStore], dict],
    argv: Sequence[str] | None = None,
    *,
    stdout_is_data: bool = False,
) -> int:
    """Parse, log the effective configuration, run body, log one summary line, map errors to exit codes.

    body gets the artifact store its settings name; commands whose settings name none (the
    runner's) get None. stdout_is_data: body prints its answer on stdout; logs go to stderr.
    """
    configure(stdout_is_data=stdout_is_data)
    log = get_logger(step=step)
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
        settings = load(settings_cls, args)
        store = open_store(settings.store) if "store" in type(settings).model_fields else None
    except ConfigError as exc:
        log.error("bad_configuration", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log.info("config", **settings.model_dump(mode="json"))
    try:
        summary = body(settings, store) or {}
    except ConfigError as exc:
        log.error("bad_configuration", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DatasetError as exc:
        log.error("bad_dataset", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ScenebenchError as exc:
        log.error("step_failed", error=str(exc), error_type=type(exc).__name__)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # unexpected: keep the traceback in the log
        log.error("step_crashed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return EXIT_FAILED
    log.info(f"{step}_summary", **summary)
    return EXIT_OK
