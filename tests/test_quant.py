"""The integer remedies (int8-selective, int16x8) and TensorFlow's quantization debugger.

A 32x48 MobileNetV2 whose BatchNorm statistics are set from its own input (one forward pass in
training mode): with Keras' initial statistics the activations of an untrained network shrink
to ~1e-8 by block 4, and the int16 RELU6 bound (6 / scale) no longer fits in int32.
"""

import json

import numpy as np
import pytest

from common import archs, quantdebug
from common.conversion import convert, export_saved_model, inspect_tflite, representative_from
from common.errors import ConversionError
from common.evaluation import TFLiteClassifier
from common.schemas import INTEGER_FORMATS, FORMATS, QuantDebugReport

SIZE = (32, 48)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    model = archs.build_model("mobilenet_v2", SIZE)
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, (8, *SIZE, 3)).astype("float32")
    archs.set_batchnorm_momentum(model, 0.0)
    model(rng.uniform(0, 255, (16, *SIZE, 3)).astype("float32"), training=True)
    sm = export_saved_model(model, tmp_path_factory.mktemp("quant") / "saved_model")
    probe = rng.uniform(0, 255, (4, *SIZE, 3)).astype("float32")
    calibrated = quantdebug.calibrate(sm, representative_from(calib))
    return model, sm, calib, probe, calibrated


@pytest.fixture(scope="module")
def layers(net):
    _, _, calib, _, calibrated = net
    return quantdebug.diagnose(calibrated, representative_from(calib))


def _max_error(model, blob, path, images):
    path.write_bytes(blob)
    clf = TFLiteClassifier(path)
    got = np.stack([clf.predict_one(x) for x in images])
    return float(np.abs(got - np.asarray(model(images))).max())


def test_new_formats_are_registered_integer_formats():
    for fmt in ("int8-selective", "int16x8"):
        assert fmt in FORMATS and fmt in INTEGER_FORMATS


def test_int16x8_converts_and_runs_in_litert(net, tmp_path):
    model, sm, calib, probe, calibrated = net
    path = tmp_path / "int16x8.tflite"
    path.write_bytes(convert(sm, "int16x8", representative_from(calib)))
    inp, out, ops = inspect_tflite(path)
    # The 16x8 mode takes float (or int16) at its edges: our photos go in as float pixels.
    assert inp.dtype == "float32" and out.dtype == "float32"
    assert "CONV_2D" in ops and "QUANTIZE" in ops
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    conv_outputs = {np.dtype(interp.get_tensor_details()[op["outputs"][0]]["dtype"]).name
                    for op in interp._get_ops_details() if op["op_name"] == "CONV_2D"}
    assert conv_outputs == {"int16"}
    # What the mode is for: 256 times finer activations than int8 from the same calibration.
    err16 = _max_error(model, path.read_bytes(), tmp_path / "a.tflite", calib)
    err8 = _max_error(model, quantdebug.quantize(calibrated), tmp_path / "b.tflite", calib)
    assert err16 < err8 / 2, (err16, err8)


def test_int16x8_needs_calibration_images(net):
    with pytest.raises(ConversionError, match="calibration images"):
        convert(net[1], "int16x8", None)


def test_debugger_reports_every_quantized_layer(layers):
    assert len(layers) > 40 and [x.index for x in layers] == list(range(len(layers)))
    ops = {x.op for x in layers}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= ops
    for x in layers:
        assert x.scale > 0 and x.rmse >= 0 and x.num_elements > 0
        assert x.rmse_over_scale == pytest.approx(x.rmse / x.scale, rel=1e-4)
        assert x.layers and (x.op == "SOFTMAX" or all("/" not in name for name in x.layers))
    doc = QuantDebugReport(run_id="r", arch="mobilenet_v2", format="int8", tool="t", calibration_samples=8,
                           images=8, suspect_threshold=quantdebug.SUSPECT_RMSE_OVER_SCALE, layers=layers,
                           worst=[x.tensor for x in quantdebug.worst(layers, 5)], model_sha256="0" * 64)
    back = QuantDebugReport.model_validate(json.loads(doc.model_dump_json()))
    assert back.layers == layers and len(back.worst) == 5
    worst = quantdebug.worst(layers, 5)
    assert [w.rmse_over_scale for w in worst] == sorted((w.rmse_over_scale for w in worst), reverse=True)
    assert worst[0].rmse_over_scale == max(x.rmse_over_scale for x in layers)


def test_selective_keeps_exactly_the_named_layers_float(net, layers, tmp_path):
    model, _, calib, probe, calibrated = net
    named = [layers[4].tensor, layers[9].tensor, layers[-2].tensor]
    blob = quantdebug.quantize(calibrated, denylisted_nodes=named)
    assert sorted(name for _, name in quantdebug.float_compute_ops(blob)) == sorted(named)
    path = tmp_path / "sel.tflite"
    path.write_bytes(blob)
    inp, out, _ = inspect_tflite(path)
    assert inp.dtype == "uint8" and out.dtype == "uint8"
    clf = TFLiteClassifier(path)
    assert clf.predict_one(probe[0]).shape == (30,)
    # The plain full-integer model from the same calibration keeps nothing float.
    assert quantdebug.float_compute_ops(quantdebug.quantize(calibrated)) == []
    assert quantdebug.weights_granularity(blob) == "per-channel"
    per_tensor = quantdebug.quantize(calibrated, per_channel=False)
    assert quantdebug.weights_granularity(per_tensor) == "per-tensor"


def test_selective_format_denylists_the_debuggers_worst_layers(net, layers):
    _, sm, calib, _, calibrated = net
    sel = quantdebug.selective(sm, representative_from(calib), max_layers=2, threshold=0.0,
                               calibrated=calibrated, layers=layers)
    worst2 = [x.tensor for x in quantdebug.worst(layers, 2)]
    assert [x.tensor for x in sel.float_layers] == worst2
    assert sorted(name for _, name in quantdebug.float_compute_ops(sel.model)) == sorted(worst2)


def test_choose_float_layers_takes_the_worst_above_the_line():
    from common.schemas import LayerError

    def layer(i, r):
        return LayerError(index=i, tensor=f"t{i}", op="CONV_2D", layers=[f"l{i}"], rmse_over_scale=r,
                          mean_error=0.0, max_abs_error=0.0, rmse=r, scale=1.0, zero_point=0, num_elements=1)

    ls = [layer(0, 0.3), layer(1, 2.0), layer(2, 0.9), layer(3, 0.5), layer(4, 1.1)]
    assert [x.tensor for x in quantdebug.choose_float_layers(ls, 5)] == ["t1", "t4", "t2"]
    assert [x.tensor for x in quantdebug.choose_float_layers(ls, 2)] == ["t1", "t4"]
    # Nothing above the line: the single worst layer still goes float.
    assert [x.tensor for x in quantdebug.choose_float_layers(ls, 5, threshold=5.0)] == ["t1"]
    with pytest.raises(ConversionError, match="max_layers"):
        quantdebug.choose_float_layers(ls, 0)


def _ranges(calibrated):
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated)).subgraphs[0]
    return {t.name: (float(t.quantization.min[0]), float(t.quantization.max[0])) for t in graph.tensors
            if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1}


def test_percentile_ranges_narrow_every_activation_but_the_raw_pixel_input(net, tmp_path):
    model, _, calib, probe, calibrated = net
    rep = representative_from(calib)
    assert quantdebug.percentile_ranges(calibrated, rep, 100) == calibrated  # the converter's own min/max
    narrowed = quantdebug.percentile_ranges(calibrated, rep, 60)
    before, after = _ranges(calibrated), _ranges(narrowed)
    assert before.keys() == after.keys()
    inside = [before[k][0] <= after[k][0] <= after[k][1] <= before[k][1] for k in before]
    assert all(inside)
    narrower = [k for k in before if after[k][1] - after[k][0] < before[k][1] - before[k][0]]
    assert len(narrower) > len(before) // 2
    (image,) = [k for k in before if after[k] == before[k] == (0.0, 255.0)]  # the input keeps 0..255
    path = tmp_path / "p60.tflite"
    path.write_bytes(quantdebug.quantize(narrowed))
    inp, out, _ = inspect_tflite(path)
    assert inp.dtype == "uint8" and inp.quantization.scale == 1.0 and inp.quantization.zero_point == 0
    assert TFLiteClassifier(path).predict_one(probe[0]).shape == (30,)
    with pytest.raises(ConversionError, match="between 50 and 100, got 40"):
        quantdebug.percentile_ranges(calibrated, rep, 40)
