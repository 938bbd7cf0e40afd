"""The `ios` backend: the TFLite iOS benchmark app on attached iPhones, driven with `xcrun devicectl`.

Each job: install the app once per device and runner start, copy the model and a
`benchmark_params.json` (benchmark_model's flags, as strings) into the app's data container,
launch the app with the console attached, and parse what benchmark_model printed.
`parse_benchmark_log` is a pure function over that text, so it is tested on real-format
logs without an iPhone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common.errors import ConfigError, ScenebenchError
from common.layout import slug
from common.schemas import DeviceInfo, Memory, Timings
from runner.api import JobRequest, JobResult

DEFAULT_BUNDLE_ID = "org.tensorflow.lite.benchmark.TFLiteBenchmark"
# Where the runner-ready app (runner/ios_app/) looks for its inputs, relative to the data
# container. runner/ios_app/scenebench_runner_mode.h spells the same names; tests/test_ios_app.py
# checks that they agree.
DATA_DIR = "Documents/benchmark_data"
MODEL_NAME = "model.tflite"
PARAMS_NAME = "benchmark_params.json"
# The app prints "<START_MARKER> params=… graph=…" before the run and "<END_MARKER> status=N" as
# its last line. A console log without the end line is a run that did not finish.
START_MARKER = "scenebench-benchmark-start"
END_MARKER = "scenebench-benchmark-end"
IOS_DELEGATES = ["cpu", "gpu", "coreml"]


class IosError(ScenebenchError):
    """An xcrun/devicectl step failed, or the benchmark app reported a failure."""


# ---------------------------------------------------------------- the log parser (pure)
# iostream prints an empty statistic's average as nan or -nan (e.g. the warm-up with --warmup_runs=0).
_NUM = r"[-+]?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|inf)"


def _ms(us: str | float) -> float | None:
    """Microseconds (as printed, or already read) -> milliseconds; nan (an empty phase) -> None."""
    v = float(us)
    return None if v != v or v in (float("inf"), float("-inf")) else v / 1e3


_TIMINGS_RE = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUM}), First inference: (?P<first>{_NUM}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUM}), Inference \(avg\): (?P<avg>{_NUM})"
)
# benchmark_model before TF 1.14 printed one line without the first inference.
_OLD_TIMINGS_RE = re.compile(
    rf"Average inference timings in us: Warmup: (?P<warmup>{_NUM}), Init: (?P<init>{_NUM}), "
    rf"(?:no stats|Inference): (?P<avg>{_NUM})"
)
_COUNT_RE = re.compile(rf"\bcount=(?P<count>\d+)(?P<rest>(?:\s+\w+={_NUM})*)")
# --enable_op_profiling appends per-op tables whose summaries also carry count= fields.
_PROFILER_SUMMARY = ("Timings (microseconds):", "Memory (bytes):")
_KV_RE = re.compile(rf"(\w+)=({_NUM})")
# Newer tools say "delta from the start of the tool", older ones "Peak memory footprint".
_MEM_DELTA_RE = re.compile(
    rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=(?P<init>{_NUM}) overall=(?P<overall>{_NUM})"
)
_MEM_PEAK_RE = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>{_NUM})")
_MODEL_SIZE_RE = re.compile(rf"The input model file size \(MB\): (?P<mb>{_NUM})")
_SESSION_RE = re.compile(rf"Initialized session in (?P<ms>{_NUM}) ?ms")
_APPLIED_RE = re.compile(
    r"Explicitly applied (?P<name>[\w .-]+?) delegate, and the model graph will be "
    r"(?P<how>completely|partially) executed by the delegate(?: w/ (?P<kernels>\d+) delegate kernels)?"
)
_NOT_APPLIED_RE = re.compile(
    r"Though (?P<name>[\w .-]+?) delegate is explicitly applied, the model graph will not be executed"
)
_FAILED_APPLY_RE = re.compile(r"Failed to apply (?P<name>[\w .-]+?) delegate")
_COREML_NODES_RE = re.compile(
    r"CoreML delegate: (?P<n>\d+) nodes delegated out of (?P<total>\d+) nodes(?:, with (?P<parts>\d+) partitions)?"
)
# The Core ML provider gets no delegate on a device or OS without Core ML support.
_COREML_UNSUPPORTED_RE = re.compile(r"CoreML acceleration is unsupported on this platform")
_REPLACING_RE = re.compile(
    r"Replacing (?P<n>\d+) out of (?P<total>\d+) node\(s\) with delegate \((?P<name>[\w .-]+?)\) node"
    r"(?:, yielding (?P<parts>\d+) partitions)?"
)
_GPU_SPLIT_RE = re.compile(
    r"(?P<n>\d+) operations will run on the GPU, and the remaining (?P<rest>\d+) operations? will run on the CPU"
)
_CREATED_RE = re.compile(r"Created TensorFlow Lite (?:(?P<xnn>XNNPACK) )?delegate for (?P<name>[\w .-]+?)\.")
_FAILURE_MARKERS = (
    "Benchmarking failed",
    "Failed to invoke",
    "Failed to allocate tensors",
    "Failed to initialize",
    "Failed to construct interpreter",
    "Failed to mmap model",
    "Failed to load model",
    "Couldn't find",
    "Terminating app due to uncaught exception",
)


def normalize_delegate(name: str) -> str:
    """benchmark_model's delegate names -> cpu | gpu | coreml; any other delegate keeps its own name.

    Covers the provider names ("GPU", "COREML", "XNNPACK") and the kernel names of the
    "Replacing … with delegate (…)" lines (TfLiteMetalDelegate, TfLiteGpuDelegateV2,
    TfLiteCoreMlDelegate, TfLiteXNNPackDelegate). NNAPI, Hexagon and the like are kept as
    "nnapi", "hexagon", … so that a log from another platform still parses.
    """
    n = re.sub(r"[\s_-]+", "", name.strip().lower())
    n = re.sub(r"v\d+$", "", n.removeprefix("tflite")).removesuffix("delegate")
    if n in ("gpu", "metal", "gl", "opencl", "cl"):
        return "gpu"
    if n in ("coreml",):
        return "coreml"
    if n in ("xnnpack", "cpu"):
        return "cpu"
    return n or name.strip().lower()


def parse_benchmark_log(text: str) -> dict[str, Any]:
    """Everything benchmark_model printed, as numbers in milliseconds and MB.

    Keys: ok, error, init_ms, first_ms, warmup_mean_ms, mean_ms, std_ms, min_ms, max_ms,
    count, p5_ms, p50_ms, p95_ms, warmup_count, memory_init_mb, memory_overall_mb,
    memory_peak_mb, model_size_mb, session_init_ms, delegates ({cpu|gpu|coreml|<other>:
    complete|partial|none|failed}), delegated_nodes ({delegate: [replaced, total]}),
    coreml_nodes ([delegated, total] or None), notes (the delegate lines verbatim).
    Values the log does not contain are None. A log holding several runs reports the last.
    """
    out: dict[str, Any] = {
        "ok": False, "error": None,
        "init_ms": None, "first_ms": None, "warmup_mean_ms": None, "mean_ms": None,
        "std_ms": None, "min_ms": None, "max_ms": None, "count": None,
        "p5_ms": None, "p50_ms": None, "p95_ms": None, "warmup_count": None,
        "memory_init_mb": None, "memory_overall_mb": None, "memory_peak_mb": None,
        "model_size_mb": None, "session_init_ms": None,
        "delegates": {}, "delegated_nodes": {}, "coreml_nodes": None, "notes": [],
    }
    stats_lines: list[dict[str, float]] = []
    stats_at_timings: int | None = None  # how many stats lines preceded the last timings line
    explicit: set[str] = set()  # delegates whose state the tool stated in words

    def note(text: str) -> None:
        # The message without its console prefix ("INFO: ", a timestamp, a logcat tag), once:
        # consoles that mirror the system log show each line twice.
        if text not in out["notes"]:
            out["notes"].append(text)

    def stated(name: str, state: str) -> None:
        """A state the tool put in words ("Explicitly applied…", "Though…", "Failed to apply…")."""
        out["delegates"][name] = state
        explicit.add(name)

    def infer(name: str, state: str) -> None:
        """A state read from node counts; the tool's own words win."""
        if name not in explicit:
            out["delegates"][name] = state

    errors: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _TIMINGS_RE.search(line):
            out["init_ms"] = _ms(m["init"])
            out["first_ms"] = _ms(m["first"])
            out["warmup_mean_ms"] = _ms(m["warmup"])
            out["mean_ms"] = _ms(m["avg"])
            stats_at_timings = len(stats_lines)
            continue
        if m := _OLD_TIMINGS_RE.search(line):
            out["init_ms"] = _ms(m["init"])
            out["warmup_mean_ms"] = _ms(m["warmup"])
            out["mean_ms"] = _ms(m["avg"])
            stats_at_timings = len(stats_lines)
            continue
        if any(s in line for s in _PROFILER_SUMMARY):
            continue
        if m := _COUNT_RE.search(line):
            kv = {k: float(v) for k, v in _KV_RE.findall(m["rest"])}
            kv["count"] = int(m["count"])
            # A console that shows both stdout and the system log (Android's logcat, iOS'
            # os_log mirror) prints each line twice; two phases never print identical lines.
            if not stats_lines or stats_lines[-1] != kv:
                stats_lines.append(kv)
            continue
        if m := _MEM_DELTA_RE.search(line):
            out["memory_init_mb"] = float(m["init"])
            out["memory_overall_mb"] = float(m["overall"])
            continue
        if m := _MEM_PEAK_RE.search(line):
            out["memory_peak_mb"] = float(m["peak"])
            continue
        if m := _MODEL_SIZE_RE.search(line):
            out["model_size_mb"] = float(m["mb"])
            continue
        if m := _SESSION_RE.search(line):
            out["session_init_ms"] = float(m["ms"])
            continue
        if m := _APPLIED_RE.search(line):
            stated(normalize_delegate(m["name"]), "complete" if m["how"] == "completely" else "partial")
            note(line[m.start():])
            continue
        if m := _NOT_APPLIED_RE.search(line):
            stated(normalize_delegate(m["name"]), "none")
            note(line[m.start():])
            continue
        if m := _FAILED_APPLY_RE.search(line):
            stated(normalize_delegate(m["name"]), "failed")
            note(line[m.start():])
            errors.append(line)
            continue
        if m := _COREML_NODES_RE.search(line):
            out["coreml_nodes"] = [int(m["n"]), int(m["total"])]
            note(line[m.start():])
            continue
        if m := _COREML_UNSUPPORTED_RE.search(line):
            stated("coreml", "none")
            note(line[m.start():])
            continue
        if m := _REPLACING_RE.search(line):
            name, n, total = normalize_delegate(m["name"]), int(m["n"]), int(m["total"])
            out["delegated_nodes"][name] = [n, total]
            infer(name, "none" if n == 0 else "complete" if n == total else "partial")
            note(line[m.start():])
            continue
        if m := _GPU_SPLIT_RE.search(line):
            n, rest = int(m["n"]), int(m["rest"])
            infer("gpu", "none" if n == 0 else "partial" if rest else "complete")
            note(line[m.start():])
            continue
        if m := _CREATED_RE.search(line):
            note(line[m.start():])
            continue
        if any(marker in line for marker in _FAILURE_MARKERS):
            errors.append(line)

    # benchmark_model prints one stats line per phase: warm-up first, then the timed runs,
    # then the timings line. Stats lines after the last timings line belong to no finished run.
    if stats_at_timings is not None:
        stats_lines = stats_lines[:stats_at_timings]
    if stats_lines:
        timed = stats_lines[-1]
        out["count"] = int(timed["count"])
        for key, name in (("std", "std_ms"), ("min", "min_ms"), ("max", "max_ms"),
                          ("p5", "p5_ms"), ("median", "p50_ms"), ("p95", "p95_ms")):
            if key in timed:
                out[name] = _ms(timed[key])
        if out["mean_ms"] is None and "avg" in timed:
            out["mean_ms"] = _ms(timed["avg"])
        if len(stats_lines) > 1:
            out["warmup_count"] = int(stats_lines[-2]["count"])
    if out["init_ms"] is None and out["session_init_ms"] is not None:
        out["init_ms"] = out["session_init_ms"]
    # A CoreML partition report of zero nodes means the graph stayed on the CPU even when
    # the tool printed no "Though ... not executed" line.
    if out["coreml_nodes"] is not None and out["coreml_nodes"][0] == 0:
        out["delegates"].setdefault("coreml", "none")

    fatal = [e for e in errors if not _FAILED_APPLY_RE.search(e)]
    if fatal:
        out["error"] = "; ".join(dict.fromkeys(errors))[:2000]
    elif out["mean_ms"] is None:
        out["error"] = "; ".join(["the log has no 'Inference timings' line: the benchmark did not finish",
                                  *dict.fromkeys(errors)])[:2000]
    # A delegate that failed to apply, in a run that then finished, is a note, not a failure.
    out["ok"] = out["error"] is None
    return out


def delegate_applied(parsed: dict[str, Any], requested: str) -> str | None:
    """Which of cpu|gpu|coreml really executed the graph, from the parsed log; None if it does not say."""
    if requested == "cpu":
        return "cpu"
    if requested in ("gpu", "coreml"):
        status = parsed["delegates"].get(requested)
        if status in ("complete", "partial"):
            return requested
        if status in ("none", "failed"):
            return "cpu"
        return None
    raise IosError(f"delegate {requested!r} is not one of cpu, gpu, coreml")


def result_from_log(text: str, device: DeviceInfo, request: JobRequest) -> JobResult:
    """A JobResult from a finished run's log; raises IosError when the run failed."""
    p = parse_benchmark_log(text)
    tail = "\n".join(text.strip().splitlines()[-40:])
    if not p["ok"]:
        raise IosError(f"benchmark app failed on {device.id}: {p['error']}\n--- log tail ---\n{tail}")
    applied = delegate_applied(p, request.delegate)
    notes = list(p["notes"])
    if request.delegate != "cpu" and applied == "cpu":
        notes.append(f"{request.delegate} was requested but the graph ran on the CPU "
                     "(Core ML takes float models only; see the delegate lines above)")
    if p["delegates"].get(request.delegate) == "partial":
        notes.append(f"{request.delegate} ran only part of the graph; the rest ran on the CPU")
    timings = None
    partial = {k: p[k] for k in ("init_ms", "first_ms", "warmup_mean_ms", "mean_ms", "std_ms", "min_ms",
                                 "max_ms", "p5_ms", "p50_ms", "p95_ms", "count")}
    needed = ("mean_ms", "std_ms", "min_ms", "max_ms", "count")
    if all(p[k] is not None for k in needed):
        # benchmark_model prints no p90 (and before TF 2.4 no median): left empty, not filled in.
        try:
            timings = Timings(init=p["init_ms"], first=p["first_ms"], warmup_mean=p["warmup_mean_ms"],
                              mean=p["mean_ms"], std=p["std_ms"], min=p["min_ms"], max=p["max_ms"],
                              p50=p["p50_ms"], p90=None, p99=None, count=p["count"])
        except ValueError:
            timings = None
    memory = None
    if any(p[k] is not None for k in ("memory_init_mb", "memory_overall_mb", "memory_peak_mb")):
        memory = Memory(init_mb=p["memory_init_mb"], overall_mb=p["memory_overall_mb"],
                        peak_mb=p["memory_peak_mb"],
                        method="benchmark_model on the iPhone: footprint delta from the start of the tool "
                               "(init/overall) and periodic peak monitoring (peak), as printed by the app")
    return JobResult(device=device, delegate_requested=request.delegate, delegate_applied=applied,
                     timings_ms=timings, partial_timings_ms=None if timings else partial,
                     samples_ms=[], memory=memory, notes=notes, log_tail=tail[-4000:])


_END_RE = re.compile(rf"{END_MARKER} status=(?P<status>-?\d+)(?: reason=(?P<reason>.*))?")
_UNCONSUMED_RE = re.compile(r"Unconsumed cmdline flags: (?P<flags>.*)")


def check_console_log(text: str) -> None:
    """Raise IosError unless the runner-ready app's console log shows a complete, clean run.

    benchmark_model ignores a flag it does not know (it only warns "Unconsumed cmdline flags"),
    so a misspelt flag, or a delegate provider missing from the app's framework, would give a
    CPU number labelled with the wrong settings; that is an error here. The app's end line is
    its last output: without it the app crashed, was killed, or is not the runner-ready build.
    """
    parsed_error = parse_benchmark_log(text)["error"]
    tail = "\n".join(text.strip().splitlines()[-40:])
    ends = list(_END_RE.finditer(text))
    if not ends:
        raise IosError(
            f"the benchmark app's log has no '{END_MARKER}' line: the run did not finish (crash, "
            "watchdog kill, or an app built without runner/ios_app)"
            + (f"; {parsed_error}" if parsed_error else "") + f"\n--- log tail ---\n{tail}")
    end = ends[-1]
    if int(end["status"]) != 0:
        reason = (end["reason"] or "").strip() or parsed_error or "no reason given"
        raise IosError(f"the benchmark app reported status {end['status']}: {reason}"
                       + (f"; {parsed_error}" if parsed_error and parsed_error not in reason else "")
                       + f"\n--- log tail ---\n{tail}")
    if m := _UNCONSUMED_RE.search(text):
        raise IosError(f"benchmark_model ignored flags it does not know: {m['flags'].strip()} "
                       "(a misspelt flag, or the app's framework lacks that delegate provider)"
                       f"\n--- log tail ---\n{tail}")


# ---------------------------------------------------------------- devicectl
def device_reachable(d: dict[str, Any]) -> tuple[bool, str]:
    """Whether devicectl can run an app on this device now, and why not.

    CoreDevice reports a reachable phone with a transport ("wired" or "localNetwork"); its
    tunnel is opened on demand, so "disconnected" is a resting state, not a fault. Only
    "unavailable" means the phone cannot be reached (unplugged, off the network, asleep).
    Developer Mode must be on for devicectl to launch an app.
    """
    conn = d.get("connectionProperties") or {}
    props = d.get("deviceProperties") or {}
    tunnel = conn.get("tunnelState")
    if tunnel == "unavailable":
        return False, "unreachable: plug it in or put it on this Mac's network, and unlock it"
    if not conn.get("transportType") and tunnel != "connected":
        return False, "not connected: no USB or network transport"
    mode = props.get("developerModeStatus")
    if mode not in (None, "enabled"):
        return False, f"Developer Mode is {mode}: enable it in Settings > Privacy & Security"
    if props.get("bootState") not in (None, "booted"):
        return False, f"boot state is {props.get('bootState')}"
    return True, ""


def parse_devicectl_devices(doc: dict[str, Any], busy: set[str] | None = None) -> list[DeviceInfo]:
    """`devicectl list devices --json-output` -> physical, paired iPhones/iPads as DeviceInfo."""
    busy = busy or set()
    out = []
    for d in (doc.get("result") or {}).get("devices") or []:
        hw = d.get("hardwareProperties") or {}
        props = d.get("deviceProperties") or {}
        conn = d.get("connectionProperties") or {}
        if hw.get("platform") != "iOS" or hw.get("reality", "physical") != "physical":
            continue
        if conn.get("pairingState") not in (None, "paired"):
            continue
        udid = hw.get("udid") or d.get("identifier")
        if not udid:
            continue
        dev_id = f"ios-{slug(udid)}"
        online, why = device_reachable(d)
        state = "offline" if not online else ("busy" if dev_id in busy else "idle")
        marketing = hw.get("marketingName") or hw.get("productType") or "iOS device"
        out.append(DeviceInfo(
            id=dev_id,
            name=f"{props.get('name') or marketing} ({marketing})",
            backend="ios",
            model=hw.get("productType") or "unknown",
            os=f"iOS {props.get('osVersionNumber') or '?'}",
            delegates=list(IOS_DELEGATES),
            state=state,
            state_reason=why,
        ))
    return out


def benchmark_params(request: JobRequest, max_secs: float) -> dict[str, str]:
    """benchmark_model flags for one job. The app passes each as --key=value, so all are strings."""
    params = {
        "graph": MODEL_NAME,
        "num_threads": str(request.num_threads),
        "num_runs": str(request.num_runs),
        "warmup_runs": str(request.warmup_runs),
        # By default the tool keeps running past num_runs until min_secs have passed; we
        # want exactly the runs that were asked for, so that counts compare across devices.
        "min_secs": "0",
        "warmup_min_secs": "0",
        "max_secs": str(int(max_secs)),
        "report_peak_memory_footprint": "true",
        "use_gpu": "true" if request.delegate == "gpu" else "false",
        "use_coreml": "true" if request.delegate == "coreml" else "false",
    }
    if request.delegate == "gpu":
        # Busy-wait for the GPU: the lowest latency, which is what we compare with the paper.
        params["gpu_wait_type"] = "aggressive"
    return params


# Colour and cursor sequences a terminal program may still print.
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


class IosBackend:
    """Runs jobs on attached iPhones with `xcrun devicectl` and the TFLite benchmark app."""

    name = "ios"

    def __init__(self, app_path: str | Path | None, bundle_id: str = DEFAULT_BUNDLE_ID,
                 xcrun: str = "xcrun", command_timeout_s: float = 120.0, run_timeout_s: float = 1800.0):
        self.app_path = Path(app_path).expanduser() if app_path else None
        if self.app_path is not None and not (self.app_path / "Info.plist").is_file():
            raise ConfigError(f"--ios-app {self.app_path} is not an iOS app bundle (no Info.plist in it): give the "
                              "TFLiteBenchmark.app that runner/ios_app/build.sh built (RUNNER.md, step 5)")
        self.bundle_id = bundle_id
        self.xcrun = xcrun
        self.command_timeout_s = command_timeout_s
        self.run_timeout_s = run_timeout_s
        self._installed: dict[str, str] = {}  # udid -> stamp of the bundle installed there
        self._lock = threading.Lock()

    def app_stamp(self) -> str:
        """Names, sizes and times of the bundle's files: a rebuilt app is installed again."""
        assert self.app_path is not None
        h = hashlib.sha256()
        for f in sorted(self.app_path.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(self.app_path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def _xcrun_missing(self) -> IosError:
        return IosError(f"{self.xcrun!r} not found: install Xcode and its command-line tools (RUNNER.md)")

    def _run(self, args: list[str], timeout_s: float | None = None) -> subprocess.CompletedProcess:
        cmd = [self.xcrun, "devicectl", *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s or self.command_timeout_s)
        except FileNotFoundError:
            raise self._xcrun_missing() from None
        except subprocess.TimeoutExpired as exc:
            raise IosError(f"`{' '.join(cmd[:4])} …` did not finish within {exc.timeout} s") from None
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise IosError(f"`{' '.join(cmd[:4])} …` exited with {proc.returncode}: {' | '.join(msg)}")
        return proc

    def devices(self, busy: set[str] | None = None) -> list[DeviceInfo]:
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "devices.json"
            self._run(["list", "devices", "--timeout", "10", "--json-output", str(out)])
            try:
                doc = json.loads(out.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise IosError(f"devicectl wrote no readable device list: {exc}") from None
        return parse_devicectl_devices(doc, busy)

    def _udid(self, device: DeviceInfo) -> str:
        # The id is "ios-<udid slug>"; UDIDs are hex and '-', which the slug keeps (lower-cased).
        return device.id.removeprefix("ios-").upper()

    def run(self, device: DeviceInfo, model_path: Path, request: JobRequest) -> JobResult:
        if request.delegate not in IOS_DELEGATES:
            raise IosError(f"delegate {request.delegate!r} is not one of {', '.join(IOS_DELEGATES)}")
        udid = self._udid(device)
        if self.app_path is None:
            raise IosError("no benchmark app given: start the runner with --ios-app PATH/TFLiteBenchmark.app")
        stamp = self.app_stamp()
        with self._lock:
            need_install = self._installed.get(udid) != stamp
        if need_install:
            self._run(["device", "install", "app", "--device", udid, str(self.app_path)], timeout_s=600)
            with self._lock:
                self._installed[udid] = stamp
        with tempfile.TemporaryDirectory() as d:
            params_file = Path(d) / PARAMS_NAME
            params_file.write_text(json.dumps(benchmark_params(request, self.run_timeout_s), indent=2))
            for src, name in ((model_path, MODEL_NAME), (params_file, PARAMS_NAME)):
                self._run(["device", "copy", "to", "--device", udid,
                           "--domain-type", "appDataContainer", "--domain-identifier", self.bundle_id,
                           "--source", str(src), "--destination", f"{DATA_DIR}/{name}"], timeout_s=600)
        text = self._launch_with_console(udid)
        check_console_log(text)
        return result_from_log(text, device, request)

    def launch_command(self, udid: str) -> list[str]:
        """`devicectl device process launch` with the app's console attached.

        --console (Xcode 16+) relays the app's stdout and stderr and returns when the app exits
        (the runner-ready app exits after one benchmark). OS_ACTIVITY_DT_MODE makes the app's
        syslog/os_log lines (TFLite's delegate messages on iOS) appear there too.
        """
        return [self.xcrun, "devicectl", "device", "process", "launch", "--device", udid,
                "--terminate-existing", "--console",
                "--environment-variables", json.dumps({"OS_ACTIVITY_DT_MODE": "enable"}),
                self.bundle_id]

    def _launch_with_console(self, udid: str) -> str:
        """Run the launch command on a pseudo-terminal and return everything it printed.

        devicectl relays the app's output only when it believes a terminal is attached, so
        the command gets a pty for stdin/stdout/stderr (what `script` would give it). The whole
        run is bounded by run_timeout_s; on expiry the command's process group is killed.
        """
        cmd = self.launch_command(udid)
        master, slave = os.openpty()
        try:
            # TERM=dumb: a terminal, but one that asks for no colours or progress animations.
            proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                    env={**os.environ, "TERM": "dumb"})
        except FileNotFoundError:
            os.close(master)
            os.close(slave)
            raise self._xcrun_missing() from None
        os.close(slave)
        chunks: list[bytes] = []
        deadline = time.monotonic() + self.run_timeout_s
        timed_out = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([master], [], [], min(left, 1.0))
                if not ready:
                    if proc.poll() is not None and not select.select([master], [], [], 0.2)[0]:
                        break
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the pty has gone
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(master)
            if not timed_out:
                # Its output has ended; give it the rest of the budget (at most 10 s) to exit.
                try:
                    proc.wait(timeout=max(0.0, min(10.0, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    timed_out = True
            if timed_out:  # the command and everything it started (its own process group)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
        text = _ANSI_RE.sub("", b"".join(chunks).decode("utf-8", errors="replace")).replace("\r\n", "\n")
        tail = "\n".join(text.strip().splitlines()[-20:])
        if timed_out:
            raise IosError(f"`{' '.join(cmd[1:6])} …` did not finish within {self.run_timeout_s:g} s "
                           f"(raise --job-timeout-s for slow models)\n--- log tail ---\n{tail}")
        if proc.returncode != 0:
            raise IosError(f"`{' '.join(cmd[1:6])} …` exited with {proc.returncode}\n--- log tail ---\n{tail}")
        return text
