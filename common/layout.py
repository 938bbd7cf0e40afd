"""The artifact tree of DESIGN.md, as key-building functions; nothing else spells paths."""

from __future__ import annotations

import re

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_id(value: str, what: str) -> str:
    if not _SAFE.match(value or ""):
        raise ValueError(
            f"{what} {value!r} is not usable in a path: use letters, digits, '.', '_' or '-' "
            "(start with a letter or digit, at most 128 characters)"
        )
    return value


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:100] or "unknown"


def dataset_prefix(fingerprint: str) -> str:
    return f"datasets/{fingerprint}/"


def dataset_json(fingerprint: str) -> str:
    return f"datasets/{fingerprint}/dataset.json"


def dataset_shard(fingerprint: str, split: str, index: int, total: int) -> str:
    return f"datasets/{fingerprint}/{split}-{index:05d}-of-{total:05d}.tfrecord"


def run_prefix(run_id: str) -> str:
    return f"runs/{run_id}/"


def run_json(run_id: str) -> str:
    return f"runs/{run_id}/run.json"


def train_json(run_id: str, arch: str) -> str:
    return f"runs/{run_id}/{arch}/train.json"


def keras_model(run_id: str, arch: str) -> str:
    return f"runs/{run_id}/{arch}/model/model.keras"


def keras_val_predictions(run_id: str, arch: str) -> str:
    """The Keras model's probabilities on the validation split (the reference for TFLite drops)."""
    return f"runs/{run_id}/{arch}/model/val_predictions.npz"


def qat_float_predictions(run_id: str, arch: str) -> str:
    """int8-qat: the fine-tuned weights' probabilities in float (fake quantization passed through)
    on the validation split, the reference for what the int8 conversion of those weights loses."""
    return f"runs/{run_id}/{arch}/int8-qat/finetuned_float_val_predictions.npz"


def checkpoint_prefix(run_id: str, arch: str) -> str:
    return f"runs/{run_id}/{arch}/checkpoints/"


def checkpoint_model(run_id: str, arch: str) -> str:
    return f"runs/{run_id}/{arch}/checkpoints/last.keras"


def checkpoint_state(run_id: str, arch: str) -> str:
    return f"runs/{run_id}/{arch}/checkpoints/state.json"


def tflite_model(run_id: str, arch: str, fmt: str) -> str:
    return f"runs/{run_id}/{arch}/{fmt}/model.tflite"


def convert_json(run_id: str, arch: str, fmt: str) -> str:
    return f"runs/{run_id}/{arch}/{fmt}/convert.json"


def quant_debug_json(run_id: str, arch: str, fmt: str) -> str:
    return f"runs/{run_id}/{arch}/{fmt}/quant_debug.json"


def eval_json(run_id: str, arch: str, fmt: str) -> str:
    return f"runs/{run_id}/{arch}/{fmt}/eval.json"


def bench_prefix(run_id: str, arch: str, fmt: str) -> str:
    return f"runs/{run_id}/{arch}/{fmt}/bench/"


def bench_json(run_id: str, arch: str, fmt: str, device_id: str, delegate: str) -> str:
    return f"runs/{run_id}/{arch}/{fmt}/bench/{device_id}/{delegate}.json"


def bench_plan_json(run_id: str, arch: str, fmt: str) -> str:
    """What bench-plan asked the runner and planned; beside bench/, not in it (bench/ holds only measurements)."""
    return f"runs/{run_id}/{arch}/{fmt}/bench-plan.json"


def results_json(run_id: str) -> str:
    return f"runs/{run_id}/results.json"


def leaderboard_md(run_id: str) -> str:
    return f"runs/{run_id}/leaderboard.md"


def report_html(run_id: str) -> str:
    return f"runs/{run_id}/report.html"


def pareto_png(run_id: str) -> str:
    return f"runs/{run_id}/pareto.png"


def pipeline_log(run_id: str) -> str:
    """Every event of `jobs.pipeline` runs of this id, as JSON lines (appended on resume)."""
    return f"runs/{run_id}/logs/pipeline.jsonl"


LATEST = "results/latest.json"


def history_json(date: str, run_id: str) -> str:
    return f"results/history/{date}-{run_id}.json"


HISTORY_PREFIX = "results/history/"


# Step results by the cache key of their inputs (common.stepcache): any run with the same key
# finds here which run computed the result, and the sha256 of every file of it.
CACHE_PREFIX = "cache/"


def cache_entry(step: str, key: str) -> str:
    return f"cache/{step}/{check_id(key, 'cache key')}.json"
