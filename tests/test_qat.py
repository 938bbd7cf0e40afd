"""int8-qat: fake-quantized activations in Keras 3, fine-tuned, converted with their learnt ranges.

Tiny 32x48 networks from random weights, their BatchNorm statistics set from their own input
(as in test_quant.py), and a few synthetic images: enough to check where the ranges go, that
the converter keeps them, and that the .tflite takes raw pixels and runs in LiteRT.
"""

import numpy as np
import pytest

from common import archs, conversion, qat
from common.archs import Recipe
from common.schemas import FORMATS, INTEGER_FORMATS

SIZE = (32, 48)
pytestmark = pytest.mark.slow


def _net(arch: str):
    import keras

    keras.utils.set_random_seed(0)
    model = archs.build_model(arch, SIZE, num_classes=5)
    archs.set_batchnorm_momentum(model, 0.0)
    model(np.random.default_rng(0).uniform(0, 255, (16, *SIZE, 3)).astype("float32"), training=True)
    return model


@pytest.fixture(scope="module")
def mobilenet():
    return _net("mobilenet_v2")


def _images(n, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n, *SIZE, 3)).astype("float32")


def _by_name(model):
    return {layer.name: layer for layer in archs._all_layers(model)}


def test_int8_qat_is_a_registered_integer_format():
    assert "int8-qat" in FORMATS and "int8-qat" in INTEGER_FORMATS


def test_ranges_go_after_the_tensors_tflite_keeps(mobilenet):
    """conv -> BN -> ReLU6 is one CONV_2D in TFLite: one range, after the ReLU6; a projection's BN
    output (no activation) and every residual Add get one; padding and the head's softmax none."""
    copy, names = qat.quantize_model(mobilenet)
    layers = _by_name(mobilenet)
    kinds = {n: type(layers[n]).__name__ for n in names if n in layers}
    assert "Conv1_relu" in names and "block_1_project_BN" in names and "block_2_add" in names
    assert not {"Conv1", "bn_Conv1", "block_1_expand", "block_1_expand_BN", "block_1_pad"} & set(names)
    assert set(kinds.values()) <= {"ReLU", "BatchNormalization", "Add", "GlobalAveragePooling2D", "Dense"}
    # every BN named is one not followed by a ReLU (a projection)
    assert all(n.endswith("project_BN") for n, k in kinds.items() if k == "BatchNormalization")
    # the head: Dense without its softmax, a range on the logits, then the softmax (fixed int8 range)
    assert "head" in names and "head_softmax" not in names
    assert type(_by_name(copy)["head_softmax"]).__name__ == "Activation"
    assert len(qat.fake_quant_layers(copy)) == len(names)


def test_the_copy_computes_what_the_original_does_until_quantized(mobilenet):
    copy, _ = qat.quantize_model(mobilenet)
    x = _images(4)
    for fq in qat.fake_quant_layers(copy):
        fq.observing = True  # pass-through
    try:
        np.testing.assert_allclose(np.asarray(copy(x)), np.asarray(mobilenet(x)), atol=1e-5)
    finally:
        for fq in qat.fake_quant_layers(copy):
            fq.observing = False


def test_float_predictions_pass_every_range_through_and_leave_the_ranges_alone(mobilenet):
    """int8-qat's float reference: the fake-quantized copy with every FakeQuant bypassed scores
    what the float weights score, and the ranges learnt stay as they were (and in use after)."""
    copy, _ = qat.quantize_model(mobilenet)
    x = _images(6)
    qat.observe_ranges(copy, [x])
    fqs = qat.fake_quant_layers(copy)
    before = [(float(fq.range_min.numpy()), float(fq.range_max.numpy())) for fq in fqs]
    labels = np.arange(6) % 5
    probs, got_labels = qat.float_predictions(copy, [(x[:4], labels[:4]), (x[4:], labels[4:])])
    np.testing.assert_allclose(probs, np.asarray(mobilenet(x)), atol=1e-5)
    assert got_labels.tolist() == labels.tolist() and probs.dtype == np.float32
    assert [(float(fq.range_min.numpy()), float(fq.range_max.numpy())) for fq in fqs] == before
    assert not any(fq.bypass for fq in fqs)
    # with the ranges in use again the outputs are the quantized ones, not the float ones
    assert np.abs(np.asarray(copy(x)) - probs).max() > 1e-4


def test_fine_tuned_ranges_are_the_int8_models_scales(mobilenet, tmp_path):
    """The moving ranges move in training, and the converter keeps every one of them as a tensor's scale."""
    import tensorflow as tf

    images, labels = _images(32), np.arange(32) % 5
    recipe = Recipe(optimizer="adam", head_lr=1e-3, full_lr=1e-3, schedule="cosine", batchnorm="train")

    def make_ds(batch, seed):
        return tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(32, seed=seed).batch(batch)

    out = qat.fine_tune(mobilenet, make_ds, len(images), recipe=recipe, epochs=1, batch_size=8, seed=0,
                        calibration=images[:16])
    assert out.steps == 4 and out.observed_images == 16 and len(out.loss_by_epoch) == 1
    assert out.learning_rate == pytest.approx(1e-3 * qat.LR_FACTOR)
    fqs = qat.fake_quant_layers(out.model)
    assert out.fake_quant_layers == len(fqs) > 40
    ranges = [(float(f.range_min.numpy()), float(f.range_max.numpy())) for f in fqs]
    assert all(lo <= 0.0 <= hi and hi > lo for lo, hi in ranges)

    sm = conversion.export_saved_model(out.model, tmp_path / "sm")
    blob = conversion.convert(sm, "int8", conversion.representative_from(images[:8]))
    assert conversion.raw_pixel_input_problem(blob) is None
    assert conversion.requantization_mismatches(blob) == []
    interp = conversion._interpreter(blob)
    scales = np.array([t["quantization"][0] for t in interp.get_tensor_details() if t["quantization"][0]])
    for lo, hi in ranges:
        # fake_quant nudges the range so that 0 is a whole step; the scale stays (hi - lo) / 255
        assert np.min(np.abs(scales - (hi - lo) / 255.0)) <= 1e-6 * (hi - lo), (lo, hi)

    from common.evaluation import TFLiteClassifier

    path = tmp_path / "int8-qat.tflite"
    path.write_bytes(blob)
    probs = np.stack([TFLiteClassifier(path).predict_one(x) for x in images[:4]])
    assert probs.shape == (4, 5) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=5 / 256)  # a uint8 softmax: 1/256 steps


@pytest.mark.parametrize("arch", ["efficientnet_b2", "resnet50"])  # MobileNetV2: the test above
def test_every_architecture_converts_to_int8_with_its_ranges_and_runs_in_litert(arch, tmp_path):
    """The placement rules on each network: the converter accepts every range, keeps each as a scale,
    and the model takes raw pixels and gives probabilities in LiteRT."""
    from common.evaluation import TFLiteClassifier

    model = _net(arch)
    copy, names = qat.quantize_model(model)
    if arch == "resnet50":  # add -> ReLU is one ADD with a fused activation: one range, after the ReLU
        assert "conv2_block1_add" not in names and "conv2_block1_out" in names
    if arch == "efficientnet_b2":
        layers = _by_name(copy)
        # squeeze-and-excitation: reduce (swish, "silu" in Keras 3) gets a range before and after its
        # activation; expand (sigmoid, a fixed int8 range) only before
        assert {"block1a_se_reduce", "block1a_se_reduce_silu", "block1a_se_expand"} <= set(names)
        assert "block1a_se_expand_sigmoid" not in names
        assert type(layers["block1a_se_expand_sigmoid"]).__name__ == "Activation"
        assert layers["block1a_se_reduce"].get_config()["activation"] == "linear"
        assert "block1a_bn" in names and "block1a_activation" in names  # BN then swish: TFLite keeps both
    images = _images(4)
    assert qat.observe_ranges(copy, [images[:2], images[2:]]) == 4
    sm = conversion.export_saved_model(copy, tmp_path / "sm")
    blob = conversion.convert(sm, "int8", conversion.representative_from(images))
    assert conversion.raw_pixel_input_problem(blob) is None
    assert conversion.requantization_mismatches(blob) == []
    scales = np.array([t["quantization"][0] for t in conversion._interpreter(blob).get_tensor_details()
                       if t["quantization"][0]])
    for fq in qat.fake_quant_layers(copy):
        lo, hi = float(fq.range_min.numpy()), float(fq.range_max.numpy())
        if hi > lo:  # a dead (all-zero) activation has no range to keep
            assert np.min(np.abs(scales - (hi - lo) / 255.0)) <= 1e-6 * (hi - lo), (arch, fq.name, lo, hi)
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    probs = TFLiteClassifier(path).predict_one(images[0])
    assert probs.shape == (5,) and np.isfinite(probs).all()
