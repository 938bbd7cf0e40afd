"""Where an integer model loses accuracy: TensorFlow's quantization debugger, per layer.

`tf.lite.experimental.QuantizationDebugger` runs a debug-mode quantized model in which every
quantized op is followed by a NumericVerify op that subtracts the float result (computed from
the same quantized input) from the dequantized one. Per layer we keep the error in units of the
layer's own quantization step (RMSE / scale: about 0.29 for pure rounding of a uniform signal,
TensorFlow's debugger guide flags layers above 0.7) and the mean error (a bias shifts every
later layer).

The same calibrated model serves three things, so the expensive calibration runs once:
the debugger statistics, the full-integer model, and the "selective" model in which the worst
layers are denylisted (kept float) through the debugger's options.
"""

from __future__ import annotations

import csv
import io
import math
import re
from typing import Callable, Iterable, Sequence

import numpy as np

from common.errors import ConversionError
from common.schemas import LayerError

Representative = Callable[[], Iterable[list[np.ndarray]]]

# TensorFlow's debugger guide marks a layer as suspect above this RMSE/scale.
SUSPECT_RMSE_OVER_SCALE = 0.7
# How many of the worst layers the selective format keeps float: few enough that the model
# stays integer (latency, delegates), enough to cover the usual culprits (head, SE blocks).
DEFAULT_FLOAT_LAYERS = 5


def calibrate(saved_model_dir, representative: Representative, *, per_channel: bool = True) -> bytes:
    """The converter's calibrated (not yet quantized) model: float ops annotated with the
    activation ranges seen on the representative images, plus a 0 and a 255 pixel, as the int8
    format calibrates (raw uint8 pixels in: input scale 1, zero point 0)."""
    import tensorflow as tf

    from common.conversion import with_full_pixel_range

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = with_full_pixel_range(representative)
    converter._experimental_calibrate_only = True  # what QuantizationDebugger sets itself
    converter._experimental_disable_per_channel = not per_channel
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises many types; keep the cause
        raise ConversionError(f"calibration failed: {exc.__class__.__name__}: {exc}") from exc


# The converter's own ranges: the smallest and largest value over all calibration images.
MINMAX_PERCENTILE = 100.0


def percentile_ranges(calibrated: bytes, representative: Representative, percentile: float) -> bytes:
    """The calibrated model with every activation range narrowed to the given percentile, over the
    calibration images, of the tensor's per-image maximum (and the mirrored percentile of its
    per-image minimum); the input keeps its 0..255 (raw pixels).

    The converter takes each range from the single most extreme image. A few images with
    outlying activations then widen the ranges of the deep layers several-fold (EfficientNet-B2
    on the synthetic set: 5x in its last block between 50 and 200 calibration images) and every
    other image is quantized coarsely; the 99th percentile leaves out the two most extreme of
    200 images per tensor, clipping them instead.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tensorflow.lite.tools import flatbuffer_utils

    from common.conversion import with_full_pixel_range

    if not 50.0 <= percentile <= 100.0:
        raise ConversionError(f"calibration percentile must be between 50 and 100, got {percentile:g}")
    if percentile >= MINMAX_PERCENTILE:
        return calibrated
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    graph = model.subgraphs[0]
    ranged = [i for i, t in enumerate(graph.tensors)
              if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1
              and i not in set(graph.inputs)]
    interp = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    inputs = interp.get_input_details()
    lows: dict[int, list[float]] = {i: [] for i in ranged}
    highs: dict[int, list[float]] = {i: [] for i in ranged}
    # The same samples the ranges came from, the 0/255 edge copy included.
    for sample in with_full_pixel_range(representative)():
        for detail, value in zip(inputs, sample, strict=True):
            interp.set_tensor(detail["index"], np.asarray(value, dtype=detail["dtype"]))
        interp.invoke()
        for i in ranged:
            v = interp.get_tensor(i)
            lows[i].append(float(v.min()))
            highs[i].append(float(v.max()))
    for i in ranged:
        q = graph.tensors[i].quantization
        q.min[0] = float(np.percentile(lows[i], 100.0 - percentile))
        q.max[0] = float(np.percentile(highs[i], percentile))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def quantize(calibrated: bytes, *, denylisted_nodes: Sequence[str] = (), denylisted_ops: Sequence[str] = (),
             per_channel: bool = True) -> bytes:
    """Full-integer model with uint8 input/output from a calibrated model; denylisted nodes
    (output tensor names) and ops (e.g. "MEAN") stay float, with (de)quantize ops around them.

    The same MLIR quantizer call the converter makes for int8 with uint8 I/O, plus the
    denylists of `tf.lite.experimental.QuantizationDebugOptions`.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert

    try:
        return tfl_convert.mlir_quantize(
            calibrated, disable_per_channel=not per_channel, fully_quantize=False,
            input_data_type=tf.uint8, output_data_type=tf.uint8,
            denylisted_nodes=list(denylisted_nodes) or None, denylisted_ops=list(denylisted_ops) or None)
    except Exception as exc:
        raise ConversionError(f"int8 quantization failed: {exc.__class__.__name__}: {exc}") from exc


def _short_layers(tensor_name: str) -> list[str]:
    """Keras layer names in a (fused) TFLite tensor name, outermost model and '_1' suffixes
    dropped: 'm_1/backbone_1/block_1_expand_relu_1/Relu6;m_1/backbone_1/block_1_expand_1/convolution'
    -> ['block_1_expand_relu', 'block_1_expand']; a name without a layer path is kept whole."""
    out: list[str] = []
    for part in tensor_name.split(";"):
        pieces = [p for p in part.split("/") if p]
        if len(pieces) < 2:
            continue
        name = re.sub(r"_\d+$", "", pieces[-2])
        if name not in out:
            out.append(name)
    return out or [tensor_name]  # the model's output tensor carries no layer path


def diagnose(calibrated: bytes, representative: Representative, *, per_channel: bool = True,
             denylisted_nodes: Sequence[str] = ()) -> list[LayerError]:
    """Per-layer errors of the integer model over the representative images, in graph order
    (denylisted nodes are float, so they have no entry)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert

    debug_model = tfl_convert.mlir_quantize(calibrated, disable_per_channel=not per_channel,
                                            fully_quantize=False, enable_numeric_verify=True,
                                            denylisted_nodes=list(denylisted_nodes) or None)
    debugger = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=debug_model, debug_dataset=representative)
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    # The dump names each layer by its tensor in the model being debugged, which is the name
    # the denylist takes (the debug model itself appends a digit to every quantized tensor).
    out = []
    for row in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(row["scale"])
        mse = float(row["mean_squared_error"])
        rmse = math.sqrt(mse) if mse >= 0 else float("nan")
        tensor = row["tensor_name"]
        out.append(LayerError(
            index=len(out), tensor=tensor, op=row["op_name"], layers=_short_layers(tensor),
            rmse_over_scale=round(rmse / scale, 6) if scale else None,
            mean_error=float(row["mean_error"]), max_abs_error=float(row["max_abs_error"]),
            rmse=rmse, scale=scale, zero_point=int(float(row["zero_point"])),
            num_elements=int(float(row["num_elements"]))))
    if not out:
        raise ConversionError("the quantization debugger found no quantized layer to compare")
    return out


def worst(layers: Sequence[LayerError], n: int) -> list[LayerError]:
    """The n layers with the largest RMSE/scale (layers without a scale last)."""
    ranked = sorted(layers, key=lambda x: -1.0 if x.rmse_over_scale is None else x.rmse_over_scale, reverse=True)
    return ranked[:n]


def choose_float_layers(layers: Sequence[LayerError], max_layers: int = DEFAULT_FLOAT_LAYERS,
                        threshold: float = SUSPECT_RMSE_OVER_SCALE) -> list[LayerError]:
    """The layers the selective format keeps float: the worst ones above the suspect line,
    at most max_layers. None above it: the single worst one, so the format still differs
    from plain int8 where it matters most."""
    if max_layers < 1:
        raise ConversionError(f"max_layers must be at least 1, got {max_layers}")
    ranked = worst(layers, len(layers))
    chosen = [x for x in ranked if x.rmse_over_scale is not None and x.rmse_over_scale > threshold][:max_layers]
    return chosen or ranked[:1]


def float_compute_ops(model: bytes) -> list[tuple[str, str]]:
    """(op, output tensor name) of every op computing in float in a quantized model; the
    (de)quantize ops at the float islands' edges are not listed."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=model,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    out = []
    for op in interp._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") or not len(op["outputs"]):
            continue
        t = tensors[int(op["outputs"][0])]
        if np.dtype(t["dtype"]) == np.float32:
            out.append((op["op_name"], t["name"]))
    return out


def weights_granularity(model: bytes) -> str | None:
    """'per-channel' or 'per-tensor': how the convolution/dense weights of an integer model
    are quantized, read from the file; None for a model without quantized weights."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=model,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    seen = set()
    for op in interp._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op["inputs"]) < 2:
            continue
        w = tensors.get(int(op["inputs"][1]))
        if w is None or np.dtype(w["dtype"]) != np.int8:
            continue
        scales = w["quantization_parameters"]["scales"]
        seen.add("per-channel" if len(scales) > 1 else "per-tensor")
    if not seen:
        return None
    return "per-channel" if "per-channel" in seen else "per-tensor"


class Selective:
    """An int8-selective conversion: the model, the layers kept float, and the debugger's view
    of the full-integer model they were chosen from."""

    def __init__(self, model: bytes, float_layers: list[LayerError], full_int8_layers: list[LayerError],
                 calibrated: bytes):
        self.model = model
        self.calibrated = calibrated
        self.float_layers = float_layers
        self.full_int8_layers = full_int8_layers


def selective(saved_model_dir, representative: Representative, max_layers: int = DEFAULT_FLOAT_LAYERS,
              threshold: float = SUSPECT_RMSE_OVER_SCALE, *, calibrated: bytes | None = None,
              layers: Sequence[LayerError] | None = None) -> Selective:
    """Full integer except the layers the debugger names worst, kept float by denylisting
    their output tensors (QuantizationDebugOptions.denylisted_nodes). A calibrated model and
    its diagnosis, when the caller has them, save the two expensive passes."""
    calibrated = calibrated or calibrate(saved_model_dir, representative)
    layers = list(layers) if layers is not None else diagnose(calibrated, representative)
    chosen = choose_float_layers(layers, max_layers, threshold)
    model = quantize(calibrated, denylisted_nodes=[x.tensor for x in chosen])
    kept = {name for _, name in float_compute_ops(model)}
    missing = [x.tensor for x in chosen if x.tensor not in kept]
    if missing:
        raise ConversionError("the quantizer did not keep these denylisted layers float: " + "; ".join(missing))
    from common.conversion import raw_pixel_input_problem, requantization_mismatches

    wrong = raw_pixel_input_problem(model)
    if wrong:
        raise ConversionError(wrong)
    bad = requantization_mismatches(model)
    if bad:
        raise ConversionError("int8-selective conversion gave byte-copying ops an output quantization "
                              "different from their input's: " + "; ".join(bad))
    return Selective(model, chosen, layers, calibrated)
