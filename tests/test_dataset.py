"""Tests of common.dataset: tf.data input, discovery, odd files, preparation and fingerprints."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from common import dataset as ds
from common.errors import DatasetError
from tests.fixtures.data import BLUE, GREEN, RED, class_tree, image_bytes, jpeg_bytes, noisy_jpeg_bytes, write


def _png(colour, size=(40, 30)) -> bytes:
    return image_bytes(Image.new("RGB", size, colour), "PNG")


def _write_shard(path, records):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for image, label, rel in records:
            w.write(ds.serialize_example(image, label, rel))
    return path


# ---------------------------------------------------------------- tf.data input

def test_load_split_shapes_dtypes_labels_in_order(tmp_path):
    records = [(jpeg_bytes((200, 10, 10)) if i % 2 else _png((10, 10, 200)), i % 3, f"c/{i}.x") for i in range(7)]
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
    assert np.allclose(first[1], [200, 10, 10], atol=4)  # JPEG of a flat colour: close
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


# ---------------------------------------------------------------- discovery and layouts

def _build(s, tmp_path, **kw):
    return ds.build(s, tmp_path / "out", source="test", code_version="test", **kw)


def _records(prepared, split):
    paths = [p for k, p in prepared.shard_files if f"/{split}-" in k]
    return list(ds.iter_examples(paths))


def test_split_folders_layout_numbered_ordering(tmp_path):
    names = [f"{i}_Class_{chr(96 + i)}" for i in range(1, 13)]
    root = tmp_path / "src"
    class_tree(root, {n: 2 for n in names}, split="training")
    class_tree(root, {n: 1 for n in names}, split="validation")
    s = ds.scan(root)
    assert s.layout == "split-folders" and s.numbered and s.split_method == "folders"
    # numeric, not lexicographic: 10_ comes after 9_, not after 1_
    assert [c.folder for c in s.classes] == names
    assert [c.index for c in s.classes] == list(range(12))
    assert s.classes[9].name == "Class j" and s.classes[9].folder == "10_Class_j"
    prepared = _build(s, tmp_path)
    m = prepared.manifest
    assert m.splits["train"].count == 24 and m.splits["validation"].count == 12
    assert m.splits["validation"].per_class["10_Class_j"] == 1
    assert m.val_fraction is None
    labels = sorted(label for _, label, _ in _records(prepared, "train"))
    assert labels == sorted(list(range(12)) * 2)


def test_class_folders_layout_alphabetical_and_holdout(tmp_path):
    root = class_tree(tmp_path / "src", {"zebra": 10, "Apple": 10, "mango": 3, "kiwi": 2})
    s = ds.scan(root, val_fraction=0.2, seed=5)
    assert s.layout == "class-folders" and not s.numbered and s.split_method == "stratified-holdout"
    assert [c.folder for c in s.classes] == ["Apple", "kiwi", "mango", "zebra"]  # sorted(), as Keras does
    m = _build(s, tmp_path).manifest
    assert m.splits["validation"].per_class == {"Apple": 2, "kiwi": 1, "mango": 1, "zebra": 2}
    assert m.splits["train"].per_class == {"Apple": 8, "kiwi": 1, "mango": 2, "zebra": 8}
    assert m.val_fraction == 0.2 and m.seed == 5


def test_holdout_is_seeded_and_stratified(tmp_path):
    root = class_tree(tmp_path / "src", {"a": 20, "b": 20, "c": 20})

    def val_paths(seed):
        s = ds.scan(root, val_fraction=0.25, seed=seed)
        return sorted(p for _, _, p in _records(ds.build(s, tmp_path / f"o{seed}-{len(os.listdir(tmp_path))}",
                                                         source="t", code_version="t"), "validation"))

    first, again, other = val_paths(1), val_paths(1), val_paths(2)
    assert first == again and first != other
    assert [sum(p.startswith(c + "/") for p in first) for c in "abc"] == [5, 5, 5]
    assert ds.scan(root, seed=1).fingerprint != ds.scan(root, seed=2).fingerprint


@pytest.mark.parametrize("folders, message", [
    (["1_a", "3_c"], r"1\.\.2 without gaps: missing \[2\], unexpected \['3_c'\]"),
    (["1_a", "1_b", "2_c"], r"share a number \(1: 1_a, 1_b\)"),
    (["1_a", "2_b", "cats"], r"mix numbered and un-numbered.*\['cats'\]"),
])
def test_bad_numbering_is_an_error_naming_the_folders(tmp_path, folders, message):
    root = class_tree(tmp_path / "src", {f: 1 for f in folders})
    with pytest.raises(DatasetError, match=message):
        ds.scan(root)


def test_train_val_class_mismatch(tmp_path):
    root = tmp_path / "src"
    class_tree(root, {"1_a": 2, "2_b": 2, "3_c": 2}, split="train")
    class_tree(root, {"1_a": 1, "2_b": 1, "3_x": 1}, split="val")
    with pytest.raises(DatasetError, match=r"only in train/: \['3_c'\]; only in val/: \['3_x'\]"):
        ds.scan(root)


def test_no_class_folders_and_missing_root(tmp_path):
    loose = tmp_path / "loose"
    write(loose / "a.jpg", jpeg_bytes())
    with pytest.raises(DatasetError, match=f"no class folders in {loose}"):
        ds.scan(loose)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        ds.scan(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        ds.scan(tmp_path / "nope")
    only_val = tmp_path / "onlyval"
    class_tree(only_val, {"a": 1, "b": 1}, split="validation")
    with pytest.raises(DatasetError, match="no training folder"):
        ds.scan(only_val)


def test_empty_class_stops_with_the_path(tmp_path):
    root = class_tree(tmp_path / "src", {"a": 3, "b": 3})
    (root / "c").mkdir()
    write(root / "c" / "broken.jpg", b"")
    write(root / "c" / "notes.txt", b"hello")
    s = ds.scan(root)
    with pytest.raises(DatasetError, match=f"{root / 'c'} \\(1 file\\(s\\) skipped"):
        _build(s, tmp_path)
    split = tmp_path / "split"
    class_tree(split, {"a": 2, "b": 2}, split="training")
    class_tree(split, {"a": 1}, split="validation")
    (split / "validation" / "b").mkdir()
    with pytest.raises(DatasetError, match=str(split / "validation" / "b")):
        _build(ds.scan(split), tmp_path)


def test_wrapping_folders_and_macosx_are_descended(tmp_path):
    inner = tmp_path / "zip" / "CamSDD" / "CamSDD"
    class_tree(inner, {"1_Portrait": 2, "2_Group_Portrait": 2}, split="training")
    class_tree(inner, {"1_Portrait": 1, "2_Group_Portrait": 1}, split="validation")
    write(tmp_path / "zip" / "__MACOSX" / "CamSDD" / "._CamSDD", b"\x00\x05\x16\x07")
    write(tmp_path / "zip" / ".DS_Store", b"junk")
    s = ds.scan(tmp_path / "zip")
    assert s.data_root == inner and s.layout == "split-folders"
    assert [c.name for c in s.classes] == ["Portrait", "Group Portrait"]
    assert all(c.rel.startswith("CamSDD/CamSDD/training/") or c.rel.startswith("CamSDD/CamSDD/validation/")
               for c in s.candidates)


# ---------------------------------------------------------------- odd files

def _odd_tree(root):
    """Class 'cats' holds every kind of odd file; 'dogs' is plain."""
    cats = root / "cats"
    write(cats / "good.jpg", jpeg_bytes(RED))
    write(cats / "UPPER.JPG", jpeg_bytes(GREEN))
    write(cats / "progressive.jpeg", jpeg_bytes(BLUE, progressive=True))
    write(cats / "nested" / "deeper" / "inside.Jpeg", jpeg_bytes((250, 120, 0)))
    write(cats / "good (1).jpg", jpeg_bytes(RED))  # a copy: the same bytes as good.jpg
    write(cats / "cmyk.jpg", image_bytes(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG", quality=95))
    write(cats / "gray.png", image_bytes(Image.new("L", (20, 10), 100), "PNG"))
    write(cats / "palette.PNG", image_bytes(Image.new("RGB", (20, 10), BLUE).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"))
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (10, 0, 20, 10))  # right half fully transparent
    write(cats / "rgba.png", image_bytes(rgba, "PNG"))
    write(cats / "deep16.png", image_bytes(Image.fromarray(np.full((10, 20), 32896, np.uint16)), "PNG"))
    frames = [Image.new("RGB", (20, 10), RED), Image.new("RGB", (20, 10), BLUE)]
    write(cats / "anim.gif", image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100))
    write(cats / "pic.webp", image_bytes(Image.new("RGB", (20, 10), GREEN), "WEBP", lossless=True))
    write(cats / "pic.bmp", image_bytes(Image.new("RGB", (20, 10), GREEN), "BMP"))
    # EXIF orientation 6 ("rotate 90° clockwise to display"): stored 40 wide x 20 high, left half red.
    sideways = Image.new("RGB", (40, 20), BLUE)
    sideways.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    write(cats / "rotated.jpg", image_bytes(sideways, "JPEG", quality=95, exif=exif.tobytes()))
    # unusable files, each with its own reason
    write(cats / "empty.jpg", b"")
    good = jpeg_bytes(RED, size=(64, 64))
    noisy = noisy_jpeg_bytes(1, size=(64, 64))
    write(cats / "truncated.jpg", noisy[: len(noisy) // 2])
    write(cats / "fake.jpg", b"this is a text file, not a picture\n")
    write(cats / "broken.heic", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    # An iPhone photo: HEIC, shot in portrait (stored sideways with orientation 6), like rotated.jpg.
    pillow_heif.register_heif_opener()
    write(cats / "IMG_0001.HEIC", image_bytes(sideways, "HEIF", quality=95, exif=exif.tobytes()))
    write(cats / "huge.png", image_bytes(Image.new("RGB", (300, 300), GREEN), "PNG"))
    # junk, ignored without a reason
    write(cats / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(cats / "._good.jpg", b"\x00\x05\x16\x07" + good[:50])
    write(cats / "Thumbs.db", b"junk")
    write(cats / "desktop.ini", b"[.ShellClassInfo]")
    write(cats / "README.txt", b"cat pictures")
    write(cats / ".hidden.jpg", good)
    write(cats / "__MACOSX" / "x.jpg", good)
    # links: to a file (followed), dangling, and folder loops (not followed)
    write(root.parent / "elsewhere" / "linked.jpg", jpeg_bytes((0, 120, 250)))
    os.symlink(root.parent / "elsewhere" / "linked.jpg", cats / "link.jpg")
    os.symlink(cats / "nowhere.jpg", cats / "dangling.jpg")
    os.symlink(cats, cats / "nested" / "loop")
    os.symlink(root, cats / "up")
    class_tree(root, {"dogs": 3})
    return root


def test_odd_files_are_converted_skipped_or_ignored(tmp_path):
    root = _odd_tree(tmp_path / "src")
    s = ds.scan(root, val_fraction=0.1)
    prepared = _build(s, tmp_path, max_pixels=200 * 200)
    m = prepared.manifest
    reasons = {f.path: f.reason for f in m.skipped}
    assert set(reasons) == {"cats/empty.jpg", "cats/truncated.jpg", "cats/fake.jpg", "cats/broken.heic",
                            "cats/huge.png", "cats/dangling.jpg", "cats/good (1).jpg"}
    assert reasons["cats/good (1).jpg"] == "duplicate of cats/good.jpg (byte-identical)"
    assert reasons["cats/empty.jpg"] == "empty file (0 bytes)"
    assert "truncated" in reasons["cats/truncated.jpg"]
    assert "not an image" in reasons["cats/fake.jpg"]
    assert reasons["cats/broken.heic"] == "damaged HEIC/HEIF: the HEIF decoder cannot read it"
    assert "decompression-bomb" in reasons["cats/huge.png"]
    assert "broken symbolic link" in reasons["cats/dangling.jpg"]
    ignored = set(prepared.ignored)
    assert {"cats/.DS_Store", "cats/._good.jpg", "cats/Thumbs.db", "cats/desktop.ini", "cats/README.txt",
            "cats/.hidden.jpg"} <= ignored
    assert not any("__MACOSX" in p for p in ignored) and not any("__MACOSX" in p for p in reasons)

    records = {p: (img, label) for split in ("train", "validation") for img, label, p in _records(prepared, split)}
    kept = {"cats/good.jpg", "cats/UPPER.JPG", "cats/progressive.jpeg", "cats/nested/deeper/inside.Jpeg",
            "cats/cmyk.jpg", "cats/gray.png", "cats/palette.PNG", "cats/rgba.png", "cats/deep16.png",
            "cats/anim.gif", "cats/pic.webp", "cats/pic.bmp", "cats/rotated.jpg", "cats/IMG_0001.HEIC",
            "cats/link.jpg",
            "dogs/000.jpg", "dogs/001.jpg", "dogs/002.jpg"}
    assert set(records) == kept
    assert m.splits["train"].count + m.splits["validation"].count == len(kept)
    assert {label for p, (_, label) in records.items() if p.startswith("dogs/")} == {1}

    def pixels(path):
        return ds.decode_resize(records[path][0], (10, 20)).numpy() if path != "cats/rotated.jpg" else None

    # Plain RGB JPEGs are stored byte for byte; the rest are PNG after conversion.
    for p in ("cats/good.jpg", "cats/UPPER.JPG", "cats/progressive.jpeg", "cats/link.jpg"):
        assert records[p][0] == (root / p).read_bytes()
    for p in ("cats/cmyk.jpg", "cats/gray.png", "cats/deep16.png", "cats/anim.gif", "cats/pic.webp"):
        assert records[p][0].startswith(b"\x89PNG"), p
    assert np.allclose(pixels("cats/cmyk.jpg")[5, 10], (255, 0, 0), atol=12)
    assert np.allclose(pixels("cats/gray.png")[5, 10], (100, 100, 100))
    assert np.allclose(pixels("cats/deep16.png")[5, 10], (128, 128, 128))  # 16-bit scaled, not clipped
    assert np.allclose(pixels("cats/palette.PNG")[5, 10], BLUE)
    assert np.allclose(pixels("cats/anim.gif")[5, 10], RED, atol=8)  # first frame
    assert np.allclose(pixels("cats/rgba.png")[5, 2], (255, 0, 0))
    assert np.allclose(pixels("cats/rgba.png")[5, 17], (255, 255, 255))  # transparent -> white
    # EXIF rotation applied: 20 wide x 40 high, the red (left) half is now on top.
    rot = ds.decode_resize(records["cats/rotated.jpg"][0], (40, 20)).numpy()
    assert records["cats/rotated.jpg"][0].startswith(b"\x89PNG")
    assert np.allclose(rot[5, 10], RED, atol=12) and np.allclose(rot[35, 10], BLUE, atol=12)
    # The HEIC is decoded, and upright exactly once (libheif rotates; EXIF says 1 afterwards).
    heic = ds.decode_resize(records["cats/IMG_0001.HEIC"][0], (40, 20)).numpy()
    assert records["cats/IMG_0001.HEIC"][0].startswith(b"\x89PNG")
    assert np.allclose(heic[5, 10], RED, atol=16) and np.allclose(heic[35, 10], BLUE, atol=16)
    assert m.image_size_range == {"min": [10, 20], "max": [40, 40]}


def test_shards_decode_to_the_pixels_pillow_sees(tmp_path):
    from PIL import ImageOps

    root = _odd_tree(tmp_path / "src")
    prepared = _build(ds.scan(root), tmp_path, max_pixels=200 * 200)
    for split in ("train", "validation"):
        for data, _, rel in _records(prepared, split):
            with Image.open(root / rel) as im:
                im.load()
                want = np.asarray(ds._to_rgb(ImageOps.exif_transpose(im)))
            got = ds.decode_resize(data, want.shape[:2]).numpy()
            # decode_resize uses libjpeg's accurate IDCT, so even JPEGs match Pillow exactly.
            assert np.abs(got - want).max() == 0, rel


def test_shards_split_by_count(tmp_path):
    root = class_tree(tmp_path / "src", {"a": 6, "b": 5})
    prepared = _build(ds.scan(root, val_fraction=0.2), tmp_path, shard_max_images=4)
    m = prepared.manifest
    train = m.splits["train"].shards
    assert [r.count for r in train] == [4, 4, 1]  # 9 training images: 5 of a, 4 of b
    assert [r.key.rsplit("/", 1)[1] for r in train] == [
        "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    assert all(r.key.startswith(f"datasets/{m.fingerprint}/") for r in train)
    local = dict(prepared.shard_files)
    from common.hashing import sha256_file

    assert all(sha256_file(local[r.key]) == r.sha256 and local[r.key].stat().st_size == r.size for r in train)


# ---------------------------------------------------------------- fingerprints

def test_fingerprint_stability(tmp_path):
    root = tmp_path / "one"
    class_tree(root, {"1_a": 3, "2_b": 3}, split="training")
    class_tree(root, {"1_a": 1, "2_b": 1}, split="validation")
    fp = ds.scan(root).fingerprint
    assert ds.scan(root).fingerprint == fp
    renamed = tmp_path / "renamed"
    shutil.copytree(root, renamed)
    assert ds.scan(renamed).fingerprint == fp
    # other spellings of the split folders and a wrapping folder change nothing either
    wrapped = tmp_path / "w" / "CamSDD"
    shutil.copytree(root / "training", wrapped / "train")
    shutil.copytree(root / "validation", wrapped / "val")
    assert ds.scan(tmp_path / "w").fingerprint == fp
    # junk does not count; a changed byte does
    write(renamed / "training" / "1_a" / ".DS_Store", b"junk")
    assert ds.scan(renamed).fingerprint == fp
    victim = renamed / "training" / "1_a" / "000.jpg"
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0x01
    victim.write_bytes(bytes(data))
    assert ds.scan(renamed).fingerprint != fp
    # split folders: seed and val_fraction do not shape the result, so they do not count
    assert ds.scan(root, seed=3, val_fraction=0.3).fingerprint == fp


def test_same_source_prepares_identical_shards(tmp_path):
    root = class_tree(tmp_path / "src", {"a": 4, "b": 4})
    a = _build(ds.scan(root), tmp_path / "1").manifest
    b = _build(ds.scan(root), tmp_path / "2").manifest
    assert a.splits == b.splits


def test_prepared_synthetic_feeds_load_split(prepared_synthetic):
    m = prepared_synthetic.manifest
    root = prepared_synthetic.store.root
    val = ds.load_split([root / r.key for r in m.splits["validation"].shards], (32, 48), 16, training=False)
    labels = []
    for x, y in val:
        assert x.shape[1:] == (32, 48, 3) and x.dtype.name == "float32" and y.dtype.name == "int32"
        labels.extend(y.numpy().tolist())
    assert labels == sorted(list(range(30)) * 2)  # validation records are in class order
    train = ds.load_split([root / r.key for r in m.splits["train"].shards], (32, 48), 32, training=True)
    assert sorted(int(v) for _, y in train for v in y.numpy()) == sorted(list(range(30)) * 4)


def test_copies_across_splits_and_classes(tmp_path):
    """Validation is used as given; training copies of validation photos and ambiguous copies leave training."""
    root = tmp_path / "src"
    class_tree(root, {"1_a": 3, "2_b": 3, "3_c": 3}, split="training")
    class_tree(root, {"1_a": 2, "2_b": 2, "3_c": 2}, split="validation")
    val_a = (root / "validation" / "1_a" / "000.jpg").read_bytes()
    write(root / "training" / "1_a" / "IMG_0001 copy.jpg", val_a)      # would be scored on a training image
    write(root / "training" / "3_c" / "misfiled.jpg", val_a)           # and with another label, too
    val_b = (root / "validation" / "2_b" / "001.jpg").read_bytes()
    write(root / "validation" / "2_b" / "again.jpg", val_b)            # twice in validation: kept, warned
    confused = (root / "training" / "2_b" / "001.jpg").read_bytes()
    write(root / "training" / "3_c" / "maybe_b.jpg", confused)         # two training classes: ambiguous
    prepared = _build(ds.scan(root), tmp_path)
    m = prepared.manifest
    reasons = {f.path: f.reason for f in m.skipped}
    assert reasons["training/1_a/IMG_0001 copy.jpg"] == (
        "also in validation as validation/1_a/000.jpg (byte-identical): left out of training so that "
        "validation does not score a training image")
    assert reasons["training/3_c/misfiled.jpg"] == (
        "filed under 3_c here but under 1_a in validation (validation/1_a/000.jpg): ambiguous label, "
        "left out of training")
    for path in ("training/2_b/001.jpg", "training/3_c/maybe_b.jpg"):
        assert "filed under 2 classes (2_b, 3_c" in reasons[path] and "label is ambiguous" in reasons[path]
    assert len(reasons) == 4
    assert m.warnings == ["validation holds the same picture twice: validation/2_b/001.jpg, "
                          "validation/2_b/again.jpg (kept: the validation folder is used as given)"]
    assert m.splits["train"].per_class == {"1_a": 3, "2_b": 2, "3_c": 3}
    assert m.splits["validation"].per_class == {"1_a": 2, "2_b": 3, "3_c": 2}  # untouched
    train = {data for data, _, _ in _records(prepared, "train")}
    assert not train & {data for data, _, _ in _records(prepared, "validation")}


def test_hold_out_split_never_separates_copies(tmp_path):
    root = class_tree(tmp_path / "src", {"a": 8, "b": 8})
    for i in range(4):
        write(root / "a" / f"copy_{i}.jpg", (root / "a" / f"00{i}.jpg").read_bytes())
    prepared = _build(ds.scan(root, val_fraction=0.5), tmp_path)
    seen: dict[bytes, str] = {}
    for split in ("train", "validation"):
        for data, _, _ in _records(prepared, split):
            assert data not in seen, "the same picture is on both sides of the split"
            seen[data] = split
    assert sum(1 for f in prepared.manifest.skipped if f.reason.startswith("duplicate of a/00")) == 4


def test_names_that_are_not_utf8_raw_files_and_avif(tmp_path):
    """A zip made on Windows gives Latin-1 names; phones and cameras leave RAW files; the web gives AVIF."""
    root = class_tree(tmp_path / "src", {"a": 3, "b": 3})
    latin1 = os.fsencode(root / "a") + b"/caf\xe9/\xe9t\xe9.jpg"
    os.makedirs(os.path.dirname(latin1))
    with open(latin1, "wb") as f:
        f.write(jpeg_bytes((10, 200, 10)))
    write(root / "b" / "IMG_0002.DNG", b"II*\x00" + b"\x00" * 64)
    write(root / "b" / "pic.avif", image_bytes(Image.new("RGB", (20, 10), GREEN), "AVIF", quality=90))
    s = ds.scan(root)
    assert "a/caf\\xe9/\\xe9t\\xe9.jpg" in {c.rel for c in s.candidates}
    prepared = _build(s, tmp_path)
    reasons = {f.path: f.reason for f in prepared.manifest.skipped}
    assert reasons == {"b/IMG_0002.DNG": "camera RAW file: not decoded; export it as JPEG or HEIC"}
    records = {p: data for split in ("train", "validation") for data, _, p in _records(prepared, split)}
    assert "a/caf\\xe9/\\xe9t\\xe9.jpg" in records and "b/pic.avif" in records
    assert np.allclose(ds.decode_resize(records["b/pic.avif"], (10, 20)).numpy()[5, 10], GREEN, atol=12)
    prepared.manifest.model_dump_json()  # the odd name is valid JSON text


def test_a_class_folder_name_that_is_not_utf8_stops_with_the_fix(tmp_path):
    root = class_tree(tmp_path / "src", {"a": 2, "b": 2})
    bad = os.fsencode(root) + b"/caf\xe9"
    os.makedirs(bad)
    with open(bad + b"/x.jpg", "wb") as f:
        f.write(jpeg_bytes(RED))
    with pytest.raises(DatasetError, match=r"b'caf\\xe9'.*is not UTF-8 text.*rename the folder"):
        ds.scan(root)


def _gradient(width: int, height: int) -> Image.Image:
    """A smooth picture (resampling and JPEG barely change it), red on top and blue below."""
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    arr = (1 - y) * np.array([230, 20, 20]) + y * np.array([20, 20, 230]) + 20 * x
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def test_large_photos_are_stored_downscaled(tmp_path):
    """A phone photo kept at full size is ~20 MB per record; photos longer than max_side are downscaled once."""
    root = class_tree(tmp_path / "src", {"a": 2, "b": 2})
    big = _gradient(1200, 800)
    write(root / "a" / "big.jpg", image_bytes(big, "JPEG", quality=95))
    write(root / "a" / "big.png", image_bytes(big, "PNG"))
    # Shot in portrait: stored 1200 wide x 800 high with orientation 6, shown 800 wide x 1200 high.
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = _gradient(800, 1200).transpose(Image.Transpose.ROTATE_90)
    write(root / "b" / "portrait.jpg", image_bytes(sideways, "JPEG", quality=95, exif=exif.tobytes()))
    small = (root / "a" / "000.jpg").read_bytes()

    s = ds.scan(root, max_side=500)
    assert s.fingerprint != ds.scan(root, max_side=0).fingerprint != ds.scan(root).fingerprint
    prepared = _build(s, tmp_path)
    m = prepared.manifest
    assert (m.max_side, m.downscaled) == (500, 3)
    records = {p: data for split in ("train", "validation") for data, _, p in _records(prepared, split)}
    assert records["a/000.jpg"] == small  # small photos are untouched
    want = np.asarray(big.resize((500, 333), Image.Resampling.LANCZOS), dtype=np.float32)
    for path in ("a/big.jpg", "a/big.png"):
        assert records[path][:2] == b"\xff\xd8", path  # a JPEG, not a 20 MB PNG
        got = ds.decode_resize(records[path], (333, 500)).numpy()
        assert np.abs(got - want).mean() < 2.0 and np.abs(got - want).max() < 24, path
    upright = ds.decode_resize(records["b/portrait.jpg"], (500, 333)).numpy()
    assert np.allclose(upright[10, 160], (230, 20, 20), atol=20) and np.allclose(upright[490, 160], (20, 20, 230), atol=20)
    with Image.open(io.BytesIO(records["b/portrait.jpg"])) as im:
        assert im.size == (333, 500)
    assert m.image_size_range["max"] == [500, 500]


def test_max_side_zero_keeps_full_size(tmp_path):
    root = class_tree(tmp_path / "src", {"a": 2, "b": 2})
    original = image_bytes(_gradient(1200, 800), "JPEG", quality=95)
    write(root / "a" / "big.jpg", original)
    prepared = _build(ds.scan(root, max_side=0), tmp_path)
    records = {p: data for split in ("train", "validation") for data, _, p in _records(prepared, split)}
    assert records["a/big.jpg"] == original and prepared.manifest.downscaled == 0
