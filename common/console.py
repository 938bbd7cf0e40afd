"""What a person sees on a terminal: the live progress view, the leaderboard table and the report link.

Drawn with rich. While the view is up, what native code writes straight to file
descriptor 2 (TensorFlow's C++ logging, LiteRT's "Created TensorFlow Lite XNNPACK delegate")
is read line by line and logged instead: the known start-up chatter goes to the log file
only, anything else prints as a warning above the view rather than through it.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from datetime import timedelta
from typing import IO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from common.logging import get_logger, json_mode
from common.progress import Tracker
from common.results import entry_label, ranked
from common.schemas import Results
from common.stats import plus_minus

# Lines native libraries print at start-up or first use that say nothing about this run.
# Their form: absl's own warning (absl/log/internal/globals.cc), TensorFlow's absl-style
# INFO/WARNING lines ("I0000 00:00:1796286481.250573   11793 cpu_feature_guard.cc:227] ..."),
# the continuation line of the CPU-instructions notice, and LiteRT's minimal logger
# ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."), and the line TensorFlow's
# post-training quantizer writes to llvm::dbgs() on every int8 conversion
# (quantize_model.cc: "fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, ...").
NATIVE_CHATTER = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] "
    r"|To enable the following instructions: "
    r"|INFO: (Created TensorFlow Lite|Initialized TensorFlow Lite runtime)"
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: )")
NATIVE_ERROR = re.compile(r"^([EF]\d{4} \d\d:\d\d:\d\d|ERROR: |FATAL: )")


def interactive() -> bool:
    """Draw the live view: stderr is a terminal that can move its cursor and logs are not JSON."""
    if json_mode() or not sys.stderr.isatty():
        return False
    return os.environ.get("TERM", "") not in ("dumb", "unknown")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return str(timedelta(seconds=int(round(seconds))))


class NativeStderr:
    """Point file descriptor 2 at a pipe whose lines are logged; `terminal` is the real stderr."""

    def __init__(self):
        self._saved: int | None = None
        self._thread: threading.Thread | None = None
        self.terminal: IO[str] | None = None

    def start(self) -> IO[str]:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self.terminal = os.fdopen(os.dup(self._saved), "w", encoding="utf-8", errors="replace")
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._pump, args=(read_end,), name="native-stderr", daemon=True)
        self._thread.start()
        return self.terminal

    def stop(self) -> None:
        if self._saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)  # drops this process's write end of the pipe: the pump sees EOF
        os.close(self._saved)
        self._saved = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.terminal is not None:
            self.terminal.close()

    @staticmethod
    def _pump(fd: int) -> None:
        log = get_logger()
        with os.fdopen(fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                if NATIVE_CHATTER.match(line):
                    log.info("native_output", line=line)
                elif NATIVE_ERROR.match(line):
                    log.error("native_output", line=line)
                else:
                    log.warning("native_output", line=line)


class LiveView:
    """The run's progress, redrawn four times a second below the log lines."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker
        self._native = NativeStderr()
        self._live: Live | None = None
        self.console: Console | None = None

    def __enter__(self) -> "LiveView":
        terminal = self._native.start()
        self.console = Console(file=terminal, stderr=True)
        self._live = Live(get_renderable=self.render, console=self.console, refresh_per_second=4,
                          redirect_stdout=True, redirect_stderr=True)
        try:
            self._live.start()
        except Exception:
            self._native.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._live is not None:
                self._live.refresh()
                self._live.stop()
        finally:
            self._native.stop()

    # ---------------------------------------------------------------- drawing
    def render(self) -> RenderableType:
        t = self.tracker
        with t.lock:
            rows: list[RenderableType] = [self._header()]
            tasks = list(t.tasks) if t.finished_at is None else []
            if tasks:
                grid = Table.grid(expand=True, padding=(0, 1))
                grid.add_column(no_wrap=True)
                grid.add_column(ratio=1)
                grid.add_column(no_wrap=True, justify="right")
                grid.add_column(no_wrap=True, overflow="ellipsis", max_width=40)
                for task in tasks:
                    grid.add_row(*self._task_cells(task))
                rows.append(grid)
            if t.stop_requested and t.finished_at is None:
                rows.append(Text("  stopping at the next safe point… (Ctrl-C again stops at once)", style="yellow"))
        return Group(*rows)

    def _header(self) -> RenderableType:
        t = self.tracker
        grid = Table.grid(expand=True, padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(no_wrap=True, justify="right")
        elapsed = _duration(t.elapsed_s())
        if t.interrupted:
            cur = t.current
            where = f"step {t.index}/{len(t.plan)} {cur.label}" if cur else "start-up"
            grid.add_row(Text("■", style="bold yellow"), Text(f"stopped during {where}", style="bold"),
                         Text(f"{elapsed} elapsed"))
            return grid
        if t.finished_at is not None:
            failed = len(t.failed)
            mark = Text("✓", style="bold green") if not failed else Text("✗", style="bold red")
            what = (f"{len(t.plan)} steps done" if not failed
                    else f"{len(t.plan)} steps, {failed} failed: {', '.join(t.failed)}")
            grid.add_row(mark, Text(what, style="bold"), Text(f"{elapsed} elapsed"))
            return grid
        cur = t.current
        step = Text(f"step {t.index}/{len(t.plan)}", style="bold cyan") if cur else Text("starting", style="bold")
        label = Text(cur.label if cur else "", style="bold")
        grid.add_row(Spinner("dots", text=step), label,
                     Text(f"{elapsed} elapsed · ETA {_duration(t.eta_s())}"))
        return grid

    @staticmethod
    def _task_cells(task) -> tuple[RenderableType, ...]:
        if task.total:
            bar: RenderableType = ProgressBar(total=task.total, completed=min(task.completed, task.total))
            count = f"{task.completed}/{task.total} {task.unit}".rstrip()
        else:
            bar = Spinner("simpleDots")
            count = f"{task.completed} {task.unit}".rstrip() if task.completed else ""
        metrics = []
        if "loss" in task.metrics:
            metrics.append(f"loss {task.metrics['loss']:.3f}")
        if "top1" in task.metrics:
            metrics.append(f"top-1 {task.metrics['top1']:.1f} %")
        return Text("  " + task.description), bar, Text(count), Text(" · ".join(metrics), style="dim")


# ---------------------------------------------------------------- after the run
def _f(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _score(v: float | None) -> str:
    return "–" if v is None else (f"{v:.4f}" if v >= 1e-3 else f"{v:.2e}")


def fit_widths(natural: list[int], minimum: list[int | None], budget: int) -> list[int]:
    """Column widths within budget: flexible columns (a minimum given) give up room widest first,
    never below their minimum; fixed ones (None) keep their natural width."""
    widths = list(natural)
    while sum(widths) > budget:
        flexible = [i for i, m in enumerate(minimum) if m is not None and widths[i] > m]
        if not flexible:
            break
        widths[max(flexible, key=lambda i: widths[i])] -= 1
    return widths


GAP = 2  # columns between two table columns (collapse_padding: one space each side of a blank divider)


Column = tuple[str, "int | None", bool]  # header, narrowest it may fold to (None: never), right-aligned


def _table(columns: list[Column], body: list[list[str]], width: int) -> tuple[Table, bool]:
    """A table of these columns within width, and whether it fits without folding below the minimums."""
    natural = [max([cell_len(line) for line in header.split("\n")] + [cell_len(r[i]) for r in body])
               for i, (header, _, _) in enumerate(columns)]
    budget = width - GAP * (len(columns) - 1)
    widths = fit_widths(natural, [m for _, m, _ in columns], budget)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for (header, _, right), w in zip(columns, widths):
        # fold: a cell wider than its column goes on over lines, nothing is cut off
        table.add_column(header, justify="right" if right else "left", overflow="fold", width=w)
    for cells in body:
        table.add_row(*cells)
    return table, sum(widths) <= budget


def leaderboard_table(results: Results, width: int) -> RenderableType:
    """The leaderboard for a terminal `width` columns wide, best score first.

    Numbers keep their width; in a narrow window the text cells fold over lines instead and
    a value wraps before its ± interval, each keeping a readable minimum (in a very narrow
    window numbers fold too). The "measured on" label always shows: one line above the
    table when every model was scored on the same device and delegate, else a column, or,
    when the window is too narrow for that column, a second line under the model's name.
    """
    rows = ranked(results)
    bases = {m.score_basis for m in rows if m.score_basis}
    shared = next(iter(bases)) if len(bases) == 1 and all(m.score_basis for m in rows) else None
    numbers, labels = [], []
    for m in rows:
        basis = next((e for e in m.latency if m.score_basis and entry_label(e) == m.score_basis), None)
        drop = m.drop_top1_test
        numbers.append([_f(m.size_mb, 2), plus_minus(m.top1, m.top1_ci), plus_minus(m.top3, m.top3_ci),
                        plus_minus(drop.diff, drop.ci) if drop is not None else _f(m.drop_top1),
                        _f(basis.mean_ms if basis else None, 2), _f(basis.peak_memory_mb if basis else None),
                        _score(m.score)])
        labels.append(m.score_basis or (m.reason or "not measured"))
    # A value with its interval ("92.5 ±1.1") may wrap at its space; other numbers never break.
    number_cols: list[Column] = [("size\nMB", None, True), ("top-1\n%", 5, True), ("top-3\n%", 5, True),
                                 ("drop\npts", 5, True), ("latency\nms", None, True), ("RAM\nMB", None, True),
                                 ("score", None, True)]
    names: list[Column] = [("model", 8, False), ("format", 5, False)]
    if shared is not None:
        table, _ = _table(names + number_cols, [[m.arch, m.format, *n] for m, n in zip(rows, numbers)], width)
    else:
        table, fits = _table(names + number_cols + [("measured on", 14, False)],
                             [[m.arch, m.format, *n, lab] for m, n, lab in zip(rows, numbers, labels)], width)
        if not fits:
            table, _ = _table([("model · measured on", 12, False), ("format", 5, False)] + number_cols,
                              [[f"{m.arch}\n  {lab}", m.format, *n] for m, n, lab in zip(rows, numbers, labels)],
                              width)
    head = [Text(f"scenebench leaderboard — run {results.run_id}", style="bold")]
    if shared is not None:
        head.append(Text.assemble(("measured on: ", "bold"), shared))
    foot = Text("± half the 95 % bootstrap interval over the validation images; drop = Keras top-1 − "
                "TFLite top-1 on the same images (its McNemar p is in the report); "
                "score = 2^((top-1 − 96) + (top-3 − 99)) / (C · runtime s)", style="dim")
    return Group(*head, table, foot)


def print_results(console: Console, results: Results, report_url: str | None, store_uri: str) -> None:
    """Leaderboard, gaps, the report as a link, and how to go on from here."""
    if results.dataset_synthetic:
        console.print(Text("Synthetic data: these numbers show that the pipeline works, "
                           "not how the models rank on real scenes.", style="yellow"))
    console.print(leaderboard_table(results, console.width))
    for miss in results.missing:
        what = " ".join(x for x in (miss.arch, miss.format, miss.device_id, miss.delegate) if x)
        console.print(Text(f"missing: {miss.step} {what}: {miss.reason}", style="yellow"), overflow="fold")
    regressions = [r for r in results.regressions if r.kind == "regression"]
    if regressions:
        console.print(Text(f"{len(regressions)} regression(s) against run {results.baseline_run_id}",
                           style="bold red"))
    if report_url:
        console.print(Text.assemble("report: ", (report_url, f"link {report_url}")), overflow="fold")
    store = "" if store_uri in ("file://./artifacts", "") else f" --store {store_uri}"
    other = results.baseline_run_id or "OTHER_RUN_ID"
    console.print(Text(f"Open it in a browser (click it, or xdg-open / open it); compare two runs with "
                       f"python -m jobs.compare {other} {results.run_id}{store}", style="dim"))
