"""Keras model -> TFLite in four formats, and what a .tflite file holds (I/O, quantization, ops).

Formats:
  float32  default conversion (the paper's "float")
  int8     full integer: int8 kernels, uint8 input and output, calibrated on training images;
           the input takes raw camera bytes (uint8 RGB, scale exactly 1, zero point 0)
  float16  weights stored as float16, computed in float (GPU delegates like it)
  dynamic  dynamic-range: int8 weights, float activations
  int8-selective  int8 except the layers TensorFlow's quantization debugger finds worst, kept
           float (common.quantdebug.selective; uint8 input and output like int8)
  int16x8  16-bit activations, 8-bit weights (TFLite's experimental 16x8 mode); float input
           and output, since the mode takes float or int16 at its edges, not uint8 pixels

Every model has static shapes: batch 1 and no -1 in any tensor's shape signature. Keras
exports a batch dimension of None by default, and the converter then keeps every shape
that depends on it dynamic (EfficientNet-B2: 365 of 590 tensors, and a SHAPE ->
STRIDED_SLICE -> PACK -> RESHAPE chain in each squeeze-and-excitation block), which the
Metal GPU delegate and Core ML refuse: the reason the paper could not run EfficientNet on
the GPU or the Neural Engine. A batch-1 input signature at export removes all of them.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from common.errors import ConversionError
from common.schemas import FORMATS, GpuCompatibility, GpuOpIssue, Quantization, TensorInfo


def export_saved_model(model, out_dir: Path) -> Path:
    """Export a Keras model as an inference-only SavedModel with a batch-1 input signature.

    The fixed batch makes every tensor of the converted model static. (A tf.function around
    the model given to `from_concrete_functions` also has static shapes, but converted a
    MobileNetV2 without its weights, to NaN outputs: the route is checked by outputs too.)
    """
    import tensorflow as tf

    out_dir = Path(out_dir)
    shape = [1, *(int(d) for d in model.inputs[0].shape[1:])]
    spec = tf.TensorSpec(shape, tf.float32, name=model.inputs[0].name)
    model.export(str(out_dir), format="tf_saved_model", input_signature=[spec], verbose=False)
    return out_dir


def convert(saved_model_dir: Path, fmt: str,
            representative: Callable[[], Iterable[list[np.ndarray]]] | None = None) -> bytes:
    """Convert a SavedModel to TFLite bytes in one of FORMATS."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if fmt == "float32":
        pass
    elif fmt == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt == "int8":
        if representative is None:
            raise ConversionError("int8 conversion needs calibration images (a representative dataset)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = with_full_pixel_range(representative)
        # Full integer: fail rather than silently keep float ops.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    elif fmt == "int16x8":
        if representative is None:
            raise ConversionError("int16x8 conversion needs calibration images (a representative dataset)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        # Only 16x8 kernels: fail rather than silently keep float ops.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    elif fmt == "int8-selective":
        from common.quantdebug import selective

        if representative is None:
            raise ConversionError("int8-selective conversion needs calibration images (a representative dataset)")
        blob = selective(saved_model_dir, representative).model
    else:
        raise ConversionError(f"unknown format {fmt!r}; valid values: {', '.join(FORMATS)}")
    if fmt != "int8-selective":
        try:
            blob = converter.convert()
        except Exception as exc:  # the converter raises many types; keep the cause
            raise ConversionError(f"TFLite conversion to {fmt} failed: {exc.__class__.__name__}: {exc}") from exc
    if fmt == "int16x8":
        _check_allocates(blob, fmt)
    count, examples = dynamic_tensors(blob)
    if count:
        raise ConversionError(
            f"the {fmt} model has {count} tensors with a dynamic shape (-1 in the shape signature), e.g. "
            + "; ".join(examples) + ". The GPU delegate and Core ML need static shapes: export the Keras "
            "model with a batch-1 input signature (common.conversion.export_saved_model)")
    if fmt == "int8":
        check_int8(blob)
    return blob


def check_int8(blob: bytes) -> None:
    """Refuse an int8 model that does not take raw pixels or whose byte-copying ops requantize."""
    wrong = raw_pixel_input_problem(blob)
    if wrong:
        raise ConversionError(wrong)
    bad = requantization_mismatches(blob)
    if bad:
        raise ConversionError(
            "int8 conversion gave byte-copying ops an output quantization different from their "
            "input's, so the model would compute on wrongly scaled values: " + "; ".join(bad))


# The int8 input contract: an app hands the model its camera bytes as they are, and the
# model's own layers normalise. The converter takes the uint8 input's scale and zero point
# from the range of the calibration images' pixels: calibrating on photos whose pixels span
# 20..230 gave scale 0.902, so raw camera bytes would reach the network about 10 % off. A
# pixel of 0 and one of 255 in the calibration data make that range exactly 0..255, which is
# scale 255 / 255 = 1 and zero point 0.
RAW_PIXEL_SCALE = 1.0
RAW_PIXEL_ZERO_POINT = 0


def with_full_pixel_range(representative: Callable[[], Iterable[list[np.ndarray]]]):
    """The calibration samples, preceded by a copy of the first one holding a 0 and a 255 pixel value."""

    def gen():
        first = True
        for sample in representative():
            if first:
                edge = np.array(sample[0], dtype=np.float32, copy=True)
                flat = edge.reshape(-1)
                flat[0], flat[-1] = 0.0, 255.0
                yield [edge, *sample[1:]]
                first = False
            yield sample

    return gen


def raw_pixel_input_problem(model: bytes | Path) -> str | None:
    """Why an int8 model's input does not take raw uint8 pixels (scale 1, zero point 0), or None."""
    inp = _interpreter(model).get_input_details()[0]
    scale, zero_point = inp["quantization"]
    dtype = np.dtype(inp["dtype"]).name
    if dtype == "uint8" and scale == RAW_PIXEL_SCALE and zero_point == RAW_PIXEL_ZERO_POINT:
        return None
    return (f"the int8 model's input is {dtype} with scale {scale:.6g} and zero point {zero_point}; the contract is "
            f"raw camera bytes: uint8 with scale {RAW_PIXEL_SCALE:g} and zero point {RAW_PIXEL_ZERO_POINT}, the "
            "model's own layers normalising. The first layers of the model made the converter pick other input "
            "parameters: start the model with its own preprocessing layer on the raw 0..255 pixels")


# Integer kernels that move or pick bytes without requantizing: their output must carry the
# input's scale and zero point, or every value is silently rescaled. The quantizer is meant
# to enforce that; TF 2.21 does not for REVERSE_V2 feeding a SUB (keras.ops.flip before a mean
# subtraction: a ResNet50 lost 71 top-1 points).
BYTE_COPY_OPS = frozenset({
    "REVERSE_V2", "STRIDED_SLICE", "SLICE", "GATHER", "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
    "TRANSPOSE", "PAD", "PADV2", "MIRROR_PAD", "MAX_POOL_2D", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
    "SPLIT", "SPLIT_V", "TILE",
})


def requantization_mismatches(model: bytes | Path) -> list[str]:
    """Byte-copying ops of a quantized .tflite whose output scale/zero point differ from the input's."""
    interp = _interpreter(model)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    out = []
    for op in interp._get_ops_details():
        if op["op_name"] not in BYTE_COPY_OPS or not len(op["inputs"]) or not len(op["outputs"]):
            continue
        src, dst = tensors.get(int(op["inputs"][0])), tensors.get(int(op["outputs"][0]))
        if src is None or dst is None:
            continue
        (s_in, z_in), (s_out, z_out) = src["quantization"], dst["quantization"]
        if not (s_in or s_out):
            continue  # float or unquantized tensors
        if abs(s_in - s_out) > 1e-6 * max(s_in, s_out) or z_in != z_out:
            out.append(f"{op['op_name']} {dst['name']!r}: input scale {s_in:.6g} zero point {z_in}, "
                       f"output scale {s_out:.6g} zero point {z_out}")
    return out


def _check_allocates(blob: bytes, fmt: str) -> None:
    """LiteRT refuses some quantized models only when preparing them: an int16 RELU6 whose
    output range is tiny (a dead layer) overflows int32 when 6.0 is quantized."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=blob,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    try:
        interp.allocate_tensors()
    except RuntimeError as exc:
        raise ConversionError(f"the {fmt} model converts but LiteRT cannot prepare it: {exc}") from exc
def _interpreter(model: bytes | Path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    # Without the default XNNPACK delegate: what the file holds, not a host's rewrite of it.
    return Interpreter(experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, **kwargs)


def dynamic_tensors(model: bytes | Path, examples: int = 3) -> tuple[int, list[str]]:
    """How many tensors have a dynamic shape (-1 in shape_signature, or an input batch other
    than 1), with a few of them named."""
    interp = _interpreter(model)
    bad = []
    for t in interp.get_tensor_details():
        sig = [int(d) for d in t.get("shape_signature", t["shape"])]
        if any(d < 0 for d in sig):
            bad.append(f"{t['name']!r} {sig}")
    for t in interp.get_input_details():
        if len(t["shape"]) and int(t["shape"][0]) != 1:
            bad.append(f"input {t['name']!r} has batch {int(t['shape'][0])}, not 1")
    return len(bad), bad[:examples]


def tensor_count(model: bytes | Path) -> int:
    return len(_interpreter(model).get_tensor_details())


# Why not tf.lite.experimental.Analyzer(gpu_compatibility=True): its per-op GPU check was taken
# out of TensorFlow's model analyzer (tensorflow/tensorflow#77042), and in the pinned TF 2.21 it
# prints "Your model looks compatible with GPU delegate" for any model, even one with Flex ops
# or the SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE chains of a dynamic-batch EfficientNet. So the
# rules it used to apply are checked here, for the ops our models hold. They follow
# CheckGpuDelegateCompatibility in tensorflow/lite/tools/versioning/gpu_compatibility.cc (the
# offline check the analyzer ran) and IsAllAllowedTensors in the delegate's model_builder.cc.

# Builtin ops the GPU delegate takes at all (the cases of CheckGpuDelegateCompatibility); every
# other builtin is "Not supported op <NAME>" there.
GPU_DELEGATE_OPS = frozenset({
    "ABS", "ADD", "ADD_N", "ATAN2", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CAST", "CEIL", "CONCATENATION",
    "CONV_2D", "COS", "CUMSUM", "DENSIFY", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE", "DIV",
    "DYNAMIC_UPDATE_SLICE", "ELU", "EMBEDDING_LOOKUP", "EQUAL", "EXP", "FLOOR", "FLOOR_DIV", "FLOOR_MOD",
    "FULLY_CONNECTED", "GATHER", "GELU", "GREATER", "GREATER_EQUAL", "HARD_SWISH", "LEAKY_RELU", "LESS",
    "LESS_EQUAL", "LOG", "LOGICAL_AND", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM",
    "MIRROR_PAD", "MUL", "NEG", "NOT_EQUAL", "ONE_HOT", "PACK", "PAD", "PADV2", "POW", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SELECT", "SELECT_V2", "SIGN", "SIN", "SLICE", "SOFTMAX",
    "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "STABLEHLO_CLAMP",
    "STRIDED_SLICE", "SUB", "SUM", "TANH", "TILE", "TRANSPOSE", "TRANSPOSE_CONV",
})
# Runtime (non-constant) tensors the delegate takes; int8/uint8 with quantized models enabled,
# as the Metal delegate has them by default.
GPU_TENSOR_TYPES = frozenset({"float32", "float16", "int8", "uint8"})
GPU_CHECK_TOOL = ("GPU delegate op rules of TFLite's gpu_compatibility.cc (op set, tensor types, slice rank) "
                  "and static shapes, checked by scenebench")


def gpu_compatibility(model: bytes | Path) -> GpuCompatibility:
    """Which ops of a .tflite the GPU delegate (Metal on iOS) cannot take, and why.

    A subset of the delegate's own rules: ops outside its op set, runtime tensors of a type it
    does not compute in, SLICE/STRIDED_SLICE on tensors that are not 3- or 4-dimensional, and
    tensors with a dynamic shape (the delegate plans its buffers once, for fixed shapes). A
    model that passes can still meet a finer rule on a phone; one that fails will not be
    delegated whole.
    """
    interp = _interpreter(model)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    runtime = {int(i["index"]) for i in interp.get_input_details()}
    runtime |= {int(o) for op in ops for o in op["outputs"]}
    issues: dict[tuple[str, str], list[int]] = {}

    def flag(op, reason: str) -> None:
        issues.setdefault((op["op_name"], reason), []).append(int(op["index"]))

    for op in ops:
        name = op["op_name"]
        ins = [tensors[int(i)] for i in op["inputs"] if int(i) in tensors]
        outs = [tensors[int(o)] for o in op["outputs"] if int(o) in tensors]
        if name not in GPU_DELEGATE_OPS:
            flag(op, f"Not supported op {name}")
            continue
        live = [t for t in ins + outs if int(t["index"]) in runtime]
        bad_types = sorted({np.dtype(t["dtype"]).name for t in live} - GPU_TENSOR_TYPES)
        if bad_types:
            flag(op, f"runtime tensors of type {', '.join(bad_types)}: the delegate computes in float or 8-bit only")
        if name in ("SLICE", "STRIDED_SLICE") and ins and len(ins[0]["shape"]) not in (3, 4):
            flag(op, f"{name} supports for 3 or 4 dimensional tensors only")
        if any(any(int(d) < 0 for d in t.get("shape_signature", t["shape"])) for t in live):
            flag(op, "dynamic-shaped tensor (-1 in its shape signature): the delegate needs static shapes")
    found = [GpuOpIssue(op=n, nodes=nodes, reason=r) for (n, r), nodes in sorted(issues.items())]
    return GpuCompatibility(compatible=not found, ops=found, tool=GPU_CHECK_TOOL)


# Largest |TFLite - SavedModel| of the softmax outputs a format may show on the same input.
OUTPUT_TOLERANCE = {"float32": 1e-4}


def max_output_difference(model: bytes, saved_model_dir: Path, n: int = 2, seed: int = 0) -> float:
    """Largest |TFLite - SavedModel| over the outputs of n seeded random photos (pixels 0..255).

    Catches a conversion route that keeps the shapes but not the network (weights lost,
    NaN outputs); NaN anywhere counts as infinitely different.
    """
    import tensorflow as tf

    interp = _interpreter(model)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    serve = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(n):
        x = rng.integers(0, 256, size=tuple(int(d) for d in inp["shape"])).astype(np.float32)
        ref = next(iter(serve(tf.constant(x)).values())).numpy()
        feed = x
        if np.dtype(inp["dtype"]).kind != "f":
            scale, zp = inp["quantization"]
            feed = np.clip(np.rint(x / (scale or 1.0) + zp), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        interp.set_tensor(inp["index"], feed.astype(inp["dtype"]))
        interp.invoke()
        got = interp.get_tensor(out["index"]).astype(np.float32)
        if np.dtype(out["dtype"]).kind != "f":
            scale, zp = out["quantization"]
            got = (got - zp) * scale
        if not (np.isfinite(got).all() and np.isfinite(ref).all()):
            return float("inf")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def representative_from(images: np.ndarray) -> Callable[[], Iterable[list[np.ndarray]]]:
    """A representative-dataset callable yielding one float32 image (1, H, W, 3) at a time."""
    images = np.asarray(images, dtype=np.float32)

    def gen():
        for img in images:
            yield [img[None, ...]]

    return gen


def stratified_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to n indices spread evenly over classes (round-robin over shuffled per-class lists)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    per_class = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    out: list[int] = []
    while len(out) < n and any(per_class.values()):
        for c in sorted(per_class):
            if per_class[c] and len(out) < n:
                out.append(int(per_class[c].pop()))
    return np.array(sorted(out), dtype=np.int64)


def _tensor_info(d: dict) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    q = Quantization(scale=float(scale), zero_point=int(zp)) if scale else None
    return TensorInfo(name=str(d["name"]), dtype=np.dtype(d["dtype"]).name,
                      shape=[int(s) for s in d["shape"]], quantization=q)


def inspect_tflite(model_path: Path) -> tuple[TensorInfo, TensorInfo, dict[str, int]]:
    """Input and output tensor info and op counts, read with the LiteRT interpreter."""
    interp = _interpreter(Path(model_path))
    interp.allocate_tensors()
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConversionError(f"{model_path}: expected one input and one output, got {len(inputs)}/{len(outputs)}")
    ops = collections.Counter(op["op_name"] for op in interp._get_ops_details())
    return _tensor_info(inputs[0]), _tensor_info(outputs[0]), dict(sorted(ops.items()))


def calibration_images(shard_paths, image_size: tuple[int, int], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stratified sample of n training images, decoded and resized as training does.

    Only the chosen records are decoded, so sampling 200 of CamSDD's ~10k photos is cheap.
    """
    from common.dataset import decode_resize, iter_examples

    records = list(iter_examples(shard_paths))
    labels = np.array([r[1] for r in records], dtype=np.int64)
    idx = stratified_indices(labels, n, seed)
    images = np.stack([np.asarray(decode_resize(records[i][0], image_size)) for i in idx])
    return images, labels[idx]
