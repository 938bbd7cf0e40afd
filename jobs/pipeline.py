"""The whole study on one machine: prepare → train → convert → evaluate → benchmark → aggregate.

Each step is the same job the cluster runs, called with the same flags; a failed
architecture or format does not stop the others, and a re-run resumes: finished steps
are skipped by their caches and an interrupted training continues from its checkpoint.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from pydantic import Field, field_validator

from common import layout, progress, stepcache
from common.archs import ARCH_NAMES
from common.dataset import MAX_SIDE
from common.errors import ConfigError
from common.jobkit import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, StepSettings, parser_for
from common.errors import ScenebenchError
from common.logging import FileSink, add_file_sink, configure, get_logger, json_mode, remove_file_sink, set_console_level
from common.schemas import FORMATS
from common.settings import expand_choices, image_size_text, load
from common.store import ArtifactStore, open_store
from common.workspace import cache_dir

STEP = "pipeline"


class PipelineSettings(StepSettings):
    data: str = Field("synthetic", description="Dataset: a local folder, s3://bucket/prefix, or 'synthetic'.")
    archs: str = Field("all", description=f"Architectures: all or a comma-separated list of {', '.join(ARCH_NAMES)}.")
    formats: str = Field("float32,int8", description=f"TFLite formats, comma-separated: {', '.join(FORMATS)}, or all.")
    image_size: str = Field("384x576", description="Model input HEIGHTxWIDTH (CamSDD photos are 384x576).")
    epochs: int = Field(10, ge=1, le=1000, description="Training epochs.")
    weights: str = Field("imagenet", description="Initial weights: none, imagenet, or a weights file path/URI.")
    batch_size: int | None = Field(None, ge=1, le=4096, description="Training batch size (default: each recipe's).")
    seed: int = Field(0, description="Random seed (split, synthetic data, training).")
    synthetic_per_class: int = Field(20, ge=2, le=5000, description="Synthetic training images per class.")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Hold-out share when there is no validation folder.")
    max_side: int = Field(MAX_SIDE, ge=0, le=100_000,
                          description="Photos longer than this are stored downscaled to it (0: full size).")
    calibration_samples: int = Field(200, ge=1, le=10000, description="int8 calibration images.")
    calibration_percentile: float = Field(100.0, ge=50, le=100, description=(
        "int8, int8-selective: activation ranges from this percentile of each tensor's per-image extremes "
        "(100: the converter's min/max)."))
    qat_epochs: int = Field(1, ge=1, le=50, description="int8-qat: epochs of quantization-aware fine-tuning.")
    runner_url: str = Field("", description="Device-farm runner URL; empty = measure in-process on this host.")
    devices: str = Field("all", description="Runner devices to measure on: all or ids.")
    delegates: str = Field("", description="Delegates (cpu,gpu,coreml); empty = all a device supports.")
    num_threads: int = Field(2, ge=1, le=64, description="Interpreter threads for latency runs.")
    warmup_runs: int = Field(5, ge=0, le=10000, description="Warm-up runs before timing.")
    num_runs: int = Field(50, ge=1, le=100000, description="Timed runs.")
    c: float = Field(1.0, gt=0, description="The score's constant C.")
    score_basis: str = Field("auto", description="auto or DEVICE_ID/DELEGATE.")
    baseline: str = Field("previous", description="Run to compare with: previous, none, or a run id.")
    fail_on_regression: bool = Field(False, description="Exit non-zero when regressions are flagged.")
    trigger: str = Field("manual", description="What started the run: manual or nightly.")
    verbose: bool = Field(False, description="On a terminal, also print info log lines above the progress view "
                                             "(-v; SCENEBENCH_LOG_LEVEL=info does the same).")
    reuse: stepcache.ReuseSteps = stepcache.reuse_field()

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: str) -> str:
        return image_size_text(v)

    @field_validator("archs")
    @classmethod
    def _archs(cls, v: str) -> str:
        return ",".join(expand_choices(v, ARCH_NAMES, "architectures"))

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: str) -> str:
        return ",".join(expand_choices(v, FORMATS, "formats"))


def build_parser():
    parser = parser_for(PipelineSettings, "jobs.pipeline", __doc__)
    parser.add_argument("-v", dest="verbose", action="store_const", const=True, default=None,
                        help="Same as --verbose.")
    return parser


def _common(s: PipelineSettings, run_id: str) -> list[str]:
    return ["--store", s.store, "--run-id", run_id] + (["--force"] if s.force else [])


def step_argvs(s: PipelineSettings, run_id: str) -> list[tuple[str, str, list[str]]]:
    """(module, label, argv) of every step after prepare, in order."""
    archs, formats = s.archs.split(","), s.formats.split(",")
    base = _common(s, run_id)
    reuse = ["--reuse", s.reuse or "none"]  # results of earlier runs with the same inputs (common.stepcache)
    steps: list[tuple[str, str, list[str]]] = []
    for arch in archs:
        steps.append(("train", arch, base + reuse + ["--arch", arch]
                      + (["--batch-size", str(s.batch_size)] if s.batch_size else [])))
    for arch in archs:
        for fmt in formats:
            steps.append(("convert", f"{arch}/{fmt}", base + reuse + ["--arch", arch, "--format", fmt,
                                                                      "--calibration-samples", str(s.calibration_samples),
                                                                      "--calibration-percentile",
                                                                      f"{s.calibration_percentile:g}",
                                                                      "--qat-epochs", str(s.qat_epochs)]))
            steps.append(("evaluate", f"{arch}/{fmt}", base + reuse + ["--arch", arch, "--format", fmt,
                                                                       "--num-threads", str(s.num_threads)]))
            bench = base + ["--arch", arch, "--format", fmt, "--num-threads", str(s.num_threads),
                            "--warmup-runs", str(s.warmup_runs), "--num-runs", str(s.num_runs),
                            "--devices", s.devices]
            if s.runner_url:
                bench += ["--runner-url", s.runner_url]
            if s.delegates:
                bench += ["--delegates", s.delegates]
            steps.append(("benchmark", f"{arch}/{fmt}", bench))
    return steps


# Rough relative cost of each kind of step, used for the ETA until a step of the kind has been timed.
STEP_WEIGHT = {"prepare": 1.0, "convert": 2.0, "evaluate": 1.0, "benchmark": 1.0, "aggregate": 1.0}
TRAIN_WEIGHT_PER_EPOCH = 3.0
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


def plan_steps(s: PipelineSettings, steps: list[tuple[str, str, list[str]]]) -> list[progress.PlannedStep]:
    """What the progress view lists: prepare, the steps of step_argvs, aggregate."""
    out = [progress.PlannedStep("prepare", f"prepare {s.data}", STEP_WEIGHT["prepare"])]
    for module, label, _ in steps:
        weight = TRAIN_WEIGHT_PER_EPOCH * s.epochs if module == "train" else STEP_WEIGHT[module]
        out.append(progress.PlannedStep(module, f"{module} {label}", weight))
    out.append(progress.PlannedStep("aggregate", "aggregate results", STEP_WEIGHT["aggregate"]))
    return out


def _job_main(module: str) -> Callable[[list[str]], int]:
    import importlib

    return importlib.import_module(f"jobs.{module}").main


def _release_memory() -> None:
    """Drop the previous step's graphs and models: every step runs in this one process, and a
    full-size study would otherwise keep three trained networks and their traces alive."""
    import gc

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=True)
    gc.collect()


def run_pipeline(s: PipelineSettings, run_id: str | None = None,
                 after_step: Callable[[], None] | None = None) -> tuple[int, str, list[str]]:
    """Run every step; returns (exit code, run id, failed step labels).

    after_step is called when each step is over (main uploads the run's log then).
    Raises progress.StopRequested (a KeyboardInterrupt) when a stop was asked for.
    """
    from jobs.prepare import new_run_id

    run_id = run_id or s.run_id or new_run_id()
    log = get_logger(step=STEP, run_id=run_id)
    started = time.monotonic()
    done = after_step or (lambda: None)
    prep = _common(s, run_id) + [
        "--data", s.data, "--archs", s.archs, "--formats", s.formats, "--image-size", s.image_size,
        "--epochs", str(s.epochs), "--weights", s.weights, "--c", str(s.c), "--trigger", s.trigger,
        "--val-fraction", str(s.val_fraction), "--seed", str(s.seed),
        "--synthetic-per-class", str(s.synthetic_per_class), "--max-side", str(s.max_side),
    ] + (["--runner-url", s.runner_url] if s.runner_url else [])
    steps = step_argvs(s, run_id)
    total = len(steps) + 2
    tracker = progress.tracker()
    tracker.begin_run(plan_steps(s, steps))
    tracker.begin_step(1)
    log.info("step_start", n=1, of=total, job="prepare", what=s.data)
    rc = _job_main("prepare")(prep)
    done()
    if rc != EXIT_OK:
        tracker.step_failed("prepare")
        tracker.finish()
        log.error("pipeline_stopped", reason="prepare failed; nothing else can run", exit_code=rc)
        return rc, run_id, ["prepare"]
    failed: list[str] = []
    failed_archs: set[str] = set()
    failed_models: set[str] = set()
    for i, (module, label, argv) in enumerate(steps, start=2):
        arch = label.split("/")[0]
        tracker.begin_step(i)
        if module != "train" and (arch in failed_archs or label in failed_models):
            log.warning("step_skipped", n=i, of=total, job=module, what=label, reason="an earlier step of it failed")
            continue
        log.info("step_start", n=i, of=total, job=module, what=label,
                 elapsed_s=round(time.monotonic() - started, 1))
        rc = _job_main(module)(argv)
        if module in ("train", "convert"):
            _release_memory()
        done()
        if rc == EXIT_CONFIG:
            tracker.step_failed(f"{module} {label}")
            tracker.finish()
            return rc, run_id, [f"{module} {label}"]
        if rc != EXIT_OK:
            failed.append(f"{module} {label}")
            tracker.step_failed(f"{module} {label}")
            (failed_archs.add(arch) if module == "train" else failed_models.add(label))
    tracker.begin_step(total)
    log.info("step_start", n=total, of=total, job="aggregate", elapsed_s=round(time.monotonic() - started, 1))
    agg = _common(s, run_id) + ["--c", str(s.c), "--score-basis", s.score_basis, "--baseline", s.baseline]
    if s.fail_on_regression:
        agg.append("--fail-on-regression")
    rc = _job_main("aggregate")(agg)
    if rc != EXIT_OK:
        failed.append("aggregate")
        tracker.step_failed("aggregate")
    tracker.finish()
    store = open_store(s.store)
    where = {name: store.describe(key) for name, key in (
        ("results", layout.results_json(run_id)), ("leaderboard", layout.leaderboard_md(run_id)),
        ("report", layout.report_html(run_id))) if store.exists(key)}
    log.info("pipeline_summary", run_id=run_id, failed=failed, wall_time_s=round(time.monotonic() - started, 1),
             **where)
    done()
    return (EXIT_FAILED if failed else EXIT_OK), run_id, failed


class RunLog:
    """The run's event log: every event as a JSON line into a local file, uploaded to
    runs/<id>/logs/pipeline.jsonl after each step. A resumed run appends to what the store has."""

    def __init__(self, store: ArtifactStore, run_id: str):
        self.store = store
        self.key = layout.pipeline_log(run_id)
        self.path = cache_dir() / "logs" / run_id / "pipeline.jsonl"
        self.sink: FileSink | None = None
        self._log = get_logger(step=STEP, run_id=run_id)

    def __enter__(self) -> "RunLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.store.exists(self.key):
                self.store.get_file(self.key, self.path)
            elif self.path.exists():
                self.path.unlink()  # a log of another store's run of the same id
        except (ScenebenchError, OSError) as exc:
            self._log.warning("run_log_not_continued", key=self.key, error=str(exc))
        self.sink = add_file_sink(self.path)
        return self

    def upload(self) -> None:
        """Put a consistent copy (other threads may be appending) into the store; never fails the run."""
        if self.sink is None:
            return
        copy = self.path.with_name(".upload-" + self.path.name)
        try:
            self.sink.copy_to(copy)
            self.store.put_file(self.key, copy)
        except (ScenebenchError, OSError) as exc:
            self._log.warning("run_log_upload_failed", key=self.key, error=str(exc))
        finally:
            copy.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        self.upload()
        if self.sink is not None:
            remove_file_sink(self.sink)
            self.sink = None


class CtrlC:
    """First Ctrl-C: ask the tracker to stop at its next safe point. Second: stop at once."""

    def __init__(self, tracker: progress.Tracker):
        self.tracker = tracker
        self._previous = None
        self._installed = False

    def _first(self, signum, frame) -> None:
        self.tracker.request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def ignore(self) -> None:
        """While the interrupted run cleans up (the view, the log upload), Ctrl-C waits."""
        if self._installed:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __enter__(self) -> "CtrlC":
        self.tracker.stop_requested = False  # a stop asked of an earlier run in this process is over
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._first)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


def resume_command(args: Sequence[str], run_id: str) -> str:
    """The command line that resumes this run: the same flags with --run-id."""
    rest: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--run-id":
            skip = True
        elif not a.startswith("--run-id="):
            rest.append(a)
    exe = Path(sys.executable)
    try:
        exe = exe.relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join([str(exe), "-m", "jobs.pipeline", *rest, "--run-id", run_id])


def _console_level(settings: PipelineSettings, live: bool) -> str | None:
    """Warnings and errors only under the live view, unless -v or SCENEBENCH_LOG_LEVEL asks for more."""
    if os.environ.get("SCENEBENCH_LOG_LEVEL"):
        return None
    if settings.verbose:
        return "INFO"
    return "WARNING" if live else None


@contextmanager
def _view(live: bool, tracker: progress.Tracker) -> Iterator[None]:
    if not live:
        yield
        return
    from common.console import LiveView

    with LiveView(tracker):
        yield


def _print_results(settings: PipelineSettings, store: ArtifactStore, run_id: str) -> None:
    """The leaderboard, the report link and what to do next, for a person (not in JSON mode)."""
    from rich.console import Console

    from common.console import print_results
    from common.schemas import Results

    results = store.try_get_model(layout.results_json(run_id), Results)
    if results is None:
        return
    report = layout.report_html(run_id)
    url = store.url(report) if store.exists(report) else None
    print_results(Console(), results, url, settings.store)


def main(argv: Sequence[str] | None = None) -> int:
    configure()
    log = get_logger(step=STEP)
    args = list(argv) if argv is not None else sys.argv[1:]
    parser = build_parser()
    try:
        settings = load(PipelineSettings, parser.parse_args(args))
        store = open_store(settings.store)
    except ConfigError as exc:
        log.error("bad_configuration", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from common.console import interactive
    from jobs.prepare import new_run_id

    run_id = settings.run_id or new_run_id()
    live = interactive()
    set_console_level(_console_level(settings, live))
    tracker = progress.tracker()
    rc, failed, stopped = EXIT_FAILED, [], None
    try:
        with CtrlC(tracker) as ctrl_c, RunLog(store, run_id) as run_log, _view(live, tracker):
            log.info("config", **{**settings.model_dump(mode="json"), "run_id": run_id})
            try:
                rc, run_id, failed = run_pipeline(settings, run_id, after_step=run_log.upload)
            except KeyboardInterrupt:
                ctrl_c.ignore()
                cur = tracker.current
                stopped = cur.label if cur else "start-up"
                tracker.finish(interrupted=True)
                # On a terminal the same news follows below the view, in words.
                (log.info if live else log.warning)("pipeline_interrupted", run_id=run_id, during=stopped,
                                                    resume=resume_command(args, run_id))
    finally:
        tracker.stop_heartbeat()
        set_console_level(None)
    if stopped is not None:
        lines = [f"Stopped during {stopped}. Finished steps are kept; to resume, run:",
                 f"  {resume_command(args, run_id)}"]
        if os.environ.get("MAKELEVEL"):
            lines.append(f"  (or: make run RUN_ID={run_id}, with the same variables as before)")
        print("\n".join(lines), file=sys.stderr)
        return EXIT_INTERRUPTED
    if not json_mode():
        _print_results(settings, store, run_id)
    if failed:
        print(f"failed steps: {', '.join(failed)} — fix the cause and run the same command with "
              f"--run-id {run_id} to resume", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
