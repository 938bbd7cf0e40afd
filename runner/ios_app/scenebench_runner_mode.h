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

inline std::string StartLine(const std::string& params_path, const std::string& graph) {
  return std::string(kStartMarker) + " params=" + params_path + " graph=" + graph;
}

// status 0: benchmark_model returned kTfLiteOk and reported its results; anything else failed.
inline std::string EndLine(int status, const std::string& reason) {
  std::string line = std::string(kEndMarker) + " status=" + std::to_string(status);
  if (!reason.empty()) line += " reason=" + reason;
  return line;
}

}  // namespace scenebench_ios

#endif  // SCENEBENCH_RUNNER_MODE_H_
