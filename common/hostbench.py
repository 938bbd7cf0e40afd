"""Latency and memory of a .tflite model on the host CPU with LiteRT (the runner's `host` backend).

Only LiteRT and numpy are imported here, never TensorFlow: the runner that uses this
module must install and run on a Mac without TensorFlow.

`measure` follows benchmark_model's phases so host and iPhone numbers read the same way:
init (interpreter creation + allocate_tensors), warm-up runs (the first of which is the
"first inference"), then timed runs. Only `invoke()` is inside the timed window; the input
is set once, before any run, because copying a 384x576 image each run would be measured
as model time.

With isolate=True the measurement runs in a fresh child process, so that the peak RSS it
reports belongs to this model alone and not to whatever the caller loaded before
(TensorFlow in a pipeline process weighs more than the models we measure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ScenebenchError
from common.layout import slug
from common.schemas import DeviceInfo, Memory, Timings

DEFAULT_WARMUP_RUNS = 5
DEFAULT_NUM_RUNS = 50
# Fixed seed: every host run feeds the same "photo", so runs differ by machine noise only.
INPUT_SEED = 0


class HostBenchError(ScenebenchError):
    """The model could not be measured on the host CPU (bad model, crash, timeout)."""


@dataclass
class HostMeasurement:
    """What one host measurement produced; milliseconds and megabytes."""

    timings: Timings
    samples_ms: list[float]
    memory: Memory
    delegate_applied: str = "cpu"
    cpu_model: str = ""
    num_threads: int = 2
    warmup_runs: int = DEFAULT_WARMUP_RUNS
    num_runs: int = DEFAULT_NUM_RUNS
    isolated: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["timings"] = self.timings.model_dump()
        d["memory"] = self.memory.model_dump()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "HostMeasurement":
        d = dict(d)
        d["timings"] = Timings.model_validate(d["timings"])
        d["memory"] = Memory.model_validate(d["memory"])
        return cls(**d)


# ---------------------------------------------------------------- host identity
def cpu_model_name() -> str:
    """The CPU's marketing name: /proc/cpuinfo on Linux, sysctl on macOS, platform otherwise."""
    system = platform.system()
    if system == "Linux":
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            text = ""
        # x86 says "model name"; many ARM kernels say "Hardware" or only "CPU part".
        for key in ("model name", "Hardware", "Processor", "cpu model"):
            m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
            if m and m.group(1).strip():
                return m.group(1).strip()
    elif system == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True, text=True, timeout=5, check=False,
            ).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def host_device() -> DeviceInfo:
    """This machine's CPU as a benchmark device.

    The id comes from the CPU model, not the hostname: pods get a new hostname each time,
    while two nights on the same node type must compare as the same device.
    """
    cpu = cpu_model_name()
    return DeviceInfo(
        id=f"host-{slug(cpu)}"[:128],
        name=f"Host CPU ({cpu}), not an iPhone",
        backend="host",
        model=cpu,
        os=f"{platform.system()} {platform.release()} ({platform.machine()})",
        delegates=["cpu"],
        state="idle",
    )


# ---------------------------------------------------------------- the measurement itself
def _load(model_path: str | Path, num_threads: int):
    # Imported here so that `host_device()` and the runner's API work even where the
    # LiteRT wheel is broken; the failure then surfaces as a failed job, not a dead server.
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model_path), num_threads=num_threads)
    interp.allocate_tensors()
    return interp


def _fill_inputs(interp) -> None:
    """Set every input once to deterministic random data of its dtype."""
    rng = np.random.default_rng(INPUT_SEED)
    for detail in interp.get_input_details():
        shape = [int(s) for s in detail["shape"]]
        dtype = np.dtype(detail["dtype"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            data = rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
        elif np.issubdtype(dtype, np.floating):
            # The project's models take raw pixels in 0..255 (common.archs), so feed that range.
            data = rng.uniform(0.0, 255.0, size=shape).astype(dtype)
        elif dtype == np.bool_:
            data = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            raise HostBenchError(f"input {detail['name']!r} has dtype {dtype}, which the host benchmark cannot fill")
        interp.set_tensor(detail["index"], data)


def _maxrss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    On Linux this is VmHWM of /proc/self/status: ru_maxrss survives execve, so a child
    started from a parent holding TensorFlow (1.5 GB) would report the parent's peak.
    Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _current_rss_mb() -> float:
    """Resident set size now, in MB; where the OS does not say (macOS without psutil), the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return _maxrss_mb()


def _timed_invokes(interp, n: int) -> list[int]:
    """n invoke() calls, each timed alone with perf_counter_ns; nanoseconds."""
    invoke = interp.invoke
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        invoke()
        out[i] = clock() - t0
    return out


def summarize(samples_ms: list[float], *, init: float | None = None, first: float | None = None,
              warmup_mean: float | None = None) -> Timings:
    """Timings from raw per-run milliseconds (population std, linear percentiles)."""
    if not samples_ms:
        raise HostBenchError("no timed runs to summarize: num_runs must be at least 1")
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return Timings(
        init=init, first=first, warmup_mean=warmup_mean,
        mean=float(a.mean()), std=float(a.std()), min=float(a.min()), max=float(a.max()),
        p50=float(p50), p90=float(p90), p99=float(p99), count=int(a.size),
    )


def measure_in_process(model_path: str | Path, num_threads: int = 2, warmup_runs: int = DEFAULT_WARMUP_RUNS,
                       num_runs: int = DEFAULT_NUM_RUNS, *, isolated: bool = False) -> HostMeasurement:
    """Run the measurement in this process. Memory numbers are only meaningful in a fresh process."""
    if num_runs < 1 or warmup_runs < 0 or num_threads < 1:
        raise HostBenchError(
            f"num_runs={num_runs}, warmup_runs={warmup_runs}, num_threads={num_threads}: "
            "need num_runs >= 1, warmup_runs >= 0, num_threads >= 1"
        )
    # numpy and LiteRT are imported by now; the baseline is everything but the model.
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401  (load the library before the baseline)

    base_mb = _current_rss_mb()
    t0 = time.perf_counter_ns()
    try:
        interp = _load(model_path, num_threads)
    except (ValueError, RuntimeError) as exc:
        raise HostBenchError(f"LiteRT could not load {model_path}: {exc}") from exc
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    init_mem = max(0.0, _current_rss_mb() - base_mb)
    _fill_inputs(interp)

    # benchmark_model counts the first inference as the first warm-up run; so do we.
    warm = _timed_invokes(interp, max(1, warmup_runs))
    first_ms = warm[0] / 1e6
    warmup_mean = float(np.mean(warm)) / 1e6 if warmup_runs > 0 else None
    samples_ms = [ns / 1e6 for ns in _timed_invokes(interp, num_runs)]
    peak = _maxrss_mb()
    if isolated:
        method = ("peak RSS (VmHWM, or ru_maxrss where there is no /proc) of a fresh child process that only loads LiteRT and "
                  "this model; init = RSS growth from interpreter creation + allocate_tensors, overall = peak RSS "
                  "minus the RSS before the model was loaded")
    else:
        method = ("ru_maxrss of the calling process, not isolated: peak includes whatever the caller "
                  "had loaded; init/overall = RSS growth over the RSS before the model was loaded")
    return HostMeasurement(
        timings=summarize(samples_ms, init=init_ms, first=first_ms, warmup_mean=warmup_mean),
        samples_ms=samples_ms,
        memory=Memory(init_mb=round(init_mem, 3), overall_mb=round(max(0.0, peak - base_mb), 3),
                      peak_mb=round(peak, 3), method=method),
        delegate_applied="cpu",
        cpu_model=cpu_model_name(),
        num_threads=num_threads, warmup_runs=warmup_runs, num_runs=num_runs, isolated=isolated,
    )


def measure(model_path: str | Path, num_threads: int = 2, warmup_runs: int = DEFAULT_WARMUP_RUNS,
            num_runs: int = DEFAULT_NUM_RUNS, isolate: bool = True,
            timeout_s: float | None = None) -> HostMeasurement:
    """Measure a .tflite on the host CPU; isolate=True runs it in a fresh child process."""
    if not isolate:
        return measure_in_process(model_path, num_threads, warmup_runs, num_runs, isolated=False)
    spec = {"model_path": str(model_path), "num_threads": num_threads,
            "warmup_runs": warmup_runs, "num_runs": num_runs}
    env = dict(os.environ)
    # The child must import this package the way the parent did, wherever it was started from.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.hostbench", "--child", json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    # stdin stays open and empty: the child exits when it sees EOF, i.e. when we die.
    out, err = _collect(proc, timeout_s)
    if out is None:
        raise HostBenchError(f"host measurement of {model_path} took longer than {timeout_s} s")
    if proc.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-5:])
        raise HostBenchError(f"host measurement child exited with {proc.returncode}: {tail}")
    try:
        payload = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise HostBenchError(f"host measurement child printed no result; stderr: {err.strip()[-500:]}") from None
    if "error" in payload:
        raise HostBenchError(payload["error"])
    return HostMeasurement.from_json(payload)


def _collect(proc: subprocess.Popen, timeout_s: float | None) -> tuple[str | None, str]:
    """Like communicate() but without closing stdin, which the child reads as 'parent gone'.

    Returns (None, stderr) when the child was killed for running past timeout_s.
    """
    chunks: dict[str, str] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: chunks.__setitem__(n, f.read()), daemon=True)
               for n, f in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    for t in readers:
        t.join()
    if proc.stdin:
        proc.stdin.close()
    return (None if timed_out else chunks.get("out", "")), chunks.get("err", "")


def bare_invoke_loop(model_path: str | Path, n: int, num_threads: int = 2) -> float:
    """Seconds for n bare invoke() calls (input set once), the floor our timing loop is compared to."""
    interp = _load(model_path, num_threads)
    _fill_inputs(interp)
    interp.invoke()
    invoke = interp.invoke
    t0 = time.perf_counter()
    for _ in range(n):
        invoke()
    return time.perf_counter() - t0


def timed_loop_seconds(model_path: str | Path, n: int, num_threads: int = 2) -> float:
    """Seconds for n runs of measure()'s own timing loop, to compare with bare_invoke_loop."""
    interp = _load(model_path, num_threads)
    _fill_inputs(interp)
    interp.invoke()
    t0 = time.perf_counter()
    _timed_invokes(interp, n)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- child process entry point
def _watch_parent() -> None:
    """Exit when the parent's end of stdin closes: a killed runner must not leave us running."""
    try:
        sys.stdin.read()
    finally:
        os._exit(3)


def _child(spec_json: str) -> int:
    spec = json.loads(spec_json)
    # A Ctrl-C in the terminal reaches the whole process group; the parent decides whether to
    # stop (and when it dies, _watch_parent ends us), so a measurement is never cut short by it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, daemon=True).start()
    try:
        m = measure_in_process(spec["model_path"], int(spec["num_threads"]), int(spec["warmup_runs"]),
                               int(spec["num_runs"]), isolated=True)
        payload: dict[str, Any] = m.to_json()
    except HostBenchError as exc:
        payload = {"error": str(exc)}
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.hostbench",
                                     description="Measure a .tflite on this CPU with LiteRT and print JSON.")
    parser.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--warmup-runs", type=int, default=DEFAULT_WARMUP_RUNS)
    parser.add_argument("--num-runs", type=int, default=DEFAULT_NUM_RUNS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child)
    if not args.model:
        parser.error("give a .tflite path")
    m = measure(args.model, args.num_threads, args.warmup_runs, args.num_runs)
    print(json.dumps({"device": host_device().model_dump(), **m.to_json()}, indent=2))  # CLI output for people
    return 0


if __name__ == "__main__":
    sys.exit(main())
