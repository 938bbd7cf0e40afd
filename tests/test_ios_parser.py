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
