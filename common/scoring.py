"""The Mobile AI 2021 Camera Scene Detection score."""

from __future__ import annotations

import math

TOP1_TARGET = 96.0
TOP3_TARGET = 99.0


def mai_score(top1: float, top3: float, runtime_s: float, c: float = 1.0) -> float:
    """2^((top1 - 96) + (top3 - 99)) / (c * runtime_s); top-1/top-3 in percent, runtime in seconds.

    Every point of accuracy below the targets halves the score, so a model under 96 %
    top-1 is heavily penalised however fast it runs (as the challenge intended).
    """
    if not (0.0 <= top1 <= 100.0 and 0.0 <= top3 <= 100.0):
        raise ValueError(f"top-1/top-3 are percentages in 0..100, got {top1}, {top3}")
    if top3 < top1:
        raise ValueError(f"top-3 ({top3}) cannot be below top-1 ({top1})")
    if not (runtime_s > 0 and math.isfinite(runtime_s)):
        raise ValueError(f"runtime must be a positive number of seconds, got {runtime_s}")
    if not c > 0:
        raise ValueError(f"C must be positive, got {c}")
    return 2.0 ** ((top1 - TOP1_TARGET) + (top3 - TOP3_TARGET)) / (c * runtime_s)
