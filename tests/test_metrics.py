"""Top-k accuracy, confusion matrix and per-class accuracy."""

import math

import numpy as np
import pytest

from common.metrics import accuracy, confusion_matrix, per_class_accuracy, topk_correct


def test_topk():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    labels = np.array([1, 1, 0, 2])
    assert topk_correct(probs, labels, 1).tolist() == [True, False, False, False]
    assert topk_correct(probs, labels, 2).tolist() == [True, True, False, False]
    assert accuracy(probs, labels, 3) == 100.0
    assert accuracy(probs, labels, 1) == 25.0


def test_ties_break_by_class_index():
    probs = np.array([[0.25, 0.25, 0.25, 0.25]])
    assert topk_correct(probs, np.array([0]), 1).tolist() == [True]
    assert topk_correct(probs, np.array([3]), 3).tolist() == [False]


def test_confusion_and_per_class():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    pc = per_class_accuracy(cm)
    assert pc[0] == (2, 50.0) and pc[1] == (1, 100.0)
    assert pc[2][0] == 3 and pc[2][1] == pytest.approx(66.6667, abs=1e-3)
    assert pc[3][0] == 0 and math.isnan(pc[3][1])


def test_shape_mismatch_and_empty():
    with pytest.raises(ValueError, match="line up"):
        accuracy(np.zeros((3, 4)), np.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        accuracy(np.zeros((0, 4)), np.zeros(0))


def test_tie_bounds_give_the_least_and_most_favourable_order():
    from common.metrics import topk_tie_bounds

    probs = np.array([
        [0.25, 0.25, 0.25, 0.25],   # four-way tie: top-1 rests on it; top-3 too
        [0.50, 0.25, 0.25, 0.00],   # label 1 tied with 2 for second place: top-1 wrong either way
        [0.50, 0.20, 0.20, 0.10],   # label 2 tied for second: inside top-3 whatever the order
        [0.30, 0.30, 0.20, 0.20],   # label 3 tied with 2 for third place: top-3 rests on it
        [0.70, 0.10, 0.10, 0.10],   # no tie for the label's rank
    ])
    labels = np.array([0, 1, 2, 3, 0])
    worst1, best1 = topk_tie_bounds(probs, labels, 1)
    assert worst1.tolist() == [False, False, False, False, True]
    assert best1.tolist() == [True, False, False, False, True]
    worst3, best3 = topk_tie_bounds(probs, labels, 3)
    assert worst3.tolist() == [False, True, True, False, True]
    assert best3.tolist() == [True, True, True, True, True]
    # breaking ties by class index is one of the orders, so it lies between the bounds
    for k, (w, b) in ((1, (worst1, best1)), (3, (worst3, best3))):
        idx = topk_correct(probs, labels, k)
        assert (w <= idx).all() and (idx <= b).all()


def test_tie_ranges_of_a_uint8_softmax():
    from common.evaluation import tie_ranges

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (200, 30))
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs = np.round(soft * 256) / 256  # what a uint8 output with scale 1/256 can say
    labels = rng.integers(0, 30, 200)
    t = tie_ranges(probs, labels)
    assert t.images > 0 and t.images <= t.top1_images + t.top3_images
    eps = 1e-9  # the stored ranges are rounded to 4 decimals
    assert t.top1_min - eps <= accuracy(probs, labels, 1) <= t.top1_max + eps
    assert t.top3_min - eps <= accuracy(probs, labels, 3) <= t.top3_max + eps
    assert t.top3_max - t.top3_min == pytest.approx(100 * t.top3_images / 200)
    assert tie_ranges(soft, labels).images == 0  # float scores do not tie
