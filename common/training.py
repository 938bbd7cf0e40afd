"""Fine-tuning of a registry architecture: phases, schedules, per-epoch checkpoints and resume.

The library works on local paths and tf.data datasets; the train job moves files to and
from the store. A checkpoint (`last.keras`, with optimizer state) and `state.json` are
written after every epoch, so a restarted pod continues from the last finished epoch.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from common.archs import Architecture, Recipe, _all_layers, build_model, get_arch, set_batchnorm_momentum
from common.errors import ScenebenchError
from common.logging import get_logger
from common.provenance import cpu_count, cpu_model
from common.schemas import EpochRecord, Hardware

Phase = Literal["head", "full"]
MixedPrecision = Literal["auto", "on", "off"]

# When training from random weights the fine-tuning recipes do not apply (a frozen random
# backbone learns nothing; BiT's tiny learning rate is meant for pretrained nets).
SCRATCH_RECIPE = Recipe(optimizer="adam", head_lr=1e-3, full_lr=1e-3, schedule="cosine", batchnorm="train",
                        head_fraction=0.0, warmup_fraction=0.05, label_smoothing=0.0, dropout=0.1)


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    image_size: tuple[int, int]
    epochs: int
    num_classes: int
    weights: str = "none"
    batch_size: int | None = None  # None: the recipe's
    seed: int = 0
    bn_momentum: float | None = None  # None: chosen from the number of steps
    mixed_precision: MixedPrecision = "auto"  # auto: on when TensorFlow sees a GPU
    # XLA compilation of the training step. auto: Keras's choice (off on a CPU-only machine).
    # ResNet50 at 32x48 on 2 CPU cores: 9.3 images/s without, 18.6 with; EfficientNet-B2 was
    # slower with it, so it is a per-run choice.
    jit_compile: Literal["auto", "on", "off"] = "auto"

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"


def effective_recipe(arch: Architecture, pretrained: bool) -> Recipe:
    if pretrained:
        return arch.recipe
    return arch.scratch_recipe or SCRATCH_RECIPE


def plan_phases(epochs: int, pretrained: bool, head_fraction: float) -> list[Phase]:
    """Which phase each epoch belongs to: head epochs (frozen backbone) first, then full."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    head = 0
    if pretrained and head_fraction > 0 and epochs >= 2:
        head = min(epochs - 1, max(1, round(epochs * head_fraction)))
    return ["head"] * head + ["full"] * (epochs - head)


def auto_bn_momentum(total_steps: int) -> float:
    """BatchNorm momentum whose averaging window fits the run: 1/20 of the steps, at most 100.

    Keras' 0.99 (a 100-step window) is right for real runs. In a short run the weights
    move fast to the very end, and a long window averages statistics of networks that no
    longer exist: on the synthetic set a 90-step MobileNetV2 run validated at chance with
    a 22-step window and at 38 % top-1 with a 5-step one.
    """
    window = max(2.0, min(100.0, total_steps / 20.0))
    return round(1.0 - 1.0 / window, 4)


def phase_learning_rate(recipe: Recipe, phase: Phase, batch_size: int) -> float:
    base = recipe.head_lr if phase == "head" else recipe.full_lr
    if recipe.schedule == "bit_hyperrule":
        # BiT's 0.003 is for a global batch of 512; scale linearly for other batch sizes.
        return base * batch_size / 512.0
    return base


def make_schedule(recipe: Recipe, phase: Phase, phase_steps: int, batch_size: int):
    """A Keras LearningRateSchedule for one phase (steps counted by that phase's optimizer)."""
    import keras

    peak = phase_learning_rate(recipe, phase, batch_size)
    warmup = max(1, int(round(recipe.warmup_fraction * phase_steps))) if phase_steps > 1 else 0
    steps = max(1, phase_steps)

    if recipe.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else peak, decay_steps=max(1, steps - warmup),
            warmup_target=peak if warmup else None, warmup_steps=warmup, alpha=0.01)
    if recipe.schedule == "bit_hyperrule":
        # BiT-HyperRule: linear warm-up, then x0.1 at 30 %, 60 % and 90 % of the steps.
        bounds = sorted({max(warmup + 1, int(steps * f)) for f in (0.3, 0.6, 0.9)})
        values = [peak * (0.1 ** i) for i in range(len(bounds) + 1)]
        return _WarmupPiecewise(peak, warmup, bounds, values)
    raise ValueError(f"unknown schedule {recipe.schedule!r}; valid values: cosine, bit_hyperrule")


def _warmup_piecewise_cls():
    import keras

    @keras.saving.register_keras_serializable(package="scenebench")
    class WarmupPiecewise(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, peak, warmup, bounds, values):
            self.peak, self.warmup = float(peak), int(warmup)
            self.bounds, self.values = [int(b) for b in bounds], [float(v) for v in values]
            self._pw = keras.optimizers.schedules.PiecewiseConstantDecay(self.bounds, self.values)

        def __call__(self, step):
            step_f = keras.ops.cast(step, "float32")
            warm = self.peak * (step_f + 1.0) / float(max(1, self.warmup))
            return keras.ops.where(step_f < self.warmup, warm, self._pw(step))

        def get_config(self):
            return {"peak": self.peak, "warmup": self.warmup, "bounds": self.bounds, "values": self.values}

    return WarmupPiecewise


_WP = None


def _WarmupPiecewise(*args):
    global _WP
    if _WP is None:
        _WP = _warmup_piecewise_cls()
    return _WP(*args)


def make_optimizer(recipe: Recipe, schedule):
    import keras

    # Keras applies weight_decay decoupled from the gradient, in every optimizer (AdamW is Adam
    # with a non-zero default); None rather than 0.0 keeps it out of the update entirely.
    decay = recipe.weight_decay or None
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=schedule)
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=decay)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=schedule, momentum=recipe.sgd_momentum, nesterov=False,
                                    weight_decay=decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid values: adam, adamw, sgd")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's data order, augmentation and dropout draws.

    A function of (seed, epoch) only: a run resumed after a restart draws in epoch 3 what an
    uninterrupted run draws there. Drawing from one stream per process instead restarted the
    shuffle and augmentation order at epoch 1 after every restart.
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % 2**31)


def seed_epoch(model, seed: int, epoch: int) -> int:
    """Seed everything random in one epoch of training; returns the epoch's data seed.

    Python, NumPy, TensorFlow and Keras's global generator, and each layer's own generator
    (Dropout, EfficientNet's stochastic depth): their state is not in a checkpoint, so it is
    set from (seed, epoch) rather than carried over from the previous epoch.
    """
    import keras

    data_seed = epoch_seed(seed, epoch)
    keras.utils.set_random_seed(data_seed)
    states = [v for v in model.variables if v.name == "seed_generator_state"]
    layer_seeds = np.random.SeedSequence([seed, epoch, 1]).generate_state(len(states)) % 2**31
    for state, layer_seed in zip(states, layer_seeds):
        state.assign(np.array([layer_seed, 0], dtype=state.dtype))
    return data_seed


def set_phase(model, phase: Phase, batchnorm: Literal["frozen", "train"] = "train") -> None:
    """Head: the backbone frozen. Full: the backbone trains, its BatchNorm frozen or not.

    A BatchNormalization layer with trainable=False runs in inference mode in Keras (moving
    statistics, not the batch's, and none updated): the Keras transfer-learning guide's way
    of keeping a pretrained backbone's BatchNorm out of fine-tuning. Freezing the layers,
    rather than calling the backbone with training=False, keeps EfficientNet's stochastic
    depth acting during fine-tuning.
    """
    import keras

    backbone = model.get_layer("backbone")
    backbone.trainable = phase == "full"
    if phase == "full" and batchnorm == "frozen":
        for layer in _all_layers(backbone):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    elif batchnorm not in ("frozen", "train"):
        raise ValueError(f"unknown batchnorm {batchnorm!r}; valid values: frozen, train")


def compile_for_phase(model, recipe: Recipe, phase: Phase, phase_steps: int, batch_size: int,
                      jit_compile: Literal["auto", "on", "off"] = "auto") -> None:
    import keras

    set_phase(model, phase, recipe.batchnorm)
    model.compile(
        optimizer=make_optimizer(recipe, make_schedule(recipe, phase, phase_steps, batch_size)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                 keras.metrics.TopKCategoricalAccuracy(k=3, name="top3")],
        jit_compile=keras_jit_compile(jit_compile),
    )


def keras_jit_compile(mode: Literal["auto", "on", "off"]):
    """Keras's compile(jit_compile=...) value for a job's --jit-compile setting."""
    return {"auto": "auto", "on": True, "off": False}[mode]


def detect_hardware(mixed_precision: bool, strategy) -> Hardware:
    import tensorflow as tf

    gpus = []
    for d in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(d)
            gpus.append(details.get("device_name", d.name))
        except Exception:  # details are informative only
            gpus.append(d.name)
    return Hardware(cpu=cpu_model(), cpu_count=cpu_count(), gpus=gpus, mixed_precision=mixed_precision,
                    strategy=type(strategy).__name__, replicas=int(strategy.num_replicas_in_sync))


def distribution(mixed_precision: MixedPrecision = "auto"):
    """(strategy, mixed): MirroredStrategy over several GPUs, and mixed_float16 when asked or,
    with 'auto', when a GPU exists. The caller resets the global policy after training."""
    import keras
    import tensorflow as tf

    if mixed_precision not in ("auto", "on", "off"):
        raise ValueError(f"unknown mixed precision mode {mixed_precision!r}; valid values: auto, on, off")
    gpus = tf.config.list_physical_devices("GPU")
    for g in gpus:
        try:
            tf.config.experimental.set_memory_growth(g, True)
        except RuntimeError:  # already initialised
            pass
    mixed = mixed_precision == "on" or (mixed_precision == "auto" and bool(gpus))
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return strategy, mixed


def uses_float16(model) -> bool:
    """Whether any layer computes in float16 (a model trained under mixed precision)."""
    return any(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32") == "float16"
               for layer in _all_layers(model))


def float32_copy(model, arch: str | None = None, image_size: tuple[int, int] | None = None,
                 num_classes: int | None = None):
    """The same network and weights, computing in float32.

    A .keras file saved under mixed precision recreates float16 layers when loaded,
    whatever the global policy; converting that graph would put float16 casts into the
    "float32" TFLite model. The copy is rebuilt from the model's own config with every
    layer's policy set to float32 -- not from the registry, whose weights='none' graph can
    differ from the trained one (EfficientNet built for ImageNet weights has one more
    layer) -- and takes its variables, which are float32 already. `arch`, `image_size` and
    `num_classes`, when given, are checked against the model.
    """
    import keras

    if not uses_float16(model):
        return model
    _register_custom_objects()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = keras.Model.from_config(_float32_config(model.get_config()))
        # Layer by layer, as saving and loading do: set_weights would leave Normalization's
        # cached mean and variance at their initial values (only loading refreshes them).
        for source, target in zip(_all_layers(model), _all_layers(copy), strict=True):
            state: dict = {}
            source.save_own_variables(state)
            target.load_own_variables(state)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    expected = {"architecture": (arch, copy.name),
                "image size": (tuple(image_size) if image_size else None, tuple(copy.input_shape[1:3])),
                "classes": (num_classes, copy.output_shape[-1])}
    wrong = [f"{what} {got!r}, expected {want!r}" for what, (want, got) in expected.items()
             if want is not None and want != got]
    if wrong:
        raise ScenebenchError(f"model {model.name!r} does not match its training record: {'; '.join(wrong)}")
    return copy


_FLOAT16_POLICIES = frozenset({"mixed_float16", "mixed_bfloat16", "float16", "bfloat16"})


def _float32_config(config):
    """A Keras config with every float16 layer policy and tensor dtype made float32."""
    if isinstance(config, list):
        return [_float32_config(c) for c in config]
    if not isinstance(config, dict):
        return config
    out = {k: _float32_config(v) for k, v in config.items()}
    if out.get("class_name") == "DTypePolicy" and out.get("config", {}).get("name") in _FLOAT16_POLICIES:
        out["config"] = {**out["config"], "name": "float32"}
    if isinstance(out.get("dtype"), str) and out["dtype"] in _FLOAT16_POLICIES:  # a policy by name, a tensor dtype
        out["dtype"] = "float32"
    return out


@dataclass
class TrainState:
    """What state.json holds: how far training got, to resume after a restart."""

    cache_key: str
    epochs_done: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    resumed_from_epoch: int | None = None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "TrainState":
        return cls(**json.loads(path.read_text()))


@dataclass
class TrainOutcome:
    model_path: Path
    history: list[EpochRecord]
    hardware: Hardware
    recipe: dict
    batch_size: int
    wall_time_s: float
    train_seconds: float
    images_per_s: float
    resumed_from_epoch: int | None
    val_probs: np.ndarray
    val_labels: np.ndarray


def _one_hot(ds, num_classes: int):
    import tensorflow as tf

    return ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)


def predict(model, ds) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels over a finite (images, labels) dataset, in dataset order."""
    probs, labels = [], []
    for x, y in ds:
        probs.append(np.asarray(model(x, training=False), dtype=np.float32))
        labels.append(np.asarray(y))
    return np.concatenate(probs), np.concatenate(labels).astype(np.int64)


def train(
    config: TrainConfig,
    make_train_ds: Callable[[int, int], object],
    make_val_ds: Callable[[int], object],
    num_train: int,
    workdir: Path,
    *,
    cache_key: str,
    on_checkpoint: Callable[[Path, Path], None] | None = None,
    resume: bool = True,
    callbacks: Sequence = (),
) -> TrainOutcome:
    """Train (or resume) and return the final model saved at workdir/model.keras.

    make_train_ds(global batch size, seed) and make_val_ds(global batch size) return
    tf.data datasets of (float images 0..255, int labels); the training set is made anew
    each epoch, with that epoch's seed for its shuffle and augmentation.
    `on_checkpoint(model_path, state_path)` is called after each epoch's checkpoint is on
    local disk (the job uploads it). `callbacks` are Keras callbacks for each epoch's fit
    and validation (progress reporting).
    """
    import keras

    log = get_logger(step="train", arch=config.arch)
    started = time.monotonic()
    arch = get_arch(config.arch)
    recipe = effective_recipe(arch, config.pretrained)
    strategy, mixed = distribution(config.mixed_precision)
    try:
        return _train(config, make_train_ds, make_val_ds, num_train, workdir, cache_key=cache_key,
                      on_checkpoint=on_checkpoint, resume=resume, strategy=strategy, mixed=mixed,
                      log=log, started=started, arch=arch, recipe=recipe, callbacks=list(callbacks))
    finally:
        if mixed:  # the policy is process-wide: later steps (conversion) must not inherit it
            keras.mixed_precision.set_global_policy("float32")


def _train(config, make_train_ds, make_val_ds, num_train, workdir, *, cache_key, on_checkpoint, resume,
           strategy, mixed, log, started, arch, recipe, callbacks=()) -> TrainOutcome:
    import keras
    import tensorflow as tf

    batch = (config.batch_size or recipe.batch_size)
    batch = max(1, min(batch, num_train))
    global_batch = batch * strategy.num_replicas_in_sync
    steps_per_epoch = max(1, math.ceil(num_train / global_batch))
    phases = plan_phases(config.epochs, config.pretrained, recipe.head_fraction)
    phase_steps = {p: phases.count(p) * steps_per_epoch for p in ("head", "full")}
    bn_momentum = config.bn_momentum or auto_bn_momentum(steps_per_epoch * config.epochs)

    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_model, ckpt_state = workdir / "last.keras", workdir / "state.json"
    keras.utils.set_random_seed(config.seed)

    state = TrainState(cache_key=cache_key)
    model = None
    with strategy.scope():
        if resume and ckpt_model.is_file() and ckpt_state.is_file():
            saved = TrainState.load(ckpt_state)
            if saved.cache_key == cache_key and 0 < saved.epochs_done <= config.epochs:
                _register_custom_objects()
                model = keras.saving.load_model(ckpt_model, compile=True)
                state = saved
                state.resumed_from_epoch = saved.epochs_done
                log.info("train_resumed", from_epoch=saved.epochs_done, of=config.epochs)
            else:
                log.info("checkpoint_ignored", reason="different inputs or finished run",
                         checkpoint_epochs=saved.epochs_done)
        if model is None:
            model = build_model(config.arch, config.image_size, config.num_classes, config.weights,
                                dropout=recipe.dropout, drop_connect_rate=recipe.drop_connect_rate)
        set_batchnorm_momentum(model, bn_momentum)

    val_ds = make_val_ds(global_batch)
    val_ds_onehot = _one_hot(val_ds, config.num_classes)

    current_phase: Phase | None = None
    if state.epochs_done > 0:
        # The loaded optimizer belongs to the phase of the last finished epoch.
        current_phase = phases[state.epochs_done - 1]
        set_phase(model, current_phase, recipe.batchnorm)
    for epoch in range(state.epochs_done, config.epochs):
        phase = phases[epoch]
        if phase != current_phase:
            with strategy.scope():
                compile_for_phase(model, recipe, phase, phase_steps[phase], global_batch, config.jit_compile)
            current_phase = phase
        data_seed = seed_epoch(model, config.seed, epoch)
        # Known length: Keras then neither warns about running out of data nor guesses epochs.
        train_ds = _one_hot(make_train_ds(global_batch, data_seed), config.num_classes).apply(
            tf.data.experimental.assert_cardinality(steps_per_epoch))
        t0 = time.monotonic()
        # initial_epoch: callbacks see the run's epoch number, also after a resume
        hist = model.fit(train_ds, initial_epoch=epoch, epochs=epoch + 1, verbose=0, shuffle=False,
                         callbacks=callbacks)  # tf.data shuffles
        seconds = time.monotonic() - t0
        val = model.evaluate(val_ds_onehot, verbose=0, return_dict=True, callbacks=callbacks)
        lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        rec = EpochRecord(
            epoch=epoch + 1, phase=phase, learning_rate=lr,
            loss=float(hist.history["loss"][-1]), top1=100 * float(hist.history["top1"][-1]),
            top3=100 * float(hist.history["top3"][-1]), val_loss=float(val["loss"]),
            val_top1=100 * float(val["top1"]), val_top3=100 * float(val["top3"]),
            seconds=round(seconds, 3), images_per_s=round(num_train / seconds, 2) if seconds > 0 else 0.0,
        )
        state.history.append(rec.model_dump())
        state.epochs_done = epoch + 1
        state.train_seconds += seconds
        model.save(ckpt_model)
        state.save(ckpt_state)
        log.info("epoch_done", **rec.model_dump(), of=config.epochs)
        if on_checkpoint:
            on_checkpoint(ckpt_model, ckpt_state)

    final = workdir / "model.keras"
    model.save(final)
    val_probs, val_labels = predict(model, val_ds)
    hardware = detect_hardware(mixed, strategy)
    history = [EpochRecord(**h) for h in state.history]
    imgs = num_train * len(history)
    recipe_dict = dict(recipe.as_dict(), bn_momentum=bn_momentum, steps_per_epoch=steps_per_epoch,
                       from_scratch=not config.pretrained, jit_compile=config.jit_compile)
    return TrainOutcome(
        model_path=final, history=history, hardware=hardware, recipe=recipe_dict, batch_size=global_batch,
        wall_time_s=round(time.monotonic() - started, 3), train_seconds=round(state.train_seconds, 3),
        images_per_s=round(imgs / state.train_seconds, 2) if state.train_seconds else 0.0,
        resumed_from_epoch=state.resumed_from_epoch, val_probs=val_probs, val_labels=val_labels,
    )


def _register_custom_objects() -> None:
    """Make the project's custom layers and schedules known before loading a .keras file."""
    from common.archs import caffe_preprocess_class

    caffe_preprocess_class()
    global _WP
    if _WP is None:
        _WP = _warmup_piecewise_cls()


def load_keras_model(path: str | Path):
    import keras

    _register_custom_objects()
    return keras.saving.load_model(path, compile=False)
