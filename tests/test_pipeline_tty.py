"""`python -m jobs.pipeline` as a person and a pod see it.

On a pseudo-terminal (the stdlib pty calls; the screen rendered by pyte, a VT100 emulator):
the live progress view, no TensorFlow start-up lines and no configuration dumps, then the
leaderboard and the report link. Ctrl-C typed mid-training stops the run and prints the
command that resumes it; that command, run in a pipe, prints only JSON lines (progress
events among them), resumes training from its checkpoint and uploads logs/pipeline.jsonl.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest

from common import layout

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
COLS, ROWS = 110, 45
SMALL = ["--data", "synthetic", "--archs", "mobilenet_v2", "--image-size", "32x48", "--weights", "none",
         "--synthetic-per-class", "3", "--num-runs", "5", "--warmup-runs", "1", "--calibration-samples", "20",
         "--baseline", "none"]
ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-B]|[=>78])")
TF_STARTUP = ("absl::InitializeLog", "cpu_feature_guard", "oneDNN", "XNNPACK", "fully_quantize",
              "This TensorFlow binary is optimized")


def child_env(tmp_path: Path) -> dict[str, str]:
    """The test session's environment without what would hide the behaviour under test:
    no TF_CPP_MIN_LOG_LEVEL (the jobs must quiet TensorFlow themselves), no SCENEBENCH_*
    (conftest forces the console log format), no fixed COLUMNS/LINES."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SCENEBENCH_") and k not in ("TF_CPP_MIN_LOG_LEVEL", "COLUMNS", "LINES",
                                                             "MAKELEVEL", "NO_COLOR", "FORCE_COLOR")}
    env.update(PYTHONPATH=str(REPO), SCENEBENCH_CACHE_DIR=str(tmp_path / "cache"), TERM="xterm-256color",
               # fixed: an edit of the work tree between the stop and the resume must not change cache keys
               SCENEBENCH_CODE_VERSION="0.1.0+tty-test")
    return env


class Terminal:
    """A command on a COLS x ROWS pseudo-terminal that is its controlling terminal, as in a shell."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        pid = os.fork()
        if pid == 0:  # the child: new session, the pty as its terminal, then the command
            try:
                os.close(master)
                os.setsid()
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
                for fd in (0, 1, 2):
                    os.dup2(slave, fd)
                os.close(slave)
                os.chdir(REPO)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        os.close(slave)
        self.pid, self.fd = pid, master
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.closed = False
        self.status: int | None = None

    def read(self, timeout: float) -> None:
        if self.closed:
            time.sleep(min(timeout, 0.1))
            return
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: every holder of the slave side has closed it
            chunk = b""
        if not chunk:
            self.closed = True
            return
        self.raw += chunk
        self.stream.feed(chunk)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            if self.closed:
                return predicate(self)
            self.read(0.2)
        return False

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def finish(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None and time.monotonic() < deadline:
            self.read(0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        while not self.closed and time.monotonic() < deadline:
            self.read(0.2)
        if self.status is None:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
            raise AssertionError(f"still running after {timeout} s; screen:\n{self.display()}")
        os.close(self.fd)
        return self.status

    def display(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def text(self) -> str:
        """Everything the program wrote, control sequences removed."""
        return ANSI.sub(b"", bytes(self.raw)).decode("utf-8", "replace").replace("\r", "")


def pipeline_argv(store: Path, run_id: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.pipeline", "--store", str(store), "--run-id", run_id, *SMALL, *extra]


def test_terminal_shows_progress_then_leaderboard_and_report_link(tmp_path):
    store = tmp_path / "store"
    term = Terminal(pipeline_argv(store, "tty", "--formats", "int8", "--epochs", "1"), child_env(tmp_path))
    seen: set[str] = set()

    def watch(t: Terminal) -> bool:
        screen = t.display()
        if re.search(r"step 2/6 +train mobilenet_v2 .*elapsed · ETA", screen):
            seen.add("header")
        if re.search(r"epoch 1/1 .*/\d+ batches", screen):
            seen.add("epoch bar")
        return t.closed

    term.wait_for(watch, timeout=900)
    rc = term.finish(timeout=60)
    screen, text = term.display(), term.text()
    assert rc == 0, screen
    assert seen == {"header", "epoch bar"}, f"saw {seen}; last screen:\n{screen}"
    # Nothing of TensorFlow's start-up, and no log line below warning (the config dumps among them).
    for noise in TF_STARTUP:
        assert noise not in text, noise
    assert "[info" not in text and "calibration_samples=" not in text
    # The end: the run's last state, the leaderboard with its measurement label, the report as a link.
    assert "✓ 6 steps done" in screen
    assert "scenebench leaderboard — run tty" in screen and "mobilenet_v2  int8" in screen
    assert re.search(r"measured on: .*not an iPhone", screen), screen
    link = (store / "runs" / "tty" / "report.html").as_uri()
    assert link in screen.replace("\n", ""), screen
    assert "\x1b]8;".encode() in term.raw and link.encode() in term.raw  # an OSC 8 hyperlink
    assert "python -m jobs.compare" in " ".join(screen.split())  # words wrap at the window's edge
    assert (store / layout.pipeline_log("tty")).is_file()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped by Ctrl-C typed during its second training epoch."""
    tmp = tmp_path_factory.mktemp("ctrl-c")
    store, env = tmp / "store", child_env(tmp)
    # batch 2: ~45 steps an epoch, so the second epoch lasts long enough to be interrupted in
    term = Terminal(pipeline_argv(store, "stop", "--formats", "float32", "--epochs", "2", "--batch-size", "2"), env)
    term.wait_for(lambda t: "epoch 2/2" in t.display() or t.closed, timeout=900)
    screen_before = term.display()
    term.type(b"\x03")  # Ctrl-C, as typed: the terminal sends SIGINT to the foreground process group
    rc = term.finish(timeout=300)
    return {"store": store, "env": env, "rc": rc, "before": screen_before, "screen": term.display(), "text": term.text()}


def test_ctrl_c_stops_cleanly_and_prints_the_resume_command(interrupted):
    store = interrupted["store"]
    assert "epoch 2/2" in interrupted["before"], interrupted["before"]
    assert interrupted["rc"] == 130, interrupted["screen"]
    text = interrupted["text"]
    assert "stopped during step 2/6 train mobilenet_v2" in text
    m = re.search(r"to resume, run:\n +(.+)\n", text)
    assert m and "--run-id stop" in m.group(1), text[-2000:]
    # Nothing half-written that a resume would trust: training did not finish, so no train.json
    # and nothing after it; the checkpoint is the finished first epoch; no temporary files.
    assert not (store / layout.train_json("stop", "mobilenet_v2")).exists()
    assert not (store / layout.results_json("stop")).exists()
    state = json.loads((store / layout.checkpoint_state("stop", "mobilenet_v2")).read_text())
    assert state["epochs_done"] == 1
    assert (store / layout.checkpoint_model("stop", "mobilenet_v2")).is_file()
    assert not [p for p in store.rglob(".tmp-*")]
    events = [json.loads(line) for line in (store / layout.pipeline_log("stop")).read_text().splitlines()]
    assert any(e["event"] == "pipeline_interrupted" and "--run-id stop" in e["resume"] for e in events)


@pytest.fixture(scope="module")
def resumed(interrupted):
    m = re.search(r"to resume, run:\n +(.+)\n", interrupted["text"])
    assert m, interrupted["text"][-2000:]
    argv = shlex.split(m.group(1))
    # In a pipe, as a pod or CI runs it: JSON lines on stdout.
    proc = subprocess.run(argv, cwd=REPO, env=interrupted["env"], capture_output=True, timeout=900)
    return proc


def test_resume_with_the_printed_command_continues_from_the_checkpoint(interrupted, resumed):
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    events = [json.loads(line) for line in resumed.stdout.decode().splitlines()]
    assert any(e["event"] == "train_resumed" and e["from_epoch"] == 1 for e in events)
    assert any(e["event"] == "step_cached" and e.get("step") == "prepare" for e in events)
    store = interrupted["store"]
    train = json.loads((store / layout.train_json("stop", "mobilenet_v2")).read_text())
    assert train["resumed_from_epoch"] == 1 and len(train["history"]) == 2
    assert (store / layout.results_json("stop")).is_file()


def test_json_mode_prints_only_json_lines_with_progress_and_uploads_the_log(interrupted, resumed):
    out = resumed.stdout.decode()
    assert "\x1b" not in out and "\r" not in out  # no bars, no cursor movement
    events = []
    for line in out.splitlines():
        doc = json.loads(line)  # every line of stdout is one JSON document
        assert isinstance(doc, dict) and "event" in doc
        events.append(doc)
    progress = [e for e in events if e["event"] == "progress"]
    epoch_end = [e for e in progress if e.get("task") == "epoch 2/2" and e["reason"] == "task_done"]
    assert epoch_end and epoch_end[0]["completed"] == epoch_end[0]["total"] and "loss" in epoch_end[0]
    assert all({"n", "of", "what", "elapsed_s"} <= e.keys() for e in progress)
    assert events[-1]["event"] == "pipeline_summary"
    # The store keeps the whole story of the run id: the interrupted attempt and the resumed one.
    log = interrupted["store"] / layout.pipeline_log("stop")
    logged = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert "pipeline_interrupted" in logged and logged[-1] == "pipeline_summary"
    assert logged.count("config") >= 2
