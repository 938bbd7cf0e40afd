"""Datasets: discovery of class folders, validation and preparation of images, TFRecord shards, tf.data input.

Pure functions over local paths; the prepare job does the store I/O. TFRecord records are
tf.train.Example with `image` (encoded JPEG or PNG bytes, RGB, EXIF orientation applied),
`label` (int64 class index) and `path` (bytes, path relative to the source root).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

# ---------------------------------------------------------------- TFRecord reading (tf.data)

SHUFFLE_BUFFER = 2048


def _tf():
    # TensorFlow is imported lazily: discovery and validation run without it, and importing
    # it costs seconds that CLI argument errors should not pay.
    import tensorflow as tf

    return tf


def feature_spec() -> dict:
    tf = _tf()
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "path": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    }


def serialize_example(image_bytes: bytes, label: int, path: str) -> bytes:
    tf = _tf()
    feat = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode("utf-8")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString()


def decode_resize(image_bytes, image_size: tuple[int, int]):
    """Encoded JPEG/PNG bytes -> float32 (H, W, 3) RGB in 0..255, resized bilinearly.

    Training, calibration and evaluation all call this, so that every model sees pixels
    produced exactly the same way (bilinear, no antialiasing, as a phone pipeline does).
    """
    tf = _tf()
    h, w = int(image_size[0]), int(image_size[1])
    img = tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8)
    img.set_shape([None, None, 3])
    img = tf.image.resize(tf.cast(img, tf.float32), (h, w), method="bilinear", antialias=False)
    img.set_shape([h, w, 3])
    return img


def _augment(image, seed):
    """Light, colour-preserving augmentation: flips and mild brightness/contrast changes.

    Hue and saturation are left alone on purpose: colour is part of what identifies a
    scene (sunset, greenery, blue sky), and of the synthetic set's class cues.
    """
    tf = _tf()
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    image = tf.image.stateless_random_brightness(image, 20.0, seeds[1])
    image = tf.image.stateless_random_contrast(image, 0.85, 1.15, seeds[2])
    return tf.clip_by_value(image, 0.0, 255.0)


def load_split(
    shard_paths: Sequence[str | Path],
    image_size: tuple[int, int],
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    augment: bool = True,
    cache: bool = False,
    shuffle_buffer: int = SHUFFLE_BUFFER,
):
    """TFRecord shards -> batched tf.data.Dataset of (float32 (B, H, W, 3) in 0..255, int32 (B,)).

    Not training: records in shard order, no augmentation (evaluation is reproducible).
    Training: shuffled (seeded, reshuffled each epoch) and, with `augment`, lightly augmented.
    `cache` keeps the decoded, resized images in memory after the first epoch.
    """
    tf = _tf()
    paths = [str(p) for p in shard_paths]
    if not paths:
        raise ValueError("load_split needs at least one shard path")
    spec = feature_spec()
    ds = tf.data.TFRecordDataset(paths, num_parallel_reads=1)

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        return decode_resize(ex["image"], image_size), tf.cast(ex["label"], tf.int32)

    if cache:
        # Decode once, then shuffle the decoded tensors: the cache holds them in shard order.
        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).cache()
        if training:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        if training:
            # Shuffling encoded records is cheap in memory; decoding follows in parallel.
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment:
        rnd = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, rnd)).map(
            lambda xy, s: (_augment(xy[0], s), xy[1]), num_parallel_calls=tf.data.AUTOTUNE
        )
    ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def iter_examples(shard_paths: Sequence[str | Path]) -> Iterator[tuple[bytes, int, str]]:
    """(encoded image, label, source-relative path) for every record, in shard order."""
    tf = _tf()
    spec = feature_spec()
    for record in tf.data.TFRecordDataset([str(p) for p in shard_paths]):
        ex = tf.io.parse_single_example(record, spec)
        yield ex["image"].numpy(), int(ex["label"].numpy()), ex["path"].numpy().decode("utf-8")
