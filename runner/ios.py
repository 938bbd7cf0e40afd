"""The `ios` backend: the TFLite iOS benchmark app on attached iPhones, driven with `xcrun devicectl`.

Each job: install the app once per device and bundle, wait out the cooldown after the previous
delegate of the same model, then two launches of the runner-ready app (runner/ios_app): a timing
pass without benchmark_model's memory sampling thread (upstream warns it can affect timings), and
a short memory pass with it. Each launch copies the model and a `benchmark_params.json` into the
app's data container, runs the app with its console attached, and reads what it printed
(runner.ios_log). A launch that outlives its time is ended on the phone too (`devicectl device
process terminate`), so that a hung benchmark does not keep heating the phone.
"""

from __future__ import annotations

import hashlib
import json
import os
import plistlib
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from common.errors import ConfigError, ScenebenchError
from common.layout import slug
from common.schemas import Conditions, DeviceInfo, Memory, PhoneState, Timings
from runner.api import JobRequest, JobResult
from runner.ios_log import (  # re-exported: CONTRACTS.md names runner.ios.parse_benchmark_log
    END_MARKER,
    END_RE,
    START_MARKER,
    normalize_delegate,
    parse_benchmark_log,
)

__all__ = ["END_MARKER", "START_MARKER", "IosBackend", "IosError", "check_console_log", "normalize_delegate",
           "parse_benchmark_log", "result_from_logs"]

# Where the runner-ready app (runner/ios_app/) looks for its inputs, relative to the data
# container. runner/ios_app/scenebench_runner_mode.h spells the same names; tests/test_ios_app.py
# checks that they agree.
DATA_DIR = "Documents/benchmark_data"
MODEL_NAME = "model.tflite"
PARAMS_NAME = "benchmark_params.json"
# Keys of benchmark_params.json that the app reads itself and does not pass to benchmark_model.
APP_PARAM_PREFIX = "scenebench_"
IOS_DELEGATES = ["cpu", "gpu", "coreml"]
# build.sh's default bundle id is this plus the team id: bundle ids are global, so each team signs its own.
BUNDLE_ID_PREFIX = "org.scenebench.tflitebenchmark."
# Info.plist keys runner/ios_app/build.sh stamps into the app.
PLIST_TF_TAG = "SCENEBENCHTensorFlowTag"
PLIST_BUILD_ID = "SCENEBENCHBuildID"
# What TFLite's Core ML delegate asks for (coreml_executor.mm sets MLComputeUnitsAll); Core ML then
# places each layer on the Neural Engine, the GPU or the CPU as it sees fit.
COREML_COMPUTE_UNITS = "all (MLComputeUnitsAll: Core ML picks Neural Engine, GPU or CPU)"
# Launch, model load and one run past max_secs, on top of the thermal wait and the two phases.
LAUNCH_MARGIN_S = 60.0


class IosError(ScenebenchError):
    """An xcrun/devicectl step failed, or the benchmark app reported a failure."""


def has_neural_engine(product_type: str) -> bool | None:
    """Whether a device has a Neural Engine the Core ML delegate can use: A12 and later.

    The rule is TFLite's own (IsNeuralEngineAvailable in coreml_delegate.mm): iPhone11,x
    (iPhone XS, A12) and later, iPad8,x and later. None for anything else.
    """
    m = re.fullmatch(r"(iPhone|iPad)(\d+),\d+", product_type or "")
    if m is None:
        return None
    return int(m[2]) >= (11 if m[1] == "iPhone" else 8)


def read_app_info(app_path: Path) -> dict[str, Any]:
    """The app bundle's Info.plist (XML or binary); {} when there is none or it does not parse."""
    try:
        with open(app_path / "Info.plist", "rb") as f:
            return plistlib.load(f)
    except (OSError, plistlib.InvalidFileException, ValueError):
        return {}


# ---------------------------------------------------------------- what benchmark_model is asked
def max_secs_for(run_timeout_s: float, thermal_wait_s: float) -> float:
    """benchmark_model's --max_secs, so that the tool stops before the runner's kill.

    max_secs caps the warm-up and the timed phase separately, and a run that has begun is
    finished; the launch also waits for the thermal state first. What is left of the runner's
    time after the wait and a margin is split between the two phases.
    """
    budget = run_timeout_s - thermal_wait_s - min(LAUNCH_MARGIN_S, run_timeout_s / 4)
    if budget <= 0:
        raise ConfigError(f"--job-timeout-s {run_timeout_s:g} leaves benchmark_model no time: it must exceed "
                          f"--thermal-wait-s ({thermal_wait_s:g}) plus a launch margin of up to "
                          f"{LAUNCH_MARGIN_S:g} s")
    return float(max(1, int(budget / 2)))


def benchmark_params(request: JobRequest, max_secs: float, *, memory_pass: bool = False, memory_runs: int = 10,
                     thermal_wait_s: float = 0.0) -> dict[str, str]:
    """benchmark_params.json for one launch: benchmark_model flags plus the app's own scenebench_* keys.

    The app passes each flag as --key=value, so all values are strings. The timing pass runs
    without report_peak_memory_footprint (its sampling thread competes with the model); the
    memory pass runs a few runs with it.
    """
    params = {
        "graph": MODEL_NAME,
        "num_threads": str(request.num_threads),
        "num_runs": str(min(memory_runs, request.num_runs) if memory_pass else request.num_runs),
        "warmup_runs": str(min(1, request.warmup_runs) if memory_pass else request.warmup_runs),
        # By default the tool keeps running past num_runs until min_secs have passed; we
        # want exactly the runs that were asked for, so that counts compare across devices.
        "min_secs": "0",
        "warmup_min_secs": "0",
        "max_secs": str(int(max_secs)),
        "report_peak_memory_footprint": "true" if memory_pass else "false",
        "use_gpu": "true" if request.delegate == "gpu" else "false",
        "use_coreml": "true" if request.delegate == "coreml" else "false",
        f"{APP_PARAM_PREFIX}thermal_wait_s": str(int(0 if memory_pass else thermal_wait_s)),
    }
    if request.delegate == "gpu":
        # Busy-wait for the GPU: the lowest latency, which is what we compare with the paper.
        params["gpu_wait_type"] = "aggressive"
        # The provider's default, said out loud so that the log records it: Metal may compute in FP16.
        params["gpu_precision_loss_allowed"] = "true"
    return params


# ---------------------------------------------------------------- a run's result from its logs
def _phone_state(d: dict[str, Any] | None) -> PhoneState | None:
    return PhoneState(**d) if d else None


def _timings(p: dict[str, Any]) -> Timings | None:
    needed = ("mean_ms", "std_ms", "min_ms", "max_ms", "count")
    if not all(p[k] is not None for k in needed):
        return None
    try:
        return Timings(init=p["init_ms"], first=p["first_ms"], warmup_mean=p["warmup_mean_ms"],
                       mean=p["mean_ms"], std=p["std_ms"], min=p["min_ms"], max=p["max_ms"],
                       p50=p["p50_ms"], p90=p["p90_ms"], p99=p["p99_ms"], count=p["count"])
    except ValueError:
        return None


def delegate_applied(parsed: dict[str, Any], requested: str) -> str | None:
    """What ran the graph: cpu, the requested delegate, 'partial', or None when the log does not say.

    Node counts decide when the log has them (Core ML's "N nodes delegated out of M", subgraph's
    "Replacing N out of M node(s)", the GPU delegate's "N operations will run on the GPU");
    otherwise benchmark_model's own words ("completely", "partially", "will not be executed").
    """
    if requested == "cpu":
        return "cpu"
    if requested not in ("gpu", "coreml"):
        raise IosError(f"delegate {requested!r} is not one of cpu, gpu, coreml")
    status = parsed["delegates"].get(requested)
    nodes = parsed["delegated_nodes"].get(requested)
    if status in ("none", "failed"):
        return "cpu"
    if nodes is not None and nodes[1]:
        n, total = nodes
        return "cpu" if n == 0 else requested if n >= total else "partial"
    if status == "complete":
        return requested
    if status == "partial":
        return "partial"
    return None


def result_from_logs(timing_log: str, device: DeviceInfo, request: JobRequest, *, memory_log: str | None = None,
                     memory_error: str | None = None, app_info: dict[str, Any] | None = None,
                     cooldown_s: float | None = None, thermal_wait_limit_s: float | None = None) -> JobResult:
    """A JobResult from a finished job's console logs; raises IosError when the timing run failed.

    Timings and samples come from the timing pass, memory from the memory pass (when there was
    one). A memory pass that failed costs the peak figure, not the measurement: the timing pass
    still printed the footprint delta.
    """
    p = parse_benchmark_log(timing_log)
    tail = "\n".join(timing_log.strip().splitlines()[-40:])
    if not p["ok"]:
        raise IosError(f"benchmark app failed on {device.id}: {p['error']}\n--- log tail ---\n{tail}")
    applied = delegate_applied(p, request.delegate)
    notes = list(p["notes"])
    nodes = p["delegated_nodes"].get(request.delegate) if request.delegate != "cpu" else None
    if request.delegate != "cpu" and applied == "cpu":
        notes.append(f"{request.delegate} was requested but the graph ran on the CPU "
                     "(Core ML takes float models only; see the delegate lines above)")
    if applied == "partial":
        share = f" ({nodes[0]} of {nodes[1]} nodes)" if nodes and nodes[1] else ""
        notes.append(f"{request.delegate} ran only part of the graph{share}; the rest ran on the CPU")
    if p["samples_note"]:
        notes.append(p["samples_note"])
    timings = _timings(p)
    partial = None if timings else {k: p[k] for k in ("init_ms", "first_ms", "warmup_mean_ms", "mean_ms", "std_ms",
                                                      "min_ms", "max_ms", "p5_ms", "p50_ms", "p95_ms", "count")}

    mem_source, memory_pass = p, "same"
    if memory_log is not None:
        m = parse_benchmark_log(memory_log)
        if m["ok"]:
            mem_source, memory_pass = m, "separate"
        else:
            memory_error = memory_error or m["error"]
    if memory_error:
        notes.append(f"the memory pass failed, so there is no peak memory: {memory_error}")
    memory = None
    if any(mem_source[k] is not None
                                      for k in ("memory_init_mb", "memory_overall_mb", "memory_peak_mb")):
        memory = Memory(init_mb=mem_source["memory_init_mb"], overall_mb=mem_source["memory_overall_mb"],
                        peak_mb=mem_source["memory_peak_mb"],
                        method="benchmark_model on the iPhone: footprint delta from the start of the tool "
                               "(init/overall) and periodic peak monitoring (peak), in a separate run from the "
                               "timing" if memory_pass == "separate" else
                               "benchmark_model on the iPhone: footprint delta from the start of the tool")
    app_info = app_info or {}
    app = p["app"]
    params = p["params"]
    precision = params.get("Allow lower precision in gpu")
    wait = p["thermal_wait"] or {}
    max_secs = params.get("Max runs duration (seconds)")
    conditions = Conditions(
        runs_requested=request.num_runs, runs_completed=p["count"],
        max_secs=float(max_secs) if max_secs not in (None, "") else None,
        samples_source=("the app's single-run callbacks of the benchmark C API (steady clock around each run)"
                        if p["samples_ms"] else None),
        delegated_nodes=nodes[0] if nodes else None, total_nodes=nodes[1] if nodes else None,
        gpu_precision_loss_allowed=(precision == "1") if request.delegate == "gpu" and precision in ("0", "1")
        else None,
        coreml_compute_units=COREML_COMPUTE_UNITS if request.delegate == "coreml" else None,
        neural_engine=has_neural_engine(device.model),
        state_before=_phone_state(p["state_before"]), state_after=_phone_state(p["state_after"]),
        thermal_wait_s=wait.get("waited_s"),
        thermal_wait_limit_s=wait.get("limit_s", thermal_wait_limit_s),
        cooldown_s=cooldown_s, memory_pass=memory_pass,
        os_build=_os_build(device.os),
        app_tf_tag=app.get("tf_tag") or app_info.get(PLIST_TF_TAG),
        app_build_id=app.get("build_id") or app_info.get(PLIST_BUILD_ID),
    )
    if request.delegate == "gpu" and precision is None:
        notes.append("the log does not say whether Metal allowed FP16 (no 'Allow lower precision in gpu' line)")
    if not app.get("tf_tag") and app_info.get(PLIST_TF_TAG):
        notes.append("the app printed no TensorFlow tag; tf tag and build id are read from the installed bundle")
    return JobResult(device=device, delegate_requested=request.delegate, delegate_applied=applied,
                     timings_ms=timings, partial_timings_ms=partial, samples_ms=p["samples_ms"], memory=memory,
                     conditions=conditions, notes=notes, log_tail=tail[-4000:])


def _os_build(os_text: str) -> str | None:
    m = re.search(r"\(([0-9A-Za-z]+)\)\s*$", os_text or "")
    return m[1] if m else None


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
    ends = list(END_RE.finditer(text))
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
    """`devicectl list devices --json-output` -> physical, paired iPhones/iPads as DeviceInfo.

    The OS is "iOS <version> (<build>)": two phones on the same version can run different builds.
    """
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
        build = props.get("osBuildUpdate")
        out.append(DeviceInfo(
            id=dev_id,
            name=f"{props.get('name') or marketing} ({marketing})",
            backend="ios",
            model=hw.get("productType") or "unknown",
            os=f"iOS {props.get('osVersionNumber') or '?'}" + (f" ({build})" if build else ""),
            delegates=list(IOS_DELEGATES),
            state=state,
            state_reason=why,
        ))
    return out


# Colour and cursor sequences a terminal program may still print.
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_PID_RE = re.compile(rf"{START_MARKER} pid=(?P<pid>\d+)")


class IosBackend:
    """Runs jobs on attached iPhones with `xcrun devicectl` and the runner-ready TFLite benchmark app."""

    name = "ios"

    def __init__(self, app_path: str | Path | None, bundle_id: str | None = None, xcrun: str = "xcrun",
                 command_timeout_s: float = 120.0, run_timeout_s: float = 1800.0, thermal_wait_s: float = 300.0,
                 cooldown_s: float = 60.0, memory_runs: int = 10, sleep: Callable[[float], None] = time.sleep):
        self.app_path = Path(app_path).expanduser() if app_path else None
        self.app_info: dict[str, Any] = {}
        if self.app_path is not None:
            if not (self.app_path / "Info.plist").is_file():
                raise ConfigError(f"--ios-app {self.app_path} is not an iOS app bundle (no Info.plist in it): give "
                                  "the TFLiteBenchmark.app that runner/ios_app/build.sh built (RUNNER.md, step 5)")
            self.app_info = read_app_info(self.app_path)
            own = self.app_info.get("CFBundleIdentifier")
            if not own and not bundle_id:
                raise ConfigError(f"--ios-app {self.app_path}: its Info.plist names no CFBundleIdentifier; "
                                  "give --ios-bundle-id")
            if bundle_id and own and bundle_id != own:
                raise ConfigError(f"--ios-bundle-id {bundle_id!r} is not the bundle id of --ios-app {self.app_path} "
                                  f"({own!r}); leave --ios-bundle-id empty to use the app's own")
            bundle_id = bundle_id or own
        self.bundle_id = bundle_id or ""
        self.xcrun = xcrun
        self.command_timeout_s = command_timeout_s
        self.run_timeout_s = run_timeout_s
        self.thermal_wait_s = thermal_wait_s
        self.cooldown_s = cooldown_s
        self.memory_runs = memory_runs
        self.max_secs = max_secs_for(run_timeout_s, thermal_wait_s)
        self._sleep = sleep
        self._installed: dict[str, str] = {}  # udid -> stamp of the bundle installed there
        self._udids: dict[str, str] = {}  # device id -> the UDID as devicectl spells it
        self._last: dict[str, tuple[str, str, float]] = {}  # udid -> (model sha256, delegate, monotonic end)
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
        found = parse_devicectl_devices(doc, busy)
        for d in (doc.get("result") or {}).get("devices") or []:
            udid = (d.get("hardwareProperties") or {}).get("udid")
            if udid:
                with self._lock:
                    self._udids[f"ios-{slug(udid)}"] = udid
        return found

    def _udid(self, device: DeviceInfo) -> str:
        # The id is "ios-<udid slug>" (lower case); devicectl's own spelling when it listed the phone,
        # else upper case, the spelling of UDIDs since 2018 (00008101-001A2C3E1234001E).
        with self._lock:
            return self._udids.get(device.id) or device.id.removeprefix("ios-").upper()

    def _cooldown(self, udid: str, request: JobRequest) -> float | None:
        """Pause after the previous delegate of the same model on this phone, so that it starts cool."""
        with self._lock:
            last = self._last.get(udid)
        if last is None or last[0] != request.model_sha256 or last[1] == request.delegate or self.cooldown_s <= 0:
            return None
        left = self.cooldown_s - (time.monotonic() - last[2])
        if left > 0:
            self._sleep(left)
        return max(0.0, left)

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
        cooldown = self._cooldown(udid, request)
        try:
            timing = self._launch(udid, model_path, benchmark_params(
                request, self.max_secs, thermal_wait_s=self.thermal_wait_s), copy_model=True)
            check_console_log(timing)
            memory, memory_error = None, None
            if self.memory_runs > 0:
                try:
                    memory = self._launch(udid, model_path, benchmark_params(
                        request, self.max_secs, memory_pass=True, memory_runs=self.memory_runs), copy_model=False)
                    check_console_log(memory)
                except IosError as exc:
                    memory, memory_error = None, str(exc).splitlines()[0]
        finally:
            with self._lock:
                self._last[udid] = (request.model_sha256, request.delegate, time.monotonic())
        return result_from_logs(timing, device, request, memory_log=memory, memory_error=memory_error,
                                app_info=self.app_info, cooldown_s=cooldown, thermal_wait_limit_s=self.thermal_wait_s)

    def _launch(self, udid: str, model_path: Path, params: dict[str, str], copy_model: bool) -> str:
        with tempfile.TemporaryDirectory() as d:
            params_file = Path(d) / PARAMS_NAME
            params_file.write_text(json.dumps(params, indent=2))
            copies = ([(model_path, MODEL_NAME)] if copy_model else []) + [(params_file, PARAMS_NAME)]
            for src, name in copies:
                self._run(["device", "copy", "to", "--device", udid,
                           "--domain-type", "appDataContainer", "--domain-identifier", self.bundle_id,
                           "--source", str(src), "--destination", f"{DATA_DIR}/{name}"], timeout_s=600)
            return self._launch_with_console(udid, Path(d) / "launch.json")

    def launch_command(self, udid: str, json_output: Path) -> list[str]:
        """`devicectl device process launch` with the app's console attached.

        --console (Xcode 16+) relays the app's stdout and stderr and returns when the app exits
        (the runner-ready app exits after one benchmark). OS_ACTIVITY_DT_MODE makes the app's
        syslog/os_log lines (TFLite's delegate messages on iOS) appear there too. --json-output
        gets devicectl's launch record, whose result.process.processIdentifier is the app's pid.
        """
        return [self.xcrun, "devicectl", "device", "process", "launch", "--device", udid,
                "--terminate-existing", "--console",
                "--environment-variables", json.dumps({"OS_ACTIVITY_DT_MODE": "enable"}),
                "--json-output", str(json_output), self.bundle_id]

    def terminate_command(self, udid: str, pid: int) -> list[str]:
        """`devicectl device process terminate` of the app's process, with SIGKILL (--kill): a hung app ignores SIGTERM."""
        return ["device", "process", "terminate", "--device", udid, "--pid", str(pid), "--kill"]

    def _app_pid(self, json_output: Path, text: str) -> int | None:
        """The app's pid on the phone: devicectl's launch record, else the app's own start line."""
        try:
            pid = json.loads(json_output.read_text())["result"]["process"]["processIdentifier"]
            if isinstance(pid, int) and pid > 0:
                return pid
        except (OSError, ValueError, KeyError, TypeError):
            pass
        m = _PID_RE.search(text)
        return int(m["pid"]) if m else None

    def _terminate_on_phone(self, udid: str, json_output: Path, text: str) -> str:
        pid = self._app_pid(json_output, text)
        if pid is None:
            return ("the app's process id is unknown (no devicectl launch record, no start line), so it may "
                    "still be running on the phone: end it by hand")
        try:
            with tempfile.TemporaryDirectory() as d:
                self._run([*self.terminate_command(udid, pid), "--json-output", str(Path(d) / "terminate.json")],
                          timeout_s=60)
        except IosError as exc:
            return f"terminating the app (pid {pid}) on the phone failed: {exc}"
        return f"the app (pid {pid}) was terminated on the phone"

    def _launch_with_console(self, udid: str, json_output: Path) -> str:
        """Run the launch command on a pseudo-terminal and return everything it printed.

        devicectl relays the app's output only when it believes a terminal is attached, so
        the command gets a pty for stdin/stdout/stderr (what `script` would give it). The whole
        run is bounded by run_timeout_s; on expiry the app is terminated on the phone and the
        command's process group is killed here.
        """
        cmd = self.launch_command(udid, json_output)
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
        text = _ANSI_RE.sub("", b"".join(chunks).decode("utf-8", errors="replace")).replace("\r\n", "\n")
        on_phone = ""
        if timed_out:
            # The phone first: killing devicectl here does not stop the app there.
            on_phone = self._terminate_on_phone(udid, json_output, text)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        tail = "\n".join(text.strip().splitlines()[-20:])
        if timed_out:
            raise IosError(f"`{' '.join(cmd[1:6])} …` did not finish within {self.run_timeout_s:g} s "
                           f"(raise --job-timeout-s for slow models); {on_phone}\n--- log tail ---\n{tail}")
        if proc.returncode != 0:
            raise IosError(f"`{' '.join(cmd[1:6])} …` exited with {proc.returncode}\n--- log tail ---\n{tail}")
        return text
