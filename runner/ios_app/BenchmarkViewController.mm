// scenebench: a replacement for BenchmarkViewController.mm of TensorFlow Lite's iOS benchmark app
// (tensorflow/lite/tools/benchmark/ios/TFLiteBenchmark/TFLiteBenchmark/, Apache-2.0). build.sh
// copies it, with scenebench_runner_mode.h, over the upstream file before building. It uses only
// the benchmark C API that TensorFlowLiteBenchmarkC.framework exports
// (tensorflow/lite/tools/benchmark/experimental/c/benchmark_c_api.h), and keeps the upstream
// storyboard's connections: the `resultsView` outlet and the `onBenchmarkModel:` action.
//
// What it adds to the stock app (see runner/ios_app/README.md):
//  * Runner mode. When Documents/benchmark_data/benchmark_params.json exists in the app's data
//    container, the app runs the benchmark as soon as its view loads, with no tap, prints an end
//    line, and exits, so that `devicectl device process launch --console` returns. The params
//    file is renamed to benchmark_params.json.used when read.
//  * Both modes look for benchmark_params.json, and for the model its `graph` entry names, in
//    Documents/benchmark_data/ first and in the app bundle second (the stock behaviour).
//  * The benchmark runs on its own thread at user-interactive QoS instead of blocking the main
//    thread, so that iOS's launch watchdog does not kill a long run.
//
// Console output: `devicectl … --console` connects the app's stdout and stderr, not os_log.
// benchmark_model's TFLITE_LOG writes INFO/WARN to stdout and ERROR/FATAL to stderr, and TFLite's
// minimal logger writes to syslog and stderr, so everything the runner parses reaches the console.
// Our own lines go to stderr, which is unbuffered.

#import "BenchmarkViewController.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#import <TensorFlowLiteBenchmarkC/TensorFlowLiteBenchmarkC.h>

#include "scenebench_runner_mode.h"

namespace {

using scenebench_ios::BenchmarkArgs;
using scenebench_ios::Params;

void PrintLine(const std::string& line) {
  std::cout.flush();
  fflush(stdout);
  fprintf(stderr, "%s\n", line.c_str());
  fflush(stderr);
}

std::string ToStd(NSString* s) { return s ? std::string([s UTF8String]) : std::string(); }

NSString* DataDir() {
  NSString* docs =
      NSSearchPathForDirectoriesInDomains(NSDocumentDirectory, NSUserDomainMask, YES).firstObject;
  return [docs stringByAppendingPathComponent:@(scenebench_ios::kDataSubdir)];
}

// benchmark_params.json -> (key, value) strings, keys sorted. Values must be strings (what the
// runner writes); numbers and booleans are accepted and spelled the way benchmark_model parses them.
bool ReadParams(const std::string& path, Params* params, std::string* error) {
  NSData* data = [NSData dataWithContentsOfFile:@(path.c_str())];
  if (data == nil) {
    *error = "cannot read " + path;
    return false;
  }
  NSError* json_error = nil;
  id doc = [NSJSONSerialization JSONObjectWithData:data options:0 error:&json_error];
  if (![doc isKindOfClass:[NSDictionary class]]) {
    *error = path + " is not a JSON object: " + ToStd(json_error.localizedDescription);
    return false;
  }
  NSDictionary* dict = doc;
  for (NSString* key in [dict.allKeys sortedArrayUsingSelector:@selector(compare:)]) {
    id value = dict[key];
    std::string text;
    if ([value isKindOfClass:[NSString class]]) {
      text = ToStd(value);
    } else if ([value isKindOfClass:[NSNumber class]]) {
      if (CFGetTypeID((__bridge CFTypeRef)value) == CFBooleanGetTypeID()) {
        text = [value boolValue] ? "true" : "false";
      } else {
        text = ToStd([value stringValue]);
      }
    } else {
      *error = "parameter '" + ToStd(key) + "' is neither a string, a number nor a boolean";
      return false;
    }
    params->emplace_back(ToStd(key), text);
  }
  return true;
}

struct Outcome {
  int status = 1;
  std::string summary;
};

struct Listener {
  bool finished = false;
  std::string summary;
};

void AppendStat(std::ostringstream* out, const char* name, const TfLiteBenchmarkInt64Stat& s) {
  *out << name << ": runs=" << s.count << " avg=" << s.avg / 1e3 << " ms min=" << s.min / 1e3
       << " ms max=" << s.max / 1e3 << " ms std=" << s.std_deviation / 1e3 << " ms\n";
}

void OnBenchmarkEnd(void* user_data, TfLiteBenchmarkResults* results) {
  auto* listener = static_cast<Listener*>(user_data);
  std::ostringstream out;
  out << "Init: " << TfLiteBenchmarkResultsGetStartupLatencyMicroseconds(results) / 1e3 << " ms\n";
  AppendStat(&out, "Warm-up", TfLiteBenchmarkResultsGetWarmupTimeMicroseconds(results));
  AppendStat(&out, "Inference", TfLiteBenchmarkResultsGetInferenceTimeMicroseconds(results));
  listener->summary = out.str();
  listener->finished = true;
}

Outcome Finish(int status, const std::string& reason, const std::string& summary) {
  PrintLine(scenebench_ios::EndLine(status, reason));
  Outcome outcome;
  outcome.status = status;
  outcome.summary = status == 0 ? summary : "Failed: " + reason + "\n" + summary;
  return outcome;
}

// One benchmark_model run with the params found on disk. Prints the start and end lines.
Outcome RunBenchmarkOnce(bool runner_mode) {
  const std::string data_dir = ToStd(DataDir());
  const std::string bundle_dir = ToStd([[NSBundle mainBundle] resourcePath]);
  const std::string params_path = scenebench_ios::FindParamsFile(data_dir, bundle_dir);
  if (params_path.empty()) {
    return Finish(1, "no benchmark_params.json in " + data_dir + " or in the app bundle", "");
  }
  Params params;
  std::string error;
  if (!ReadParams(params_path, &params, &error)) return Finish(1, error, "");
  if (runner_mode && params_path.rfind(data_dir, 0) == 0) {
    const std::string used = scenebench_ios::JoinPath(data_dir, scenebench_ios::kUsedParamsName);
    std::remove(used.c_str());
    std::rename(params_path.c_str(), used.c_str());
  }
  BenchmarkArgs args = scenebench_ios::BuildBenchmarkArgs(params, data_dir, bundle_dir);
  if (!args.error.empty()) return Finish(1, args.error, "");
  PrintLine(scenebench_ios::StartLine(params_path, args.graph));

  std::vector<char*> argv;
  for (std::string& arg : args.argv) argv.push_back(&arg[0]);
  Listener listener;
  TfLiteBenchmarkTfLiteModel* benchmark = TfLiteBenchmarkTfLiteModelCreate();
  TfLiteBenchmarkListener* callbacks = TfLiteBenchmarkListenerCreate();
  TfLiteBenchmarkListenerSetCallbacks(callbacks, &listener, nullptr, nullptr, nullptr,
                                      OnBenchmarkEnd);
  TfLiteBenchmarkTfLiteModelAddListener(benchmark, callbacks);
  const TfLiteStatus rc =
      TfLiteBenchmarkTfLiteModelRunWithArgs(benchmark, static_cast<int>(argv.size()), argv.data());
  TfLiteBenchmarkTfLiteModelDelete(benchmark);
  TfLiteBenchmarkListenerDelete(callbacks);

  if (rc != kTfLiteOk) {
    return Finish(1, "benchmark_model returned an error (see the lines above)", listener.summary);
  }
  if (!listener.finished) return Finish(1, "benchmark_model reported no results", "");
  return Finish(0, "", listener.summary);
}

}  // namespace

@interface BenchmarkViewController ()
@property(nonatomic) BOOL running;
@end

@implementation BenchmarkViewController

- (void)viewDidLoad {
  [super viewDidLoad];
  static dispatch_once_t once;
  dispatch_once(&once, ^{
    // Line-buffer stdout, where TFLITE_LOG(INFO) goes, in case the console is a pipe.
    setvbuf(stdout, nullptr, _IOLBF, 0);
  });
  NSString* runnerParams =
      [DataDir() stringByAppendingPathComponent:@(scenebench_ios::kParamsName)];
  if ([[NSFileManager defaultManager] fileExistsAtPath:runnerParams]) {
    [self startBenchmarkAndExit:YES];
  }
}

- (IBAction)onBenchmarkModel:(UIButton*)sender {
  [self startBenchmarkAndExit:NO];
}

- (void)startBenchmarkAndExit:(BOOL)exitWhenDone {
  if (self.running) return;
  self.running = YES;
  [_resultsView setText:exitWhenDone ? @"Running the benchmark from Documents/benchmark_data…"
                                     : @"Running the benchmark…"];
  // A phone that locks its screen suspends the app mid-run.
  [UIApplication sharedApplication].idleTimerDisabled = YES;
  __weak BenchmarkViewController* weakSelf = self;
  NSThread* thread = [[NSThread alloc] initWithBlock:^{
    Outcome outcome = RunBenchmarkOnce(exitWhenDone);
    dispatch_async(dispatch_get_main_queue(), ^{
      if (exitWhenDone) {
        std::cout.flush();
        fflush(nullptr);
        exit(outcome.status);
      }
      [UIApplication sharedApplication].idleTimerDisabled = NO;
      BenchmarkViewController* strongSelf = weakSelf;
      if (strongSelf == nil) return;
      strongSelf.running = NO;
      [strongSelf.resultsView setText:@(outcome.summary.c_str())];
    });
  }];
  // The stock app ran on the main thread (user-interactive QoS); keep that class so that the
  // benchmark and the threads it starts are scheduled the same way, and give it a main-sized stack.
  thread.qualityOfService = NSQualityOfServiceUserInteractive;
  thread.stackSize = 8 << 20;
  [thread start];
}

@end
