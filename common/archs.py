"""The one registry of architectures: constructor, input size, preprocessing, training recipe.

CLI choices, tests and the Argo fan-out list all come from ARCHS. Adding an architecture
is one entry here. Models take raw RGB pixels in 0..255 (float32) and include their own
preprocessing, so a converted .tflite needs nothing but the photo resized to its input.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.errors import ConfigError

DEFAULT_IMAGE_SIZE = (384, 576)  # height, width: CamSDD photos are 576 wide, 384 high
NUM_CLASSES = 30


@dataclass(frozen=True)
class Recipe:
    """How an architecture is fine-tuned: a head phase on a frozen backbone, then the whole net."""

    optimizer: Literal["adam", "adamw", "sgd"]
    head_lr: float
    full_lr: float
    schedule: Literal["cosine", "bit_hyperrule"]
    # BatchNorm while the whole net trains. "frozen": inference mode, its moving statistics,
    # scale and offset kept, as the Keras transfer-learning guide has it for a pretrained
    # backbone (new data's batch statistics would undo what it learnt); "train": updated.
    batchnorm: Literal["frozen", "train"]
    batch_size: int = 32
    head_fraction: float = 0.3  # share of epochs spent on the head when weights are pretrained
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.1
    dropout: float = 0.2
    sgd_momentum: float = 0.9
    # Decoupled weight decay (Keras's: w -= learning_rate * weight_decay * w each step).
    weight_decay: float = 0.0
    # Stochastic depth ("drop connect") of keras.applications' EfficientNets: the rate of the
    # last block (earlier blocks ramp up to it). None: Keras' own 0.2.
    drop_connect_rate: float | None = None

    def __post_init__(self):
        if self.optimizer == "adam" and self.weight_decay:
            raise ConfigError(f"optimizer 'adam' with weight_decay {self.weight_decay} is AdamW: "
                              "use optimizer='adamw'")
        if self.optimizer == "adamw" and not self.weight_decay > 0:
            raise ConfigError("optimizer 'adamw' needs a weight_decay above 0; without it use 'adam'")
        if self.batchnorm not in ("frozen", "train"):
            raise ConfigError(f"unknown batchnorm {self.batchnorm!r}; valid values: frozen, train")

    def as_dict(self) -> dict:
        return {k: v for k in self.__dataclass_fields__ if (v := getattr(self, k)) is not None}


@dataclass(frozen=True)
class Architecture:
    name: str
    display: str
    keras_app: str  # constructor name in keras.applications
    preprocessing: Literal["mobilenet", "builtin", "caffe"]
    imagenet_notop_file: str  # the file keras.applications downloads for weights="imagenet"
    recipe: Recipe
    # keras.applications' EfficientNets add Rescaling(1/sqrt(ImageNet std)) after their
    # Normalization only when weights is the literal string "imagenet": the ported weights
    # store the std where the variance belongs. Any ImageNet-style weights file needs it.
    imagenet_std_rescaling: bool = False
    # Training from random weights: None uses common.training.SCRATCH_RECIPE.
    scratch_recipe: Recipe | None = None
    paper_name: str | None = None
    notes: str = ""
    default_image_size: tuple[int, int] = field(default=DEFAULT_IMAGE_SIZE)


KERAS_ADAMW_WEIGHT_DECAY = 0.004  # keras.optimizers.AdamW's default

ARCHS: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            name="mobilenet_v2",
            display="MobileNetV2",
            keras_app="MobileNetV2",
            preprocessing="mobilenet",
            imagenet_notop_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
            recipe=Recipe(optimizer="adamw", head_lr=1e-3, full_lr=2e-4, schedule="cosine", batchnorm="frozen",
                          weight_decay=KERAS_ADAMW_WEIGHT_DECAY, batch_size=32),
            paper_name="MobileNet V2",
        ),
        Architecture(
            name="efficientnet_b2",
            display="EfficientNet-B2",
            keras_app="EfficientNetB2",
            preprocessing="builtin",  # Rescaling + Normalization layers inside the model
            imagenet_notop_file="efficientnetb2_notop.h5",
            imagenet_std_rescaling=True,
            recipe=Recipe(optimizer="adamw", head_lr=1e-3, full_lr=1e-4, schedule="cosine", batchnorm="frozen",
                          weight_decay=KERAS_ADAMW_WEIGHT_DECAY, batch_size=16, dropout=0.3),
            # From scratch, the generic recipe (Adam 1e-3, Keras' stochastic depth 0.2) left B2 at
            # chance after 3 epochs of the synthetic set at 64x96 (5.0 / 8.3 % top-1, seeds 0 / 1);
            # without stochastic depth and with a 3e-3 peak: 22.2 / 27.8 % (seed 0, either change
            # alone: 7.8 %). Same batch, so no slower; batch 16 reached 33 % but costs ~15 % time.
            scratch_recipe=Recipe(optimizer="adam", head_lr=3e-3, full_lr=3e-3, schedule="cosine", batchnorm="train",
                                  head_fraction=0.0, warmup_fraction=0.05, label_smoothing=0.0,
                                  dropout=0.1, drop_connect_rate=0.0),
            paper_name="EfficientNet",
        ),
        Architecture(
            name="resnet50",
            display="ResNet50 (BiT-style)",
            keras_app="ResNet50",
            preprocessing="caffe",
            imagenet_notop_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            # BiT-HyperRule: SGD momentum 0.9, base lr 0.003 per 512 images scaled by batch,
            # linear warm-up, then x0.1 at 30%, 60% and 90% of the steps; no head-only phase.
            # No weight decay: BiT's fine-tuning has none (big_transfer's train.py: SGD(momentum=0.9)).
            recipe=Recipe(optimizer="sgd", head_lr=0.003, full_lr=0.003, schedule="bit_hyperrule",
                          batchnorm="frozen", batch_size=32, head_fraction=0.0, label_smoothing=0.0,
                          dropout=0.0, weight_decay=0.0),
            notes="Keras ResNet50 fine-tuned with the BiT-HyperRule schedule",
        ),
    )
}

ARCH_NAMES: tuple[str, ...] = tuple(ARCHS)


def get_arch(name: str) -> Architecture:
    try:
        return ARCHS[name]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {name!r}; valid values: {', '.join(ARCH_NAMES)}"
        ) from None


def weights_dir() -> Path:
    """Where pre-downloaded ImageNet weight files are looked for before Keras downloads them."""
    env = os.environ.get("SCENEBENCH_WEIGHTS_DIR")
    if env:
        return Path(env)
    keras_home = os.environ.get("KERAS_HOME", str(Path.home() / ".keras"))
    return Path(keras_home) / "models"


def _preprocess_layer(kind: str):
    import keras

    if kind == "mobilenet":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if kind == "caffe":
        return caffe_preprocess_class()(name="preprocess")
    if kind == "builtin":
        return None
    raise ConfigError(f"unknown preprocessing {kind!r}; valid values: mobilenet, builtin, caffe")


_CAFFE = None


def caffe_preprocess_class():
    """The registered Keras layer for 'caffe' preprocessing (created on first use)."""
    global _CAFFE
    if _CAFFE is not None:
        return _CAFFE
    import keras

    @keras.saving.register_keras_serializable(package="scenebench")
    class CaffePreprocess(keras.layers.Layer):
        """RGB 0..255 -> BGR minus the ImageNet channel means (keras ResNet50's 'caffe' mode).

        The channel flip is a reversed slice, as in keras.applications' own preprocess_input,
        not keras.ops.flip: flip becomes TFLite's REVERSE_V2, which the int8 quantizer gives an
        output scale and zero point different from its input's, while the REVERSE_V2 kernel
        only copies bytes. Every pixel p then reached the network as about 1.49 * p - 123
        (ResNet50 full int8 on the synthetic set: 83.9 % -> 12.8 % top-1). The reversed slice
        becomes STRIDED_SLICE, which the quantizer keeps at its input's scale.
        """

        def call(self, x):
            bgr = x[..., ::-1]
            mean = keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=x.dtype)
            return bgr - mean

    _CAFFE = CaffePreprocess
    return _CAFFE


def resolve_backbone_weights(arch: Architecture, weights: str) -> str | None:
    """'none' -> None; 'imagenet' -> a local file if one is present, else 'imagenet'
    (Keras downloads it); a path to a backbone ('no top') weights file -> that path."""
    if weights == "none":
        return None
    if weights == "imagenet":
        local = weights_dir() / arch.imagenet_notop_file
        return str(local) if local.is_file() else "imagenet"
    return weights


def build_model(arch_name: str, image_size: tuple[int, int], num_classes: int = NUM_CLASSES,
                weights: str = "none", dropout: float | None = None, drop_connect_rate: float | None = None):
    """A Keras classifier taking (H, W, 3) float32 RGB in 0..255, ending in softmax.

    `weights`: 'none', 'imagenet', a backbone weights file (.h5, as keras.applications
    downloads), or a full-model weights file (*.weights.h5 saved by scenebench).
    `drop_connect_rate`: stochastic depth of an EfficientNet backbone (None: Keras' 0.2).
    """
    import keras

    arch = get_arch(arch_name)
    h, w = image_size
    full_model_weights = weights.endswith(".weights.h5")
    backbone_weights = None if full_model_weights else resolve_backbone_weights(arch, weights)
    if backbone_weights not in (None, "imagenet") and not Path(backbone_weights).is_file():
        raise ConfigError(f"weights file {backbone_weights!r} does not exist; give 'none', 'imagenet' or a path")
    if full_model_weights and not Path(weights).is_file():
        raise ConfigError(f"weights file {weights!r} does not exist")
    inputs = keras.Input(shape=(h, w, 3), dtype="float32", name="image")
    pre = _preprocess_layer(arch.preprocessing)
    x = pre(inputs) if pre is not None else inputs
    try:
        backbone = build_backbone(arch, (h, w), backbone_weights)
    except Exception as exc:  # download failures surface as many types
        if backbone_weights == "imagenet":
            raise ConfigError(
                f"ImageNet weights for {arch.name} could not be loaded ({exc.__class__.__name__}: {exc}); "
                f"place {arch.imagenet_notop_file} in {weights_dir()} (or set SCENEBENCH_WEIGHTS_DIR), "
                "or use --weights none"
            ) from exc
        raise
    if drop_connect_rate is not None:
        set_drop_connect_rate(backbone, drop_connect_rate)
    x = backbone(x)
    rate = arch.recipe.dropout if dropout is None else dropout
    if rate > 0:
        x = keras.layers.Dropout(rate, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")(x)
    model = keras.Model(inputs, outputs, name=arch.name)
    if full_model_weights:
        model.load_weights(weights)
    return model


# keras.applications.efficientnet.IMAGENET_STDDEV_RGB; a test checks the graph against Keras's own.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def build_backbone(arch: Architecture, image_size: tuple[int, int], weights: str | None):
    """The keras.applications network without its top, average-pooled, named 'backbone'.

    `weights`: None, 'imagenet' (Keras downloads the file, or finds it in its cache) or the
    path of a no-top weights file. A file gets exactly the graph Keras builds for
    'imagenet', so a pre-seeded or given file computes what a downloaded one does.
    """
    import keras

    ctor = getattr(keras.applications, arch.keras_app)
    from_file = weights not in (None, "imagenet")
    # Keras's own model name is kept while it builds: its EfficientNets name the file they
    # download after the model (name="backbone" asked for backbone_notop.h5, which does not exist).
    backbone = ctor(include_top=False, weights=None if from_file else weights, input_shape=(*image_size, 3),
                    pooling="avg")
    if from_file:
        if arch.imagenet_std_rescaling:
            backbone = _with_imagenet_std_rescaling(backbone)
        backbone.load_weights(weights)
    backbone.name = "backbone"
    return backbone


def _with_imagenet_std_rescaling(backbone):
    """The backbone with the Rescaling keras.applications inserts after Normalization for 'imagenet'."""
    import keras

    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Normalization)]
    if len(norms) != 1:
        raise ConfigError(f"{backbone.name} has {len(norms)} Normalization layers; expected the one "
                          "keras.applications' EfficientNet stem has")

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if isinstance(layer, keras.layers.Normalization):
            out = keras.layers.Rescaling([1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB])(out)
        return out

    # Fresh layers from the same configs, called in the same order, with the one layer added;
    # the weights are loaded into the copy afterwards.
    return keras.models.clone_model(backbone, call_function=call)


KERAS_DROP_CONNECT_RATE = 0.2  # what keras.applications.EfficientNetB0..B7 build with


def set_drop_connect_rate(backbone, rate: float) -> int:
    """Scale an EfficientNet backbone's stochastic depth so that its last block drops `rate`.

    keras.applications' EfficientNets give block b of n a Dropout (`block*_drop`, whole
    residual branches) of 0.2 * b / n and have no argument to change it; the ramp is kept
    and scaled. Returns how many layers were changed; a backbone without them is an error.
    """
    import keras

    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"drop_connect_rate must be in [0, 1), got {rate}")
    layers = [layer for layer in _all_layers(backbone)
              if isinstance(layer, keras.layers.Dropout) and layer.name.startswith("block")
              and layer.name.endswith("_drop")]
    if not layers:
        raise ConfigError(f"{backbone.name} has no stochastic-depth (block*_drop) layers to set")
    for layer in layers:
        layer.rate = layer.rate * rate / KERAS_DROP_CONNECT_RATE
    return len(layers)


def set_batchnorm_momentum(model, momentum: float) -> int:
    """Set every BatchNormalization layer's momentum; returns how many were changed.

    A short run (tests, smoke runs) with Keras' default 0.99 leaves the moving statistics
    near their initial values, and inference outputs stay uniform; the trainer lowers the
    momentum so that the averages converge within the steps actually run.
    """
    import keras

    n = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            n += 1
    return n


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
