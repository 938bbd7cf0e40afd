"""Quantization-aware fine-tuning in Keras 3: fake-quantized activations with learnt ranges.

tensorflow-model-optimization's QAT needs Keras 2 (tf_keras) and cannot load our Keras 3
models; ai-edge-quantizer quantizes finished .tflite files only. What works with the pinned
stack is TensorFlow's own fake-quantization op inside Keras 3 layers: `FakeQuant` after every
layer output that stays a tensor of its own in the converted model, a fine-tuning phase in
which the network learns to live with 8-bit activations, then the int8 conversion. The
converter reads each FakeQuantWithMinMaxVars op's range as that tensor's quantization range
(the scales in the .tflite are the learnt ones); tensors without one (the preprocessing
output, the logits) are calibrated on the representative images as in plain int8.

Where a FakeQuant goes: after the layer that produces a tensor TFLite keeps. A convolution
followed by BatchNormalization is folded into one CONV_2D, and a ReLU/ReLU6 after it is fused,
so the range goes after the last layer of that chain; the same for a residual add followed by
a ReLU (ResNet50), which TFLite's ADD takes as its fused activation. Byte-copying layers (padding, pooling by
max, reshapes) keep their input's range, and sigmoid/softmax outputs have TFLite's fixed
int8 range (1/256), so none goes after them. Weights are not fake-quantized in training: the
converter quantizes them per channel (symmetric, 8 bits), an error far below the
activations' (the debugger's per-layer figures for the int8 models).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from common.archs import _all_layers

# Moving average of each batch's min/max during fine-tuning. tensorflow-model-optimization's
# MovingAverageQuantizer uses 0.999 over a whole training; one epoch of fine-tuning needs a
# shorter memory, or the ranges stay near the calibration's min/max, whose outliers are what
# int8 loses accuracy to. EfficientNet-B2 of the quantization bench (float 90.3 %), one epoch:
# decay 0.99 with LR_FACTOR 0.1 -> 85.8 % int8; decay 0.9 with LR_FACTOR 0.01 -> 92.2 %.
EMA_DECAY = 0.9
# Fine-tuning runs at this fraction of the recipe's peak learning rate, constant: the trained
# model sits where a cosine schedule ended (1 % of its peak), and a larger step undoes training.
LR_FACTOR = 0.01
NUM_BITS = 8

# Layers after which TFLite keeps the input's quantization (byte copies), or whose int8 output
# range is fixed by the kernel (LOGISTIC, SOFTMAX, TANH).
_PASS_THROUGH = ("ZeroPadding2D", "MaxPooling2D", "Reshape", "Flatten", "Dropout", "InputLayer",
                 "Cropping2D", "Permute", "SpatialDropout2D")
_FIXED_RANGE_ACTIVATIONS = ("sigmoid", "softmax", "tanh", "hard_sigmoid")
_FUSED_ACTIVATIONS = ("relu", "relu6")
_FOLDED_INTO_NEXT = ("Conv2D", "DepthwiseConv2D", "Dense", "SeparableConv2D")
_PREPROCESSING = ("Rescaling", "Normalization", "CaffePreprocess")

@functools.cache
def fake_quant_class():
    """The registered Keras layer (created on first use, so importing this module needs no Keras)."""
    import keras

    @keras.saving.register_keras_serializable(package="scenebench")
    class FakeQuant(keras.layers.Layer):
        """8-bit fake quantization of an activation, its range a moving average of batch extremes.

        `observing`: while True (eager calls only), the layer records the running min/max of
        what passes and returns it unquantized: the starting ranges, as the converter's
        calibration would set them. In training the range follows each batch's extremes with
        EMA_DECAY; in inference it is fixed. `bypass`: while True (eager calls only), the layer
        passes its input through untouched: the fine-tuned weights in float.
        """

        def __init__(self, ema_decay: float = EMA_DECAY, **kwargs):
            super().__init__(**kwargs)
            self.ema_decay = float(ema_decay)
            self.observing = False
            self.bypass = False

        def build(self, input_shape):
            self.range_min = self.add_weight(name="range_min", shape=(), initializer="zeros", trainable=False)
            self.range_max = self.add_weight(name="range_max", shape=(), initializer="zeros", trainable=False)

        def call(self, x, training=None):
            import tensorflow as tf

            if self.bypass:
                return x
            lo = tf.minimum(tf.reduce_min(x), 0.0)  # an 8-bit range always holds 0 exactly
            hi = tf.maximum(tf.reduce_max(x), 0.0)
            if self.observing:
                self.range_min.assign(tf.minimum(self.range_min, lo))
                self.range_max.assign(tf.maximum(self.range_max, hi))
                return x
            if training:
                d = self.ema_decay
                self.range_min.assign(d * self.range_min + (1.0 - d) * lo)
                self.range_max.assign(d * self.range_max + (1.0 - d) * hi)
            return tf.quantization.fake_quant_with_min_max_vars(x, self.range_min, self.range_max,
                                                               num_bits=NUM_BITS, narrow_range=False)

        def get_config(self):
            return {**super().get_config(), "ema_decay": self.ema_decay}

    return FakeQuant


def _consumers(model) -> dict[str, list]:
    """Layer name -> the layers that take its output, over the model and its nested models."""
    out: dict[str, list] = {}
    for layer in _all_layers(model):
        for node in getattr(layer, "_inbound_nodes", []):
            for parent in node.parent_nodes:
                out.setdefault(parent.operation.name, []).append(layer)
    return out


def _activation_name(layer) -> str | None:
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    return getattr(act, "__name__", str(act))


def _fuses_into(layer) -> bool:
    """Whether TFLite folds or fuses `layer` into the op that computes from it."""
    cls = type(layer).__name__
    if cls == "ReLU":
        return layer.max_value in (None, 6.0) and not layer.negative_slope and not layer.threshold
    if cls == "Activation":
        return _activation_name(layer) in _FUSED_ACTIVATIONS
    return cls == "BatchNormalization"


def needs_fake_quant(layer, consumers: dict[str, list]) -> bool:
    """Whether a FakeQuant belongs after this layer's output (see the module docstring)."""
    import keras

    cls = type(layer).__name__
    if isinstance(layer, keras.Model) or cls in _PASS_THROUGH or cls in _PREPROCESSING:
        return False
    if _activation_name(layer) in _FIXED_RANGE_ACTIVATIONS:
        return False
    after = consumers.get(layer.name, [])
    linear = _activation_name(layer) in (None, "linear")
    if (cls in _FOLDED_INTO_NEXT or cls in ("BatchNormalization", "Add")) and linear and len(after) == 1:
        nxt = type(after[0]).__name__
        if cls in _FOLDED_INTO_NEXT and nxt == "BatchNormalization":
            return False  # folded into the convolution: one CONV_2D, one output tensor
        if nxt != "BatchNormalization" and _fuses_into(after[0]):
            return False  # a ReLU/ReLU6 fused into the op (CONV_2D, FULLY_CONNECTED and ADD take one)
    return True


def quantize_model(model):
    """A copy of `model` (same layers, same weights) with FakeQuant after every kept tensor.

    A convolution or dense layer with a built-in non-linear activation (EfficientNet's
    squeeze-and-excitation convolutions, the softmax head) becomes the layer without it, a
    FakeQuant on its output (TFLite keeps that tensor: CONV_2D then LOGISTIC), and the
    activation as a layer of its own. Returns (copy, names of the quantized tensors' layers).
    """
    import keras

    fq_cls = fake_quant_class()
    consumers = _consumers(model)
    quantized: list[str] = []
    split: dict[str, str] = {}

    def clone(layer):
        cfg = layer.get_config()
        act = _activation_name(layer)
        if type(layer).__name__ in _FOLDED_INTO_NEXT and act not in (None, "linear"):
            cfg["activation"] = "linear"
            split[layer.name] = act
        return layer.__class__.from_config(cfg)

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        act = split.get(layer.name)
        if act is not None:
            quantized.append(layer.name)
            out = fq_cls(name=f"{layer.name}_preact_fq")(out)
            out = keras.layers.Activation(act, name=f"{layer.name}_{act}")(out)
            if act in _FIXED_RANGE_ACTIVATIONS:
                return out
            quantized.append(f"{layer.name}_{act}")
            return fq_cls(name=f"{layer.name}_fq")(out)
        if needs_fake_quant(layer, consumers):
            quantized.append(layer.name)
            out = fq_cls(name=f"{layer.name}_fq")(out)
        return out

    copy = keras.models.clone_model(model, clone_function=clone, call_function=call, recursive=True)
    originals = {layer.name: layer for layer in _all_layers(model) if not isinstance(layer, keras.Model)}
    for layer in _all_layers(copy):
        if isinstance(layer, (keras.Model, fq_cls)) or not layer.weights:
            continue
        src = originals.get(layer.name)
        if src is None:
            raise ValueError(f"layer {layer.name!r} of the quantization-aware copy has no original")
        layer.set_weights(src.get_weights())
        layer.trainable = src.trainable
    return copy, quantized


def fake_quant_layers(model) -> list:
    fq_cls = fake_quant_class()
    return [layer for layer in _all_layers(model) if isinstance(layer, fq_cls)]


@contextlib.contextmanager
def _every_fake_quant(model, mode: str):
    """Every FakeQuant of `model` in `mode` ("observing" or "bypass") while the block runs (eager
    calls only: a traced function keeps the mode it was traced in); yields the layers."""
    fqs = fake_quant_layers(model)
    for fq in fqs:
        setattr(fq, mode, True)
    try:
        yield fqs
    finally:
        for fq in fqs:
            setattr(fq, mode, False)


def observe_ranges(model, batches: Iterable[np.ndarray]) -> int:
    """Set every FakeQuant's starting range to the min/max of its tensor over `batches` (eager)."""
    n = 0
    with _every_fake_quant(model, "observing") as fqs:
        for fq in fqs:
            fq.range_min.assign(0.0)
            fq.range_max.assign(0.0)
        for batch in batches:
            model(np.asarray(batch, dtype=np.float32), training=False)
            n += len(batch)
    return n


def float_predictions(model, batches: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a fake-quantized model with every FakeQuant passed through (eager), and
    the labels: what its fine-tuned weights score in float, the reference that separates what
    quantization costs from what the extra training gained. `batches`: (images, integer labels)."""
    probs, labels = [], []
    with _every_fake_quant(model, "bypass"):
        for x, y in batches:
            probs.append(np.asarray(model(np.asarray(x, dtype=np.float32), training=False)))
            labels.append(np.asarray(y))
    return np.concatenate(probs).astype(np.float32), np.concatenate(labels).astype(np.int64)


@dataclass
class QatOutcome:
    model: object
    fake_quant_layers: int
    observed_images: int
    steps: int
    batch_size: int
    learning_rate: float
    optimizer: str
    ema_decay: float
    loss_by_epoch: list[float]
    seconds: float


def fine_tune(model, make_train_ds: Callable[[int, int], object], num_train: int, *, recipe, epochs: int,
              batch_size: int, seed: int, calibration: np.ndarray, lr_factor: float = LR_FACTOR,
              callbacks: list | None = None, jit_compile: str = "auto") -> QatOutcome:
    """Quantization-aware fine-tuning of a trained float32 model.

    BatchNorm layers are frozen (inference mode), as they will be folded into the convolutions;
    the recipe's optimiser runs at a constant `lr_factor` times its peak learning rate.
    """
    import math
    import time

    import keras
    import tensorflow as tf

    from common import training

    t0 = time.monotonic()
    qmodel, _ = quantize_model(model)
    for layer in _all_layers(qmodel):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    n_obs = observe_ranges(qmodel, (calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)))
    lr = training.phase_learning_rate(recipe, "full", batch_size) * lr_factor
    steps = max(1, math.ceil(num_train / batch_size))
    qmodel.compile(optimizer=training.make_optimizer(recipe, lr),
                   loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
                   metrics=[keras.metrics.CategoricalAccuracy(name="top1")],
                   jit_compile=training.keras_jit_compile(jit_compile))
    losses = []
    for epoch in range(epochs):
        data_seed = training.seed_epoch(qmodel, seed, 1000 + epoch)
        ds = training._one_hot(make_train_ds(batch_size, data_seed), qmodel.outputs[0].shape[-1])
        ds = ds.take(steps).apply(tf.data.experimental.assert_cardinality(steps))
        hist = qmodel.fit(ds, initial_epoch=epoch, epochs=epoch + 1, verbose=0, shuffle=False,
                          callbacks=callbacks or [])
        losses.append(round(float(hist.history["loss"][-1]), 5))
    return QatOutcome(model=qmodel, fake_quant_layers=len(fake_quant_layers(qmodel)), observed_images=n_obs,
                      steps=steps * epochs, batch_size=batch_size, learning_rate=lr, optimizer=recipe.optimizer,
                      ema_decay=EMA_DECAY, loss_by_epoch=losses,
                      seconds=round(time.monotonic() - t0, 1))
