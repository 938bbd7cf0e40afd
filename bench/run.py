"""`make bench`: pipeline throughput, measurement overhead, runner repeatability, int8 drop, `make run` time, reuse.

Each figure goes to bench/results/<name>.json and a short table to bench/results/summary.md.
Timings on a shared machine are noisy, so every comparison interleaves its two sides and
reports the median of repeated trials with the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What `make run` runs (keep in step with the Makefile's defaults).
MAKE_RUN_ARGS = ["--data", "synthetic", "--archs", "all",
                 "--formats", "float32,int8", "--image-size", "64x96", "--epochs", "3", "--weights", "none"]


def _write(out: Path, name: str, doc: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "trials": values}


# ---------------------------------------------------------------- make run wall time + int8 drop + reuse
def _run_pipeline(work: Path, env: dict, run_id: str) -> tuple[float, list[dict]]:
    """One `make run` (the pipeline with its defaults) into work/store; (wall seconds, JSON log events)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "jobs.pipeline", "--store", str(work / "store"),
                           "--run-id", run_id, *MAKE_RUN_ARGS], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"pipeline {run_id} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    events = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return wall, events


def _seconds_by_step_kind(events: list[dict]) -> dict[str, float]:
    steps: dict[str, float] = {}
    last = None
    for ev in events:
        if ev.get("event") == "step_start" and ev.get("step") == "pipeline":
            now = ev.get("elapsed_s", 0.0)
            if last:
                steps[last[0]] = steps.get(last[0], 0.0) + now - last[1]
            last = (ev["job"], now)
    return {k: round(v, 1) for k, v in steps.items()}


def bench_make_run(out: Path) -> dict:
    """`make run` twice into one store and working cache, each with a new run id, as a second
    `make run` or tomorrow's nightly with nothing changed: the second reuses the first's results."""
    work = Path(tempfile.mkdtemp(prefix="scenebench-bench-"))
    env = {**os.environ, "SCENEBENCH_CACHE_DIR": str(work / "cache"), "SCENEBENCH_LOG_FORMAT": "json"}
    wall, events = _run_pipeline(work, env, "bench-1")
    wall2, events2 = _run_pipeline(work, env, "bench-2")
    results = json.loads((work / "store" / "runs" / "bench-1" / "results.json").read_text())
    drops = {}
    by = {(m["arch"], m["format"]): m for m in results["models"]}
    for arch in {a for a, _ in by}:
        f, q = by.get((arch, "float32")), by.get((arch, "int8"))
        if f and q and f["top1"] is not None and q["top1"] is not None:
            drops[arch] = {"float32_top1": f["top1"], "int8_top1": q["top1"],
                           "int8_drop_pts": round(f["top1"] - q["top1"], 2),
                           "keras_top1": f["keras_top1"], "float32_size_mb": f["size_mb"], "int8_size_mb": q["size_mb"]}
    second = json.loads((work / "store" / "runs" / "bench-2" / "results.json").read_text())
    reused = {}
    for r in second.get("reused", []):
        reused[r["step"]] = reused.get(r["step"], 0) + 1
    doc = {"what": "make run defaults, fresh store and cache (install excluded)", "args": MAKE_RUN_ARGS,
           "wall_time_s": round(wall, 1), "seconds_by_step_kind": _seconds_by_step_kind(events),
           "int8_vs_float": drops, "dataset": "synthetic (labelled as such in every output)",
           "second_run": {
               "what": "the same make run again with a new run id, same store and working cache",
               "wall_time_s": round(wall2, 1), "seconds_by_step_kind": _seconds_by_step_kind(events2),
               "ratio_to_first": round(wall2 / wall, 4), "goal": "<= 0.10",
               "reused": reused,
               "epochs_trained": sum(e.get("event") == "epoch_done" for e in events2),
               "models_converted": sum(e.get("event") == "convert_summary" and "reused_from" not in e
                                       for e in events2),
               "latency_measured": sum(e.get("event") == "benchmark_summary" for e in events2)}}
    _write(out, "make_run", doc)
    return doc


# ---------------------------------------------------------------- input pipeline vs training step
def bench_input_pipeline(out: Path, image_size=(128, 192), batch=16, steps=12, trials=3) -> dict:
    import tensorflow as tf

    from common import archs
    from common import dataset as data
    from common.dataset import build, scan
    from common.synthetic import generate

    work = Path(tempfile.mkdtemp(prefix="scenebench-bench-pipe-"))
    src = generate(work / "src", 16, 2, seed=0, image_size=(384, 576))  # full-size JPEGs, as CamSDD
    prepared = build(scan(src), work / "prep", source=str(src), synthetic=True, code_version="bench")
    shards = [str(p) for k, p in prepared.shard_files if "/train-" in k]
    n = prepared.manifest.splits["train"].count

    def real_ds():
        return data.load_split(shards, image_size, batch, training=True, seed=0).repeat()

    # Pipeline alone: decode + resize + augment, images per second.
    it = iter(real_ds())
    next(it)
    t0 = time.monotonic()
    for _ in range(steps * 2):
        next(it)
    pipe_ips = steps * 2 * batch / (time.monotonic() - t0)

    # The same batches, decoded once and held in memory: training with no input cost at all.
    cached = list(data.load_split(shards, image_size, batch, training=True, seed=0).take(max(1, n // batch)))
    cached_ds = tf.data.Dataset.from_tensor_slices((
        tf.concat([x for x, _ in cached], 0), tf.concat([y for _, y in cached], 0))).batch(batch).cache().repeat()

    model = archs.build_model("mobilenet_v2", image_size)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    real_it, cached_it = iter(real_ds().prefetch(2)), iter(cached_ds.prefetch(2))

    def step_time(iterator):
        model.train_on_batch(*next(iterator))  # warm
        t = time.monotonic()
        for _ in range(steps):
            model.train_on_batch(*next(iterator))
        return (time.monotonic() - t) / steps

    step_time(cached_it)  # compile
    real, mem = [], []
    for _ in range(trials):  # interleaved, so load changes hit both sides
        real.append(step_time(real_it))
        mem.append(step_time(cached_it))
    ratios = [r / m for r, m in zip(real, mem)]
    doc = {"model": "mobilenet_v2", "image_size": list(image_size), "batch": batch,
           "source_photos": "384x576 JPEG (synthetic)", "pipeline_images_per_s": round(pipe_ips, 1),
           "train_images_per_s_real_pipeline": round(batch / statistics.median(real), 1),
           "step_s_real_pipeline": _spread([round(x, 4) for x in real]),
           "step_s_cached_tensors": _spread([round(x, 4) for x in mem]),
           "real_over_cached": _spread([round(x, 4) for x in ratios]),
           "target": "real pipeline step within 5 % of cached-tensor step"}
    _write(out, "input_pipeline", doc)
    return doc


# ---------------------------------------------------------------- measurement overhead
def bench_overhead(out: Path, image_size=(384, 576), runs=60, trials=7) -> dict:
    from common import archs, conversion
    from common.hostbench import bare_invoke_loop, timed_loop_seconds

    work = Path(tempfile.mkdtemp(prefix="scenebench-bench-ovh-"))
    model = archs.build_model("mobilenet_v2", image_size)
    sm = conversion.export_saved_model(model, work / "sm")
    path = work / "mobilenet_v2_float32.tflite"
    path.write_bytes(conversion.convert(sm, "float32"))
    bare, ours = [], []
    bare_invoke_loop(path, 5)
    for _ in range(trials):
        bare.append(bare_invoke_loop(path, runs))
        ours.append(timed_loop_seconds(path, runs))
    ratios = [o / b for o, b in zip(ours, bare)]
    doc = {"model": f"mobilenet_v2 float32 {image_size[0]}x{image_size[1]}", "runs_per_trial": runs,
           "bare_invoke_s": _spread([round(x, 4) for x in bare]), "measured_loop_s": _spread([round(x, 4) for x in ours]),
           "overhead_ratio": _spread([round(x, 4) for x in ratios]),
           "target": "our timed loop within 2 % of a bare invoke() loop"}
    _write(out, "measurement_overhead", doc)
    return doc


def summary(results: dict) -> str:
    lines = [f"machine: {os.cpu_count()} cores; measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| figure | value | target |", "|---|---|---|"]
    if "input_pipeline" in results:
        p = results["input_pipeline"]
        lines.append(f"| input pipeline alone (384x576 JPEG → {p['image_size'][0]}x{p['image_size'][1]}, augment) | "
                     f"{p['pipeline_images_per_s']} img/s | faster than training |")
        lines.append(f"| training step, real pipeline / cached tensors (MobileNetV2, batch {p['batch']}) | "
                     f"{p['real_over_cached']['median']:.3f} (min {p['real_over_cached']['min']:.3f}, max {p['real_over_cached']['max']:.3f}) | ≤ 1.05 |")
    if "measurement_overhead" in results:
        o = results["measurement_overhead"]
        lines.append(f"| our latency loop / bare invoke() loop ({o['model']}) | {o['overhead_ratio']['median']:.4f} "
                     f"(min {o['overhead_ratio']['min']:.4f}, max {o['overhead_ratio']['max']:.4f}) | ≤ 1.02 |")
    if "runner_repeatability" in results:
        from bench.repeatability import summary_lines

        lines += summary_lines(results["runner_repeatability"])
    if "make_run" in results:
        m = results["make_run"]
        lines.append(f"| `make run` wall time (after install) | {m['wall_time_s']} s | < 600 s |")
        if "second_run" in m:
            r = m["second_run"]
            lines.append(f"| second `make run`, new run id / first (reuses train, convert, evaluate; "
                         f"{r['epochs_trained']} epochs trained, {r['models_converted']} models converted) | "
                         f"{r['ratio_to_first']:.3f} ({r['wall_time_s']} s / {m['wall_time_s']} s) | ≤ 0.10 |")
        for arch, d in sorted(m["int8_vs_float"].items()):
            lines.append(f"| {arch} top-1 float32 → int8 (synthetic) | {d['float32_top1']:.1f} → {d['int8_top1']:.1f} % "
                         f"(drop {d['int8_drop_pts']:+.1f} pts) | small |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from bench.summary import write_section

    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--out", default="bench/results", help="Folder for the JSON figures and summary.md.")
    parser.add_argument("--only", default="overhead,input_pipeline,repeatability,make_run",
                        help="Comma-separated subset of: overhead, input_pipeline, repeatability, make_run.")
    args = parser.parse_args(argv)
    out = Path(args.out)
    wanted = args.only.split(",")
    results = {}
    if "overhead" in wanted:
        results["measurement_overhead"] = bench_overhead(out)
    if "input_pipeline" in wanted:
        results["input_pipeline"] = bench_input_pipeline(out)
    if "repeatability" in wanted:
        from bench.repeatability import bench_repeatability

        results["runner_repeatability"] = bench_repeatability(out)
    if "make_run" in wanted:
        results["make_run"] = bench_make_run(out)
    # Figures measured earlier (another --only) stay in the table, from their JSON files.
    for name in ("measurement_overhead", "input_pipeline", "runner_repeatability", "make_run"):
        if name not in results and (out / f"{name}.json").is_file():
            results[name] = json.loads((out / f"{name}.json").read_text())
    text = summary(results)
    # bench.quant's section of summary.md is kept
    write_section(out, "main", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
