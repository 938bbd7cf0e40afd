"""The architecture registry: every entry builds, preprocesses as documented and loads weights."""

import numpy as np
import pytest

from common import archs
from common.errors import ConfigError
from tests.fixtures.weights import keras_preprocess

SIZE = (32, 48)


def test_registry_has_the_study_architectures():
    assert archs.ARCH_NAMES == ("mobilenet_v2", "efficientnet_b2", "resnet50")
    assert archs.DEFAULT_IMAGE_SIZE == (384, 576)
    for a in archs.ARCHS.values():
        assert a.recipe.batch_size > 0 and a.imagenet_notop_file.endswith(".h5")
    assert archs.get_arch("resnet50").recipe.schedule == "bit_hyperrule"


def test_unknown_arch_names_valid_values():
    with pytest.raises(ConfigError, match="valid values: mobilenet_v2, efficientnet_b2, resnet50"):
        archs.get_arch("vgg16")


@pytest.mark.parametrize("name", archs.ARCH_NAMES)
def test_every_arch_builds_a_30_class_softmax_on_raw_pixels(name):
    model = archs.build_model(name, SIZE)
    assert model.input_shape == (None, *SIZE, 3)
    x = np.random.default_rng(0).uniform(0, 255, (2, *SIZE, 3)).astype("float32")
    y = np.asarray(model(x))
    assert y.shape == (2, 30)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-4)
    assert model.get_layer("backbone") is not None


def test_caffe_preprocessing_matches_keras_resnet50():
    import keras

    layer = archs.caffe_preprocess_class()()
    x = np.random.default_rng(1).uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-4)


def test_mobilenet_preprocessing_maps_to_minus_one_one():
    model = archs.build_model("mobilenet_v2", SIZE)
    pre = model.get_layer("preprocess")
    out = np.asarray(pre(np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")))
    np.testing.assert_allclose(out, [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)


def _features(model):
    """The model's features: what its classifier ('head') takes."""
    import keras

    return keras.Model(model.inputs, model.get_layer("head").input)


def _stem(backbone):
    """The backbone up to its first convolution: where a change of input scale shows.

    Deep in a network with random weights the features hardly depend on the input, so the
    features alone would not show a missing or extra input scaling.
    """
    import keras

    conv = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D))
    return keras.Model(backbone.inputs, conv.output)


@pytest.mark.parametrize("name", archs.ARCH_NAMES)
def test_imagenet_weights_build_one_network_whatever_their_source(name, imagenet_cache, tmp_path, monkeypatch):
    """Downloaded, pre-seeded or given by path: the network keras.applications builds for 'imagenet'.

    EfficientNet's graph depends on the literal string: Keras adds a Rescaling after its
    Normalization only for weights='imagenet'. A file from SCENEBENCH_WEIGHTS_DIR or a path
    must not give a different network.
    """
    import keras

    arch = archs.get_arch(name)
    x = np.random.default_rng(3).uniform(0, 255, (2, *SIZE, 3)).astype("float32")
    reference = getattr(keras.applications, arch.keras_app)(
        include_top=False, weights="imagenet", input_shape=(*SIZE, 3), pooling="avg")
    keras_input = keras_preprocess(arch.preprocessing)(x.copy())
    want_features = np.asarray(reference(keras_input))
    want_stem = np.asarray(_stem(reference)(keras_input))

    assert archs.resolve_backbone_weights(arch, "imagenet") == "imagenet"  # nothing pre-seeded
    downloaded = archs.build_model(name, SIZE, weights="imagenet")
    monkeypatch.setenv("SCENEBENCH_WEIGHTS_DIR", str(imagenet_cache.keras_models))
    assert archs.resolve_backbone_weights(arch, "imagenet") == str(imagenet_cache.files[name])
    preseeded = archs.build_model(name, SIZE, weights="imagenet")
    given = tmp_path / "my_backbone_notop.h5"
    given.write_bytes(imagenet_cache.files[name].read_bytes())
    by_path = archs.build_model(name, SIZE, weights=str(given))

    keras_layers = [type(layer).__name__ for layer in reference.layers]
    features = {}
    for source, model in (("downloaded", downloaded), ("pre-seeded", preseeded), ("path", by_path)):
        backbone = model.get_layer("backbone")
        assert [type(layer).__name__ for layer in backbone.layers] == keras_layers, \
            f"{source}: not the graph Keras builds for 'imagenet'"
        pre = model.get_layer("preprocess") if arch.preprocessing != "builtin" else None
        stem = np.asarray(_stem(backbone)(pre(x) if pre is not None else x))
        np.testing.assert_allclose(stem, want_stem, rtol=1e-5, atol=1e-4, err_msg=source)
        features[source] = np.asarray(_features(model)(x))
        np.testing.assert_allclose(features[source], want_features, rtol=1e-4, atol=1e-5, err_msg=source)
    np.testing.assert_array_equal(features["pre-seeded"], features["downloaded"])
    np.testing.assert_array_equal(features["path"], features["downloaded"])


def test_full_model_weights_file(tmp_path):
    a = archs.build_model("mobilenet_v2", SIZE)
    path = tmp_path / "trained.weights.h5"
    a.save_weights(path)
    b = archs.build_model("mobilenet_v2", SIZE, weights=str(path))
    x = np.random.default_rng(2).uniform(0, 255, (1, *SIZE, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), rtol=1e-5, atol=1e-6)


def test_missing_weights_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        archs.build_model("mobilenet_v2", SIZE, weights=str(tmp_path / "nope.h5"))


def test_imagenet_without_network_names_the_file_to_place(tmp_path, monkeypatch):
    """No file in the weights dir and no way to download: the message says where to put it."""
    monkeypatch.setenv("SCENEBENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    from keras.src.utils import file_utils

    def offline(fname, origin=None, **kwargs):  # what keras raises when the host is unreachable
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    # Patched rather than proxied: urllib caches proxy settings process-wide.
    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ConfigError, match="efficientnetb2_notop.h5"):
        archs.build_model("efficientnet_b2", SIZE, weights="imagenet")


def test_batchnorm_momentum_is_set_everywhere():
    model = archs.build_model("efficientnet_b2", SIZE)
    n = archs.set_batchnorm_momentum(model, 0.8)
    assert n > 10
    import keras

    bns = [l for l in archs._all_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    assert {l.momentum for l in bns} == {0.8}


def _drop_rates(model):
    import keras

    return [l.rate for l in archs._all_layers(model)
            if isinstance(l, keras.layers.Dropout) and l.name.startswith("block") and l.name.endswith("_drop")]


def test_drop_connect_rate_scales_the_efficientnet_ramp():
    default = _drop_rates(archs.build_model("efficientnet_b2", SIZE))
    assert len(default) > 10 and 0 < min(default) < max(default) < archs.KERAS_DROP_CONNECT_RATE
    doubled = _drop_rates(archs.build_model("efficientnet_b2", SIZE, drop_connect_rate=0.4))
    np.testing.assert_allclose(doubled, 2 * np.array(default), rtol=1e-6)
    off = archs.build_model("efficientnet_b2", SIZE, drop_connect_rate=0.0)
    assert set(_drop_rates(off)) == {0.0}
    # Without stochastic depth, training-mode outputs no longer depend on random branch drops.
    x = np.random.default_rng(0).uniform(0, 255, (2, *SIZE, 3)).astype("float32")
    backbone = off.get_layer("backbone")
    np.testing.assert_allclose(np.asarray(backbone(x, training=True)), np.asarray(backbone(x, training=True)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="no stochastic-depth"):
        archs.build_model("mobilenet_v2", SIZE, drop_connect_rate=0.0)


def test_scratch_recipe_override_is_recorded_without_unset_fields():
    eff = archs.get_arch("efficientnet_b2")
    assert eff.scratch_recipe is not None and eff.scratch_recipe.drop_connect_rate == 0.0
    assert eff.scratch_recipe.head_fraction == 0.0  # nothing frozen when there is nothing to keep
    assert archs.get_arch("mobilenet_v2").scratch_recipe is None
    assert "drop_connect_rate" not in eff.recipe.as_dict()  # None: Keras' default, not a value
    assert eff.scratch_recipe.as_dict()["drop_connect_rate"] == 0.0
