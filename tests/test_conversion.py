"""Every architecture converts to every TFLite format and runs in the LiteRT interpreter.

Tiny inputs (32x48) and untrained weights keep this to minutes; what is checked is the
conversion itself: formats, uint8 I/O of int8 models, op sets, and agreement with Keras.
"""

import numpy as np
import pytest

from common import archs
from common.conversion import (
    calibration_images,
    convert,
    dynamic_tensors,
    export_saved_model,
    gpu_compatibility,
    inspect_tflite,
    max_output_difference,
    representative_from,
    requantization_mismatches,
    stratified_indices,
)
from common.errors import ConversionError
from common.evaluation import TFLiteClassifier
from common.schemas import FORMATS

SIZE = (32, 48)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=archs.ARCH_NAMES)
def converted(request, tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    name = request.param
    model = archs.build_model(name, SIZE)
    work = tmp_path_factory.mktemp(name)
    sm = export_saved_model(model, work / "saved_model")
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, (8, *SIZE, 3)).astype("float32")
    probe = rng.uniform(0, 255, (4, *SIZE, 3)).astype("float32")
    out = {}
    for fmt in FORMATS:
        path = work / f"{fmt}.tflite"
        path.write_bytes(convert(sm, fmt, representative_from(calib) if fmt == "int8" else None))
        out[fmt] = path
    return name, model, out, probe, sm


def test_formats_have_the_expected_io_and_size(converted):
    name, _, paths, _, _ = converted
    info = {fmt: inspect_tflite(p) for fmt, p in paths.items()}
    for fmt, (inp, out, ops) in info.items():
        assert inp.shape == [1, *SIZE, 3] and out.shape == [1, 30], (name, fmt)
        assert sum(ops.values()) > 10 and "DELEGATE" not in ops and "CONV_2D" in ops
    inp, out, ops = info["int8"]
    assert inp.dtype == "uint8" and out.dtype == "uint8"
    assert inp.quantization is not None and out.quantization is not None
    # Full integer: no float convolutions left, only (de)quantize at the edges, if any.
    assert not any("DEQUANTIZE" == op for op in ops) or ops.get("DEQUANTIZE", 0) <= 1
    for fmt in ("float32", "float16", "dynamic"):
        assert info[fmt][0].dtype == "float32" and info[fmt][0].quantization is None
    sizes = {fmt: p.stat().st_size for fmt, p in paths.items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    assert sizes["dynamic"] < sizes["float32"]


def test_float_formats_agree_with_keras(converted):
    name, model, paths, probe, _ = converted
    want = np.asarray(model(probe))
    for fmt, tol in (("float32", 1e-4), ("float16", 2e-2), ("dynamic", 5e-2)):
        clf = TFLiteClassifier(paths[fmt])
        got = np.stack([clf.predict_one(x) for x in probe])
        assert np.abs(got - want).max() < tol, (name, fmt, np.abs(got - want).max())


def test_int8_takes_uint8_pixels_and_returns_probabilities(converted):
    name, model, paths, probe, _ = converted
    clf = TFLiteClassifier(paths["int8"])
    assert clf.input["dtype"] == np.uint8
    # The contract: raw camera bytes, exactly (calibrated here on random pixels that never
    # reach 0 or 255, which used to give a scale a little below 1).
    assert clf.input["quantization"] == (1.0, 0)
    got = np.stack([clf.predict_one(x) for x in probe])
    assert got.shape == (4, 30)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=0.1)
    # Raw uint8 straight into the interpreter works too (what an iPhone app feeds it).
    interp = clf.interpreter
    interp.set_tensor(clf.input["index"], probe[:1].astype(np.uint8))
    interp.invoke()
    assert interp.get_tensor(clf.output["index"]).dtype == np.uint8


def test_every_format_has_static_shapes_and_the_gpu_delegate_takes_every_op(converted):
    name, _, paths, _, saved_model = converted
    for fmt, path in paths.items():
        count, examples = dynamic_tensors(path)
        assert count == 0, (name, fmt, examples)
        gpu = gpu_compatibility(path.read_bytes())
        assert gpu.compatible and gpu.ops == [], (name, fmt, gpu.ops)
    # the batch-1 export is the same network: the converted float model computes what Keras does
    assert max_output_difference(paths["float32"].read_bytes(), saved_model) <= 1e-4


def test_wrong_input_size_is_refused(converted):
    _, _, paths, _, _ = converted
    clf = TFLiteClassifier(paths["float32"])
    with pytest.raises(ValueError, match="does not match"):
        clf.predict_one(np.zeros((16, 16, 3), np.float32))


def test_int8_needs_calibration_and_unknown_format_is_named(tmp_path):
    model = archs.build_model("mobilenet_v2", SIZE)
    sm = export_saved_model(model, tmp_path / "sm")
    with pytest.raises(ConversionError, match="calibration"):
        convert(sm, "int8", None)
    with pytest.raises(ConversionError, match="valid values: float32, int8, float16, dynamic"):
        convert(sm, "fp8")


def test_stratified_calibration_sample(prepared_synthetic, tmp_path):
    labels = np.repeat(np.arange(5), [10, 3, 1, 7, 2])
    idx = stratified_indices(labels, 10, seed=0)
    assert len(idx) == 10 and len(set(labels[idx])) == 5
    assert (stratified_indices(labels, 10, seed=0) == idx).all()
    m = prepared_synthetic.manifest
    shards = [str(prepared_synthetic.store.root / s.key) for s in m.splits["train"].shards]
    images, got = calibration_images(shards, SIZE, 30, seed=1)
    assert images.shape == (30, *SIZE, 3) and images.dtype == np.float32
    assert len(set(got.tolist())) == 30  # one per class
    assert 0 <= images.min() and images.max() <= 255


def _preprocess_then_conv(preprocess):
    """Input -> preprocessing -> one 3x3 convolution: the start of a backbone."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((*SIZE, 3), name="image")
    outputs = keras.layers.Conv2D(4, 3, name="conv")(preprocess(inputs))
    return keras.Model(inputs, outputs)


def _int8_error(model, blob, tmp_path, images, raw_pixels=True):
    """Largest |int8 - Keras| over images, in output quantization steps."""
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    clf = TFLiteClassifier(path, raw_pixels=raw_pixels)
    got = np.stack([clf.predict_one(x) for x in images])
    return np.abs(got - np.asarray(model(images))).max() / clf.output["quantization"][0]


def test_caffe_preprocessing_survives_int8(tmp_path):
    # keras.ops.flip became REVERSE_V2, mis-scaled by the int8 quantizer (ResNet50: 84 % -> 13 %).
    model = _preprocess_then_conv(archs.caffe_preprocess_class()(name="preprocess"))
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, (16, *SIZE, 3)).astype("float32")
    blob = convert(export_saved_model(model, tmp_path / "sm"), "int8", representative_from(calib))
    assert requantization_mismatches(blob) == []
    images = rng.integers(0, 256, (4, *SIZE, 3)).astype("float32")
    assert _int8_error(model, blob, tmp_path, images) < 3


def test_int8_conversion_refuses_a_mis_scaled_byte_copy(tmp_path):
    import keras
    import tensorflow as tf

    def flip_then_mean(x):  # the old CaffePreprocess formulation
        return keras.ops.flip(x, axis=-1) - keras.ops.convert_to_tensor([103.939, 116.779, 123.68])

    model = _preprocess_then_conv(keras.layers.Lambda(flip_then_mean))
    sm = export_saved_model(model, tmp_path / "sm")
    calib = np.random.default_rng(0).uniform(0, 255, (16, *SIZE, 3)).astype("float32")
    raw = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    raw.optimizations = [tf.lite.Optimize.DEFAULT]
    raw.representative_dataset = representative_from(calib)
    raw.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    raw.inference_input_type = raw.inference_output_type = tf.uint8
    blob = raw.convert()
    bad = requantization_mismatches(blob)
    if not bad:
        pytest.skip(f"tensorflow {tf.__version__} keeps REVERSE_V2 at its input's scale")
    assert "REVERSE_V2" in bad[0]
    images = np.random.default_rng(1).integers(0, 256, (4, *SIZE, 3)).astype("float32")
    # raw_pixels=False: this converter's input scale comes from the random calibration pixels
    assert _int8_error(model, blob, tmp_path, images, raw_pixels=False) > 10  # what the check protects against
    with pytest.raises(ConversionError, match="REVERSE_V2"):
        convert(sm, "int8", representative_from(calib))


def _squeeze_excite(size=(8, 12)):
    """A squeeze-and-excitation block as EfficientNet has one: a Reshape of pooled channels."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((*size, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    s = keras.layers.Reshape((1, 1, 4))(keras.layers.GlobalAveragePooling2D()(x))
    x = keras.layers.Multiply()([x, s])
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_a_dynamic_batch_is_refused_and_named(tmp_path):
    import tensorflow as tf

    model = _squeeze_excite()
    # Keras' default export keeps the batch dimension open: the SE block's Reshape then reads
    # the batch size at run time (SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE).
    model.export(str(tmp_path / "dynamic"), format="tf_saved_model", verbose=False)
    blob = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "dynamic")).convert()
    count, examples = dynamic_tensors(blob)
    assert count > 0 and "[-1, 8, 12, 3]" in examples[0]
    gpu = gpu_compatibility(blob)
    assert not gpu.compatible
    reasons = {(i.op, i.reason) for i in gpu.ops}
    assert ("SHAPE", "Not supported op SHAPE") in reasons
    assert ("STRIDED_SLICE", "STRIDED_SLICE supports for 3 or 4 dimensional tensors only") in reasons
    assert any("dynamic-shaped tensor" in r for _, r in reasons)
    with pytest.raises(ConversionError, match=r"tensors with a dynamic shape .*batch-1 input signature"):
        convert(tmp_path / "dynamic", "float32")
    # the same model exported by scenebench: static, delegable, and the same outputs
    sm = export_saved_model(model, tmp_path / "static")
    static = convert(sm, "float32")
    assert dynamic_tensors(static) == (0, [])
    assert gpu_compatibility(static).compatible
    assert max_output_difference(static, sm) <= 1e-6


def test_output_check_catches_a_different_network(tmp_path):
    import keras

    first = export_saved_model(_squeeze_excite(), tmp_path / "a")
    keras.utils.set_random_seed(1)
    other = keras.models.clone_model(_squeeze_excite())  # same graph, other weights
    blob = convert(export_saved_model(other, tmp_path / "b"), "float32")
    assert max_output_difference(blob, first) > 1e-3


def test_int8_input_is_raw_pixels_whatever_the_calibration_range(tmp_path):
    # Photos whose pixels span 20..230 used to give the uint8 input scale 0.902 (230 / 255):
    # an app feeding camera bytes was 10 % off.
    model = _preprocess_then_conv(keras_rescaling())
    sm = export_saved_model(model, tmp_path / "sm")
    rng = np.random.default_rng(0)
    images = rng.integers(20, 231, (4, *SIZE, 3)).astype("float32")
    calib = np.concatenate([images, rng.uniform(20, 230, (4, *SIZE, 3)).astype("float32")])
    blob = convert(sm, "int8", representative_from(calib))
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    inp, out, _ = inspect_tflite(path)
    assert inp.dtype == "uint8" and (inp.quantization.scale, inp.quantization.zero_point) == (1.0, 0)
    # camera bytes straight into the interpreter give what Keras gives on the same pixels
    clf = TFLiteClassifier(path)
    got = []
    for x in images:
        clf.interpreter.set_tensor(clf.input["index"], x[None].astype(np.uint8))
        clf.interpreter.invoke()
        got.append(clf._dequantize(clf.interpreter.get_tensor(clf.output["index"])[0]))
    assert np.abs(np.stack(got) - np.asarray(model(images))).max() / out.quantization.scale < 3


def keras_rescaling():
    import keras

    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")


def test_int8_input_that_cannot_take_raw_pixels_is_refused_with_its_parameters(tmp_path):
    import keras

    # A first layer that joins the raw pixels with a rescaled copy: the quantizer gives both
    # one scale, so the input can no longer take bytes as they are.
    model = _preprocess_then_conv(
        lambda x: keras.layers.Concatenate()([x, keras.layers.Rescaling(4.0)(x)]))
    sm = export_saved_model(model, tmp_path / "sm")
    calib = np.random.default_rng(0).uniform(0, 255, (8, *SIZE, 3)).astype("float32")
    with pytest.raises(ConversionError, match=r"uint8 with scale 4 and zero point 0; the contract is raw camera "
                                              r"bytes: uint8 with scale 1 and zero point 0"):
        convert(sm, "int8", representative_from(calib))


def test_evaluation_refuses_an_int8_input_that_is_not_raw_pixels(tmp_path):
    import tensorflow as tf

    model = _preprocess_then_conv(keras_rescaling())
    sm = export_saved_model(model, tmp_path / "sm")
    raw = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    raw.optimizations = [tf.lite.Optimize.DEFAULT]
    raw.representative_dataset = representative_from(
        np.random.default_rng(0).uniform(20, 230, (8, *SIZE, 3)).astype("float32"))
    raw.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    raw.inference_input_type = raw.inference_output_type = tf.uint8
    path = tmp_path / "old.tflite"
    path.write_bytes(raw.convert())  # the converter's own choice: scale from the 20..230 range
    with pytest.raises(ValueError, match="not raw pixels"):
        TFLiteClassifier(path)
