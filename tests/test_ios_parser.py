"""runner.ios.parse_benchmark_log on real-format benchmark_model logs (tests/data/ios_logs)."""

from pathlib import Path

import pytest

from common.schemas import DeviceInfo
from runner.api import JobRequest
from runner.ios import IosError, delegate_applied, parse_benchmark_log, result_from_log

LOGS = Path(__file__).parent / "data" / "ios_logs"
IPHONE = DeviceInfo(id="ios-00008101-001a2c3e1234001e", name="Lab 12 Pro (iPhone 12 Pro)", backend="ios",
                    model="iPhone13,3", os="iOS 17.5.1", delegates=["cpu", "gpu", "coreml"])


def log(name: str) -> str:
    return (LOGS / name).read_text()


def request(delegate: str) -> JobRequest:
    return JobRequest(model_url="file:///m.tflite", model_sha256="0" * 64, device=IPHONE.id, delegate=delegate)


def test_cpu_log_with_delta_and_peak_memory():
    p = parse_benchmark_log(log("cpu_float_delta_memory.log"))
    assert p["ok"] and p["error"] is None
    assert p["init_ms"] == pytest.approx(41.733)
    assert p["first_ms"] == pytest.approx(118.214)
    assert p["warmup_mean_ms"] == pytest.approx(91.0274)
    assert p["mean_ms"] == pytest.approx(83.2456)
    assert (p["count"], p["warmup_count"]) == (50, 5)
    assert p["min_ms"] == pytest.approx(81.920) and p["max_ms"] == pytest.approx(90.114)
    assert p["std_ms"] == pytest.approx(1.507)
    assert p["p50_ms"] == pytest.approx(82.960) and p["p95_ms"] == pytest.approx(86.702)
    assert p["memory_init_mb"] == pytest.approx(27.4531)
    assert p["memory_overall_mb"] == pytest.approx(61.8906)
    assert p["memory_peak_mb"] == pytest.approx(203.531)
    assert p["delegates"] == {"cpu": "complete"}
    assert delegate_applied(p, "cpu") == "cpu"


def test_gpu_log_with_only_the_periodic_peak():
    p = parse_benchmark_log(log("gpu_float_peak_only.log"))
    assert p["ok"]
    assert p["mean_ms"] == pytest.approx(16.1583)
    assert p["memory_peak_mb"] == pytest.approx(187.25)
    assert p["memory_init_mb"] is None and p["memory_overall_mb"] is None
    assert delegate_applied(p, "gpu") == "gpu"


def test_old_format_without_memory_or_percentiles():
    p = parse_benchmark_log(log("cpu_no_memory_old_format.log"))
    assert p["ok"]
    assert p["mean_ms"] == pytest.approx(58.1104)  # 5.81104e+04 us
    assert p["warmup_mean_ms"] == pytest.approx(71.23)
    assert p["count"] == 50 and p["warmup_count"] == 1
    assert p["p50_ms"] is None
    assert all(p[k] is None for k in ("memory_init_mb", "memory_overall_mb", "memory_peak_mb"))


def test_failed_run_is_not_ok_and_says_why():
    p = parse_benchmark_log(log("failed_invoke.log"))
    assert not p["ok"]
    assert "Failed to invoke" in p["error"] and "Benchmarking failed" in p["error"]
    with pytest.raises(IosError, match="Failed to invoke"):
        result_from_log(log("failed_invoke.log"), IPHONE, request("cpu"))


def test_truncated_log_is_a_failure():
    text = "\n".join(log("cpu_float_delta_memory.log").splitlines()[:16])
    p = parse_benchmark_log(text)
    assert not p["ok"] and "Inference timings" in p["error"]


def test_int8_on_coreml_is_recorded_as_cpu():
    text = log("coreml_int8_not_applied.log")
    p = parse_benchmark_log(text)
    assert p["ok"]
    assert p["coreml_nodes"] == [0, 71]
    assert p["delegates"]["coreml"] == "none"
    assert delegate_applied(p, "coreml") == "cpu"
    r = result_from_log(text, IPHONE, request("coreml"))
    assert r.delegate_requested == "coreml" and r.delegate_applied == "cpu"
    assert any("ran on the CPU" in n for n in r.notes)


def test_coreml_partial_with_old_peak_memory_form():
    p = parse_benchmark_log(log("coreml_float_applied_old_peak.log"))
    assert p["ok"]
    assert p["delegates"]["coreml"] == "partial" and p["coreml_nodes"] == [64, 66]
    assert p["memory_init_mb"] == pytest.approx(48.1719) and p["memory_overall_mb"] == pytest.approx(96.5)
    assert delegate_applied(p, "coreml") == "coreml"


def test_unknown_delegate_state_is_none_not_a_guess():
    p = parse_benchmark_log(log("cpu_no_memory_old_format.log"))
    assert delegate_applied(p, "gpu") is None


def test_result_keeps_what_the_log_lacks_empty():
    r = result_from_log(log("gpu_float_peak_only.log"), IPHONE, request("gpu"))
    assert r.samples_ms == []  # benchmark_model prints no per-run samples
    assert r.memory.peak_mb == pytest.approx(187.25) and r.memory.init_mb is None
    # benchmark_model prints no p90: a full Timings record is only built if the schema allows it.
    timings = r.timings_ms or r.partial_timings_ms
    assert timings is not None


def test_scientific_notation_and_the_older_peak_memory_line():
    """Slow models print avg/warm-up as 2.95034e+06; older tools say 'Peak memory footprint (MB):'."""
    p = parse_benchmark_log(log("cpu_scientific_notation_peak_form.log"))
    assert p["ok"]
    assert p["mean_ms"] == pytest.approx(2950.34) and p["warmup_mean_ms"] == pytest.approx(3512.39)
    assert p["std_ms"] == pytest.approx(109.798) and p["count"] == 50 and p["warmup_count"] == 1
    assert p["memory_init_mb"] == pytest.approx(4.92969) and p["memory_overall_mb"] == pytest.approx(138.809)


def test_console_prefixes_and_percentile_fields():
    """The app's console adds a timestamp and process tag before each line; counts carry p5/median/p95."""
    p = parse_benchmark_log(log("console_timestamped_percentiles.log"))
    assert p["ok"] and p["count"] == 1000
    assert p["mean_ms"] == pytest.approx(63.7432) and p["max_ms"] == pytest.approx(686.105)
    assert (p["p5_ms"], p["p50_ms"], p["p95_ms"]) == pytest.approx((49.62, 51.891, 68.628))
    assert p["init_ms"] == pytest.approx(119.515) and p["memory_overall_mb"] == pytest.approx(55.4961)


def test_other_platform_delegates_parse_instead_of_failing():
    """An Android log with GPU + NNAPI: an unknown delegate keeps its own name, nothing raises."""
    p = parse_benchmark_log(log("android_gpu_and_nnapi.log"))
    assert p["ok"]
    assert p["delegates"] == {"gpu": "complete", "nnapi": "none"}
    assert p["delegated_nodes"] == {"gpu": [49, 49]}
    assert (p["count"], p["warmup_count"]) == (50, 2)
    assert p["mean_ms"] == pytest.approx(309.35) and p["init_ms"] == pytest.approx(5664.363)
    assert p["model_size_mb"] == pytest.approx(16.1527) and p["session_init_ms"] == pytest.approx(5664.36)
    assert p["memory_peak_mb"] == pytest.approx(140.211)
    assert delegate_applied(p, "gpu") == "gpu"


def test_op_profiling_tables_do_not_replace_the_run_statistics():
    """--enable_op_profiling prints 'Timings (microseconds): count=…' summaries after the run."""
    p = parse_benchmark_log(log("cpu_op_profiling.log"))
    assert p["ok"]
    assert (p["count"], p["warmup_count"]) == (50, 1)
    assert p["mean_ms"] == pytest.approx(23.0893) and p["std_ms"] == pytest.approx(0.880)
    assert p["min_ms"] == pytest.approx(22.344) and p["max_ms"] == pytest.approx(26.785)
    assert p["delegates"] == {"cpu": "complete"} and p["delegated_nodes"] == {"cpu": [66, 66]}


def test_ios_console_with_syslog_echo_and_partial_metal():
    """TFLite on iOS logs to syslog and stderr; with OS_ACTIVITY_DT_MODE the console shows both."""
    text = log("ios_metal_partial_syslog_echo.log")
    p = parse_benchmark_log(text)
    assert p["ok"] and p["count"] == 50 and p["warmup_count"] == 5
    assert p["delegates"] == {"gpu": "partial"} and p["delegated_nodes"] == {"gpu": [64, 70]}
    assert len(p["notes"]) == len(set(p["notes"]))
    r = result_from_log(text, IPHONE, request("gpu"))
    assert r.delegate_applied == "gpu"
    assert any("only part of the graph" in n for n in r.notes)
    assert r.timings_ms.mean == pytest.approx(14.0332) and r.timings_ms.p50 == pytest.approx(13.981)
    # The same console captured through a pseudo-terminal ends its lines with CRLF.
    assert parse_benchmark_log(text.replace("\n", "\r\n")) == p


def test_coreml_missing_on_the_device_is_recorded_as_cpu():
    p = parse_benchmark_log(log("ios_coreml_unsupported.log"))
    assert p["ok"] and p["delegates"] == {"coreml": "none"}
    r = result_from_log(log("ios_coreml_unsupported.log"), IPHONE, request("coreml"))
    assert r.delegate_applied == "cpu"
    assert any("ran on the CPU" in n for n in r.notes)


def test_pre_1_14_average_timings_line():
    p = parse_benchmark_log(log("old_average_timings.log"))
    assert p["ok"]
    assert p["mean_ms"] == pytest.approx(79.7609) and p["init_ms"] == pytest.approx(38.467)
    assert p["warmup_mean_ms"] == pytest.approx(83.235) and p["first_ms"] is None
    assert (p["count"], p["warmup_count"]) == (50, 1) and p["std_ms"] == pytest.approx(1.929)


def test_gpu_unsupported_ops_are_a_partial_run_not_a_failure():
    p = parse_benchmark_log(log("gpu_unsupported_ops_partial.log"))
    assert p["ok"] and p["error"] is None
    assert p["delegates"] == {"gpu": "partial"}
    assert delegate_applied(p, "gpu") == "gpu"


def test_gpu_delegate_that_fails_to_prepare_fails_the_run():
    p = parse_benchmark_log(log("gpu_delegate_init_failed.log"))
    assert not p["ok"] and p["delegates"] == {"gpu": "failed"}
    assert "Benchmarking failed" in p["error"]
    with pytest.raises(IosError, match="Failed to apply GPU delegate"):
        result_from_log(log("gpu_delegate_init_failed.log"), IPHONE, request("gpu"))


@pytest.mark.parametrize("name, expected", [
    ("GPU", "gpu"), ("Metal", "gpu"), ("TfLiteMetalDelegate", "gpu"), ("TfLiteGpuDelegateV2", "gpu"),
    ("COREML", "coreml"), ("CoreML", "coreml"), ("Core ML", "coreml"), ("TfLiteCoreMlDelegate", "coreml"),
    ("XNNPACK", "cpu"), ("TfLiteXNNPackDelegate", "cpu"), ("NNAPI", "nnapi"), ("Hexagon", "hexagon"),
    ("STABLE_DELEGATE", "stable"),
])
def test_delegate_names(name, expected):
    from runner.ios import normalize_delegate
    assert normalize_delegate(name) == expected


def test_a_log_without_a_median_still_gives_a_full_record():
    """Before TF 2.4 the count line had no p5/median/p95; mean/std/min/max/count are enough."""
    r = result_from_log(log("old_average_timings.log"), IPHONE, request("cpu"))
    assert r.timings_ms is not None and r.partial_timings_ms is None
    assert r.timings_ms.p50 is None and r.timings_ms.p90 is None
    assert r.timings_ms.mean == pytest.approx(79.7609) and r.timings_ms.count == 50


def test_no_warm_up_prints_nan_and_still_parses():
    """--warmup_runs=0 leaves the warm-up statistic empty: iostream prints its average as -nan."""
    p = parse_benchmark_log(log("cpu_no_warmup_nan.log"))
    assert p["ok"] and p["warmup_mean_ms"] is None
    assert p["mean_ms"] == pytest.approx(8.10235) and (p["count"], p["warmup_count"]) == (20, 0)


def test_console_that_echoes_every_line_twice():
    """stdout and logcat merged: each count line twice must not turn the timed runs into the warm-up."""
    p = parse_benchmark_log(log("android_stdout_and_logcat.log"))
    assert p["ok"] and (p["count"], p["warmup_count"]) == (50, 2)
    assert p == parse_benchmark_log(log("android_gpu_and_nnapi.log"))  # notes too: prefixes stripped, once each
