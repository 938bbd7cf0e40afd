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
