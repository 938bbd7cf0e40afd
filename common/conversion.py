"""Keras model -> TFLite in four formats, and what a .tflite file holds (I/O, quantization, ops).

Formats:
  float32  default conversion (the paper's "float")
  int8     full integer: int8 kernels, uint8 input and output, calibrated on training images
  float16  weights stored as float16, computed in float (GPU delegates like it)
  dynamic  dynamic-range: int8 weights, float activations
  int8-selective  int8 except the layers TensorFlow's quantization debugger finds worst, kept
           float (common.quantdebug.selective; uint8 input and output like int8)
  int16x8  16-bit activations, 8-bit weights (TFLite's experimental 16x8 mode); float input
           and output, since the mode takes float or int16 at its edges, not uint8 pixels
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from common.errors import ConversionError
from common.schemas import FORMATS, Quantization, TensorInfo


def export_saved_model(model, out_dir: Path) -> Path:
    """Export a Keras model as an inference-only SavedModel (the converter's preferred input)."""
    out_dir = Path(out_dir)
    model.export(str(out_dir), format="tf_saved_model", verbose=False)
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
        converter.representative_dataset = representative
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
        return selective(saved_model_dir, representative).model
    else:
        raise ConversionError(f"unknown format {fmt!r}; valid values: {', '.join(FORMATS)}")
    try:
        blob = converter.convert()
    except Exception as exc:  # the converter raises many types; keep the cause
        raise ConversionError(f"TFLite conversion to {fmt} failed: {exc.__class__.__name__}: {exc}") from exc
    if fmt == "int16x8":
        _check_allocates(blob, fmt)
    if fmt == "int8":
        bad = requantization_mismatches(blob)
        if bad:
            raise ConversionError(
                "int8 conversion gave byte-copying ops an output quantization different from their "
                "input's, so the model would compute on wrongly scaled values: " + "; ".join(bad))
    return blob


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
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"model_content": model} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    interp = Interpreter(experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                         **kwargs)
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
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the default XNNPACK delegate: op counts describe the file, not a host's rewrite.
    interp = Interpreter(model_path=str(model_path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
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
