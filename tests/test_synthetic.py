"""Tests of the synthetic CamSDD stand-in: layout, names, determinism, learnability."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
from PIL import Image

from common.errors import DatasetError
from common.synthetic import CAMSDD_CLASSES, CAMSDD_FOLDERS, MARKER, generate


def _digests(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_and_names(tmp_path):
    root = generate(tmp_path / "syn", 2, 1, seed=0, image_size=(48, 72))
    assert (root / MARKER).is_file()
    assert "SYNTHETIC" in (root / MARKER).read_text()
    assert len(CAMSDD_CLASSES) == 30
    assert CAMSDD_FOLDERS[0] == "1_Portrait"
    assert CAMSDD_FOLDERS[14] == "15_Sunrise_Sunset"
    assert CAMSDD_FOLDERS[29] == "30_Monitor_Screen"
    for split, n in (("training", 2), ("validation", 1)):
        folders = sorted(p.name for p in (root / split).iterdir())
        assert sorted(CAMSDD_FOLDERS) == folders
        for f in CAMSDD_FOLDERS:
            files = sorted((root / split / f).glob("*.jpg"))
            assert len(files) == n
            with Image.open(files[0]) as im:
                assert im.format == "JPEG" and im.mode == "RGB" and im.size == (72, 48)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = _digests(generate(tmp_path / "a", 2, 1, seed=7, image_size=(48, 72)))
    b = _digests(generate(tmp_path / "b", 2, 1, seed=7, image_size=(48, 72)))
    c = _digests(generate(tmp_path / "c", 2, 1, seed=8, image_size=(48, 72)))
    assert a == b
    images = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != c[k] for k in images)


def test_regenerating_replaces_but_refuses_real_data(tmp_path):
    root = generate(tmp_path / "s", 3, 1, seed=0, image_size=(48, 72))
    generate(root, 1, 1, seed=0, image_size=(48, 72))
    assert len(list((root / "training" / "1_Portrait").glob("*.jpg"))) == 1
    real = tmp_path / "real"
    (real / "cats").mkdir(parents=True)
    (real / "cats" / "a.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a synthetic dataset"):
        generate(real, 1, 1, seed=0)


def test_generation_is_fast(tmp_path):
    t0 = time.perf_counter()
    generate(tmp_path / "s", 20, 1, seed=0, image_size=(64, 96))
    # About 0.5 s on a quiet 2-core machine; the bound only catches an order-of-magnitude slip.
    assert time.perf_counter() - t0 < 10.0


def test_learnable_by_nearest_class_mean(tmp_path):
    """A nearest-class-mean classifier on 4x6 thumbnails must be far above chance (1/30)."""
    root = generate(tmp_path / "s", 12, 6, seed=3, image_size=(64, 96))

    def features(split):
        xs, ys = [], []
        for label, folder in enumerate(CAMSDD_FOLDERS):
            for p in sorted((root / split / folder).glob("*.jpg")):
                with Image.open(p) as im:
                    xs.append(np.asarray(im.resize((6, 4), Image.BILINEAR), np.float32).ravel() / 255)
                ys.append(label)
        return np.stack(xs), np.array(ys)

    xt, yt = features("training")
    xv, yv = features("validation")
    means = np.stack([xt[yt == c].mean(0) for c in range(30)])
    pred = ((xv[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    accuracy = float((pred == yv).mean())
    assert accuracy > 0.6, accuracy
