"""runner.ios_log / runner.ios on upstream-format logs (tests/data/ios_logs; its README names each line's source)."""

from pathlib import Path

import pytest

from common.schemas import DeviceInfo, measurement_flags
from runner.api import JobRequest
from runner.ios import IosError, delegate_applied, has_neural_engine, parse_benchmark_log, result_from_logs
from runner.ios_log import parse_stat, sample_percentiles

LOGS = Path(__file__).parent / "data" / "ios_logs"
IPHONE = DeviceInfo(id="ios-00008101-001a2c3e1234001e", name="Lab 12 Pro (iPhone 12 Pro)", backend="ios",
                    model="iPhone13,3", os="iOS 17.5.1 (21F90)", delegates=["cpu", "gpu", "coreml"])


def log(name: str) -> str:
    return (LOGS / name).read_text()


def request(delegate: str, num_runs: int = 50) -> JobRequest:
    return JobRequest(model_url="file:///m.tflite", model_sha256="0" * 64, device=IPHONE.id, delegate=delegate,
                      num_runs=num_runs)


# ---------------------------------------------------------------- Stat::OutputToStream forms
@pytest.mark.parametrize("line, expected", [
    ("INFO: count=50 first=84133 curr=82827 min=80934 max=88005 avg=83310.2 std=1270",
     {"count": 50, "first": 84133, "curr": 82827, "min": 80934, "max": 88005, "avg": 83310.2, "std": 1270}),
    # one run: tsl prints only its value
    ("count=1 curr=3512391", {"count": 1, "first": 3512391, "curr": 3512391, "min": 3512391, "max": 3512391,
                              "avg": 3512391, "std": 0}),
    # every run the same: "(all same)" right after the value
    ("INFO: count=2 curr=15002(all same)", {"count": 2, "first": 15002, "curr": 15002, "min": 15002,
                                            "max": 15002, "avg": 15002, "std": 0}),
    ("INFO: count=0", {"count": 0}),
    # StatWithPercentiles: the placeholders after an empty Stat are not values
    ("INFO: count=0 p5=0 median=0 p95=0", {"count": 0}),
    ("INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602",
     {"count": 1, "first": 1357602, "curr": 1357602, "min": 1357602, "max": 1357602, "avg": 1357602, "std": 0,
      "p5": 1357602, "median": 1357602, "p95": 1357602}),
    ("count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798",
     {"count": 50, "first": 2990275, "curr": 2913402, "min": 2727568, "max": 3189954, "avg": 2950340.0, "std": 109798}),
    # the oldest tsl printed curr before count
    ("curr=146161 count=1", {"count": 1, "first": 146161, "curr": 146161, "min": 146161, "max": 146161,
                             "avg": 146161, "std": 0}),
    ("INFO: Loaded model model.tflite", None),
])
def test_stat_forms(line, expected):
    assert parse_stat(line) == expected


def test_all_same_warmup_in_a_real_log():
    p = parse_benchmark_log(log("app_all_same_warmup.log"))
    assert p["ok"] and p["warmup_count"] == 2 and p["first_ms"] == pytest.approx(15.002)
    assert p["count"] == 50 and p["std_ms"] is not None


# ---------------------------------------------------------------- samples from the app
def test_timed_runs_come_with_per_run_samples():
    p = parse_benchmark_log(log("app_cpu_float_timing.log"))
    assert p["ok"] and p["error"] is None
    assert (p["count"], p["warmup_count"]) == (50, 5)
    assert len(p["samples_ms"]) == 50 and len(p["warmup_samples_ms"]) == 5
    # the tool's statistics and the app's samples describe the same runs
    assert min(p["samples_ms"]) == pytest.approx(p["min_ms"]) and max(p["samples_ms"]) == pytest.approx(p["max_ms"])
    assert sum(p["samples_ms"]) / 50 == pytest.approx(p["mean_ms"], rel=1e-5)
    pct = sample_percentiles(p["samples_ms"])
    assert (p["p50_ms"], p["p90_ms"], p["p99_ms"]) == pytest.approx((pct["p50"], pct["p90"], pct["p99"]))
    assert p["p50_ms"] != p["mean_ms"]
    assert p["init_ms"] == pytest.approx(41.733) and p["first_ms"] == pytest.approx(118.214)


def test_percentiles_come_from_samples_not_from_the_tools_median():
    """A framework with StatWithPercentiles prints median= (nth_element's upper median); ours is the samples'."""
    p = parse_benchmark_log(log("app_gpu_percentiles.log"))
    tool_median = parse_stat([line for line in log("app_gpu_percentiles.log").splitlines()
                              if line.startswith("INFO: count=50")][0])["median"] / 1e3
    assert p["p50_ms"] == pytest.approx(sample_percentiles(p["samples_ms"])["p50"])
    assert p["p50_ms"] != pytest.approx(tool_median, abs=1e-9)
    assert p["p5_ms"] is not None and p["p95_ms"] is not None  # the tool's, kept as printed


def test_samples_with_a_gap_are_dropped_and_say_why():
    text = log("app_cpu_float_timing.log")
    gap = parse_benchmark_log("\n".join(line for line in text.splitlines() if "phase=regular index=0 " not in line))
    assert gap["ok"] and gap["samples_ms"] == [] and "gap before run 25" in gap["samples_note"]
    assert gap["p50_ms"] is None and gap["mean_ms"] is not None
    short = parse_benchmark_log("\n".join(line for line in text.splitlines() if "phase=regular index=25" not in line))
    assert short["samples_ms"] == [] and "25 regular samples printed, the app said 50" in short["samples_note"]


def test_an_older_app_without_samples_still_gives_a_full_record():
    text = log("app_old_no_samples.log")
    p = parse_benchmark_log(text)
    assert p["ok"] and p["samples_ms"] == [] and p["p50_ms"] is None
    r = result_from_logs(text, IPHONE, request("cpu"))
    assert r.timings_ms is not None and r.partial_timings_ms is None
    assert r.timings_ms.p50 is None and r.timings_ms.mean == pytest.approx(p["mean_ms"])
    assert (r.timings_ms.std, r.timings_ms.min, r.timings_ms.max, r.timings_ms.count) == (
        pytest.approx(p["std_ms"]), pytest.approx(p["min_ms"]), pytest.approx(p["max_ms"]), 50)
    assert r.conditions.samples_source is None and r.samples_ms == []


def test_no_warm_up_means_no_first_inference():
    """--warmup_runs=0: "count=0" and "First inference: 0, Warmup (avg): 0" are an empty Stat, not 0 ms."""
    p = parse_benchmark_log(log("app_warmup0.log"))
    assert p["ok"] and (p["count"], p["warmup_count"]) == (20, 0)
    assert p["first_ms"] is None and p["warmup_mean_ms"] is None
    r = result_from_logs(log("app_warmup0.log"), IPHONE, request("cpu", num_runs=20))
    assert r.timings_ms.first is None and r.timings_ms.warmup_mean is None


# ---------------------------------------------------------------- delegates and coverage
def test_coreml_that_takes_3_of_71_nodes_is_partial_and_mostly_on_cpu():
    text = log("app_coreml_float_partial.log")
    p = parse_benchmark_log(text)
    assert p["delegated_nodes"]["coreml"] == [3, 71] and p["delegates"]["coreml"] == "partial"
    assert delegate_applied(p, "coreml") == "partial"
    r = result_from_logs(text, IPHONE, request("coreml"))
    assert r.delegate_applied == "partial"
    c = r.conditions
    assert (c.delegated_nodes, c.total_nodes) == (3, 71) and c.coverage == pytest.approx(3 / 71)
    assert c.coreml_compute_units.startswith("all (MLComputeUnitsAll") and c.neural_engine is True
    assert any("3 of 71 nodes" in n for n in r.notes)
    assert any(f.startswith("mostly on CPU") for f in measurement_flags(c))
    assert not any(f.startswith("mostly on CPU") for f in measurement_flags(c, coverage_threshold=0.04))


def test_int8_on_coreml_is_recorded_as_cpu():
    text = log("app_coreml_int8_none.log")
    p = parse_benchmark_log(text)
    assert p["coreml_nodes"] == [0, 71] and p["delegates"]["coreml"] == "none"
    r = result_from_logs(text, IPHONE, request("coreml"))
    assert (r.delegate_requested, r.delegate_applied) == ("coreml", "cpu")
    assert r.conditions.coverage == 0
    assert any("ran on the CPU" in n for n in r.notes)


def test_coreml_missing_on_the_device_is_recorded_as_cpu():
    r = result_from_logs(log("app_coreml_unsupported.log"), IPHONE, request("coreml"))
    assert r.delegate_applied == "cpu" and any("ran on the CPU" in n for n in r.notes)


def test_gpu_unsupported_warning_means_cpu():
    p = parse_benchmark_log(log("app_gpu_unsupported.log"))
    assert p["ok"] and p["delegates"] == {"gpu": "none"}
    assert result_from_logs(log("app_gpu_unsupported.log"), IPHONE, request("gpu")).delegate_applied == "cpu"
    # The same warning without the log-level prefix, as older tools printed it (a real 2021 log).
    old = parse_benchmark_log(log("public_rpi4_gpu_unsupported_old_peak.log"))
    assert old["ok"] and old["delegates"]["gpu"] == "none"
    assert old["memory_init_mb"] == pytest.approx(6.44141) and old["memory_overall_mb"] == pytest.approx(64.8633)


def test_metal_partial_counts_nodes_and_reads_the_syslog_echo_once():
    text = log("app_gpu_partial_syslog_echo.log")
    p = parse_benchmark_log(text)
    assert p["ok"] and p["delegated_nodes"] == {"gpu": [64, 70]} and p["delegates"] == {"gpu": "partial"}
    assert len(p["notes"]) == len(set(p["notes"]))
    r = result_from_logs(text, IPHONE, request("gpu"))
    assert r.delegate_applied == "partial" and r.conditions.coverage == pytest.approx(64 / 70)
    assert any("only part of the graph (64 of 70 nodes)" in n for n in r.notes)
    # The same console captured through a pseudo-terminal ends its lines with CRLF.
    assert parse_benchmark_log(text.replace("\n", "\r\n")) == p


@pytest.mark.parametrize("line, nodes", [
    ("VERBOSE: Replacing 49 out of 49 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions "
     "for subgraph 0.", [49, 49]),
    ("INFO: Replacing 64 out of 70 node(s) with delegate (TfLiteMetalDelegate) node, yielding 2 partitions for "
     "the whole graph.", [64, 70]),
    # subgraph.cc before the "out of M" form: the delegated count only
    ("INFO: Replacing 64 node(s) with delegate (TfLiteMetalDelegate) node, yielding 2 partitions.", [64, None]),
    ("First 65 operations will run on the GPU, and the remaining 3 on the CPU.", [65, 68]),
])
def test_replacing_and_split_lines(line, nodes):
    p = parse_benchmark_log(line + "\n")
    assert p["delegated_nodes"]["gpu"] == nodes


def test_older_replacing_line_without_a_total_leaves_the_tools_words_in_charge():
    text = log("app_gpu_float_timing.log").replace(
        "INFO: Created TensorFlow Lite delegate for Metal.",
        "INFO: Created TensorFlow Lite delegate for Metal.\n"
        "INFO: Replacing 66 node(s) with delegate (TfLiteMetalDelegate) node, yielding 1 partitions.")
    p = parse_benchmark_log(text)
    assert p["delegated_nodes"]["gpu"] == [66, None] and delegate_applied(p, "gpu") == "gpu"
    r = result_from_logs(text, IPHONE, request("gpu"))
    assert r.conditions.delegated_nodes == 66 and r.conditions.total_nodes is None and r.conditions.coverage is None


def test_gpu_records_fp16_allowed():
    r = result_from_logs(log("app_gpu_float_timing.log"), IPHONE, request("gpu"))
    assert r.delegate_applied == "gpu" and r.conditions.gpu_precision_loss_allowed is True
    strict = log("app_gpu_float_timing.log").replace("Allow lower precision in gpu: [1]",
                                                       "Allow lower precision in gpu: [0]")
    assert result_from_logs(strict, IPHONE, request("gpu")).conditions.gpu_precision_loss_allowed is False
    unsaid = log("app_gpu_float_timing.log").replace("INFO: Allow lower precision in gpu: [1]\n", "")
    r = result_from_logs(unsaid, IPHONE, request("gpu"))
    assert r.conditions.gpu_precision_loss_allowed is None and any("FP16" in n for n in r.notes)


@pytest.mark.parametrize("product, expected", [
    ("iPhone10,3", False), ("iPhone11,2", True), ("iPhone13,3", True), ("iPad7,5", False), ("iPad8,1", True),
    ("Watch6,6", None), ("unknown", None),
])
def test_neural_engine_from_product_type(product, expected):
    assert has_neural_engine(product) is expected


# ---------------------------------------------------------------- the phone's state and the run's length
def test_thermal_state_battery_and_a_run_cut_short():
    text = log("app_cpu_hot_short.log")
    r = result_from_logs(text, IPHONE, request("cpu"))
    c = r.conditions
    assert c.state_before.thermal == "fair" and c.state_after.thermal == "serious"
    assert c.state_before.battery_level == pytest.approx(0.64) and c.state_after.battery_state == "unplugged"
    assert c.state_after.low_power_mode is False
    assert (c.thermal_wait_s, c.thermal_wait_limit_s) == (300.0, 300.0)
    assert (c.runs_requested, c.runs_completed, c.max_secs) == (50, 37, 110.0)
    flags = measurement_flags(c)
    assert any("thermal state serious at the end" in f for f in flags)
    assert any("fewer runs than requested: 37 of 50" in f and "max_secs=110" in f for f in flags)
    assert any("started fair, not nominal, after waiting 300 s" in f for f in flags)
    cool = result_from_logs(log("app_cpu_float_timing.log"), IPHONE, request("cpu")).conditions
    assert measurement_flags(cool) == [] and cool.state_after.thermal == "nominal"


def test_provenance_from_the_start_line_and_the_device():
    r = result_from_logs(log("app_cpu_float_timing.log"), IPHONE, request("cpu"))
    c = r.conditions
    assert (c.app_tf_tag, c.app_build_id, c.os_build) == ("v2.18.0", "20261120T0912Z-4f2c9e1", "21F90")
    old = result_from_logs(log("app_old_no_samples.log"), IPHONE, request("cpu"),
                           app_info={"SCENEBENCHTensorFlowTag": "v2.17.1", "SCENEBENCHBuildID": "b1"})
    assert (old.conditions.app_tf_tag, old.conditions.app_build_id) == ("v2.17.1", "b1")
    assert any("read from the installed bundle" in n for n in old.notes)


def test_memory_comes_from_the_separate_memory_pass():
    r = result_from_logs(log("app_cpu_float_timing.log"), IPHONE, request("cpu"),
                         memory_log=log("app_cpu_float_memory.log"))
    assert r.conditions.memory_pass == "separate"
    assert r.memory.peak_mb == pytest.approx(203.531) and r.memory.overall_mb == pytest.approx(61.8906)
    assert "separate run" in r.memory.method
    assert len(r.samples_ms) == 50  # the timing pass's runs, not the memory pass's 10
    failed = result_from_logs(log("app_cpu_float_timing.log"), IPHONE, request("cpu"), memory_error="app crashed")
    assert failed.conditions.memory_pass == "same" and failed.memory.peak_mb is None
    assert failed.memory.overall_mb == pytest.approx(58.1992) and any("memory pass failed" in n for n in failed.notes)


# ---------------------------------------------------------------- failures
def test_failed_invoke_is_not_ok_and_says_why():
    p = parse_benchmark_log(log("app_failed_invoke.log"))
    assert not p["ok"] and "failed to invoke" in p["error"]
    with pytest.raises(IosError, match="failed to invoke"):
        result_from_logs(log("app_failed_invoke.log"), IPHONE, request("cpu"))


def test_metal_that_fails_to_prepare_fails_the_run():
    p = parse_benchmark_log(log("app_gpu_prepare_failed.log"))
    assert not p["ok"] and p["delegates"]["gpu"] == "failed"
    with pytest.raises(IosError, match="failed to prepare"):
        result_from_logs(log("app_gpu_prepare_failed.log"), IPHONE, request("gpu"))


def test_truncated_log_is_a_failure():
    text = "\n".join(log("app_cpu_float_timing.log").splitlines()[:22])
    p = parse_benchmark_log(text)
    assert not p["ok"] and "Inference timings" in p["error"]


# ---------------------------------------------------------------- public logs of other builds and platforms
def test_public_log_with_op_profiling_and_scientific_notation():
    p = parse_benchmark_log(log("public_mobilenet_v1_op_profiling.log"))
    assert p["ok"] and (p["count"], p["warmup_count"]) == (50, 1)
    assert p["mean_ms"] == pytest.approx(2950.34) and p["warmup_mean_ms"] == pytest.approx(3512.39)
    assert p["std_ms"] == pytest.approx(109.798) and p["min_ms"] == pytest.approx(2727.568)
    assert p["memory_init_mb"] == pytest.approx(4.21094) and p["memory_overall_mb"] == pytest.approx(46.0859)


def test_public_log_with_percentiles_and_a_single_warm_up():
    p = parse_benchmark_log(log("public_percentiles_count1.log"))
    assert p["ok"] and (p["count"], p["warmup_count"]) == (50, 1)
    assert p["p50_ms"] == pytest.approx(1239.807) and p["p90_ms"] is None  # no samples: the tool's median only
    assert p["first_ms"] == pytest.approx(1357.602)


def test_pre_1_14_average_timings_line():
    p = parse_benchmark_log(log("public_tf112_average_timings.log"))
    assert p["ok"] and p["mean_ms"] == pytest.approx(137.722) and p["init_ms"] == pytest.approx(4.452)
    assert p["warmup_mean_ms"] == pytest.approx(146.161) and p["first_ms"] is None
    assert (p["count"], p["warmup_count"]) == (50, 1) and p["std_ms"] == pytest.approx(0.896)


def test_other_platform_delegates_parse_instead_of_failing():
    p = parse_benchmark_log(log("android_gpu_and_nnapi.log"))
    assert p["ok"] and p["delegates"] == {"gpu": "complete", "nnapi": "none"}
    assert p["delegated_nodes"] == {"gpu": [49, 49]}
    assert p["memory_peak_mb"] == pytest.approx(140.211)


def test_android_gpu_partial_split():
    p = parse_benchmark_log(log("android_gpu_unsupported_ops_partial.log"))
    assert p["ok"] and p["delegates"] == {"gpu": "partial"} and p["delegated_nodes"] == {"gpu": [176, 180]}
    assert delegate_applied(p, "gpu") == "partial"


def test_console_that_echoes_every_line_twice():
    p = parse_benchmark_log(log("android_stdout_and_logcat.log"))
    assert p["ok"] and (p["count"], p["warmup_count"]) == (50, 2)
    assert p == parse_benchmark_log(log("android_gpu_and_nnapi.log"))


@pytest.mark.parametrize("name, expected", [
    ("GPU", "gpu"), ("Metal", "gpu"), ("TfLiteMetalDelegate", "gpu"), ("TfLiteGpuDelegateV2", "gpu"),
    ("COREML", "coreml"), ("CoreML", "coreml"), ("Core ML", "coreml"), ("TfLiteCoreMlDelegate", "coreml"),
    ("XNNPACK", "cpu"), ("TfLiteXNNPackDelegate", "cpu"), ("NNAPI", "nnapi"), ("Hexagon", "hexagon"),
])
def test_delegate_names(name, expected):
    from runner.ios import normalize_delegate
    assert normalize_delegate(name) == expected


def test_every_fixture_is_described_in_the_readme():
    readme = (LOGS / "README.md").read_text()
    for f in LOGS.glob("*.log"):
        assert f"`{f.name}`" in readme, f"{f.name} has no source in tests/data/ios_logs/README.md"
