"""runner/ios_app (the runner-ready TFLiteBenchmark app) against runner/ios.py and TensorFlow's sources.

No Mac here: the Objective-C++ file is checked by reading it, the platform-independent part
(scenebench_runner_mode.h) is compiled and run with the host's C++ compiler, and the names
taken from TensorFlow are in tests/data/ios_app/upstream.json. With SCENEBENCH_TF_SRC pointing
at a TensorFlow checkout, the last tests check those names against the real files too.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from runner import ios
from runner.api import JobRequest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "runner" / "ios_app"
MM = (APP / "BenchmarkViewController.mm").read_text()
HEADER = (APP / "scenebench_runner_mode.h").read_text()
UPSTREAM = json.loads((Path(__file__).parent / "data" / "ios_app" / "upstream.json").read_text())
FLAGS = {f for names in UPSTREAM["benchmark_model_flags"].values() for f in names}
BOOL_FLAGS = set(UPSTREAM["flag_types"]["bool"])
INT_FLAGS = set(UPSTREAM["flag_types"]["int"])
FLOAT_FLAGS = set(UPSTREAM["flag_types"]["float"])


def header_constant(name: str) -> str:
    m = re.search(rf'constexpr const char\* {name} = "([^"]*)";', HEADER)
    assert m, f"{name} is not defined in scenebench_runner_mode.h"
    return m.group(1)


def _request(delegate: str) -> JobRequest:
    return JobRequest(model_url="file:///m.tflite", model_sha256="0" * 64, device="ios-x", delegate=delegate,
                      num_threads=4, warmup_runs=3, num_runs=30)


# ---------------------------------------------------------------- runner <-> app agreement
@pytest.mark.parametrize("memory_pass", [False, True])
@pytest.mark.parametrize("delegate", ["cpu", "gpu", "coreml"])
def test_params_are_flags_benchmark_model_accepts(delegate, memory_pass):
    params = ios.benchmark_params(_request(delegate), max_secs=1800, memory_pass=memory_pass, thermal_wait_s=300)
    app_keys = {k for k in params if k.startswith(ios.APP_PARAM_PREFIX)}
    assert app_keys == {"scenebench_thermal_wait_s"}  # read by the app, never passed to benchmark_model
    assert header_constant("kAppParamPrefix") == ios.APP_PARAM_PREFIX
    params = {k: v for k, v in params.items() if k not in app_keys}
    unknown = set(params) - FLAGS
    assert not unknown, f"benchmark_model would ignore {unknown} (it only warns about unknown flags)"
    for key, value in params.items():
        assert isinstance(value, str), key  # the app passes each as --key=value
        if key in BOOL_FLAGS:
            assert value in ("true", "false"), (key, value)
        elif key in INT_FLAGS:
            assert re.fullmatch(r"-?\d+", value), (key, value)
        elif key in FLOAT_FLAGS:
            float(value)
    if "gpu_wait_type" in params:
        assert params["gpu_wait_type"] in UPSTREAM["gpu_wait_type_values"]
    assert params["graph"] == ios.MODEL_NAME


def test_runner_copies_to_where_the_app_reads():
    assert ios.DATA_DIR == "Documents/" + header_constant("kDataSubdir")
    assert ios.PARAMS_NAME == header_constant("kParamsName")
    # The app's Documents is NSDocumentDirectory, i.e. <data container>/Documents, which is what
    # devicectl's --domain-type appDataContainer --destination Documents/... writes to.
    assert "NSDocumentDirectory" in MM and "scenebench_ios::kDataSubdir" in MM


def test_end_and_start_markers_agree():
    assert header_constant("kEndMarker") == ios.END_MARKER
    assert header_constant("kStartMarker") == ios.START_MARKER


def test_app_uses_only_the_upstream_c_api_and_keeps_the_storyboard_connections():
    vc = UPSTREAM["view_controller"]
    used = set(re.findall(r"\bTfLiteBenchmark\w+", MM))
    known = (set(UPSTREAM["benchmark_c_api"]) | set(UPSTREAM["benchmark_c_api_types"])
             | set(UPSTREAM["benchmark_c_api_enumerators"]))
    assert used and used <= known, used - known
    assert f"#import <{vc['framework_header']}>" in MM
    assert f"- (IBAction){vc['action'].rstrip(':')}:" in MM
    assert "_resultsView" in MM and f"@implementation {vc['class']}" in MM
    # Runs by itself, exits when done, and never blocks the main thread with the benchmark.
    assert "viewDidLoad" in MM and "exit(outcome.status)" in MM and "NSThread" in MM
    # Times every run through the C API's single-run callbacks (not nullptr, as the stock app passes).
    assert "TfLiteBenchmarkListenerSetCallbacks(callbacks, &listener, nullptr, OnSingleRunStart, OnSingleRunEnd," in MM
    assert "TfLiteBenchmarkRegular" in MM and "SampleLines(" in MM
    # Reads the phone's state where iOS keeps it.
    for api in ("thermalState", "isLowPowerModeEnabled", "batteryLevel", "batteryState", "batteryMonitoringEnabled",
                "NSProcessInfoThermalStateNominal", "getpid()"):
        assert api in MM, api
    # build.sh checks the framework header for the same functions before building.
    script = (APP / "build.sh").read_text()
    called = {f for f in used if f in UPSTREAM["benchmark_c_api"]}
    for fn in called:
        assert fn in script, f"build.sh does not check that {fn} exists"


def test_build_script_is_valid_bash_and_pinned():
    subprocess.run(["bash", "-n", str(APP / "build.sh")], check=True)
    script = (APP / "build.sh").read_text()
    assert f'TF_TAG="${{TF_TAG:-{UPSTREAM["pinned_tag_in_build_sh"]}}}"' in script
    assert "build_benchmark_framework.sh" in script and "TEAM_ID" in script and "BUNDLE_ID" in script
    # bundle ids are global: the default carries the team id, and the runner reads the id from the app
    assert f'BUNDLE_ID="${{BUNDLE_ID:-{ios.BUNDLE_ID_PREFIX}${{TEAM_ID}}}}"' in script
    for key in (ios.PLIST_TF_TAG, ios.PLIST_BUILD_ID):
        assert f"Add :{key} string" in script and f'@"{key}"' in MM
    assert "-force_load" in script  # delegate providers register from unreferenced static objects


# ---------------------------------------------------------------- the runner's reading of the console
GOOD = """\
INFO: Inference timings in us: Init: 41733, First inference: 118214, Warmup (avg): 91027.4, Inference (avg): 83245.6
INFO: count=5 first=1 curr=1 min=1 max=1 avg=1 std=0
INFO: count=50 first=1 curr=1 min=1 max=1 avg=1 std=0 median=1
"""


def test_console_log_with_end_line_is_accepted():
    ios.check_console_log(GOOD + f"{ios.END_MARKER} status=0\n")
    # devicectl may put a timestamp in front of console lines.
    ios.check_console_log(GOOD + f"2024-06-01 10:00:00.000 TFLiteBenchmark[412:9000] {ios.END_MARKER} status=0\n")


def test_console_log_without_end_line_is_truncated():
    with pytest.raises(ios.IosError, match="did not finish"):
        ios.check_console_log(GOOD)


def test_console_log_with_failed_status():
    with pytest.raises(ios.IosError, match="status 1: model 'model.tflite' not found"):
        ios.check_console_log(f"{ios.END_MARKER} status=1 reason=model 'model.tflite' not found in /x or in the app bundle\n")


def test_ignored_flags_fail_the_run():
    log = "WARN: Unconsumed cmdline flags: --use_gpu=true\n" + GOOD + f"{ios.END_MARKER} status=0\n"
    with pytest.raises(ios.IosError, match="ignored flags.*--use_gpu=true"):
        ios.check_console_log(log)


# ---------------------------------------------------------------- the app's C++ logic, compiled here
DRIVER = r"""
#include <cstdio>
#include <iostream>
#include "scenebench_runner_mode.h"
using namespace scenebench_ios;
int main(int argc, char** argv) {
  std::string data = argv[1], bundle = argv[2];
  std::cout << "params=" << FindParamsFile(data, bundle) << "\n";
  Params p = {{"graph", argv[3]}, {"num_threads", "4"}, {"use_gpu", "true"}};
  BenchmarkArgs a = BuildBenchmarkArgs(p, data, bundle);
  std::cout << "error=" << a.error << "\n" << "graph=" << a.graph << "\n";
  for (const auto& s : a.argv) std::cout << "arg=" << s << "\n";
  BenchmarkArgs bad = BuildBenchmarkArgs({{"num_threads", "4"}}, data, bundle);
  std::cout << "nograph=" << bad.error << "\n";
  std::cout << "end0=" << EndLine(0, "") << "\n" << "end1=" << EndLine(1, "boom") << "\n";
  std::cout << "start=" << StartLine(412, "v2.18.0", "b1", "/p.json", "/m.tflite") << "\n";
  BenchmarkArgs own = BuildBenchmarkArgs({{"graph", argv[3]}, {"scenebench_thermal_wait_s", "300"}}, data, bundle);
  std::cout << "ownargs=" << own.argv.size() << "\n";
  std::cout << "wait=" << AppParamSeconds({{"scenebench_thermal_wait_s", "300"}}, "thermal_wait_s", 0) << "\n";
  std::cout << "waitbad=" << AppParamSeconds({{"scenebench_thermal_wait_s", "soon"}}, "thermal_wait_s", 7) << "\n";
  return 0;
}
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    d = tmp_path_factory.mktemp("app_logic")
    (d / "driver.cc").write_text(DRIVER)
    exe = d / "driver"
    # C++14: the Xcode project compiles with gnu++14.
    subprocess.run([cxx, "-std=c++14", "-Wall", "-Werror", "-I", str(APP), str(d / "driver.cc"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    return exe


def _run(exe, data, bundle, graph):
    out = subprocess.run([str(exe), str(data), str(bundle), graph], check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    return {k: v for k, _, v in (line.partition("=") for line in lines if not line.startswith("arg=")) if k}, \
        [line[4:] for line in lines if line.startswith("arg=")]


def test_app_prefers_the_runner_files_over_the_bundle(driver, tmp_path):
    data, bundle = tmp_path / "Documents" / "benchmark_data", tmp_path / "TFLiteBenchmark.app"
    data.mkdir(parents=True)
    bundle.mkdir()
    for d in (data, bundle):
        (d / ios.PARAMS_NAME).write_text("{}")
        (d / ios.MODEL_NAME).write_bytes(b"m")
    kv, argv = _run(driver, data, bundle, ios.MODEL_NAME)
    assert kv["params"] == str(data / ios.PARAMS_NAME)
    assert kv["error"] == "" and kv["graph"] == str(data / ios.MODEL_NAME)
    assert argv == ["benchmark_tflite_model", f"--graph={data / ios.MODEL_NAME}", "--num_threads=4", "--use_gpu=true"]
    assert kv["nograph"] == "the params have no 'graph' entry"
    assert kv["end0"] == f"{ios.END_MARKER} status=0"
    assert kv["end1"] == f"{ios.END_MARKER} status=1 reason=boom"
    assert kv["start"] == f"{ios.START_MARKER} pid=412 tf_tag=v2.18.0 build_id=b1 params=/p.json graph=/m.tflite"
    assert kv["ownargs"] == "2"  # program name and --graph: the app's own setting is not a flag
    assert (kv["wait"], kv["waitbad"]) == ("300", "7")
    # The runner parses the app's end line the way the app writes it.
    ios.check_console_log(GOOD + kv["end0"] + "\n")
    with pytest.raises(ios.IosError, match="status 1: boom"):
        ios.check_console_log(kv["end1"] + "\n")


def test_app_falls_back_to_the_bundle(driver, tmp_path):
    data, bundle = tmp_path / "Documents" / "benchmark_data", tmp_path / "TFLiteBenchmark.app"
    bundle.mkdir()
    (bundle / ios.PARAMS_NAME).write_text("{}")
    (bundle / "mobilenet.tflite").write_bytes(b"m")
    kv, argv = _run(driver, data, bundle, "mobilenet.tflite")
    assert kv["params"] == str(bundle / ios.PARAMS_NAME)
    assert kv["graph"] == str(bundle / "mobilenet.tflite")
    kv, _ = _run(driver, data, bundle, "missing.tflite")
    assert kv["error"].startswith("model 'missing.tflite' not found")
    kv, _ = _run(driver, tmp_path / "none", tmp_path / "none2", "x.tflite")
    assert kv["params"] == ""


SAMPLES_DRIVER = r"""
#include <iostream>
#include "scenebench_runner_mode.h"
using namespace scenebench_ios;
int main() {
  SampleRecorder r;
  r.End(5);  // an end without a start is not a run
  r.Start(false, 100); r.End(1100);
  for (int i = 0; i < 30; ++i) { r.Start(true, 10000 + i * 1000); r.End(10000 + i * 1000 + 700 + i); }
  std::cout << StartLine(412, "v2.18.0", "b1", "/d/benchmark_params.json", "/d/model.tflite") << "\n";
  std::cout << ThermalWaitLine(2, 0, 41.26, 300) << "\n";
  std::cout << StateLine("before", 0, false, 0.81f, 2) << "\n";
  std::cout << "INFO: Inference timings in us: Init: 41733, First inference: 1000, Warmup (avg): 1000, Inference (avg): 714.5\n";
  for (const auto& l : SampleLines("warmup", r.warmup())) std::cout << l << "\n";
  for (const auto& l : SampleLines("regular", r.regular())) std::cout << l << "\n";
  std::cout << StateLine("after", 2, true, -1.0f, 0) << "\n";
  std::cout << EndLine(0, "") << "\n";
  return 0;
}
"""


def test_the_runner_reads_the_lines_the_app_writes(tmp_path):
    """Samples, phone state and the thermal wait, printed by the compiled header and read by runner/ios_log.py."""
    from runner.ios_log import parse_benchmark_log

    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    (tmp_path / "s.cc").write_text(SAMPLES_DRIVER)
    subprocess.run([cxx, "-std=c++14", "-Wall", "-Werror", "-I", str(APP), str(tmp_path / "s.cc"), "-o",
                    str(tmp_path / "s")], check=True, capture_output=True, text=True)
    out = subprocess.run([str(tmp_path / "s")], check=True, capture_output=True, text=True).stdout
    assert out.count("scenebench-samples phase=regular") == 2  # 30 runs, 25 a line
    p = parse_benchmark_log(out)
    assert p["samples_ms"] == [(700 + i) / 1000 for i in range(30)] and p["warmup_samples_ms"] == [1.0]
    assert p["app"]["pid"] == "412" and p["app"]["graph"] == "/d/model.tflite"
    assert p["thermal_wait"] == {"start": "serious", "end": "nominal", "waited_s": 41.3, "limit_s": 300.0}
    assert p["state_before"] == {"thermal": "nominal", "low_power_mode": False, "battery_level": 0.81,
                                 "battery_state": "charging"}
    assert p["state_after"] == {"thermal": "serious", "low_power_mode": True, "battery_level": None,
                                "battery_state": "unknown"}
    ios.check_console_log(out)


# ---------------------------------------------------------------- against a TensorFlow checkout (optional)
TF_SRC = os.environ.get("SCENEBENCH_TF_SRC")
needs_tf = pytest.mark.skipif(not TF_SRC, reason="set SCENEBENCH_TF_SRC to a TensorFlow checkout to check it")


@needs_tf
def test_checkout_declares_the_c_api_the_app_calls():
    header = (Path(TF_SRC) / "tensorflow/lite/tools/benchmark/experimental/c/benchmark_c_api.h").read_text()
    for fn in set(re.findall(r"\bTfLiteBenchmark\w+", MM)):
        assert re.search(rf"\b{fn}\b", header), fn


@needs_tf
def test_checkout_defines_the_flags_the_runner_writes():
    src = Path(TF_SRC) / "tensorflow/lite"
    text = "".join((src / p).read_text() for p in (
        "tools/benchmark/benchmark_model.cc", "tools/benchmark/benchmark_tflite_model.cc",
        "tools/delegates/gpu_delegate_provider.cc", "tools/delegates/coreml_delegate_provider.cc"))
    for delegate in ("cpu", "gpu", "coreml"):
        for key in ios.benchmark_params(_request(delegate), max_secs=60):
            if not key.startswith(ios.APP_PARAM_PREFIX):
                assert f'"{key}"' in text, key


@needs_tf
def test_checkout_storyboard_and_header_match():
    app = Path(TF_SRC) / "tensorflow/lite/tools/benchmark/ios/TFLiteBenchmark/TFLiteBenchmark"
    assert 'selector="onBenchmarkModel:"' in (app / "Base.lproj/Main.storyboard").read_text()
    assert "resultsView" in (app / "BenchmarkViewController.h").read_text()
