"""Tests of common.dataset: tf.data input, discovery, odd files, preparation and fingerprints."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from common import dataset as ds


def _jpeg(colour, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _png(colour, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _write_shard(path, records):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for image, label, rel in records:
            w.write(ds.serialize_example(image, label, rel))
    return path


# ---------------------------------------------------------------- tf.data input

def test_load_split_shapes_dtypes_labels_in_order(tmp_path):
    records = [(_jpeg((200, 10, 10)) if i % 2 else _png((10, 10, 200)), i % 3, f"c/{i}.x") for i in range(7)]
    shard = _write_shard(tmp_path / "validation-00000-of-00001.tfrecord", records)
    data = ds.load_split([shard], (16, 24), batch_size=4, training=False)
    batches = list(data)
    assert [b[0].shape.as_list() for b in batches] == [[4, 16, 24, 3], [3, 16, 24, 3]]
    assert batches[0][0].dtype.name == "float32" and batches[0][1].dtype.name == "int32"
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert labels.tolist() == [i % 3 for i in range(7)]
    first = batches[0][0].numpy()
    # PNG (blue) is exact after a bilinear resize of a flat image; JPEG (red) is close.
    assert np.allclose(first[0], [10, 10, 200])
    assert np.allclose(first[1], [200, 10, 10], atol=4)
    assert first.min() >= 0 and first.max() <= 255


def test_load_split_training_shuffles_and_augments(tmp_path):
    records = [(_png((i * 10, 100, 50)), i, f"c/{i}.png") for i in range(20)]
    shard = _write_shard(tmp_path / "training-00000-of-00001.tfrecord", records)
    data = ds.load_split([shard], (8, 8), batch_size=20, training=True, seed=1)
    x, y = next(iter(data))
    assert sorted(y.numpy().tolist()) == list(range(20))
    assert y.numpy().tolist() != list(range(20))
    again = next(iter(ds.load_split([shard], (8, 8), batch_size=20, training=True, seed=1)))
    assert again[1].numpy().tolist() == y.numpy().tolist()
    assert float(x.numpy().min()) >= 0.0 and float(x.numpy().max()) <= 255.0
    cached = ds.load_split([shard], (8, 8), batch_size=5, training=True, cache=True, augment=False)
    assert sum(int(b[1].shape[0]) for b in cached) == 20


def test_decode_resize_matches_tf_resize_of_pillow_pixels():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    got = ds.decode_resize(buf.getvalue(), (12, 20)).numpy()
    want = tf.image.resize(pixels.astype(np.float32), (12, 20), method="bilinear", antialias=False).numpy()
    assert got.shape == (12, 20, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)
