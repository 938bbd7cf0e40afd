"""How sure an accuracy is: bootstrap intervals over validation images and the exact McNemar test.

With 600 validation images one image is 0.17 points of top-1, and the challenge score
doubles per point, so every accuracy carries an interval and every comparison of two
models on the same images a paired test. Pure functions over per-image correctness
(boolean arrays, one entry per image, in the same image order for paired functions).

The bootstrap resamples images with replacement. For one model the number of correct
images in a resample is Binomial(n, k/n), and for a pair of models the counts of images
only one of them got right are Multinomial(n, (b/n, c/n, rest)): drawing those counts is
the same distribution as resampling the images one by one, at a cost independent of n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
ITERATIONS = 10_000
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval, in percent or percentage points."""

    lo: float
    hi: float
    level: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0

    def excludes_zero(self) -> bool:
        return self.lo > 0.0 or self.hi < 0.0


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two models on the same images.

    first_only: images the first model got right and the second wrong; second_only: the
    reverse. p_value: two-sided exact binomial test of first_only against Binomial(n, 1/2),
    n = first_only + second_only (images both got right or both wrong say nothing about
    which model is better).
    """

    first_only: int
    second_only: int
    p_value: float


def as_correct(values) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"per-image correctness must be one flag per image, got shape {a.shape}")
    if a.dtype != bool:
        if a.size and not np.isin(a, (0, 1)).all():
            raise ValueError("per-image correctness must be booleans or 0/1")
        a = a.astype(bool)
    return a


def _pair(first, second) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_correct(first), as_correct(second)
    if a.shape != b.shape:
        raise ValueError(f"a paired comparison needs the same images: {a.size} against {b.size} results")
    if a.size == 0:
        raise ValueError("a paired comparison of no images is undefined")
    return a, b


def _quantiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)


def accuracy_interval(correct, *, level: float = CONFIDENCE, iterations: int = ITERATIONS,
                      seed: int = SEED) -> Interval:
    """Bootstrap interval of the accuracy (percent) over the images."""
    c = as_correct(correct)
    n = int(c.size)
    if n == 0:
        raise ValueError("the accuracy of no images is undefined")
    rng = np.random.default_rng(seed)
    k = rng.binomial(n, float(c.mean()), size=iterations)
    lo, hi = _quantiles(100.0 * k / n, level)
    return Interval(lo=lo, hi=hi, level=level)


def paired_difference_interval(first, second, *, level: float = CONFIDENCE, iterations: int = ITERATIONS,
                               seed: int = SEED) -> Interval:
    """Paired bootstrap interval of accuracy(first) - accuracy(second), in points, on the same images."""
    a, b = _pair(first, second)
    n = int(a.size)
    p = np.array([(a & ~b).sum(), (~a & b).sum(), 0], dtype=float) / n
    p[2] = max(0.0, 1.0 - p[0] - p[1])
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, p, size=iterations)
    lo, hi = _quantiles(100.0 * (draws[:, 0] - draws[:, 1]) / n, level)
    return Interval(lo=lo, hi=hi, level=level)


def unpaired_difference_interval(first_correct: int, first_count: int, second_correct: int, second_count: int,
                                 *, level: float = CONFIDENCE, iterations: int = ITERATIONS,
                                 seed: int = SEED) -> Interval:
    """Bootstrap interval of accuracy(first) - accuracy(second), in points, on different images.

    For when the two were measured on different images (the dataset changed) or per-image
    results are not available: each side is resampled on its own, so the interval is wider.
    """
    for k, n in ((first_correct, first_count), (second_correct, second_count)):
        if n <= 0 or not 0 <= k <= n:
            raise ValueError(f"{k} correct out of {n} images is not a count of correct images")
    rng = np.random.default_rng(seed)
    a = rng.binomial(first_count, first_correct / first_count, size=iterations) / first_count
    b = rng.binomial(second_count, second_correct / second_count, size=iterations) / second_count
    lo, hi = _quantiles(100.0 * (a - b), level)
    return Interval(lo=lo, hi=hi, level=level)


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair coin flips (the sign test)."""
    if n == 0:
        return 1.0
    tail = min(k, n - k)
    # Integer arithmetic: exact for any n, and Python divides big integers correctly rounded.
    p = 2 * sum(math.comb(n, i) for i in range(tail + 1)) / (2 ** n)
    return min(1.0, p)


def mcnemar_exact(first, second) -> McNemar:
    """Exact McNemar test on per-image correctness of two models on the same images."""
    a, b = _pair(first, second)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return McNemar(first_only=only_a, second_only=only_b, p_value=binomial_two_sided_p(only_a, only_a + only_b))


# ------------------------------------------------------------------ compact storage
def pack(correct) -> str:
    """Per-image correctness as hex text, 8 images a byte (600 images: 150 characters)."""
    return np.packbits(as_correct(correct)).tobytes().hex()


def unpack(text: str, count: int) -> np.ndarray:
    """The inverse of `pack`, for `count` images."""
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError(f"per-image correctness is not hex text: {exc}") from None
    if len(raw) != (count + 7) // 8:
        raise ValueError(f"per-image correctness holds {len(raw) * 8} bits, expected {count} images")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=count).astype(bool)


def plus_minus(value: float | None, interval, digits: int = 1) -> str:
    """'92.5 ±1.1': the value and half the width of its interval (anything with lo and hi;
    a bootstrap interval may be asymmetric, so the stored lo..hi stays the exact one)."""
    if value is None:
        return "\u2013"
    if interval is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} \u00b1{(interval.hi - interval.lo) / 2.0:.{digits}f}"
