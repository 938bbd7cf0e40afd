"""Accuracy metrics over predicted class probabilities: top-k, per-class, confusion matrix."""

from __future__ import annotations

import numpy as np


def topk_correct(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean per sample: is the true label among the k highest scores?

    Ties are broken by class index (stable sort) so results are reproducible.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} do not line up")
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (order == labels[:, None]).any(axis=1)


def topk_tie_bounds(probs: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: is the true label among the top k under the least and the most favourable
    order of the classes that tie with it?

    A uint8 softmax has 1/256 resolution, so classes tie; `topk_correct` breaks ties by class
    index, which is a choice, not a measurement. The true label ranks somewhere from
    (classes scoring higher) + 1 to (classes scoring higher) + (classes tied with it) + 1.
    Returns (worst, best); a sample whose decision rests on a tie has worst != best.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} do not line up")
    k = min(k, probs.shape[1])
    true = probs[np.arange(len(labels)), labels][:, None]
    higher = (probs > true).sum(axis=1)
    tied = (probs == true).sum(axis=1) - 1
    return higher + tied < k, higher < k


def accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Top-k accuracy in percent."""
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(100.0 * topk_correct(probs, labels, k).mean())


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> list[tuple[int, float]]:
    """(count, top-1 percent) per class from a confusion matrix; classes with no samples -> (0, nan)."""
    out = []
    for i in range(cm.shape[0]):
        n = int(cm[i].sum())
        out.append((n, float(100.0 * cm[i, i] / n) if n else float("nan")))
    return out
