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
//  * Per-run durations. benchmark_model's log has only count/mean/std/min/max; the app times every
//    run through the C API's on_single_run_start/on_single_run_end callbacks and prints the
//    durations as scenebench-samples lines after the run (printing during the run would disturb it).
//  * The phone's state: before the run it waits (up to the runner's scenebench_thermal_wait_s) for
//    ProcessInfo.thermalState to be nominal, and it prints the thermal state, Low Power Mode and the
//    battery level and state before and after the run.
//  * Provenance: its pid, and the TensorFlow tag and build id build.sh stamped into Info.plist,
//    on the start line.
//
// Console output: `devicectl … --console` connects the app's stdout and stderr, not os_log.
// benchmark_model's TFLITE_LOG writes INFO/WARN to stdout and ERROR/FATAL to stderr, and TFLite's
// minimal logger writes to syslog and stderr, so everything the runner parses reaches the console.
// Our own lines go to stderr, which is unbuffered.

#import "BenchmarkViewController.h"

#include <unistd.h>

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
  scenebench_ios::SampleRecorder samples;
};

void OnSingleRunStart(void* user_data, TfLiteBenchmarkRunType run_type) {
  static_cast<Listener*>(user_data)->samples.Start(run_type == TfLiteBenchmarkRegular,
                                                   scenebench_ios::SteadyMicros());
}

void OnSingleRunEnd(void* user_data) {
  static_cast<Listener*>(user_data)->samples.End(scenebench_ios::SteadyMicros());
}

std::string InfoString(NSString* key) {
  id value = [[NSBundle mainBundle] objectForInfoDictionaryKey:key];
  return [value isKindOfClass:[NSString class]] ? ToStd(value) : std::string();
}

// ProcessInfo and UIDevice, read on the main thread (UIKit's rule); the benchmark thread waits.
void PrintDeviceState(const char* when) {
  __block int thermal = 0;
  __block bool low_power = false;
  __block float level = -1;
  __block int battery = 0;
  dispatch_sync(dispatch_get_main_queue(), ^{
    NSProcessInfo* info = [NSProcessInfo processInfo];
    thermal = static_cast<int>(info.thermalState);
    low_power = info.isLowPowerModeEnabled;
    UIDevice* device = [UIDevice currentDevice];
    device.batteryMonitoringEnabled = YES;
    level = device.batteryLevel;
    battery = static_cast<int>(device.batteryState);
  });
  PrintLine(scenebench_ios::StateLine(when, thermal, low_power, level, battery));
}

// Wait until the phone is no longer warm, up to limit_s: a run that starts hot is throttled.
void WaitForNominalThermalState(double limit_s) {
  const int start = static_cast<int>([NSProcessInfo processInfo].thermalState);
  const int64_t t0 = scenebench_ios::SteadyMicros();
  int state = start;
  while (state != static_cast<int>(NSProcessInfoThermalStateNominal) &&
         (scenebench_ios::SteadyMicros() - t0) / 1e6 < limit_s) {
    [NSThread sleepForTimeInterval:1.0];
    state = static_cast<int>([NSProcessInfo processInfo].thermalState);
  }
  PrintLine(scenebench_ios::ThermalWaitLine(start, state, (scenebench_ios::SteadyMicros() - t0) / 1e6,
                                            limit_s));
}

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
  PrintLine(scenebench_ios::StartLine(static_cast<long>(getpid()), InfoString(@"SCENEBENCHTensorFlowTag"),
                                      InfoString(@"SCENEBENCHBuildID"), params_path, args.graph));
  WaitForNominalThermalState(scenebench_ios::AppParamSeconds(params, "thermal_wait_s", 0));
  PrintDeviceState("before");

  std::vector<char*> argv;
  for (std::string& arg : args.argv) argv.push_back(&arg[0]);
  Listener listener;
  TfLiteBenchmarkTfLiteModel* benchmark = TfLiteBenchmarkTfLiteModelCreate();
  TfLiteBenchmarkListener* callbacks = TfLiteBenchmarkListenerCreate();
  TfLiteBenchmarkListenerSetCallbacks(callbacks, &listener, nullptr, OnSingleRunStart, OnSingleRunEnd,
                                      OnBenchmarkEnd);
  TfLiteBenchmarkTfLiteModelAddListener(benchmark, callbacks);
  const TfLiteStatus rc =
      TfLiteBenchmarkTfLiteModelRunWithArgs(benchmark, static_cast<int>(argv.size()), argv.data());
  TfLiteBenchmarkTfLiteModelDelete(benchmark);
  TfLiteBenchmarkListenerDelete(callbacks);
  for (const char* phase : {"warmup", "regular"}) {
    const bool regular = std::string(phase) == "regular";
    for (const std::string& line :
         scenebench_ios::SampleLines(phase, regular ? listener.samples.regular() : listener.samples.warmup())) {
      PrintLine(line);
    }
  }
  PrintDeviceState("after");

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
