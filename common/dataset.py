"""Datasets: discovery of class folders, validation and preparation of images, TFRecord shards, tf.data input.

Pure functions over local paths; the prepare job does the store I/O. TFRecord records are
tf.train.Example with `image` (encoded JPEG or PNG bytes, RGB, EXIF orientation applied),
`label` (int64 class index) and `path` (bytes, path relative to the source root).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import unicodedata
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

from common import layout
from common.errors import DatasetError
from common.hashing import sha256_bytes, sha256_file
from common.schemas import ClassInfo, DatasetManifest, ShardRef, SkippedFile, SplitInfo

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
    image_bytes = tf.convert_to_tensor(image_bytes, dtype=tf.string)
    # TF's default JPEG IDCT is the fast, approximate one (pixels off by up to ~7 levels);
    # the accurate one gives exactly what Pillow and libjpeg's defaults give.
    img = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8),
    )
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


# ---------------------------------------------------------------- discovery

# Bump when the stored bytes or the split rule change: it is part of the fingerprint, so
# datasets prepared by older code are prepared again instead of being silently reused.
# 2: byte-identical copies are resolved before splitting (see dedupe); warnings.
FORMAT_VERSION = 2

TRAIN = "train"
VALIDATION = "validation"
SplitName = Literal["train", "validation"]
Layout = Literal["split-folders", "class-folders"]

TRAIN_SPELLINGS = frozenset({"train", "training"})
VAL_SPELLINGS = frozenset({"val", "valid", "validation"})
TEST_SPELLINGS = frozenset({"test", "testing"})  # not used: CamSDD's test labels are not public

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif",
                              ".tif", ".tiff", ".heic", ".heif", ".avif"})
# Pictures we do not decode: listed as skipped with the fix, not silently ignored like a .txt.
UNDECODED_IMAGE_EXTENSIONS = {
    **dict.fromkeys((".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".raf", ".orf", ".rw2", ".srw", ".pef"),
                    "camera RAW file: not decoded; export it as JPEG or HEIC"),
    ".jxl": "JPEG XL is not decoded here; convert it to JPEG or PNG",
    ".psd": "Photoshop document: not decoded; export it as JPEG or PNG",
    ".svg": "vector drawing: not a photo; export it as PNG if it belongs in the data set",
}
# Operating-system litter: never images, never worth a line in dataset.json.
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", ".directory", "icon\r"})
JUNK_DIRS = frozenset({"__macosx", ".trash", ".trashes", ".spotlight-v100", ".fseventsd", "@eadir"})

MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (about 9459 x 9459)
# A 12-megapixel phone photo stored losslessly is about 20 MB; the models take 384x576. Photos
# longer than this on their longer side are stored downscaled to it (CamSDD's 576x384 are not).
MAX_SIDE = 2048
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
MAX_WRAPPER_DEPTH = 4
SHARD_MAX_IMAGES = 1000
SHARD_MAX_BYTES = 128 << 20

_NUMBERED = re.compile(r"^(\d+)(?:[_\-. ]+(.*))?$")


@dataclass(frozen=True)
class Candidate:
    """One file that should be an image of a class."""

    split: str  # "train" or "validation" with split folders; "" before a hold-out split
    folder: str  # class folder name
    path: Path  # on disk (may be a symlink)
    rel: str  # relative to the source root, '/'-separated: what dataset.json and records show
    rel_in_class: str  # relative to the class folder: what the fingerprint uses
    sha256: str


@dataclass(frozen=True)
class Scan:
    """What a source folder holds, hashed but not decoded; enough to know the fingerprint."""

    source_root: Path
    data_root: Path  # source_root, or the folder found inside single wrapping folders
    layout: Layout
    numbered: bool
    classes: tuple[ClassInfo, ...]
    candidates: tuple[Candidate, ...]
    ignored: tuple[str, ...]  # junk and non-image files, relative to source_root
    unreadable: tuple[SkippedFile, ...]  # broken links, unreadable files: skipped before decoding
    split_method: Literal["folders", "stratified-holdout"]
    val_fraction: float | None
    seed: int
    fingerprint: str
    split_dirs: dict[str, str] = field(default_factory=dict)  # "train" -> "training" as spelled on disk
    max_side: int = MAX_SIDE  # 0: photos are kept at full size

    def class_path(self, folder: str, split: str = "") -> Path:
        if self.layout == "split-folders":
            return self.data_root / self.split_dirs[split] / folder
        return self.data_root / folder


def _is_junk(name: str) -> bool:
    low = name.lower()
    # AppleDouble '._x.jpg' files carry Finder metadata, not pixels; other dot-files are hidden.
    return low in JUNK_NAMES or name.startswith(".")


def _visible_dirs(path: Path) -> list[Path]:
    out = []
    for p in sorted(path.iterdir()):
        if p.name.startswith(".") or p.name.lower() in JUNK_DIRS:
            continue
        if p.is_dir():
            out.append(p)
    return out


def _loose_images(path: Path) -> list[Path]:
    return [p for p in sorted(path.iterdir())
            if p.is_file() and not _is_junk(p.name) and p.suffix.lower() in IMAGE_EXTENSIONS]


def _split_folders(path: Path) -> dict[str, Path]:
    """{'train': dir, 'validation': dir, 'test': dir} found directly in path (any spelling)."""
    found: dict[str, list[Path]] = {}
    for d in _visible_dirs(path):
        low = d.name.lower()
        kind = (TRAIN if low in TRAIN_SPELLINGS else VALIDATION if low in VAL_SPELLINGS
                else "test" if low in TEST_SPELLINGS else None)
        if kind:
            found.setdefault(kind, []).append(d)
    for kind, dirs in found.items():
        if len(dirs) > 1:
            raise DatasetError(
                f"{path} holds more than one {kind} folder ({', '.join(d.name for d in dirs)}); keep one"
            )
    return {k: v[0] for k, v in found.items()}


def find_data_root(root: Path) -> Path:
    """Descend through single wrapping folders (CamSDD/CamSDD/..., an unzipped archive's top folder)."""
    cur = root
    for _ in range(MAX_WRAPPER_DEPTH):
        if _split_folders(cur):
            return cur
        dirs = _visible_dirs(cur)
        if len(dirs) == 1 and not _loose_images(cur):
            cur = dirs[0]
            continue
        return cur
    return cur


def parse_class_folders(folders: Sequence[str], where: Path) -> tuple[list[ClassInfo], bool]:
    """Class folders -> classes in index order, and whether they were numbered.

    '<n>_<Name>' folders give index n-1 and must be numbered exactly 1..N; otherwise the
    order is sorted(), the order Keras' image_dataset_from_directory uses.
    """
    if not folders:
        raise DatasetError(
            f"no class folders in {where}: put each class's images in its own folder "
            "(e.g. 1_Portrait/, 2_Group_Portrait/ or cats/, dogs/), optionally under training/ and validation/"
        )
    if len(folders) < 2:
        raise DatasetError(
            f"only one class folder ({folders[0]}) in {where}: a classifier needs at least two classes"
        )
    matches = {f: _NUMBERED.match(f) for f in folders}
    numbered = [f for f, m in matches.items() if m]
    plain = [f for f, m in matches.items() if not m]
    if numbered and plain:
        raise DatasetError(
            f"class folders in {where} mix numbered and un-numbered names: numbered {sorted(numbered)}, "
            f"un-numbered {sorted(plain)}; name all as <number>_<Name> (1..N) or none"
        )
    if not numbered:
        return [ClassInfo(index=i, name=_display(f), folder=f) for i, f in enumerate(sorted(folders))], False
    by_number: dict[int, list[str]] = {}
    for f in folders:
        by_number.setdefault(int(matches[f].group(1)), []).append(f)
    dups = {n: sorted(fs) for n, fs in by_number.items() if len(fs) > 1}
    if dups:
        listing = "; ".join(f"{n}: {', '.join(fs)}" for n, fs in sorted(dups.items()))
        raise DatasetError(f"class folders in {where} share a number ({listing}); each number 1..N once")
    expected = set(range(1, len(folders) + 1))
    if set(by_number) != expected:
        missing = sorted(expected - set(by_number))
        extra = sorted(set(by_number) - expected)
        raise DatasetError(
            f"numbered class folders in {where} must be numbered 1..{len(folders)} without gaps: "
            f"missing {missing}, unexpected {[by_number[n][0] for n in extra]}"
        )
    classes = []
    for n in sorted(by_number):
        f = by_number[n][0]
        rest = matches[f].group(2)
        classes.append(ClassInfo(index=n - 1, name=_display(rest) if rest else f, folder=f))
    return classes, True


def _display(folder_part: str) -> str:
    """'Sunrise_Sunset' -> 'Sunrise Sunset'."""
    return " ".join(folder_part.replace("_", " ").split())


def _walk_class(class_dir: Path, source_root: Path,
                ignored: list[str], unreadable: list[SkippedFile]) -> list[tuple[str, Path, str]]:
    """Image candidates under class_dir, recursively, following symlinks without looping."""
    found = []
    seen: set[tuple[int, int]] = set()
    top = class_dir.resolve()
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        st = os.stat(dirpath)
        real = Path(dirpath).resolve()
        # A symlink to a folder already walked, or to the class folder or one of its parents,
        # would loop (or pull in other classes): skip it.
        if (st.st_dev, st.st_ino) in seen or (real != top and top.is_relative_to(real)):
            ignored.append(_rel(Path(dirpath), source_root) + "/")
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d.lower() not in JUNK_DIRS)
        base = Path(dirpath)
        for name in sorted(filenames):
            p = base / name
            rel = _rel(p, source_root)
            if not _is_junk(name) and p.suffix.lower() in UNDECODED_IMAGE_EXTENSIONS:
                unreadable.append(SkippedFile(path=rel, reason=UNDECODED_IMAGE_EXTENSIONS[p.suffix.lower()]))
                continue
            if _is_junk(name) or p.suffix.lower() not in IMAGE_EXTENSIONS:
                ignored.append(rel)
                continue
            if not p.exists():
                unreadable.append(SkippedFile(path=rel, reason="broken symbolic link"))
                continue
            if not p.is_file():
                ignored.append(rel)
                continue
            found.append((rel, p, _rel(p, class_dir)))
    return found


def _rel(p: Path, base: Path) -> str:
    text = p.relative_to(base).as_posix()
    # A name that is not UTF-8 (a zip made on Windows, unpacked here) arrives as surrogate
    # escapes, which no JSON or TFRecord can hold: spell its odd bytes out (\xe9), uniquely.
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    # NFC: macOS writes decomposed Unicode names; the same photo must fingerprint the same.
    return unicodedata.normalize("NFC", text)


def _class_folder_names(parent: Path) -> list[str]:
    """The class folders in parent; a name that is not UTF-8 stops the job (a label must be text)."""
    names = []
    for d in _visible_dirs(parent):
        try:
            d.name.encode("utf-8")
        except UnicodeEncodeError:
            raw = d.name.encode("utf-8", "surrogateescape")
            raise DatasetError(f"the class folder name {raw!r} in {parent} is not UTF-8 text (often a zip made on "
                               "another system): rename the folder, e.g. with convmv, and run again") from None
        names.append(d.name)
    return names


def scan(root: str | Path, *, val_fraction: float = 0.1, seed: int = 0, workers: int | None = None,
         max_side: int = MAX_SIDE) -> Scan:
    """Find the classes and image candidates under root, hash them and compute the fingerprint.

    Nothing is decoded here, so a source prepared before is recognised cheaply.
    """
    source_root = Path(root).expanduser()
    if not source_root.exists():
        raise DatasetError(f"data folder {source_root} does not exist; give --data PATH, s3://bucket/prefix or synthetic")
    if not source_root.is_dir():
        raise DatasetError(f"data path {source_root} is not a folder; give the folder that holds the class folders")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if max_side < 0:
        raise ValueError(f"max_side must be 0 (no limit) or a positive number of pixels, got {max_side}")
    data_root = find_data_root(source_root)
    splits = _split_folders(data_root)
    ignored: list[str] = []
    unreadable: list[SkippedFile] = []
    raw: list[tuple[str, Path, str, str, str]] = []  # rel, path, rel_in_class, split, folder
    split_dirs: dict[str, str] = {}
    if splits:
        if TRAIN not in splits:
            raise DatasetError(
                f"{data_root} has a {splits.get(VALIDATION, splits.get('test')).name}/ folder but no "
                "training folder; add training/ (or train/) with one folder per class"
            )
        extra = [d.name for d in _visible_dirs(data_root)
                 if d not in splits.values()]
        if extra:
            raise DatasetError(
                f"{data_root} holds split folders and also {extra}; move those into training/ or remove them"
            )
        per_split = {k: _class_folder_names(v) for k, v in splits.items() if k != "test"}
        if VALIDATION in per_split and set(per_split[TRAIN]) != set(per_split[VALIDATION]):
            only_t = sorted(set(per_split[TRAIN]) - set(per_split[VALIDATION]))
            only_v = sorted(set(per_split[VALIDATION]) - set(per_split[TRAIN]))
            raise DatasetError(
                f"training and validation class folders differ in {data_root}: only in "
                f"{splits[TRAIN].name}/: {only_t}; only in {splits[VALIDATION].name}/: {only_v}; "
                "both must hold the same class folders"
            )
        classes, numbered = parse_class_folders(per_split[TRAIN], splits[TRAIN])
        for split in per_split:
            split_dirs[split] = splits[split].name
            for c in classes:
                for rel, p, in_class in _walk_class(splits[split] / c.folder, source_root, ignored, unreadable):
                    raw.append((rel, p, in_class, split, c.folder))
        layout_kind: Layout = "split-folders"
        has_val = VALIDATION in per_split
    else:
        folders = _class_folder_names(data_root)
        classes, numbered = parse_class_folders(folders, data_root)
        for c in classes:
            for rel, p, in_class in _walk_class(data_root / c.folder, source_root, ignored, unreadable):
                raw.append((rel, p, in_class, "", c.folder))
        layout_kind = "class-folders"
        has_val = False

    def digest(item):
        rel, p, in_class, split, folder = item
        try:
            return Candidate(split=split, folder=folder, path=p, rel=rel, rel_in_class=in_class,
                             sha256=sha256_file(p))
        except OSError as exc:
            return SkippedFile(path=rel, reason=f"unreadable: {exc.strerror or exc}")

    with ThreadPoolExecutor(max_workers=_workers(workers)) as pool:
        hashed = list(pool.map(digest, raw))
    candidates = tuple(c for c in hashed if isinstance(c, Candidate))
    unreadable.extend(s for s in hashed if isinstance(s, SkippedFile))
    split_method = "folders" if has_val else "stratified-holdout"
    fp = fingerprint(candidates, split_method=split_method, val_fraction=val_fraction, seed=seed, max_side=max_side)
    s = Scan(
        source_root=source_root, data_root=data_root, layout=layout_kind, numbered=numbered,
        classes=tuple(classes), candidates=candidates, ignored=tuple(sorted(ignored)),
        unreadable=tuple(sorted(unreadable, key=lambda f: f.path)), split_method=split_method,
        val_fraction=None if has_val else val_fraction, seed=seed, fingerprint=fp, split_dirs=split_dirs,
        max_side=max_side,
    )
    return s


def _workers(workers: int | None) -> int:
    if workers:
        return workers
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(2, min(8, n))


def fingerprint(candidates: Sequence[Candidate], *, split_method: str, val_fraction: float, seed: int,
                max_side: int = MAX_SIDE) -> str:
    """sha256 over (split, class folder, path in class, file sha256) and the parameters that change the result.

    Paths are taken inside the class folder, so renaming the root, a wrapping folder or
    spelling train/ as training/ keeps the fingerprint. The seed and validation fraction
    only shape a hold-out split, so they count only when there is one.
    """
    entries = sorted([c.split, c.folder, c.rel_in_class, c.sha256] for c in candidates)
    params: dict = {"format_version": FORMAT_VERSION, "split_method": split_method, "max_side": int(max_side)}
    if split_method == "stratified-holdout":
        params.update(val_fraction=round(float(val_fraction), 6), seed=int(seed))
    elif split_method != "folders":
        raise ValueError(f"unknown split method {split_method!r}; valid values: folders, stratified-holdout")
    text = json.dumps({"files": entries, "params": params}, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- decoding and conversion

class SkipImage(Exception):
    """This file cannot be used as an image; the message is the reason stored in dataset.json."""


@dataclass(frozen=True)
class PreparedImage:
    data: bytes | None  # None: keep the original file's bytes
    height: int
    width: int
    fmt: Literal["jpeg", "png"]


def _to_rgb(im):
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        # 16-bit samples use 0..65535; Pillow's convert() would clip them to white.
        scale = 257.0 if mode.startswith("I;16") or arr.max() > 255 else 1.0
        grey = np.clip(np.round(arr / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        # Transparent areas are shown on white by every viewer; black would change the scene.
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def prepare_image(data: bytes, name: str, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> PreparedImage:
    """Decode fully with Pillow; say whether the original bytes can be stored, or give new bytes.

    Original bytes are kept for plain RGB JPEGs without an EXIF rotation that fit max_side (TF
    decodes them to the same pixels). A photo longer than max_side is turned upright, converted
    to RGB, downscaled (Lanczos) to max_side and stored as a JPEG of quality 95 without chroma
    subsampling; anything else is converted to RGB, rotated upright and stored as PNG.
    Raises SkipImage with the reason when the file is not a usable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    _register_heif()
    if not data:
        raise SkipImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise SkipImage(f"too large: {w}x{h} = {w * h} pixels exceeds the {max_pixels}-pixel "
                                    "decompression-bomb guard")
                fmt = im.format
                orientation = im.getexif().get(0x0112, 1)
                scale = max_side / max(w, h) if max_side and max(w, h) > max_side else 1.0
                if scale < 1.0 and fmt in ("JPEG", "MPO"):
                    # libjpeg decodes at 1/2, 1/4 or 1/8 directly: never below the size we need.
                    im.draft("RGB", (int(w * scale) + 1, int(h * scale) + 1))
                im.load()  # first frame of an animation; raises on truncated data
                if scale == 1.0 and fmt in ("JPEG", "MPO") and im.mode == "RGB" and orientation in (None, 0, 1):
                    return PreparedImage(data=None, height=h, width=w, fmt="jpeg")
                upright = ImageOps.exif_transpose(im) if orientation not in (None, 0, 1) else im
                rgb = _to_rgb(upright)
                out = io.BytesIO()
                if scale < 1.0:
                    uw, uh = (h, w) if orientation in _ROTATED else (w, h)
                    size = (max(1, round(uw * scale)), max(1, round(uh * scale)))
                    rgb = rgb.resize(size, Image.Resampling.LANCZOS)
                    rgb.save(out, format="JPEG", quality=95, subsampling=0)
                    return PreparedImage(data=out.getvalue(), height=rgb.height, width=rgb.width, fmt="jpeg")
                rgb.save(out, format="PNG")
                return PreparedImage(data=out.getvalue(), height=rgb.height, width=rgb.width, fmt="png")
    except SkipImage:
        raise
    except Image.DecompressionBombError as exc:
        raise SkipImage(f"too large: {exc}") from None
    except UnidentifiedImageError:
        ext = Path(name).suffix.lower()
        if ext in (".heic", ".heif"):
            if _heif_registered:
                raise SkipImage("damaged HEIC/HEIF: the HEIF decoder cannot read it") from None
            raise SkipImage("HEIC/HEIF cannot be decoded here (no HEIF support in Pillow); "
                            "convert it to JPEG, or install pillow-heif") from None
        raise SkipImage("not an image: Pillow cannot identify its format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc) or exc.__class__.__name__
        if "truncated" in text.lower():
            raise SkipImage(f"truncated image: {text}") from None
        raise SkipImage(f"cannot decode: {text}") from None


_heif_registered = False


def _register_heif() -> None:
    """HEIC/HEIF, the iPhone camera's default format, through pillow-heif (a dependency).

    libheif applies the file's rotation while decoding and pillow-heif then reports EXIF
    orientation 1, so exif_transpose does not turn the picture a second time.
    """
    global _heif_registered
    if _heif_registered:
        return
    try:
        import pillow_heif  # type: ignore[import-not-found]

        pillow_heif.register_heif_opener()
        _heif_registered = True
    except Exception:  # a broken install: HEIC files are then skipped with a reason naming the fix
        pass


# ---------------------------------------------------------------- preparation

@dataclass
class Prepared:
    manifest: DatasetManifest
    shard_files: list[tuple[str, Path]]  # (store key, local file), in write order
    ignored: tuple[str, ...]


@dataclass(frozen=True)
class _Item:
    cand: Candidate
    label: int
    height: int
    width: int
    stored: Path  # file whose bytes go into the record (original, or staged PNG/JPEG)
    downscaled: bool = False


def build(
    s: Scan,
    out_dir: str | Path,
    *,
    source: str,
    code_version: str,
    synthetic: bool = False,
    max_pixels: int = MAX_PIXELS,
    shard_max_images: int = SHARD_MAX_IMAGES,
    shard_max_bytes: int = SHARD_MAX_BYTES,
    workers: int | None = None,
) -> Prepared:
    """Decode every candidate once, split, write TFRecord shards into out_dir; return the manifest.

    out_dir receives the shard files under their store key names (without the datasets/<fp>/
    prefix); the caller uploads them, then dataset.json.
    """
    import tensorflow as tf

    _register_heif()
    out_dir = Path(out_dir)
    staging = out_dir / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    label_of = {c.folder: c.index for c in s.classes}

    def work(i_cand: tuple[int, Candidate]):
        i, cand = i_cand
        try:
            data = cand.path.read_bytes()
        except OSError as exc:
            return SkippedFile(path=cand.rel, reason=f"unreadable: {exc.strerror or exc}")
        if sha256_bytes(data) != cand.sha256:
            raise DatasetError(f"{cand.path} changed while it was being prepared; run prepare again")
        try:
            img = prepare_image(data, cand.path.name, max_pixels=max_pixels, max_side=s.max_side)
        except SkipImage as exc:
            return SkippedFile(path=cand.rel, reason=str(exc))
        stored = cand.path
        if img.data is None:
            # TF's decoder is stricter than Pillow's on some damaged JPEGs; a record training
            # cannot decode would stop an epoch on the GPU, so such files are stored as PNG.
            try:
                shape = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE").shape
                ok = tuple(shape[:2]) == (img.height, img.width)
            except (tf.errors.InvalidArgumentError, tf.errors.OpError):
                ok = False
            if not ok:
                img = _png_of(data, img)
        if img.data is not None:
            stored = staging / f"{i:07d}.{'jpg' if img.fmt == 'jpeg' else 'png'}"
            stored.write_bytes(img.data)
        return _Item(cand=cand, label=label_of[cand.folder], height=img.height, width=img.width, stored=stored,
                     downscaled=img.fmt == "jpeg" and img.data is not None)

    unique, duplicates, warnings = dedupe(s.candidates)
    with ThreadPoolExecutor(max_workers=_workers(workers)) as pool:
        results = list(pool.map(work, enumerate(unique)))
    items = [r for r in results if isinstance(r, _Item)]
    skipped = sorted(list(s.unreadable) + duplicates + [r for r in results if isinstance(r, SkippedFile)],
                     key=lambda f: f.path)

    if s.split_method == "folders":
        by_split = {TRAIN: [it for it in items if it.cand.split == TRAIN],
                    VALIDATION: [it for it in items if it.cand.split == VALIDATION]}
    elif s.split_method == "stratified-holdout":
        by_split = stratified_split(items, s.val_fraction or 0.0, s.seed)
    else:
        raise ValueError(f"unknown split method {s.split_method!r}; valid values: folders, stratified-holdout")
    _check_no_empty_class(s, by_split, skipped)

    # Training records in a fixed pseudo-random order (seeded by the content) so that a
    # bounded shuffle buffer still mixes classes; validation in class, then path order.
    train = sorted(by_split[TRAIN], key=lambda it: it.cand.rel)
    random.Random(s.fingerprint).shuffle(train)
    val = sorted(by_split[VALIDATION], key=lambda it: (it.label, it.cand.rel))

    shard_files: list[tuple[str, Path]] = []
    splits: dict[str, SplitInfo] = {}
    for split, split_items in ((TRAIN, train), (VALIDATION, val)):
        refs, files = _write_shards(s.fingerprint, split, split_items, out_dir, shard_max_images, shard_max_bytes)
        shard_files.extend(files)
        per_class = {c.folder: 0 for c in s.classes}
        for it in split_items:
            per_class[it.cand.folder] += 1
        splits[split] = SplitInfo(count=len(split_items), per_class=per_class, shards=refs)
    shutil.rmtree(staging, ignore_errors=True)

    manifest = DatasetManifest(
        fingerprint=s.fingerprint, source=source, synthetic=synthetic, layout=s.layout, numbered=s.numbered,
        split_method=s.split_method, val_fraction=s.val_fraction, seed=s.seed, classes=list(s.classes),
        splits=splits, skipped=skipped, warnings=warnings, image_size_range=_size_range(items),
        max_side=s.max_side, downscaled=sum(1 for it in items if it.downscaled), code_version=code_version,
    )
    return Prepared(manifest=manifest, shard_files=shard_files, ignored=s.ignored)


def dedupe(candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[SkippedFile], list[str]]:
    """Resolve byte-identical copies of one picture: (candidates to keep, skipped with reasons, warnings).

    Real folders hold copies ("IMG_0001 (1).jpg", a photo filed twice). Rules:
    - a validation folder given on disk is the benchmark's test set and is never changed: a
      training copy of a validation picture is left out of training instead (otherwise the
      model would be scored on an image it trained on), whatever class it was filed under;
      copies inside validation are kept and reported as warnings;
    - among training pictures (or the pool a hold-out is drawn from), one copy per picture
      is kept (the shortest path: copies get longer names); copies filed under different
      classes have no single label and are all left out.
    """
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.sha256, []).append(c)
    keep: set[str] = set()
    skipped: list[SkippedFile] = []
    warnings: list[str] = []
    for group in groups.values():
        if len(group) == 1:
            keep.add(group[0].rel)
            continue
        val = sorted((c for c in group if c.split == VALIDATION), key=lambda c: c.rel)
        rest = sorted((c for c in group if c.split != VALIDATION), key=lambda c: (len(c.rel), c.rel))
        if val:
            keep.update(c.rel for c in val)
            if len(val) > 1:
                folders = sorted({c.folder for c in val})
                kind = "under different classes" if len(folders) > 1 else "twice"
                warnings.append(f"validation holds the same picture {kind}: {', '.join(c.rel for c in val)} "
                                "(kept: the validation folder is used as given)")
            for c in rest:
                same = next((v for v in val if v.folder == c.folder), None)
                if same is not None:
                    why = (f"also in validation as {same.rel} (byte-identical): left out of training so "
                           "that validation does not score a training image")
                else:
                    why = (f"filed under {c.folder} here but under {val[0].folder} in validation "
                           f"({val[0].rel}): ambiguous label, left out of training")
                skipped.append(SkippedFile(path=c.rel, reason=why))
            continue
        folders = sorted({c.folder for c in rest})
        if len(folders) > 1:
            for c in rest:
                others = ", ".join(o.rel for o in rest if o is not c)
                skipped.append(SkippedFile(path=c.rel, reason=(
                    f"the same picture is filed under {len(folders)} classes ({', '.join(folders)}; also {others}): "
                    "its label is ambiguous; keep it in one class folder")))
            continue
        kept = rest[0]
        keep.add(kept.rel)
        for c in rest[1:]:
            skipped.append(SkippedFile(path=c.rel, reason=f"duplicate of {kept.rel} (byte-identical)"))
    return [c for c in candidates if c.rel in keep], skipped, warnings


def _png_of(data: bytes, img: PreparedImage) -> PreparedImage:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = _to_rgb(im)
        out = io.BytesIO()
        rgb.save(out, format="PNG")
    return PreparedImage(data=out.getvalue(), height=img.height, width=img.width, fmt="png")


def stratified_split(items: Sequence, val_fraction: float, seed: int) -> dict[str, list]:
    """Per class, a seeded random val_fraction of the images (at least one when a class has two)."""
    by_class: dict[int, list] = {}
    for it in items:
        by_class.setdefault(it.label, []).append(it)
    out: dict[str, list] = {TRAIN: [], VALIDATION: []}
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda it: it.cand.rel)
        n = len(members)
        n_val = 0 if n < 2 else min(n - 1, max(1, round(n * val_fraction)))
        chosen = set(random.Random(f"{seed}/{label}").sample(range(n), n_val))
        for i, it in enumerate(members):
            out[VALIDATION if i in chosen else TRAIN].append(it)
    return out


def _check_no_empty_class(s: Scan, by_split: dict[str, list], skipped: list[SkippedFile]) -> None:
    problems = []
    splits = [TRAIN, VALIDATION] if s.split_method == "folders" else [TRAIN]
    for split in splits:
        present = {it.cand.folder for it in by_split[split]}
        for c in s.classes:
            if c.folder in present:
                continue
            where = s.class_path(c.folder, split) if s.split_method == "folders" else s.data_root / c.folder
            prefix = _rel(where, s.source_root) + "/" if where != s.source_root else ""
            n_skipped = sum(1 for f in skipped if f.path.startswith(prefix))
            detail = f" ({n_skipped} file(s) skipped as unusable, listed in the log)" if n_skipped else ""
            problems.append(f"{where}{detail}")
    if problems:
        raise DatasetError(
            "class folder(s) with no usable images: " + "; ".join(problems)
            + ". Add readable JPEG/PNG images to each, or remove the folder (from training and validation alike)"
        )


def _size_range(items: Sequence[_Item]) -> dict[str, list[int]]:
    if not items:
        return {}
    return {"min": [min(it.height for it in items), min(it.width for it in items)],
            "max": [max(it.height for it in items), max(it.width for it in items)]}


def _write_shards(fp: str, split: str, items: Sequence[_Item], out_dir: Path,
                  max_images: int, max_bytes: int) -> tuple[list[ShardRef], list[tuple[str, Path]]]:
    """Shards of at most max_images records / about max_bytes each, named <split>-i-of-n."""
    import tensorflow as tf

    groups: list[list[_Item]] = []
    size = 0
    for it in items:
        n = it.stored.stat().st_size
        if not groups or len(groups[-1]) >= max_images or (groups[-1] and size + n > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(it)
        size += n
    if not groups:
        groups = [[]]  # an empty split still gets one (empty) shard, so readers need no special case
    refs, files = [], []
    prefix = layout.dataset_prefix(fp)
    for i, group in enumerate(groups):
        key = layout.dataset_shard(fp, split, i, len(groups))
        path = out_dir / key[len(prefix):]
        path.parent.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(path)) as w:
            for it in group:
                w.write(serialize_example(it.stored.read_bytes(), it.label, it.cand.rel))
        refs.append(ShardRef(key=key, sha256=sha256_file(path), size=path.stat().st_size, count=len(group)))
        files.append((key, path))
    return refs, files
