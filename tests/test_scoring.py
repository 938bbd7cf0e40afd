"""The challenge score formula, checked against the paper's own Table 2 where it is consistent."""

import math

import pytest

from common.scoring import mai_score


def test_on_target_accuracy_is_one_over_runtime():
    # EfficientNet-B2 float in the paper: top-1 96.0, (top-3 99.0), 0.27 s -> 3.7037
    assert mai_score(96.0, 99.0, 0.27) == pytest.approx(3.7037, abs=1e-4)


def test_each_point_below_target_halves_the_score():
    base = mai_score(96.0, 99.0, 0.1)
    assert mai_score(95.0, 99.0, 0.1) == pytest.approx(base / 2)
    assert mai_score(96.0, 98.0, 0.1) == pytest.approx(base / 2)
    assert mai_score(94.0, 97.0, 0.1) == pytest.approx(base / 16)


def test_c_and_runtime_scale_inversely():
    assert mai_score(90, 95, 0.2, c=2.0) == pytest.approx(mai_score(90, 95, 0.4, c=1.0))


@pytest.mark.parametrize("args", [(101, 101, 1), (-1, 50, 1), (50, 40, 1), (90, 95, 0), (90, 95, -1),
                                  (90, 95, math.inf), (90, 95, math.nan)])
def test_rejects_impossible_inputs(args):
    with pytest.raises(ValueError):
        mai_score(*args)


def test_rejects_non_positive_c():
    with pytest.raises(ValueError, match="C must be positive"):
        mai_score(90, 95, 0.1, c=0)
