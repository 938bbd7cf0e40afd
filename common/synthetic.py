"""A synthetic, learnable 30-class stand-in for CamSDD, written as JPEGs in the CamSDD layout.

It exists so that a machine without the real photos can run the whole study and get
numbers that mean something: each class has a strong, resize-robust cue (its own hue
and brightness, and a coarse band pattern), and every image varies (colour jitter,
random band phase, random occluding shapes, pixel noise) so that a model has to learn
the cue rather than memorise pixels. Same seed ⇒ byte-identical files.
"""

from __future__ import annotations

import colorsys
import shutil
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from common.errors import DatasetError

# The Mobile AI 2021 Camera Scene Detection classes, in the dataset's own order.
CAMSDD_CLASSES: tuple[str, ...] = (
    "Portrait", "Group Portrait", "Kids", "Dog", "Cat", "Macro", "Gourmet", "Beach",
    "Mountains", "Waterfall", "Snow", "Landscape", "Underwater", "Architecture",
    "Sunrise & Sunset", "Blue Sky", "Overcast", "Greenery", "Autumn Plants", "Flowers",
    "Night Shot", "Stage", "Fireworks", "Candlelight", "Neon Lights", "Indoor", "Backlight",
    "Document", "QR Code", "Monitor Screen",
)

MARKER = "SYNTHETIC.txt"
JPEG_QUALITY = 90
Split = Literal["training", "validation"]
_SPLIT_IDS: dict[str, int] = {"training": 0, "validation": 1}

# Cue design: 10 hues × 3 groups. The group sets both brightness/saturation and the
# band orientation, so two classes sharing a hue still differ in mean colour and layout.
_HUES = 10
_GROUPS = (
    # (value, saturation, pattern)
    (0.80, 0.85, "horizontal"),
    (0.95, 0.45, "vertical"),
    (0.45, 0.90, "checker"),
)


def folder_name(index: int, name: str) -> str:
    """'Sunrise & Sunset', 14 -> '15_Sunrise_Sunset' (CamSDD folder spelling)."""
    words = [w for w in name.replace("&", " ").split() if w]
    return f"{index + 1}_{'_'.join(words)}"


CAMSDD_FOLDERS: tuple[str, ...] = tuple(folder_name(i, n) for i, n in enumerate(CAMSDD_CLASSES))


def class_cue(index: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(main RGB, band RGB, pattern) of a class; RGB as float arrays in 0..255."""
    hue = (index % _HUES) / _HUES
    value, sat, pattern = _GROUPS[(index // _HUES) % len(_GROUPS)]
    main = np.array(colorsys.hsv_to_rgb(hue, sat, value)) * 255.0
    # The band colour is the same hue, shifted in brightness: a pattern that survives
    # resizing without moving the class's mean hue.
    band = np.array(colorsys.hsv_to_rgb(hue, sat * 0.7, value * 0.6)) * 255.0
    return main, band, pattern


def _band_mask(pattern: str, h: int, w: int, phase: float, period_frac: float) -> np.ndarray:
    ys = np.arange(h, dtype=np.float32)[:, None] / h
    xs = np.arange(w, dtype=np.float32)[None, :] / w
    if pattern == "horizontal":
        m = np.broadcast_to(((ys + phase) / period_frac) % 1.0 < 0.5, (h, w))
    elif pattern == "vertical":
        m = np.broadcast_to(((xs + phase) / period_frac) % 1.0 < 0.5, (h, w))
    elif pattern == "checker":
        m = ((((ys + phase) / period_frac) % 1.0 < 0.5) ^ (((xs + phase) / period_frac) % 1.0 < 0.5))
    else:
        raise ValueError(f"unknown pattern {pattern!r}; valid values: horizontal, vertical, checker")
    return np.asarray(m)


def render(index: int, rng: np.random.Generator, image_size: tuple[int, int]) -> Image.Image:
    """One synthetic RGB image of class `index` (height, width = image_size)."""
    h, w = image_size
    main, band, pattern = class_cue(index)
    # Per-image colour jitter, small against the 36° hue spacing between classes.
    jitter = rng.normal(0.0, 6.0, size=3)
    mask = _band_mask(pattern, h, w, phase=float(rng.uniform(0, 1)), period_frac=float(rng.uniform(0.2, 0.3)))
    # A vertical light gradient, random in strength, like sky over ground; applied per row
    # to the two colours so the full-size arithmetic stays a single select.
    grad = np.linspace(1.0, 1.0 - rng.uniform(0.0, 0.25), h)[:, None]
    main_rows = np.clip((main + jitter) * grad, 0, 255).astype(np.uint8)[:, None, :]
    band_rows = np.clip((band + jitter) * grad, 0, 255).astype(np.uint8)[:, None, :]
    pil = Image.fromarray(np.where(mask[..., None], band_rows, main_rows), "RGB")
    draw = ImageDraw.Draw(pil)
    # Random occluders in random colours: they cover part of the cue, as objects in a scene do.
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.04, 0.16) * w, rng.uniform(0.04, 0.16) * h
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        if rng.uniform() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    # Uniform integer noise (std ≈ 8): as useful as Gaussian here and several times faster.
    arr = np.asarray(pil, dtype=np.int16) + rng.integers(-14, 15, size=(h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _rng(seed: int, split: str, index: int, image: int) -> np.random.Generator:
    # One stream per image: the files do not depend on how many others are generated.
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_IDS[split], index, image]))


def generate(
    root: str | Path,
    per_class_train: int,
    per_class_val: int,
    seed: int,
    image_size: tuple[int, int] = (384, 576),
) -> Path:
    """Write a synthetic 30-class dataset in the CamSDD layout under `root`; returns root.

    root/training/<n>_<Class_Name>/<n>_<i>.jpg and root/validation/..., plus SYNTHETIC.txt.
    A folder that already holds a synthetic set is replaced; any other non-empty folder is
    refused so that real data is never overwritten.
    """
    root = Path(root)
    if per_class_train < 1 or per_class_val < 1:
        raise ValueError("a synthetic set needs at least one training and one validation image per class")
    h, w = image_size
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise DatasetError(
                f"{root} is not empty and is not a synthetic dataset; give an empty or new folder"
            )
        for split in _SPLIT_IDS:
            shutil.rmtree(root / split, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("training", per_class_train), ("validation", per_class_val)):
        for index, folder in enumerate(CAMSDD_FOLDERS):
            d = root / split / folder
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = render(index, _rng(seed, split, index, i), (h, w))
                img.save(d / f"{index + 1}_{i:05d}.jpg", format="JPEG", quality=JPEG_QUALITY)
    (root / MARKER).write_text(
        "SYNTHETIC DATA — not photographs. Generated by scenebench (common.synthetic) as a\n"
        "stand-in for the Camera Scene Detection dataset (CamSDD): 30 classes, each a colour\n"
        "and band pattern with random occluders and noise. Accuracy on it says nothing about\n"
        "real scenes.\n"
        f"seed={seed} per_class_train={per_class_train} per_class_val={per_class_val} "
        f"image_size={h}x{w}\n"
    )
    return root
