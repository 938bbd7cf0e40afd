"""structlog set-up: JSON lines in pods and pipes, readable console output on a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog

_configured = False
_ours = None  # our renderer, to tell our configuration from a test's


class _StreamLogger:
    """Writes each rendered line to the *current* sys.stdout/sys.stderr.

    structlog's PrintLogger keeps the stream it was given; test harnesses and some CLIs
    swap (and close) sys.stderr, and a kept reference then fails on write.
    """

    def __init__(self, to_stdout: bool):
        self.to_stdout = to_stdout

    def msg(self, message: str) -> None:
        stream = sys.stdout if self.to_stdout else sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


def configure(level: str | None = None, json: bool | None = None, stdout_is_data: bool = False) -> None:
    """Configure structlog for this process (every job's entry point calls it).

    JSON is chosen when stdout is not a terminal (pods, CI, pipes) unless
    SCENEBENCH_LOG_FORMAT=console|json says otherwise. When someone else has configured
    structlog since (structlog.testing.capture_logs in tests), their set-up is kept.
    stdout_is_data: the command prints what was asked for (a table, keys, a result
    document) on stdout, so its logs go to stderr in every format.
    """
    global _configured, _ours
    if structlog.is_configured() and _ours is not None:
        current = structlog.get_config()["processors"]
        # capture_logs swaps the processors in place; our renderer last means it is ours.
        if not current or current[-1] is not _ours:
            return
    level = (level or os.environ.get("SCENEBENCH_LOG_LEVEL", "INFO")).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        level = "INFO"
    if json is None:
        fmt = os.environ.get("SCENEBENCH_LOG_FORMAT", "").lower()
        json = fmt == "json" or (fmt != "console" and not sys.stderr.isatty())
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    _ours = renderer
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        # JSON lines go to stdout, where pod log collectors look; a person's terminal gets
        # them on stderr so that stdout stays for the tables the commands print.
        logger_factory=lambda *args: _StreamLogger(to_stdout=bool(json) and not stdout_is_data),
        cache_logger_on_first_use=False,
    )
    # TensorFlow and absl chatter goes through stdlib logging; keep it out of our lines.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _configured = True


def get_logger(**context):
    if not _configured:
        configure()
    return structlog.get_logger("scenebench").bind(**context)
