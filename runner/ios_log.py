"""Reading what the runner-ready TFLiteBenchmark app printed: benchmark_model's log and the app's own lines.

Pure functions over text, tested on upstream-format logs (tests/data/ios_logs, whose README says
where every line's form comes from) without an iPhone.

benchmark_model's run statistics are tsl's `Stat::OutputToStream`: `count=N first=F curr=C min=A
max=B avg=M std=S`, `count=N curr=C` when every run took the same time (with `(all same)` after
it when N > 1), `count=0` for an empty phase; builds whose benchmark_model keeps a
`StatWithPercentiles` add ` p5=… median=… p95=…`. Per-run times are not in that log: the app
records each timed run through the benchmark C API's single-run callbacks and prints them as
`scenebench-samples` lines, from which the percentiles are computed.
"""

from __future__ import annotations

import re
from typing import Any

from common.schemas import THERMAL_STATES

START_MARKER = "scenebench-benchmark-start"
END_MARKER = "scenebench-benchmark-end"
SAMPLES_MARKER = "scenebench-samples"
STATE_MARKER = "scenebench-phone-state"
THERMAL_WAIT_MARKER = "scenebench-thermal-wait"

# iostream prints doubles like %g (2.95034e+06).
_NUM = r"[-+]?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|inf)"


def _ms(us: str | float) -> float | None:
    """Microseconds (as printed, or already read) -> milliseconds; nan -> None."""
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
# A Stat printed by OutputToStream, from its first key: count= in current tsl, curr= in the oldest.
_STAT_START_RE = re.compile(r"(?<![\w(])(?:count|curr)=\d")
_STAT_KV_RE = re.compile(rf"(\w+)=({_NUM})(\(all same\))?")
# --enable_op_profiling appends per-op tables whose summaries also carry count= fields.
_PROFILER_SUMMARY = ("Timings (microseconds):", "Memory (bytes):")
# Newer tools say "delta from the start of the tool", older ones "Peak memory footprint".
_MEM_DELTA_RE = re.compile(
    rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=(?P<init>{_NUM}) overall=(?P<overall>{_NUM})"
)
_MEM_PEAK_RE = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>{_NUM})")
_MODEL_SIZE_RE = re.compile(rf"The input model file size \(MB\): (?P<mb>{_NUM})")
_SESSION_RE = re.compile(rf"Initialized session in (?P<ms>{_NUM}) ?ms")
# LogParams lines: "Min num runs: [50]", "Allow lower precision in gpu: [1]", …
_PARAM_RE = re.compile(r"^(?P<name>[A-Za-z#][\w #()/.-]*?): \[(?P<value>[^\]]*)\]$")
_APPLIED_RE = re.compile(
    r"Explicitly applied (?P<name>[\w .-]+?) delegate, and the model graph will be "
    r"(?P<how>completely|partially) executed by the delegate(?: w/ (?P<kernels>\d+) delegate kernels)?"
)
_NOT_APPLIED_RE = re.compile(
    r"Though (?P<name>[\w .-]+?) delegate is explicitly applied, the model graph will not be executed"
)
_FAILED_APPLY_RE = re.compile(r"Failed to apply (?P<name>[\w .-]+?) delegate")
# Core ML's own count (coreml_delegate.mm), and the same words from delegates built on
# SimpleDelegateInterface ("TfLiteFlexDelegate delegate: 34 nodes delegated out of 1181 nodes with 3 partitions.").
_NODES_DELEGATED_RE = re.compile(
    r"(?P<name>[\w .-]+?) delegate: (?P<n>\d+) nodes delegated out of (?P<total>\d+) nodes"
    r",? with (?P<parts>\d+) partitions"
)
# The delegate provider found no delegate on this device or OS (tools/delegates/*_provider.cc).
_UNSUPPORTED_RE = re.compile(r"(?P<name>CoreML|GPU) acceleration is unsupported on this platform")
# subgraph.cc: "Replacing N out of M node(s) with delegate (X) node, yielding K partitions for …";
# before that, "Replacing N node(s) with delegate (X) node, yielding K partitions.".
_REPLACING_RE = re.compile(
    r"Replacing (?P<n>\d+)(?: out of (?P<total>\d+))? node\(s\) with delegate \((?P<name>[\w .-]+?)\) node"
    r"(?:, yielding (?P<parts>\d+) partitions)?"
)
# The GPU delegate's list of what it cannot run ends with the split; older versions said "First N …".
_GPU_SPLIT_RE = re.compile(
    r"(?:First )?(?P<n>\d+) operations will run on the GPU, and the remaining (?P<rest>\d+)"
    r"(?: operations? will run)? on the CPU"
)
_CREATED_RE = re.compile(r"Created TensorFlow Lite (?:(?P<xnn>XNNPACK) )?delegate for (?P<name>[\w .-]+?)\.")
_NODE_FAILED_RE = re.compile(r"Node number \d+ \([^)]*\) failed to (?:invoke|prepare)")
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

# The app's own lines (runner/ios_app/scenebench_runner_mode.h writes them).
_START_RE = re.compile(rf"{START_MARKER}(?P<rest>.*)$")
_SAMPLES_RE = re.compile(
    rf"{SAMPLES_MARKER} phase=(?P<phase>warmup|regular) index=(?P<index>\d+) total=(?P<total>\d+) us=(?P<us>[\d,]*)")
_STATE_RE = re.compile(
    rf"{STATE_MARKER} when=(?P<when>before|after) thermal=(?P<thermal>\w+) low_power=(?P<low>-?\d) "
    rf"battery_level=(?P<level>{_NUM}) battery_state=(?P<bstate>\w+)")
_WAIT_RE = re.compile(
    rf"{THERMAL_WAIT_MARKER} start=(?P<start>\w+) end=(?P<end>\w+) waited_s=(?P<waited>{_NUM}) "
    rf"limit_s=(?P<limit>{_NUM})")
_KV_TOKEN_RE = re.compile(r"(\w+)=(\S*)")
END_RE = re.compile(rf"{END_MARKER} status=(?P<status>-?\d+)(?: reason=(?P<reason>.*))?")


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


def parse_stat(line: str) -> dict[str, Any] | None:
    """One `Stat::OutputToStream` print -> {count, first, curr, min, max, avg, std[, p5, median, p95]} in µs.

    `count=1 curr=X` and `count=N curr=X(all same)` mean every run took X; `count=0` is an empty phase.
    """
    m = _STAT_START_RE.search(line)
    if m is None:
        return None
    kv: dict[str, float] = {}
    all_same = False
    for key, value, same in _STAT_KV_RE.findall(line[m.start():]):
        kv[key] = float(value)
        all_same = all_same or bool(same)
    if "count" not in kv:
        return None
    count = int(kv["count"])
    out: dict[str, Any] = {"count": count}
    if count == 0:
        return out  # an empty Stat; the percentiles a StatWithPercentiles adds to it are placeholders
    if "min" in kv and "max" in kv and not all_same:
        for k in ("first", "curr", "min", "max", "avg", "std"):
            if k in kv:
                out[k] = kv[k]
    elif "curr" in kv:
        c = kv["curr"]
        out.update(first=c, curr=c, min=c, max=c, avg=c, std=0.0)
    for k in ("p5", "median", "p95"):
        if k in kv:
            out[k] = kv[k]
    return out


def _tokens(text: str) -> dict[str, str]:
    """key=value tokens of one of the app's lines; params= and graph= (paths) take the rest of the line."""
    m = re.search(r"(?:^|\s)(?=(?:params|graph)=)", text)
    head, tail = (text[:m.start()], text[m.end():]) if m else (text, "")
    out = dict(_KV_TOKEN_RE.findall(head))
    for m2 in re.finditer(r"(params|graph)=(.*?)(?=\s(?:params|graph)=|$)", tail):
        out[m2.group(1)] = m2.group(2).strip()
    return out


def _phone_state(m: re.Match) -> dict[str, Any]:
    level = float(m["level"])
    thermal = m["thermal"] if m["thermal"] in THERMAL_STATES else None
    low = int(m["low"])
    return {"thermal": thermal, "low_power_mode": None if low < 0 else bool(low),
            "battery_level": level if 0 <= level <= 1 else None,  # UIDevice says -1 when it does not know
            "battery_state": m["bstate"] if m["bstate"] in ("unknown", "unplugged", "charging", "full") else None}


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between order statistics, as numpy's default."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def sample_percentiles(samples_ms: list[float]) -> dict[str, float | None]:
    if not samples_ms:
        return {"p50": None, "p90": None, "p99": None}
    s = sorted(samples_ms)
    return {"p50": _percentile(s, 0.5), "p90": _percentile(s, 0.9), "p99": _percentile(s, 0.99)}


def empty_result() -> dict[str, Any]:
    return {
        "ok": False, "error": None,
        "init_ms": None, "first_ms": None, "warmup_mean_ms": None, "mean_ms": None,
        "std_ms": None, "min_ms": None, "max_ms": None, "count": None,
        "p5_ms": None, "p50_ms": None, "p95_ms": None, "p90_ms": None, "p99_ms": None, "warmup_count": None,
        "samples_ms": [], "warmup_samples_ms": [], "samples_note": None,
        "memory_init_mb": None, "memory_overall_mb": None, "memory_peak_mb": None,
        "model_size_mb": None, "session_init_ms": None, "params": {},
        "delegates": {}, "delegated_nodes": {}, "coreml_nodes": None, "notes": [],
        "app": {}, "state_before": None, "state_after": None, "thermal_wait": None,
    }


def parse_benchmark_log(text: str) -> dict[str, Any]:
    """Everything benchmark_model and the app printed, as numbers in milliseconds and MB.

    Keys: ok, error, init_ms, first_ms (None when there was no warm-up), warmup_mean_ms, mean_ms,
    std_ms, min_ms, max_ms, count, p5_ms/p95_ms (the tool's, when it printed them), p50_ms/p90_ms/p99_ms
    (from the samples; p50 falls back to the tool's median), warmup_count, samples_ms,
    warmup_samples_ms, samples_note (why samples were dropped), memory_init_mb, memory_overall_mb,
    memory_peak_mb, model_size_mb, session_init_ms, params (the tool's "Name: [value]" lines),
    delegates ({cpu|gpu|coreml|<other>: complete|partial|none|failed}), delegated_nodes ({delegate:
    [delegated, total or None]}), coreml_nodes, notes (the delegate lines verbatim), app (pid, tf_tag,
    build_id, params, graph from the start line), state_before/state_after (PhoneState fields),
    thermal_wait ({start, end, waited_s, limit_s}). Values the log does not contain are None.
    A log holding several runs reports the last.
    """
    out = empty_result()
    stats_lines: list[dict[str, Any]] = []
    stats_at_timings: int | None = None  # how many stats lines preceded the last timings line
    explicit: set[str] = set()  # delegates whose state the tool stated in words
    chunks: dict[str, dict[int, list[float]]] = {"warmup": {}, "regular": {}}
    totals: dict[str, int] = {}

    def note(text: str) -> None:
        # The message without its console prefix, once: consoles that mirror the system log show it twice.
        if text not in out["notes"]:
            out["notes"].append(text)

    def stated(name: str, state: str) -> None:
        out["delegates"][name] = state
        explicit.add(name)

    def infer(name: str, state: str) -> None:
        if name not in explicit:
            out["delegates"][name] = state

    errors: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _START_RE.search(line):
            # A new launch: what an earlier one printed in the same text is not this run's.
            chunks = {"warmup": {}, "regular": {}}
            totals = {}
            out["app"] = _tokens(m["rest"])
            continue
        if m := _SAMPLES_RE.search(line):
            values = [int(v) / 1e3 for v in m["us"].split(",") if v]
            chunks[m["phase"]][int(m["index"])] = values
            totals[m["phase"]] = int(m["total"])
            continue
        if m := _STATE_RE.search(line):
            out[f"state_{m['when']}"] = _phone_state(m)
            continue
        if m := _WAIT_RE.search(line):
            out["thermal_wait"] = {"start": m["start"], "end": m["end"], "waited_s": float(m["waited"]),
                                   "limit_s": float(m["limit"])}
            continue
        if END_RE.search(line):
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
        if (stat := parse_stat(line)) is not None:
            # A console that shows both stdout and the system log prints each line twice;
            # two phases never print identical lines.
            if not stats_lines or stats_lines[-1] != stat:
                stats_lines.append(stat)
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
        if m := _NODES_DELEGATED_RE.search(line):
            name, n, total = normalize_delegate(m["name"]), int(m["n"]), int(m["total"])
            out["delegated_nodes"][name] = [n, total]
            if name == "coreml":
                out["coreml_nodes"] = [n, total]
            infer(name, "none" if n == 0 else "complete" if n == total else "partial")
            note(line[m.start():])
            continue
        if m := _UNSUPPORTED_RE.search(line):
            stated(normalize_delegate(m["name"]), "none")
            note(line[m.start():])
            continue
        if m := _REPLACING_RE.search(line):
            name, n = normalize_delegate(m["name"]), int(m["n"])
            total = int(m["total"]) if m["total"] else None
            out["delegated_nodes"].setdefault(name, [n, total])
            if total is not None:
                out["delegated_nodes"][name] = [n, total]
                infer(name, "none" if n == 0 else "complete" if n == total else "partial")
            elif n == 0:
                infer(name, "none")
            note(line[m.start():])
            continue
        if m := _GPU_SPLIT_RE.search(line):
            n, rest = int(m["n"]), int(m["rest"])
            out["delegated_nodes"]["gpu"] = [n, n + rest]
            infer("gpu", "none" if n == 0 else "partial" if rest else "complete")
            note(line[m.start():])
            continue
        if m := _CREATED_RE.search(line):
            note(line[m.start():])
            continue
        if _NODE_FAILED_RE.search(line) or any(marker in line for marker in _FAILURE_MARKERS):
            errors.append(line)
            continue
        bare = re.sub(r"^(?:INFO|WARN|WARNING|VERBOSE): ", "", line)
        if m := _PARAM_RE.match(bare):
            out["params"][m["name"].strip()] = m["value"]

    # One stats line per phase: warm-up, then the timed runs, then the timings line. Stats lines
    # after the last timings line, or in a log without one, belong to no finished run.
    stats_lines = stats_lines[:stats_at_timings] if stats_at_timings is not None else []
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
    # With no warm-up the tool still prints "First inference: 0, Warmup (avg): 0" (an empty Stat's
    # first and avg): not a 0 ms inference.
    if out["warmup_count"] == 0:
        out["first_ms"] = out["warmup_mean_ms"] = None
    if out["init_ms"] is None and out["session_init_ms"] is not None:
        out["init_ms"] = out["session_init_ms"]
    if out["coreml_nodes"] is not None and out["coreml_nodes"][0] == 0:
        out["delegates"].setdefault("coreml", "none")

    _assemble_samples(out, chunks, totals)

    fatal = [e for e in errors if not _FAILED_APPLY_RE.search(e)]
    if fatal:
        out["error"] = "; ".join(dict.fromkeys(errors))[:2000]
    elif out["mean_ms"] is None:
        out["error"] = "; ".join(["the log has no 'Inference timings' line: the benchmark did not finish",
                                  *dict.fromkeys(errors)])[:2000]
    out["ok"] = out["error"] is None
    return out


def _assemble_samples(out: dict[str, Any], chunks: dict[str, dict[int, list[float]]], totals: dict[str, int]) -> None:
    """The app's sample lines -> samples_ms, checked for gaps and against the tool's run count."""
    for phase, key in (("regular", "samples_ms"), ("warmup", "warmup_samples_ms")):
        parts = chunks[phase]
        if not parts:
            continue
        values: list[float] = []
        for index in sorted(parts):
            if index != len(values):
                out["samples_note"] = (f"{phase} sample lines are incomplete (a gap before run {index}); "
                                       "per-run samples dropped")
                values = []
                break
            values.extend(parts[index])
        if values and len(values) != totals.get(phase):
            out["samples_note"] = (f"{len(values)} {phase} samples printed, the app said {totals.get(phase)}; "
                                   "per-run samples dropped")
            values = []
        out[key] = values
    samples = out["samples_ms"]
    if samples and out["count"] is not None and len(samples) != out["count"]:
        out["samples_note"] = (f"the app recorded {len(samples)} timed runs, benchmark_model counted "
                               f"{out['count']}; per-run samples dropped")
        out["samples_ms"] = []
        samples = []
    if samples:
        pct = sample_percentiles(samples)
        out["p50_ms"], out["p90_ms"], out["p99_ms"] = pct["p50"], pct["p90"], pct["p99"]
