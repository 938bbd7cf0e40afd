"""Progress tracking, its events, the stop at a safe point, and the log split between console and file."""

from __future__ import annotations

import json
import logging
import time

import pytest
from structlog.testing import capture_logs

from common import logging as slog
from common import progress
from common.progress import PlannedStep, StopRequested, Tracker
from jobs.pipeline import resume_command


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def plan() -> list[PlannedStep]:
    return [PlannedStep("prepare", "prepare synthetic", 1), PlannedStep("train", "train mobilenet_v2", 6),
            PlannedStep("convert", "convert mobilenet_v2/int8", 2), PlannedStep("aggregate", "aggregate results", 1)]


@pytest.fixture
def tracker():
    t = Tracker(clock=Clock(), every_s=3600)
    yield t
    t.stop_heartbeat()


def test_eta_comes_from_the_steps_timed_so_far_and_the_current_fraction(tracker):
    clock = tracker.clock
    tracker.begin_run(plan())
    tracker.begin_step(1)
    assert tracker.eta_s() is None  # nothing timed, nothing counted yet
    clock.t = 10.0
    tracker.begin_step(2)  # prepare took 10 s for weight 1
    assert tracker.eta_s() == pytest.approx(6 * 10 + 2 * 10 + 1 * 10)
    clock.t = 40.0
    tracker.set_step_fraction(0.5)  # half of training in 30 s: 60 s a training, 10 s per unit
    assert tracker.eta_s() == pytest.approx(30 + (2 + 1) * 10)
    clock.t = 70.0
    tracker.begin_step(3)
    with tracker.open_task("int8 calibration", total=20, unit="images") as t:
        clock.t = 75.0
        t.update(completed=10)  # half of the conversion in 5 s
        assert tracker.eta_s() == pytest.approx(5 + 1 * 10)  # aggregate: the pooled rate
    tracker.finish()
    assert tracker.eta_s() is None and tracker.elapsed_s() == 75.0


def test_cached_steps_do_not_teach_the_eta_anything(tracker):
    tracker.begin_run(plan())
    tracker.begin_step(1)
    tracker.clock.t = 0.2  # served from its cache
    tracker.begin_step(2)
    assert tracker.eta_s() is None


def test_a_requested_stop_is_raised_at_the_next_update_not_before(tracker):
    tracker.begin_run(plan())
    tracker.begin_step(1)
    task = tracker.open_task("validation", total=3, unit="images")
    task.advance()
    tracker.request_stop()  # what the first Ctrl-C does: nothing raised in the signal handler
    with pytest.raises(StopRequested):
        task.advance()
    with pytest.raises(KeyboardInterrupt):  # also at a step boundary, and as a KeyboardInterrupt
        tracker.begin_step(2)


def test_task_end_logs_one_progress_event_with_the_step_and_count(tracker, monkeypatch):
    monkeypatch.setattr(progress, "_tracker", tracker)
    tracker.begin_run(plan())
    tracker.begin_step(2)
    with capture_logs() as logs:
        batches = list(progress.track([[1, 2], [3]], "validation", total=3, unit="images", count=len))
        with progress.task("epoch 1/2", total=5, unit="batches") as t:
            t.update(completed=5, loss=2.5, top1=12.5)
    assert batches == [[1, 2], [3]]
    events = [e for e in logs if e["event"] == "progress"]
    assert [(e["task"], e["completed"], e["total"]) for e in events] == [("validation", 3, 3), ("epoch 1/2", 5, 5)]
    assert events[1]["loss"] == 2.5 and events[1]["top1"] == 12.5
    assert events[1]["n"] == 2 and events[1]["of"] == 4 and events[1]["what"] == "train mobilenet_v2"


def test_heartbeat_logs_progress_while_something_runs():
    t = Tracker(every_s=0.05)
    try:
        with capture_logs() as logs:
            t.begin_run(plan())
            t.begin_step(2)
            with t.open_task("epoch 1/1", total=10, unit="batches") as task:
                task.update(completed=4)
                deadline = time.monotonic() + 5
                while not any(e["event"] == "progress" for e in logs) and time.monotonic() < deadline:
                    time.sleep(0.02)
        beats = [e for e in logs if e["event"] == "progress" and e["reason"] == "heartbeat"]
        assert beats and beats[0]["task"] == "epoch 1/1" and beats[0]["completed"] == 4
    finally:
        t.stop_heartbeat()


def test_console_shows_warnings_only_while_the_log_file_keeps_every_event(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SCENEBENCH_LOG_LEVEL", raising=False)
    monkeypatch.setenv("SCENEBENCH_LOG_FORMAT", "console")
    slog.configure()
    log = slog.get_logger(step="pipeline")  # bound before the level changes, like main()'s logger
    sink = slog.add_file_sink(tmp_path / "pipeline.jsonl")
    slog.set_console_level("WARNING")
    try:
        log.info("config", store="file://x")
        log.warning("step_skipped", what="resnet50/int8")
    finally:
        slog.set_console_level(None)
        slog.remove_file_sink(sink)
    err = capsys.readouterr().err
    assert "step_skipped" in err and "config" not in err
    lines = [json.loads(line) for line in (tmp_path / "pipeline.jsonl").read_text().splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [("config", "info"), ("step_skipped", "warning")]
    assert lines[0]["store"] == "file://x" and lines[0]["step"] == "pipeline"


def test_python_warnings_go_to_the_log_at_info_level(monkeypatch):
    import warnings

    monkeypatch.setenv("SCENEBENCH_LOG_FORMAT", "console")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(False)  # pytest's own warning capture has replaced the hook
        slog.configure()
        with capture_logs() as logs:
            warnings.warn("Your input ran out of data; interrupting training.", UserWarning)
        logging.captureWarnings(False)
    assert [(e["event"], e["log_level"]) for e in logs] == [("python_warning", "info")]
    assert "ran out of data" in logs[0]["message"]


def test_resume_command_repeats_the_flags_with_the_run_id():
    cmd = resume_command(["--archs", "mobilenet_v2", "--run-id", "old", "--epochs", "2", "--run-id=x"], "r1")
    assert cmd.endswith("-m jobs.pipeline --archs mobilenet_v2 --epochs 2 --run-id r1")
