#!/usr/bin/env bash
# Build the runner-ready TFLiteBenchmark.app for the `ios` backend (RUNNER.md, runner/ios_app/README.md).
#
#   TEAM_ID=ABCDE12345 runner/ios_app/build.sh
#
# Settings (environment variables):
#   TEAM_ID     required: your Apple development team id (security find-identity -v -p codesigning)
#   BUNDLE_ID   bundle id to sign with; default org.scenebench.tflitebenchmark.$TEAM_ID. Bundle ids are
#               global: one taken by another team cannot be signed, so the default carries yours.
#               The runner reads the id from the app it is given (--ios-app).
#   TF_TAG      TensorFlow tag to build from; default v2.18.0
#   TF_DIR      where the TensorFlow checkout lives; default ~/scenebench-runner/tensorflow-$TF_TAG
#   OUT         where to put the signed app; default ~/scenebench-runner/TFLiteBenchmark.app
#   SKIP_FRAMEWORK=1  reuse a framework built earlier in TF_DIR (the Bazel step takes a long time)
#
# Runs on a Mac with Xcode 16 or newer and Bazelisk (`brew install bazelisk`, which installs it
# as `bazel` and picks the Bazel version TensorFlow pins in .bazelversion).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TF_TAG="${TF_TAG:-v2.18.0}"
TF_DIR="${TF_DIR:-$HOME/scenebench-runner/tensorflow-$TF_TAG}"
OUT="${OUT:-$HOME/scenebench-runner/TFLiteBenchmark.app}"
: "${TEAM_ID:?set TEAM_ID to your Apple development team id}"
BUNDLE_ID="${BUNDLE_ID:-org.scenebench.tflitebenchmark.${TEAM_ID}}"
# Stamped into Info.plist; the app prints both on its start line and the runner records them.
BUILD_ID="$(date -u +%Y%m%dT%H%M%SZ)-$(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo nogit)"

IOS_DIR="tensorflow/lite/tools/benchmark/ios"
APP_SRC="$IOS_DIR/TFLiteBenchmark/TFLiteBenchmark"
FRAMEWORK="$APP_SRC/Frameworks/TensorFlowLiteBenchmarkC.framework"
# The benchmark C API functions BenchmarkViewController.mm calls.
C_API=(TfLiteBenchmarkTfLiteModelCreate TfLiteBenchmarkTfLiteModelDelete
       TfLiteBenchmarkTfLiteModelRunWithArgs TfLiteBenchmarkTfLiteModelAddListener
       TfLiteBenchmarkListenerCreate TfLiteBenchmarkListenerDelete TfLiteBenchmarkListenerSetCallbacks
       TfLiteBenchmarkResultsGetInferenceTimeMicroseconds TfLiteBenchmarkResultsGetWarmupTimeMicroseconds
       TfLiteBenchmarkResultsGetStartupLatencyMicroseconds)

die() { echo "build.sh: $*" >&2; exit 1; }
for tool in git bazel xcodebuild lipo python3; do
  command -v "$tool" >/dev/null || die "$tool not found (Xcode 16+, and 'brew install bazelisk' for bazel)"
done
case "$TF_DIR$OUT" in *" "*) die "TF_DIR and OUT must not contain spaces (they go into linker flags)";; esac

# 1. TensorFlow at a pinned tag.
if [ ! -d "$TF_DIR/.git" ]; then
  git clone --depth 1 --branch "$TF_TAG" https://github.com/tensorflow/tensorflow "$TF_DIR"
fi
cd "$TF_DIR"
have_tag="$(git describe --tags --exact-match 2>/dev/null || true)"
[ "$have_tag" = "$TF_TAG" ] || echo "build.sh: warning: $TF_DIR is at '${have_tag:-an untagged commit}', not $TF_TAG" >&2
for f in "$APP_SRC/BenchmarkViewController.mm" "$APP_SRC/BenchmarkViewController.h" \
         "$APP_SRC/Base.lproj/Main.storyboard" "$APP_SRC/Info.plist" \
         "$IOS_DIR/TFLiteBenchmark/TFLiteBenchmark.xcodeproj/project.pbxproj" \
         "$IOS_DIR/build_benchmark_framework.sh"; do
  [ -f "$f" ] || die "$f is missing at $TF_TAG: the iOS benchmark app moved or changed"
done
grep -q 'resultsView' "$APP_SRC/BenchmarkViewController.h" || die "BenchmarkViewController.h has no resultsView outlet"
grep -q 'onBenchmarkModel:' "$APP_SRC/Base.lproj/Main.storyboard" || die "Main.storyboard no longer calls onBenchmarkModel:"

# 2. The benchmark framework, with TensorFlow's own script (Bazel, --config=ios_fat).
if [ "${SKIP_FRAMEWORK:-0}" != 1 ] || [ ! -d "$FRAMEWORK" ]; then
  # ./configure without questions: iOS support on, everything else off. It writes .tf_configure.bazelrc
  # and turns the BUILD.apple files into BUILD files.
  yes "" | PYTHON_BIN_PATH="$(command -v python3)" USE_DEFAULT_PYTHON_LIB_PATH=1 \
    TF_CONFIGURE_IOS=1 TF_NEED_ROCM=0 TF_NEED_CUDA=0 TF_NEED_CLANG=0 TF_SET_ANDROID_WORKSPACE=0 \
    CC_OPT_FLAGS="-Wno-sign-compare" ./configure
  bash "$IOS_DIR/build_benchmark_framework.sh"
fi
[ -d "$FRAMEWORK" ] || die "$FRAMEWORK was not built"
header="$(find "$FRAMEWORK/Headers" -name 'benchmark_c_api.h' | head -n 1)"
[ -n "$header" ] || die "the framework has no benchmark_c_api.h"
for fn in "${C_API[@]}"; do
  grep -qw "$fn" "$header" || die "$fn is not declared in $header"
done

# The framework binary is a static library. Link its arm64 (device) slice whole: the delegate
# providers (GPU, Core ML, XNNPACK) register themselves from static initialisers that nothing
# references, so a normal link would drop them and benchmark_model would not know --use_gpu.
BUILD_DIR="$TF_DIR/scenebench-build"
mkdir -p "$BUILD_DIR"
LIB="$BUILD_DIR/libTensorFlowLiteBenchmarkC-arm64.a"
if lipo -info "$FRAMEWORK/TensorFlowLiteBenchmarkC" | grep -q '^Non-fat'; then
  cp "$FRAMEWORK/TensorFlowLiteBenchmarkC" "$LIB"
else
  lipo "$FRAMEWORK/TensorFlowLiteBenchmarkC" -thin arm64 -output "$LIB"
fi

# 3. Our view controller in place of the stock one (the stock file is kept beside it).
[ -f "$APP_SRC/BenchmarkViewController.mm.upstream" ] || \
  cp "$APP_SRC/BenchmarkViewController.mm" "$APP_SRC/BenchmarkViewController.mm.upstream"
cp "$HERE/BenchmarkViewController.mm" "$HERE/scenebench_runner_mode.h" "$APP_SRC/"

# The stock project may still list an old static library (benchmark-lib.a) and a model file
# that is not in the repository; each is one line per section in project.pbxproj.
PBX="$IOS_DIR/TFLiteBenchmark/TFLiteBenchmark.xcodeproj/project.pbxproj"
[ -f "$PBX.upstream" ] || cp "$PBX" "$PBX.upstream"
python3 - "$PBX" <<'EOF'
import sys
path = sys.argv[1]
lines = open(path).read().splitlines(keepends=True)
keep = [l for l in lines if "benchmark-lib.a" not in l and "mobilenet_v1_1.0_224.tflite" not in l]
if len(keep) != len(lines):
    print(f"build.sh: removed {len(lines) - len(keep)} project lines for benchmark-lib.a / the sample model")
open(path, "w").writelines(keep)
EOF
# iPhones are arm64; the stock Info.plist asks for armv7.
/usr/libexec/PlistBuddy -c "Delete :UIRequiredDeviceCapabilities" "$APP_SRC/Info.plist" 2>/dev/null || true
/usr/libexec/PlistBuddy -c "Add :UIRequiredDeviceCapabilities array" \
                        -c "Add :UIRequiredDeviceCapabilities:0 string arm64" "$APP_SRC/Info.plist"
for key in SCENEBENCHTensorFlowTag SCENEBENCHBuildID; do
  /usr/libexec/PlistBuddy -c "Delete :$key" "$APP_SRC/Info.plist" 2>/dev/null || true
done
/usr/libexec/PlistBuddy -c "Add :SCENEBENCHTensorFlowTag string $TF_TAG" \
                        -c "Add :SCENEBENCHBuildID string $BUILD_ID" "$APP_SRC/Info.plist"

# 4. Build and sign.
cd "$IOS_DIR/TFLiteBenchmark"
xcodebuild -project TFLiteBenchmark.xcodeproj -target TFLiteBenchmark -configuration Release \
  -sdk iphoneos -allowProvisioningUpdates \
  DEVELOPMENT_TEAM="$TEAM_ID" CODE_SIGN_STYLE=Automatic PRODUCT_BUNDLE_IDENTIFIER="$BUNDLE_ID" \
  ARCHS=arm64 IPHONEOS_DEPLOYMENT_TARGET=13.0 \
  FRAMEWORK_SEARCH_PATHS="\$(inherited) $TF_DIR/$APP_SRC/Frameworks" \
  OTHER_LDFLAGS="\$(inherited) -force_load $LIB -framework Accelerate -framework Metal -framework CoreML -lc++" \
  SYMROOT="$BUILD_DIR" build

APP="$BUILD_DIR/Release-iphoneos/TFLiteBenchmark.app"
[ -d "$APP" ] || die "xcodebuild produced no $APP"
got_id="$(/usr/libexec/PlistBuddy -c 'Print :CFBundleIdentifier' "$APP/Info.plist")"
[ "$got_id" = "$BUNDLE_ID" ] || die "the app's bundle id is $got_id, not $BUNDLE_ID"
codesign --verify --verbose=1 "$APP"
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
cp -R "$APP" "$OUT"
echo "build.sh: $OUT (bundle id $BUNDLE_ID, TensorFlow $TF_TAG, build $BUILD_ID)"
