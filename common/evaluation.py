"""Run a .tflite classifier with the LiteRT interpreter over images and score it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from common import stats
from common.metrics import accuracy, confusion_matrix, per_class_accuracy, topk_correct
from common.schemas import Interval, PairedTest, PerImage


class TFLiteClassifier:
    """A LiteRT interpreter fed as an app feeds it, with the output dequantized.

    Callers give float32 RGB pixels in 0..255 at the model's input size. A float model gets
    them as they are. An integer model gets the photo's own bytes, rounded to uint8, as a
    camera app hands them over: the int8 contract is raw pixels (scale 1, zero point 0), and
    a model that wants its input scaled otherwise is refused rather than quietly fed
    rescaled values an app would never send (`raw_pixels=False` quantizes with the model's
    own parameters instead, to look at such a model).
    """

    def __init__(self, model_path: str | Path, num_threads: int = 2, raw_pixels: bool = True):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_size = (int(self.input["shape"][1]), int(self.input["shape"][2]))
        self.raw_pixels = raw_pixels
        dtype = np.dtype(self.input["dtype"])
        if raw_pixels and dtype.kind != "f":
            scale, zp = self.input["quantization"]
            if dtype != np.uint8 or scale != 1.0 or zp != 0:
                raise ValueError(f"{model_path}: the integer input is {dtype.name} with scale {scale:.6g} and zero "
                                 f"point {zp}, not raw pixels (uint8, scale 1, zero point 0); convert the model "
                                 "again with jobs.convert")

    def _quantize(self, image: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self.input["dtype"])
        if dtype.kind == "f":
            return image.astype(dtype)
        scale, zp = self.input["quantization"]
        if self.raw_pixels or not scale:
            return np.clip(np.rint(image), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
        q = np.rint(image / scale + zp)
        return np.clip(q, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)

    def _dequantize(self, out: np.ndarray) -> np.ndarray:
        if np.dtype(self.output["dtype"]).kind == "f":
            return out.astype(np.float32)
        scale, zp = self.output["quantization"]
        return ((out.astype(np.float32) - zp) * scale) if scale else out.astype(np.float32)

    def predict_one(self, image: np.ndarray) -> np.ndarray:
        if tuple(image.shape[:2]) != self.input_size:
            raise ValueError(f"image {image.shape[:2]} does not match the model input {self.input_size}")
        self.interpreter.set_tensor(self.input["index"], self._quantize(image)[None, ...])
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self.output["index"])[0])

    def predict(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        probs, labels = [], []
        for images, y in batches:
            for img in np.asarray(images, dtype=np.float32):
                probs.append(self.predict_one(img))
            labels.append(np.asarray(y))
        return np.stack(probs), np.concatenate(labels).astype(np.int64)


def summarize(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """top-1/top-3 (percent) with their bootstrap intervals, per-image correctness,
    confusion matrix and per-class (count, top-1)."""
    cm = confusion_matrix(labels, probs.argmax(axis=1), num_classes)
    top1, top3 = topk_correct(probs, labels, 1), topk_correct(probs, labels, 3)
    return {
        "count": int(len(labels)),
        "top1": accuracy(probs, labels, 1),
        "top3": accuracy(probs, labels, 3),
        "top1_ci": interval(top1),
        "top3_ci": interval(top3),
        "top1_correct": top1,
        "top3_correct": top3,
        "per_image": PerImage(count=int(len(labels)), top1=stats.pack(top1), top3=stats.pack(top3)),
        "confusion": cm,
        "per_class": per_class_accuracy(cm),
    }


def interval(correct: np.ndarray, digits: int = 4) -> Interval:
    """The seeded bootstrap interval of an accuracy over the images, as stored in eval.json."""
    ci = stats.accuracy_interval(correct)
    return Interval(lo=round(ci.lo, digits), hi=round(ci.hi, digits), level=ci.level)


def paired_test(first: np.ndarray, second: np.ndarray, digits: int = 4) -> PairedTest:
    """First model against second on the same images: difference, paired bootstrap interval, McNemar."""
    a, b = stats.as_correct(first), stats.as_correct(second)
    ci = stats.paired_difference_interval(a, b)
    mc = stats.mcnemar_exact(a, b)
    return PairedTest(diff=round(100.0 * (a.mean() - b.mean()), digits),
                      ci=Interval(lo=round(ci.lo, digits), hi=round(ci.hi, digits), level=ci.level),
                      first_only=mc.first_only, second_only=mc.second_only, p_value=mc.p_value)


def agreement(probs_a: np.ndarray, probs_b: np.ndarray) -> float:
    """Percent of samples whose top-1 class is the same under both models."""
    return float(100.0 * (probs_a.argmax(axis=1) == probs_b.argmax(axis=1)).mean())


__all__ = ["TFLiteClassifier", "summarize", "agreement", "interval", "paired_test", "topk_correct"]
