"""Training: phase plan, schedules, BatchNorm momentum, the train job, caching and resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from common import layout
from common.archs import ARCH_NAMES, _all_layers, get_arch
from common.schemas import TrainReport
from common.store import LocalStore
from common.training import SCRATCH_RECIPE, auto_bn_momentum, effective_recipe, make_schedule, plan_phases

REPO = Path(__file__).resolve().parent.parent


def test_phase_plan():
    assert plan_phases(10, pretrained=True, head_fraction=0.3) == ["head"] * 3 + ["full"] * 7
    assert plan_phases(2, pretrained=True, head_fraction=0.3) == ["head", "full"]
    assert plan_phases(1, pretrained=True, head_fraction=0.3) == ["full"]
    assert plan_phases(5, pretrained=False, head_fraction=0.3) == ["full"] * 5
    assert plan_phases(4, pretrained=True, head_fraction=0.0) == ["full"] * 4
    with pytest.raises(ValueError):
        plan_phases(0, True, 0.3)


def test_recipes():
    assert effective_recipe(get_arch("resnet50"), pretrained=True).schedule == "bit_hyperrule"
    assert effective_recipe(get_arch("resnet50"), pretrained=False) == SCRATCH_RECIPE
    assert effective_recipe(get_arch("mobilenet_v2"), pretrained=False) == SCRATCH_RECIPE
    # EfficientNet-B2 from scratch: its own override; fine-tuning keeps the registry recipe.
    eff = get_arch("efficientnet_b2")
    assert effective_recipe(eff, pretrained=False) == eff.scratch_recipe != SCRATCH_RECIPE
    assert effective_recipe(eff, pretrained=False).drop_connect_rate == 0.0
    assert effective_recipe(eff, pretrained=True) == eff.recipe and eff.recipe.drop_connect_rate is None


def test_bn_momentum_follows_run_length():
    assert auto_bn_momentum(100_000) == 0.99
    assert auto_bn_momentum(90) == pytest.approx(0.7778, abs=1e-4)
    assert 0.5 <= auto_bn_momentum(3) < 0.9


def test_bit_hyperrule_schedule_warms_up_then_steps_down():
    recipe = get_arch("resnet50").recipe
    sched = make_schedule(recipe, "full", 1000, batch_size=32)
    peak = 0.003 * 32 / 512
    lr = [float(sched(s)) for s in (0, 49, 100, 350, 650, 950)]
    assert lr[0] < lr[1] <= peak * 1.0001
    assert lr[2] == pytest.approx(peak, rel=1e-5)
    assert lr[3] == pytest.approx(peak * 0.1, rel=1e-4)
    assert lr[4] == pytest.approx(peak * 0.01, rel=1e-4)
    assert lr[5] == pytest.approx(peak * 0.001, rel=1e-3)


def test_cosine_schedule_decays():
    sched = make_schedule(SCRATCH_RECIPE, "full", 200, batch_size=16)
    values = [float(sched(s)) for s in (0, 10, 100, 199)]
    assert values[0] < values[1] and values[1] > values[2] > values[3]


# ---------------------------------------------------------------- the job, on real (tiny) data
def _prepare(store_dir: Path, run_id: str, epochs: int) -> None:
    from jobs import prepare

    rc = prepare.main(["--store", str(store_dir), "--run-id", run_id, "--data", "synthetic",
                       "--archs", "mobilenet_v2", "--formats", "float32", "--image-size", "32x48",
                       "--epochs", str(epochs), "--weights", "none", "--synthetic-per-class", "4"])
    assert rc == 0


@pytest.mark.slow
def test_train_job_writes_report_model_and_predictions_then_caches(tmp_path, monkeypatch):
    from jobs import train

    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    store_dir = tmp_path / "store"
    _prepare(store_dir, "r1", epochs=2)
    args = ["--store", str(store_dir), "--run-id", "r1", "--arch", "mobilenet_v2"]
    assert train.main(args) == 0
    store = LocalStore(store_dir)
    report = store.get_model(layout.train_json("r1", "mobilenet_v2"), TrainReport)
    assert [h.epoch for h in report.history] == [1, 2]
    assert report.image_size == [32, 48] and report.num_classes == 30
    assert report.recipe["from_scratch"] is True and 0 < report.recipe["bn_momentum"] < 0.99
    assert report.hardware.cpu and report.hardware.replicas == 1 and not report.hardware.mixed_precision
    assert store.stat(report.model.key).sha256 == report.model.sha256
    preds = np.load(store.root / layout.keras_val_predictions("r1", "mobilenet_v2"))
    assert preds["probs"].shape == (60, 30) and preds["labels"].shape == (60,)
    assert report.last_val_top1 == pytest.approx(100 * (preds["probs"].argmax(1) == preds["labels"]).mean())
    with capture_logs() as logs:
        assert train.main(args) == 0
    assert any(e["event"] == "step_cached" and e.get("step") == "train" for e in logs)


@pytest.mark.slow
def test_training_killed_mid_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, request):
    """SIGKILL the train job after its first epoch's checkpoint; the re-run continues from it
    and ends where an uninterrupted run ends."""
    from jobs import train

    from common.provenance import code_version

    cache = tmp_path / "cache"
    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(cache))
    # Both processes must agree on the code version (part of the cache key), even if the
    # checkout changes while the suite runs.
    monkeypatch.setenv("SCENEBENCH_CODE_VERSION", "resume-test")
    code_version.cache_clear()
    request.addfinalizer(code_version.cache_clear)
    store_dir = tmp_path / "store"
    _prepare(store_dir, "r2", epochs=3)
    args = ["--store", str(store_dir), "--run-id", "r2", "--arch", "mobilenet_v2"]
    state_file = store_dir / layout.checkpoint_state("r2", "mobilenet_v2")
    env = {**os.environ, "SCENEBENCH_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not state_file.exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = json.loads(state_file.read_text())["epochs_done"]
    assert 1 <= done < 3, "killed too late to show a resume"
    assert not (store_dir / layout.train_json("r2", "mobilenet_v2")).exists()

    with capture_logs() as logs:
        assert train.main(args) == 0
    resumed = [e for e in logs if e["event"] == "train_resumed"]
    assert resumed and resumed[0]["from_epoch"] == done
    report = LocalStore(store_dir).get_model(layout.train_json("r2", "mobilenet_v2"), TrainReport)
    assert report.resumed_from_epoch == done
    assert [h.epoch for h in report.history] == [1, 2, 3]
    trained_here = [e for e in logs if e["event"] == "epoch_done"]
    assert [e["epoch"] for e in trained_here] == list(range(done + 1, 4))

    # The same training without the kill ends at the same place: data order, augmentation
    # and dropout draws depend on (seed, epoch), not on how many epochs this process ran.
    _prepare(store_dir, "r3", epochs=3)
    # `--reuse none`: with the same cache key, r2's result would otherwise be reused as it is.
    assert train.main(["--store", str(store_dir), "--run-id", "r3", "--arch", "mobilenet_v2", "--reuse", "none"]) == 0
    whole = LocalStore(store_dir).get_model(layout.train_json("r3", "mobilenet_v2"), TrainReport)
    assert whole.resumed_from_epoch is None and whole.reused_from is None and whole.cache_key == report.cache_key
    for resumed_epoch, whole_epoch in zip(report.history, whole.history, strict=True):
        assert (resumed_epoch.val_top1, resumed_epoch.val_top3) == (whole_epoch.val_top1, whole_epoch.val_top3), \
            f"epoch {whole_epoch.epoch}: resumed {resumed_epoch.val_top1} %, uninterrupted {whole_epoch.val_top1} %"
        assert resumed_epoch.val_loss == pytest.approx(whole_epoch.val_loss, rel=1e-5, abs=1e-6)
    resumed_preds = np.load(store_dir / layout.keras_val_predictions("r2", "mobilenet_v2"))
    whole_preds = np.load(store_dir / layout.keras_val_predictions("r3", "mobilenet_v2"))
    np.testing.assert_array_equal(resumed_preds["labels"], whole_preds["labels"])
    np.testing.assert_allclose(resumed_preds["probs"], whole_preds["probs"], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_mixed_precision_model_converts_to_a_pure_float32_tflite(tmp_path, monkeypatch):
    """The GPU path (mixed_float16) forced on the CPU: train, then convert and evaluate.

    A .keras file saved under mixed precision reloads with float16 layers; the converter
    must still get a float32 graph, or the 'float32' .tflite would carry float16 casts.
    """
    import keras

    from common.schemas import ConvertReport, EvalReport
    from common.training import float32_copy, load_keras_model, uses_float16
    from jobs import convert, evaluate, train

    monkeypatch.setenv("SCENEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    store_dir = tmp_path / "store"
    _prepare(store_dir, "mp", epochs=1)
    base = ["--store", str(store_dir), "--run-id", "mp", "--arch", "mobilenet_v2"]
    assert train.main(base + ["--mixed-precision", "on"]) == 0
    assert keras.mixed_precision.global_policy().name == "float32"  # not leaked to later steps
    store = LocalStore(store_dir)
    report = store.get_model(layout.train_json("mp", "mobilenet_v2"), TrainReport)
    assert report.hardware.mixed_precision is True
    trained = load_keras_model(store.root / report.model.key)
    assert uses_float16(trained)
    plain = float32_copy(trained, "mobilenet_v2", (32, 48), 30)
    assert not uses_float16(plain)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 48, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(trained(x), dtype="float32"), atol=2e-2)

    assert convert.main(base + ["--format", "float32"]) == 0
    conv = store.get_model(layout.convert_json("mp", "mobilenet_v2", "float32"), ConvertReport)
    assert conv.input.dtype == "float32" and "CAST" not in conv.op_counts and "DEQUANTIZE" not in conv.op_counts
    assert evaluate.main(base + ["--format", "float32"]) == 0
    ev = store.get_model(layout.eval_json("mp", "mobilenet_v2", "float32"), EvalReport)
    # Same predictions as the float16-computing Keras model, up to float16 rounding.
    assert ev.agreement_with_keras >= 90.0


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_float32_copy_of_a_mixed_precision_model_is_the_same_network(name, imagenet_cache):
    """Built the 'imagenet' way under mixed_float16, the float32 copy computes what it computes.

    EfficientNet-B2 for ImageNet weights has one more layer than its weights='none' build:
    a copy rebuilt from the registry without it is another network.
    """
    import keras

    from common.archs import build_model
    from common.training import float32_copy, uses_float16

    size = (32, 48)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_model(name, size, weights="imagenet")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert uses_float16(mixed)
    plain = float32_copy(mixed, name, size, 30)
    assert not uses_float16(plain)
    assert [type(layer).__name__ for layer in _all_layers(plain)] == \
        [type(layer).__name__ for layer in _all_layers(mixed)]
    x = np.random.default_rng(0).uniform(0, 255, (2, *size, 3)).astype("float32")
    want_stem = _stem_output(mixed, x)
    np.testing.assert_allclose(_stem_output(plain, x), want_stem, rtol=1e-2, atol=1e-2 * np.abs(want_stem).max())
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(mixed(x), dtype="float32"), atol=2e-2)
    if name == "mobilenet_v2":  # what train.json says is checked against the model
        from common.errors import ScenebenchError

        with pytest.raises(ScenebenchError, match=r"image size \(32, 48\), expected \(64, 96\)"):
            float32_copy(mixed, name, (64, 96), 30)


def _stem_output(model, x):
    """The backbone's first convolution's output: where a lost input scaling shows.

    With random weights the final features hardly depend on the input, so they alone would
    not show it.
    """
    import keras

    backbone = model.get_layer("backbone")
    conv = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D))
    pre = [layer for layer in model.layers if layer.name == "preprocess"]
    return np.asarray(keras.Model(backbone.inputs, conv.output)(pre[0](x) if pre else x), dtype="float32")


def test_full_phase_keeps_a_pretrained_backbones_batchnorm_in_inference_mode(imagenet_files):
    """Fine-tuning the whole net leaves the pretrained BatchNorm alone; the rest trains."""
    import keras

    from common.archs import build_model, set_batchnorm_momentum
    from common.training import compile_for_phase, effective_recipe

    size = (32, 48)
    recipe = effective_recipe(get_arch("mobilenet_v2"), pretrained=True)
    model = build_model("mobilenet_v2", size, weights=str(imagenet_files["mobilenet_v2"]))
    set_batchnorm_momentum(model, 0.5)  # an update would show after one step
    compile_for_phase(model, recipe, "full", phase_steps=2, batch_size=8)
    model.run_eagerly = True  # two steps: tracing and compiling them would take longer
    backbone = model.get_layer("backbone")
    bns = [layer for layer in _all_layers(backbone) if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in _all_layers(backbone) if isinstance(layer, keras.layers.Conv2D)]
    assert len(bns) > 10 and convs
    bn_before = [[np.array(w) for w in layer.get_weights()] for layer in bns]
    conv_before = [np.array(layer.get_weights()[0]) for layer in convs]

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, *size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 30, 16), 30)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)

    for layer, before in zip(bns, bn_before):
        for name, now, then in zip(("gamma", "beta", "moving_mean", "moving_variance"), layer.get_weights(), before):
            np.testing.assert_array_equal(now, then, err_msg=f"{layer.name} {name} changed")
    moved = sum(not np.array_equal(layer.get_weights()[0], then) for layer, then in zip(convs, conv_before))
    assert moved == len(convs), f"only {moved} of {len(convs)} backbone convolutions trained"
    assert recipe.batchnorm == "frozen"


def test_from_scratch_the_batchnorm_trains():
    assert effective_recipe(get_arch("mobilenet_v2"), pretrained=False).batchnorm == "train"
    assert effective_recipe(get_arch("efficientnet_b2"), pretrained=False).batchnorm == "train"


@pytest.mark.parametrize("name", ARCH_NAMES)
@pytest.mark.parametrize("decay", [None, 0.01])
def test_the_recipes_weight_decay_reaches_the_optimizer(name, decay):
    """Decoupled decay: with a zero gradient a weight shrinks by learning rate x weight decay."""
    import dataclasses

    import keras

    from common.training import make_optimizer

    recipe = effective_recipe(get_arch(name), pretrained=True)
    if decay is not None:
        recipe = dataclasses.replace(recipe, weight_decay=decay)
    optimizer = make_optimizer(recipe, 0.1)
    weight = keras.Variable(np.ones(4, dtype="float32"))
    optimizer.apply_gradients([(np.zeros(4, dtype="float32"), weight)])
    np.testing.assert_allclose(np.asarray(weight), 1.0 - 0.1 * recipe.weight_decay, rtol=1e-6)


def test_fine_tuning_recipes_use_adamw_or_say_why_not():
    assert get_arch("mobilenet_v2").recipe.optimizer == "adamw" and get_arch("mobilenet_v2").recipe.weight_decay > 0
    assert get_arch("efficientnet_b2").recipe.optimizer == "adamw"
    assert get_arch("resnet50").recipe.weight_decay == 0.0  # BiT-HyperRule fine-tunes without decay
    from common.archs import Recipe
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="is AdamW"):
        Recipe(optimizer="adam", head_lr=1e-3, full_lr=1e-3, schedule="cosine", batchnorm="train", weight_decay=0.01)
    with pytest.raises(ConfigError, match="valid values: frozen, train"):
        Recipe(optimizer="adam", head_lr=1e-3, full_lr=1e-3, schedule="cosine", batchnorm="eval")
