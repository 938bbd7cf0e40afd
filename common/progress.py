"""How far a run has got: step k/N with an ETA, and the counted work inside the step.

Jobs and library code report through `task()` (training batches, calibration images,
validation images, timed runs); the pipeline announces its plan and each step. One Tracker
per process keeps the state. On a terminal `common.console` draws it; everywhere a heartbeat
logs it as `progress` events every 30 s and whenever a task ends (each training epoch is a
task), so pods and CI see JSON lines, never bars.

Stopping: the pipeline's first Ctrl-C only asks to stop. The next progress update (a
batch, an image, a step boundary) raises StopRequested, so an interrupt never lands in the
middle of a checkpoint upload or a store write.
"""

from __future__ import annotations

import atexit
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TypeVar

from common.logging import get_logger

EVENT_EVERY_S = 30.0
# Steps faster than this were served from a cache: they say nothing about how long work takes.
MIN_TIMED_S = 1.0
# Below this share of a step done, extrapolating from it is mostly noise (warm-up, tracing).
MIN_FRACTION = 0.05

T = TypeVar("T")


class StopRequested(KeyboardInterrupt):
    """Raised at a safe point after a stop was asked for (the pipeline's first Ctrl-C)."""


@dataclass(frozen=True)
class PlannedStep:
    kind: str  # prepare, train, convert, evaluate, benchmark, aggregate
    label: str  # what a person reads: "train mobilenet_v2", "convert resnet50/int8"
    weight: float  # rough relative cost, used until a step of the same kind has been timed


@dataclass
class TaskState:
    description: str
    total: int | None
    unit: str
    started: float
    completed: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


class Task:
    """One bar (or spinner, without a total) inside the current step; a context manager."""

    def __init__(self, tracker: "Tracker", state: TaskState):
        self._tracker = tracker
        self.state = state

    def advance(self, n: int = 1, **metrics: float) -> None:
        self.update(completed=self.state.completed + n, **metrics)

    def update(self, completed: int | None = None, total: int | None = None,
               description: str | None = None, **metrics: float) -> None:
        with self._tracker.lock:
            if completed is not None:
                self.state.completed = completed
            if total is not None:
                self.state.total = total
            if description is not None:
                self.state.description = description
            self.state.metrics.update({k: v for k, v in metrics.items() if v is not None})
        self._tracker.safe_point()

    def close(self, *, report: bool = True, **metrics: float) -> None:
        """End the task; report=True logs one progress event with its final count."""
        with self._tracker.lock:
            self.state.metrics.update({k: v for k, v in metrics.items() if v is not None})
            if self.state not in self._tracker.tasks:
                return
            event = self._tracker.snapshot(task=self.state) if report else None
            self._tracker.tasks.remove(self.state)
        if event is not None:
            self._tracker.emit(event, reason="task_done")

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(report=exc_type is None)


class Tracker:
    """The run's steps and open tasks; thread-safe (a view and a heartbeat read it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, every_s: float = EVENT_EVERY_S):
        self.clock = clock
        self.every_s = every_s
        self.lock = threading.RLock()
        self.plan: list[PlannedStep] = []
        self.started: float | None = None
        self.index = 0  # 1-based number of the current step; 0 before the first
        self.step_started: float | None = None
        self.step_fraction: float | None = None
        self.timed: list[tuple[PlannedStep, float]] = []  # finished steps and their seconds
        self.failed: list[str] = []
        self.tasks: list[TaskState] = []
        self.stop_requested = False
        self.interrupted = False
        self.finished_at: float | None = None
        self._heartbeat: threading.Thread | None = None
        self._quit = threading.Event()

    # ---------------------------------------------------------------- the run
    def begin_run(self, plan: list[PlannedStep]) -> None:
        with self.lock:
            self.plan = list(plan)
            self.started = self.clock()
            self.index, self.timed, self.failed, self.tasks = 0, [], [], []
            self.step_started = self.step_fraction = self.finished_at = None
            self.interrupted = False  # stop_requested stays: a Ctrl-C during start-up still counts
        self.start_heartbeat()

    def begin_step(self, index: int) -> None:
        """Step `index` (1-based, in the plan) starts; the previous one is over. A safe point."""
        self.safe_point()
        with self.lock:
            self._end_step()
            self.index = index
            self.step_started = self.clock()
            self.step_fraction = None
            self.tasks = []

    def step_failed(self, label: str) -> None:
        with self.lock:
            self.failed.append(label)

    def finish(self, interrupted: bool = False) -> None:
        """The run is over (interrupted: stopped during the current step, which stays current)."""
        with self.lock:
            if not interrupted:
                self._end_step()
            self.interrupted = interrupted
            self.finished_at = self.clock()
            self.tasks = []

    def _end_step(self) -> None:
        if self.index and self.step_started is not None:
            self.timed.append((self.plan[self.index - 1], self.clock() - self.step_started))
            self.step_started = None

    @property
    def current(self) -> PlannedStep | None:
        return self.plan[self.index - 1] if self.plan and 0 < self.index <= len(self.plan) else None

    def set_step_fraction(self, fraction: float) -> None:
        """How much of the current step is done, when a task alone cannot tell (epochs of batches)."""
        with self.lock:
            self.step_fraction = min(1.0, max(0.0, fraction))

    # ---------------------------------------------------------------- tasks
    def open_task(self, description: str, total: int | None = None, unit: str = "") -> Task:
        state = TaskState(description=description, total=total, unit=unit, started=self.clock())
        with self.lock:
            self.tasks.append(state)
        self.start_heartbeat()
        self.safe_point()
        return Task(self, state)

    # ---------------------------------------------------------------- stopping
    def request_stop(self) -> None:
        self.stop_requested = True

    def safe_point(self) -> None:
        if self.stop_requested:
            raise StopRequested("stopped by Ctrl-C")

    # ---------------------------------------------------------------- estimates
    def fraction(self) -> float | None:
        """Share of the current step done: set by the step, else its innermost counted task."""
        with self.lock:
            if self.step_fraction is not None:
                return self.step_fraction
            for t in reversed(self.tasks):
                if t.total:
                    return min(1.0, t.completed / t.total)
            return None

    def _rate(self, kind: str) -> float | None:
        """Seconds per unit of weight, from timed steps of this kind, else of any kind."""
        timed = [(s, sec) for s, sec in self.timed if sec >= MIN_TIMED_S and s.weight > 0]
        pool = [(s, sec) for s, sec in timed if s.kind == kind] or timed
        if not pool:
            return None
        return sum(sec for _, sec in pool) / sum(s.weight for s, _ in pool)

    def eta_s(self) -> float | None:
        """Seconds left in the run, or None while there is nothing to estimate from."""
        with self.lock:
            cur = self.current
            if cur is None or self.step_started is None or self.finished_at is not None:
                return None
            elapsed = self.clock() - self.step_started
            f = self.fraction()
            rate = self._rate(cur.kind)
            if f is not None and f >= MIN_FRACTION:
                left_here = elapsed * (1.0 - f) / f
                fallback = elapsed / (f * cur.weight) if cur.weight else rate
            elif rate is not None:
                left_here = max(0.0, cur.weight * rate - elapsed)
                fallback = rate
            else:
                return None
            rest = 0.0
            for step in self.plan[self.index:]:
                r = self._rate(step.kind) or fallback
                if r is None:
                    return None
                rest += step.weight * r
            return left_here + rest

    def elapsed_s(self) -> float:
        with self.lock:
            if self.started is None:
                return 0.0
            return (self.finished_at or self.clock()) - self.started

    # ---------------------------------------------------------------- events
    def snapshot(self, task: TaskState | None = None) -> dict:
        """The state as flat event fields; `task` defaults to the innermost open one."""
        with self.lock:
            out: dict = {}
            cur = self.current
            if cur is not None and self.finished_at is None:
                eta = self.eta_s()
                out.update(n=self.index, of=len(self.plan), what=cur.label,
                           elapsed_s=round(self.elapsed_s(), 1), eta_s=None if eta is None else round(eta))
            t = task or (self.tasks[-1] if self.tasks else None)
            if t is not None:
                out.update(task=t.description, completed=t.completed, total=t.total, unit=t.unit,
                           **{k: round(v, 4) for k, v in t.metrics.items()})
            return out

    def emit(self, fields: dict, reason: str) -> None:
        if fields:
            get_logger().info("progress", reason=reason, **fields)

    def active(self) -> bool:
        with self.lock:
            return bool(self.tasks) or (self.current is not None and self.finished_at is None)

    def start_heartbeat(self) -> None:
        with self.lock:
            if self._heartbeat is not None and self._heartbeat.is_alive():
                return
            self._quit.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True)
            self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        self._quit.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=5)
        self._heartbeat = None

    def _beat(self) -> None:
        while not self._quit.wait(self.every_s):
            if self.active():
                self.emit(self.snapshot(), reason="heartbeat")


_tracker: Tracker | None = None
_tracker_lock = threading.Lock()


def tracker() -> Tracker:
    """This process's tracker (made on first use)."""
    global _tracker
    with _tracker_lock:
        if _tracker is None:
            _tracker = Tracker()
        return _tracker


@atexit.register
def _stop_at_exit() -> None:
    # A daemon thread writing to stdout while the interpreter shuts down can abort it.
    if _tracker is not None:
        _tracker.stop_heartbeat()


def task(description: str, total: int | None = None, unit: str = "") -> Task:
    """A counted piece of work in the current step: `with task("validation", 600, "images") as t: t.advance()`."""
    return tracker().open_task(description, total, unit)


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "",
          count: Callable[[T], int] = lambda _: 1) -> Iterator[T]:
    """Yield items, advancing a task by count(item) after each (e.g. the images in a batch)."""
    with task(description, total, unit) as t:
        for item in items:
            yield item
            t.advance(count(item))


def safe_point() -> None:
    tracker().safe_point()


def _metric(logs: dict | None, name: str, scale: float = 1.0) -> float | None:
    try:
        return float((logs or {})[name]) * scale
    except (KeyError, TypeError, ValueError):
        return None


def keras_callback(epochs: int):
    """A Keras callback that reports each epoch as a task over its batches, with loss and top-1 %.

    The training loop calls fit once per epoch with initial_epoch set, so `epoch` is the
    run's own epoch number, also after a resume.
    """
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._epoch = 0
            self._train: Task | None = None
            self._val: Task | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch
            self._train = task(f"epoch {epoch + 1}/{epochs}", total=(self.params or {}).get("steps"),
                               unit="batches")

        def on_train_batch_end(self, batch, logs=None):
            if self._train is None:
                return
            steps = self._train.state.total
            if steps:
                tracker().set_step_fraction((self._epoch + (batch + 1) / steps) / epochs)
            self._train.update(completed=batch + 1, loss=_metric(logs, "loss"),
                               top1=_metric(logs, "top1", 100.0))

        def on_epoch_end(self, epoch, logs=None):
            if self._train is not None:
                self._train.close(loss=_metric(logs, "loss"), top1=_metric(logs, "top1", 100.0))
                self._train = None

        def on_test_begin(self, logs=None):
            self._val = task(f"validation after epoch {self._epoch + 1}/{epochs}",
                             total=(self.params or {}).get("steps"), unit="batches")

        def on_test_batch_end(self, batch, logs=None):
            if self._val is not None:
                self._val.update(completed=batch + 1)

        def on_test_end(self, logs=None):
            if self._val is not None:
                self._val.close(report=False)
                self._val = None

    return ProgressCallback()
