"""The runner's repeatability on the host backend: the same job five times, a fresh process each.

One job is `python -m runner try --model M` (the runner's own code: the host backend measures in
a child process of its own), so each repeat starts from nothing: new interpreter, new
allocation, new thread pool. The figure is the coefficient of variation (sample standard
deviation / mean) of the five jobs' mean latencies, for MobileNetV2 float32 and int8 at the
CamSDD input size. The goal is 2 %. Float and int8 jobs alternate so that a change in the
machine's load falls on both. A shared machine may not reach the goal; then the figure says how
noisy it is, beside the load average and the spread within each job.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_CV = 0.02


def _models(work: Path, image_size: tuple[int, int]) -> dict[str, Path]:
    """MobileNetV2 (random weights: latency does not depend on them) as float32 and full-int8 .tflite."""
    import numpy as np

    from common import archs, conversion

    model = archs.build_model("mobilenet_v2", image_size, weights="none")
    sm = conversion.export_saved_model(model, work / "sm")
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, size=(8, *image_size, 3)).astype("float32")
    out = {}
    for fmt in ("float32", "int8"):
        path = work / f"mobilenet_v2_{fmt}.tflite"
        path.write_bytes(conversion.convert(sm, fmt, conversion.representative_from(calib) if fmt == "int8" else None))
        out[fmt] = path
    return out


def _job(model: Path, num_runs: int, warmup_runs: int, num_threads: int) -> dict:
    """One `python -m runner try` on the host backend; its result document."""
    env = {**os.environ, "SCENEBENCH_LOG_FORMAT": "json", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "runner", "try", "--backend", "host", "--model", str(model),
                           "--num-runs", str(num_runs), "--warmup-runs", str(warmup_runs),
                           "--num-threads", str(num_threads)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"runner try failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def bench_repeatability(out: Path, image_size: tuple[int, int] = (384, 576), repeats: int = 5, num_runs: int = 50,
                        warmup_runs: int = 5, num_threads: int = 2) -> dict:
    work = Path(tempfile.mkdtemp(prefix="scenebench-bench-rep-"))
    models = _models(work, image_size)
    jobs: dict[str, list[dict]] = {fmt: [] for fmt in models}
    load_before = os.getloadavg()
    for _ in range(repeats):
        for fmt, path in models.items():  # interleaved
            r = _job(path, num_runs, warmup_runs, num_threads)
            t = r["timings_ms"]
            samples = r["samples_ms"]
            jobs[fmt].append({"mean_ms": t["mean"], "p50_ms": t["p50"], "std_ms": t["std"], "min_ms": t["min"],
                              "within_job_cv": statistics.pstdev(samples) / statistics.mean(samples),
                              "count": t["count"], "device": r["device"]["name"]})
            time.sleep(1.0)
    load_after = os.getloadavg()
    per_format = {}
    for fmt, rows in jobs.items():
        means = [j["mean_ms"] for j in rows]
        medians = [j["p50_ms"] for j in rows]
        cv = _cv(means)
        per_format[fmt] = {
            "job_means_ms": [round(m, 4) for m in means],
            "cv_of_means": round(cv, 5),
            "cv_of_medians": round(_cv(medians), 5),
            # The fastest run of each job: what the code gives when the machine leaves it alone.
            "cv_of_minimums": round(_cv([j["min_ms"] for j in rows]), 5),
            "within_job_cv_median": round(statistics.median(j["within_job_cv"] for j in rows), 5),
            "max_over_min_mean": round(max(means) / min(means), 4),
            "meets_goal": cv <= GOAL_CV,
        }
    doc = {
        "what": f"the same host-backend job {repeats} times per model, each `python -m runner try` in a fresh "
                "process (which measures in a child process of its own); CV = sample std / mean of the jobs' "
                "mean latencies",
        "models": f"MobileNetV2 {image_size[0]}x{image_size[1]} float32 and int8 (random weights)",
        "settings": {"num_runs": num_runs, "warmup_runs": warmup_runs, "num_threads": num_threads,
                     "repeats": repeats},
        "device": jobs["float32"][0]["device"],
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_before": [round(x, 2) for x in load_before],
        "load_average_1_5_15_after": [round(x, 2) for x in load_after],
        "goal_cv": GOAL_CV,
        "per_format": per_format,
        "verdict": verdict(per_format, load_before, load_after),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "runner_repeatability.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def verdict(per_format: dict, load_before: tuple, load_after: tuple) -> str:
    """One sentence: goal met, or how noisy the host is."""
    worst = max(per_format.values(), key=lambda f: f["cv_of_means"])
    if all(f["meets_goal"] for f in per_format.values()):
        return f"repeatable: CV of the job means at most {worst['cv_of_means']:.2%} (goal {GOAL_CV:.0%})"
    cores = os.cpu_count() or 1
    return (f"goal missed: this host is too noisy. The job means vary by up to {worst['cv_of_means']:.1%} "
            f"(max/min {worst['max_over_min_mean']:.2f}); the runs within one job vary by "
            f"{worst['within_job_cv_median']:.1%} and the jobs' fastest runs by {worst['cv_of_minimums']:.1%}; "
            f"load average {max(load_before[0], load_after[0]):.1f} on {cores} cores.")


def summary_lines(doc: dict) -> list[str]:
    lines = []
    for fmt, f in doc["per_format"].items():
        lines.append(f"| runner repeatability, host backend, MobileNetV2 {fmt}: CV of {doc['settings']['repeats']} "
                     f"fresh-process job means | {f['cv_of_means']:.2%} (medians {f['cv_of_medians']:.2%}, fastest "
                     f"runs {f['cv_of_minimums']:.2%}; within a job {f['within_job_cv_median']:.1%}) | "
                     f"≤ {doc['goal_cv']:.0%} |")
    lines.append(f"| repeatability verdict | {doc['verdict']} | |")
    return lines
