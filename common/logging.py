"""structlog set-up: JSON lines in pods and pipes, readable lines on a terminal, and a JSON-lines file.

Every event goes to the open log files (a run's `logs/pipeline.jsonl`) in full; what reaches
the console is filtered by the console's own level, so a terminal can show warnings only
while the file keeps everything.
"""

from __future__ import annotations

import json as _json
import logging
import os
import sys
import threading
from pathlib import Path

import structlog
import structlog.testing

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

_configured = False
_ours = None  # our last processor, to tell our configuration from a test's
_console_override: int | None = None  # set by a command that draws its own view (jobs.pipeline)
_sinks: list["FileSink"] = []


class _StreamLogger:
    """Writes each rendered line to the *current* sys.stdout/sys.stderr.

    structlog's PrintLogger keeps the stream it was given; test harnesses and some CLIs
    swap (and close) sys.stderr, and a kept reference then fails on write. A live terminal
    view swaps it too, to print log lines above itself.
    """

    def __init__(self, to_stdout: bool):
        self.to_stdout = to_stdout

    def msg(self, message: str) -> None:
        stream = sys.stdout if self.to_stdout else sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


class FileSink:
    """Appends every event as one JSON line; safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, event_dict: dict) -> None:
        line = _json.dumps(event_dict, default=str, ensure_ascii=False)
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")
                self._file.flush()

    def copy_to(self, dest: str | Path) -> None:
        """A copy of the file as it is between two events (for uploading while events keep coming)."""
        import shutil

        with self._lock:
            shutil.copyfile(self.path, dest)

    def close(self) -> None:
        with self._lock:
            self._file.close()


class _Output:
    """Last processor: every event to the file sinks, then to the console if its level is high enough."""

    def __init__(self, renderer, console_level: int):
        self.renderer = renderer
        self.console_level = console_level

    def __call__(self, logger, method_name: str, event_dict: dict):
        for sink in list(_sinks):
            sink.write(event_dict)  # before rendering: the console renderer pops keys
        if LEVELS.get(str(event_dict.get("level", "info")), 20) < self.console_level:
            raise structlog.DropEvent
        return self.renderer(logger, method_name, event_dict)


class _ToStructlog(logging.Handler):
    """Standard-library log records (TensorFlow's and absl's Python loggers, Python warnings)
    as our events, so that they reach the log file and print above a live terminal view,
    not through it. Python warnings (Keras' "Your input ran out of data" after each
    validation pass) speak to whoever writes the calling code, not to whoever runs a job:
    they are kept at info level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            method = level if level in ("debug", "info", "warning", "error", "critical") else "warning"
            if record.name == "py.warnings":
                structlog.get_logger("scenebench").info("python_warning", message=record.getMessage().strip())
                return
            getattr(structlog.get_logger("scenebench"), method)(
                "library_log", logger=record.name, message=record.getMessage())
        except Exception:  # a log line must never break the job
            self.handleError(record)


def level_number(name: str | None, default: str = "INFO") -> int:
    """A level name (any case) as a number; unknown names mean the default."""
    return LEVELS.get(str(name or default).lower(), LEVELS[default.lower()])


def json_mode() -> bool:
    """JSON lines unless SCENEBENCH_LOG_FORMAT=console, or it is unset and stderr is a terminal."""
    fmt = os.environ.get("SCENEBENCH_LOG_FORMAT", "").lower()
    return fmt == "json" or (fmt != "console" and not sys.stderr.isatty())


def configure(level: str | None = None, json: bool | None = None, stdout_is_data: bool = False) -> None:
    """Configure structlog for this process (every job's entry point calls it).

    JSON is chosen when stdout is not a terminal (pods, CI, pipes) unless
    SCENEBENCH_LOG_FORMAT=console|json says otherwise. When someone else has configured
    structlog since (structlog.testing.capture_logs in tests), their set-up is kept.
    stdout_is_data: the command prints what was asked for (a table, keys, a result
    document) on stdout, so its logs go to stderr in every format.
    """
    global _configured, _ours
    if structlog.is_configured():
        current = structlog.get_config()["processors"]
        # capture_logs swaps the processors in place; our processor last means it is ours.
        if current and isinstance(current[-1], structlog.testing.LogCapture):
            return
        if _ours is not None and (not current or current[-1] is not _ours):
            return
    console_level = _console_override or level_number(level or os.environ.get("SCENEBENCH_LOG_LEVEL"))
    if json is None:
        json = json_mode()
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    # One output object for the process, changed in place: loggers bound before a later
    # configure() (a job's module-level or main()'s logger) keep their processor list.
    if _ours is None:
        _ours = _Output(renderer, console_level)
    _ours.renderer, _ours.console_level = renderer, console_level
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _ours,
    ]
    structlog.configure(
        processors=processors,
        # info events are made even when the console shows only warnings: the log file keeps them
        wrapper_class=structlog.make_filtering_bound_logger(min(console_level, LEVELS["info"])),
        # JSON lines go to stdout, where pod log collectors look; a person's terminal gets
        # them on stderr so that stdout stays for the tables the commands print.
        logger_factory=lambda *args: _StreamLogger(to_stdout=bool(json) and not stdout_is_data),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if not any(isinstance(h, _ToStructlog) for h in root.handlers):
        root.addHandler(_ToStructlog(level=logging.WARNING))
    if root.level == logging.NOTSET or root.level < logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    # Normally set by jobs/__init__ already; here too for commands outside jobs/.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _configured = True


def set_console_level(level: str | int | None) -> None:
    """Override the console's level for this process (None: back to SCENEBENCH_LOG_LEVEL)."""
    global _console_override
    _console_override = level_number(level) if isinstance(level, str) else level
    configure()


def add_file_sink(path: str | Path) -> FileSink:
    """Append every event from now on to path as JSON lines (until remove_file_sink)."""
    sink = FileSink(path)
    _sinks.append(sink)
    return sink


def remove_file_sink(sink: FileSink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)
    sink.close()


def get_logger(**context):
    if not _configured:
        configure()
    return structlog.get_logger("scenebench").bind(**context)
