"""The whole study on one machine: prepare → train → convert → evaluate → benchmark → aggregate.

Each step is the same job the cluster runs, called with the same flags; a failed
architecture or format does not stop the others, and a re-run resumes: finished steps
are skipped by their caches and an interrupted training continues from its checkpoint.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Sequence

from pydantic import Field, field_validator

from common import layout, stepcache
from common.archs import ARCH_NAMES
from common.dataset import MAX_SIDE
from common.errors import ConfigError
from common.jobkit import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, StepSettings, parser_for
from common.logging import configure, get_logger
from common.schemas import FORMATS
from common.settings import expand_choices, image_size_text, load
from common.store import open_store

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
    return parser_for(PipelineSettings, "jobs.pipeline", __doc__)


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
                                                                      "--calibration-samples", str(s.calibration_samples)]))
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


def run_pipeline(s: PipelineSettings) -> tuple[int, str, list[str]]:
    """Run every step; returns (exit code, run id, failed step labels)."""
    from jobs.prepare import new_run_id

    run_id = s.run_id or new_run_id()
    log = get_logger(step=STEP, run_id=run_id)
    started = time.monotonic()
    prep = _common(s, run_id) + [
        "--data", s.data, "--archs", s.archs, "--formats", s.formats, "--image-size", s.image_size,
        "--epochs", str(s.epochs), "--weights", s.weights, "--c", str(s.c), "--trigger", s.trigger,
        "--val-fraction", str(s.val_fraction), "--seed", str(s.seed),
        "--synthetic-per-class", str(s.synthetic_per_class), "--max-side", str(s.max_side),
    ] + (["--runner-url", s.runner_url] if s.runner_url else [])
    steps = step_argvs(s, run_id)
    total = len(steps) + 2
    log.info("step_start", n=1, of=total, job="prepare", what=s.data)
    rc = _job_main("prepare")(prep)
    if rc != EXIT_OK:
        log.error("pipeline_stopped", reason="prepare failed; nothing else can run", exit_code=rc)
        return rc, run_id, ["prepare"]
    failed: list[str] = []
    failed_archs: set[str] = set()
    failed_models: set[str] = set()
    for i, (module, label, argv) in enumerate(steps, start=2):
        arch = label.split("/")[0]
        if module != "train" and (arch in failed_archs or label in failed_models):
            log.warning("step_skipped", n=i, of=total, job=module, what=label, reason="an earlier step of it failed")
            continue
        log.info("step_start", n=i, of=total, job=module, what=label,
                 elapsed_s=round(time.monotonic() - started, 1))
        rc = _job_main(module)(argv)
        if module in ("train", "convert"):
            _release_memory()
        if rc == EXIT_CONFIG:
            return rc, run_id, [f"{module} {label}"]
        if rc != EXIT_OK:
            failed.append(f"{module} {label}")
            (failed_archs.add(arch) if module == "train" else failed_models.add(label))
    log.info("step_start", n=total, of=total, job="aggregate", elapsed_s=round(time.monotonic() - started, 1))
    agg = _common(s, run_id) + ["--c", str(s.c), "--score-basis", s.score_basis, "--baseline", s.baseline]
    if s.fail_on_regression:
        agg.append("--fail-on-regression")
    rc = _job_main("aggregate")(agg)
    if rc != EXIT_OK:
        failed.append("aggregate")
    log.info("pipeline_summary", run_id=run_id, failed=failed, wall_time_s=round(time.monotonic() - started, 1))
    return (EXIT_FAILED if failed else EXIT_OK), run_id, failed


def main(argv: Sequence[str] | None = None) -> int:
    configure()
    log = get_logger(step=STEP)
    parser = build_parser()
    try:
        settings = load(PipelineSettings, parser.parse_args(list(argv) if argv is not None else None))
        store = open_store(settings.store)
    except ConfigError as exc:
        log.error("bad_configuration", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log.info("config", **settings.model_dump(mode="json"))
    rc, run_id, failed = run_pipeline(settings)
    board = layout.leaderboard_md(run_id)
    if store.exists(board):
        print(store.get_bytes(board).decode())
        print(f"results: {store.describe(layout.results_json(run_id))}")
        if store.exists(layout.report_html(run_id)):
            print(f"report:  {store.describe(layout.report_html(run_id))}")
    if failed:
        print(f"failed steps: {', '.join(failed)} — fix the cause and run the same command with "
              f"--run-id {run_id} to resume", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
