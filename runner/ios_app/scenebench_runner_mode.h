// scenebench: the platform-independent part of the runner-ready TFLiteBenchmark app.
//
// Plain C++17 and POSIX, no Objective-C, so that tests/test_ios_app.py can compile and run it
// on Linux. BenchmarkViewController.mm (next to this file) reads the JSON with Foundation and
// hands the key/value strings to BuildBenchmarkArgs().
//
// The names here must agree with runner/ios.py (DATA_DIR, MODEL_NAME, PARAMS_NAME, END_MARKER);
// tests/test_ios_app.py checks that they do.
#ifndef SCENEBENCH_RUNNER_MODE_H_
#define SCENEBENCH_RUNNER_MODE_H_

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace scenebench_ios {

// The runner copies its files to <data container>/Documents/benchmark_data/ with
// `devicectl device copy to --domain-type appDataContainer --destination Documents/benchmark_data/...`.
// In the app, <data container>/Documents is NSDocumentDirectory.
constexpr const char* kDataSubdir = "benchmark_data";
constexpr const char* kParamsName = "benchmark_params.json";
// After reading it, the app renames the params file, so that opening the app by hand later does
// not silently repeat the last job. The runner copies a fresh one before every launch.
constexpr const char* kUsedParamsName = "benchmark_params.json.used";
// First and last lines the app prints. The runner treats a console log without the end line as a
// run that did not finish (crash, watchdog kill, TFLITE_LOG(FATAL) -> abort()).
constexpr const char* kStartMarker = "scenebench-benchmark-start";
constexpr const char* kEndMarker = "scenebench-benchmark-end";
// Lines the runner reads besides benchmark_model's: per-run durations, the phone's state, the
// wait for a cool phone (runner/ios_log.py parses them).
constexpr const char* kSamplesMarker = "scenebench-samples";
constexpr const char* kStateMarker = "scenebench-phone-state";
constexpr const char* kThermalWaitMarker = "scenebench-thermal-wait";
// benchmark_params.json keys with this prefix are for the app; they are not benchmark_model flags.
constexpr const char* kAppParamPrefix = "scenebench_";
// Durations per sample line: keeps each console line a few hundred bytes long.
constexpr size_t kSamplesPerLine = 25;

using Params = std::vector<std::pair<std::string, std::string>>;

inline bool IsRegularFile(const std::string& path) {
  struct stat st;
  return !path.empty() && stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

inline std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

// Where to read benchmark_params.json from: the runner's data directory first, then the bundle
// (the stock app's behaviour). Empty when neither has one.
inline std::string FindParamsFile(const std::string& data_dir, const std::string& bundle_dir) {
  for (const std::string& dir : {data_dir, bundle_dir}) {
    const std::string path = JoinPath(dir, kParamsName);
    if (IsRegularFile(path)) return path;
  }
  return "";
}

// The value of --graph: an absolute path is used as it is; a bare name is looked up in the data
// directory first and then in the bundle. Empty when the file is in neither.
inline std::string ResolveGraph(const std::string& value, const std::string& data_dir,
                                const std::string& bundle_dir) {
  if (!value.empty() && value.front() == '/') return IsRegularFile(value) ? value : "";
  for (const std::string& dir : {data_dir, bundle_dir}) {
    const std::string path = JoinPath(dir, value);
    if (IsRegularFile(path)) return path;
  }
  return "";
}

struct BenchmarkArgs {
  std::vector<std::string> argv;  // argv[0] is the program name, then --key=value
  std::string graph;              // the resolved model path
  std::string error;              // non-empty: do not run
};

// benchmark_model's command line from the params: each key becomes --key=value, in the order
// given, with `graph` resolved to a file path.
inline BenchmarkArgs BuildBenchmarkArgs(const Params& params, const std::string& data_dir,
                                        const std::string& bundle_dir) {
  BenchmarkArgs out;
  out.argv.push_back("benchmark_tflite_model");
  bool has_graph = false;
  for (const auto& kv : params) {
    const std::string& key = kv.first;
    std::string value = kv.second;
    if (key.empty() || key.find('=') != std::string::npos || key.rfind("-", 0) == 0) {
      out.error = "bad parameter name '" + key + "'";
      return out;
    }
    if (key.rfind(kAppParamPrefix, 0) == 0) continue;  // the app's own setting, not a flag
    if (key == "graph") {
      has_graph = true;
      value = ResolveGraph(kv.second, data_dir, bundle_dir);
      if (value.empty()) {
        out.error = "model '" + kv.second + "' not found in " + data_dir + " or in the app bundle";
        return out;
      }
      out.graph = value;
    }
    out.argv.push_back("--" + key + "=" + value);
  }
  if (!has_graph) out.error = "the params have no 'graph' entry";
  return out;
}

// The value of an app setting (scenebench_<name>) in seconds; `fallback` when absent or not a number.
inline double AppParamSeconds(const Params& params, const std::string& name, double fallback) {
  const std::string key = std::string(kAppParamPrefix) + name;
  for (const auto& kv : params) {
    if (kv.first != key) continue;
    char* end = nullptr;
    const double v = std::strtod(kv.second.c_str(), &end);
    if (end != kv.second.c_str() && *end == '\0' && v >= 0) return v;
  }
  return fallback;
}

// The runner finds the app's process id here if devicectl's launch record is not available, and
// the TensorFlow tag and build id that build.sh stamped into Info.plist. Paths go last: they are
// read to the end of the line.
inline std::string StartLine(long pid, const std::string& tf_tag, const std::string& build_id,
                             const std::string& params_path, const std::string& graph) {
  return std::string(kStartMarker) + " pid=" + std::to_string(pid) +
         " tf_tag=" + (tf_tag.empty() ? "unknown" : tf_tag) +
         " build_id=" + (build_id.empty() ? "unknown" : build_id) + " params=" + params_path +
         " graph=" + graph;
}

inline int64_t SteadyMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Durations of single runs, fed by the benchmark C API's on_single_run_start/on_single_run_end
// callbacks, which benchmark_model calls right around each inference.
class SampleRecorder {
 public:
  void Start(bool regular, int64_t now_us) {
    regular_ = regular;
    start_us_ = now_us;
  }
  void End(int64_t now_us) {
    if (start_us_ < 0) return;  // an end without a start is not a run
    (regular_ ? regular_us_ : warmup_us_).push_back(now_us - start_us_);
    start_us_ = -1;
  }
  const std::vector<int64_t>& warmup() const { return warmup_us_; }
  const std::vector<int64_t>& regular() const { return regular_us_; }

 private:
  bool regular_ = false;
  int64_t start_us_ = -1;
  std::vector<int64_t> warmup_us_;
  std::vector<int64_t> regular_us_;
};

// "scenebench-samples phase=<warmup|regular> index=<first run> total=<runs> us=<d1>,<d2>,..." in
// chunks; one line with an empty list when there were no runs.
inline std::vector<std::string> SampleLines(const std::string& phase, const std::vector<int64_t>& us) {
  std::vector<std::string> lines;
  for (size_t i = 0; i == 0 || i < us.size(); i += kSamplesPerLine) {
    std::string line = std::string(kSamplesMarker) + " phase=" + phase + " index=" + std::to_string(i) +
                       " total=" + std::to_string(us.size()) + " us=";
    for (size_t j = i; j < us.size() && j < i + kSamplesPerLine; ++j) {
      if (j > i) line += ",";
      line += std::to_string(us[j]);
    }
    lines.push_back(line);
  }
  return lines;
}

// NSProcessInfoThermalState (0 nominal .. 3 critical) and UIDeviceBatteryState (0 unknown,
// 1 unplugged, 2 charging, 3 full) as the words the runner records.
inline const char* ThermalName(int state) {
  switch (state) {
    case 0: return "nominal";
    case 1: return "fair";
    case 2: return "serious";
    case 3: return "critical";
    default: return "unknown";
  }
}

inline const char* BatteryStateName(int state) {
  switch (state) {
    case 1: return "unplugged";
    case 2: return "charging";
    case 3: return "full";
    default: return "unknown";
  }
}

// battery_level is UIDevice's 0..1, or -1 when iOS does not know it.
inline std::string StateLine(const std::string& when, int thermal, bool low_power, float battery_level,
                             int battery_state) {
  char level[16];
  std::snprintf(level, sizeof(level), "%.2f", battery_level < 0 ? -1.0f : battery_level);
  return std::string(kStateMarker) + " when=" + when + " thermal=" + ThermalName(thermal) +
         " low_power=" + (low_power ? "1" : "0") + " battery_level=" + level +
         " battery_state=" + BatteryStateName(battery_state);
}

inline std::string ThermalWaitLine(int start, int end, double waited_s, double limit_s) {
  char numbers[64];
  std::snprintf(numbers, sizeof(numbers), " waited_s=%.1f limit_s=%.0f", waited_s, limit_s);
  return std::string(kThermalWaitMarker) + " start=" + ThermalName(start) + " end=" + ThermalName(end) +
         numbers;
}

// status 0: benchmark_model returned kTfLiteOk and reported its results; anything else failed.
inline std::string EndLine(int status, const std::string& reason) {
  std::string line = std::string(kEndMarker) + " status=" + std::to_string(status);
  if (!reason.empty()) line += " reason=" + reason;
  return line;
}

}  // namespace scenebench_ios

#endif  // SCENEBENCH_RUNNER_MODE_H_
