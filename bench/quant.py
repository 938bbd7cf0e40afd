"""`make bench-quant`: how much top-1 each integer format loses on models trained to a useful accuracy.

Trains every architecture on a synthetic set (seeded) until float top-1 is at least 80 %,
converts it to every format through the convert job (so convert.json and quant_debug.json are
the real artifacts), evaluates every model over the whole validation split with LiteRT, and
writes BENCH_OUT/quant.json (one row per architecture x format) and a section of summary.md.
The int8 calibration sample count is swept (50 / 200 / 1000) on the side.

Trained models are reused through the train step's cache (its key: dataset fingerprint,
parameters, the sources of common/ and jobs/, library versions), so a second run with the
same code trains nothing. The store lives under the cache folder, not under BENCH_OUT: where
the figures are written does not decide what is reused. Timings come from a shared 2-core
machine; wall time is recorded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent

# Why this is enough (README "Integer formats"): every class has a colour and band-pattern cue
# that survives 32x48; 60 training images per class and the epochs below take every
# architecture past 80 % top-1 from random weights, and 20 validation images per class give 600
# images, so one flipped image moves top-1 by 0.17 points and a half-point drop is 3 images.
CONFIG = {"data": "synthetic", "synthetic_per_class": 60, "image_size": "32x48", "weights": "none", "seed": 0}
# Epochs per architecture: what each needs to pass 80 % within the 30-minute budget
# (ResNet50's training step costs several times MobileNetV2's at this size).
EPOCHS = {"mobilenet_v2": 6, "efficientnet_b2": 6, "resnet50": 3}
# XLA-compiled training and QAT fine-tuning (jobs.train/convert --jit-compile) where it pays on a
# CPU: ResNet50 at 32x48 trains at 18.6 images/s with it, 9.3 without; EfficientNet-B2 is slower.
JIT = {"resnet50": "on"}
# The float reference and the integer formats. float16 and dynamic-range (float activations)
# can be added with --formats; each conversion job costs about a minute on a shared machine.
FORMATS = ("float32", "int8", "int8-selective", "int16x8", "int8-qat")
# The formats the phones run with integer kernels: the goal is a drop <= GOAL_PTS in one of them.
PHONE_INTEGER = ("int8", "int8-selective", "int8-qat")
GOAL_PTS = 0.5
SWEEP = (50, 200, 1000)
DEFAULT_CALIBRATION = 200
# int8 again with activation ranges at these percentiles of the per-image extremes
# (jobs.convert --calibration-percentile), each in a run of its own that reuses the trained
# models through the step cache. (int8-selective takes the option too; left out for time.)
PERCENTILES = (99.0,)
RANGED = ("int8",)


def prepare_args() -> list[str]:
    from common.archs import ARCH_NAMES

    # The run's parameters stay the same whatever subset one invocation measures, so that the
    # run (and its trained models) is found again rather than refused as different.
    return ["--data", CONFIG["data"], "--archs", ",".join(ARCH_NAMES), "--formats", ",".join(FORMATS),
            "--image-size", CONFIG["image_size"], "--epochs", str(max(EPOCHS.values())),
            "--weights", CONFIG["weights"], "--seed", str(CONFIG["seed"]),
            "--synthetic-per-class", str(CONFIG["synthetic_per_class"])]


def run_id() -> str:
    """One run per configuration: a changed configuration starts a new run (prepare refuses to
    change an existing one), and the train cache still finds the models it did not change."""
    from common.hashing import stable_hash

    return "quant-" + stable_hash({"prepare": prepare_args(), "epochs": EPOCHS, "jit": JIT}, 10)


def _jit(arch: str) -> list[str]:
    return ["--jit-compile", JIT[arch]] if arch in JIT else []


def _job(module: str, args: list[str], env: dict, log, package: str = "jobs") -> list[dict]:
    """Run one job (a process of its own); returns its JSON log events."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", f"{package}.{module}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    log.write_job(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{package}.{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"  {package}.{module} {' '.join(a for a in args if not a.startswith('/'))}: {time.monotonic() - t0:.0f} s",
          flush=True)
    events = []
    for line in proc.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _reuse_of(events: list[dict]) -> str:
    """'computed', 'cached' (this run's own earlier result) or 'reused from <run>' (the step cache)."""
    for e in events:
        if e.get("event") == "step_cached":
            return "cached"
        if e.get("event") == "step_reused":
            return f"reused from {e.get('from_run')}"
    return "computed"


# ---------------------------------------------------------------- evaluation
def validation_set(store, manifest, image_size):
    from common import dataset as data
    from jobs._io import shard_paths

    ds = data.load_split(shard_paths(store, manifest, "validation"), image_size, 64, training=False)
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def predict(path: Path, images: np.ndarray, num_threads: int = 2) -> np.ndarray:
    from common.evaluation import TFLiteClassifier

    clf = TFLiteClassifier(path, num_threads=num_threads)
    return np.stack([clf.predict_one(x) for x in images]).argmax(axis=1)


def host_ms(path: Path, runs: int = 20, trials: int = 5) -> float:
    """Median over trials of the mean invoke time: the host is shared, and one trial can be
    several times slower than the next."""
    import statistics

    from common.hostbench import timed_loop_seconds

    timed_loop_seconds(path, 3)
    return round(statistics.median(timed_loop_seconds(path, runs) * 1000.0 / runs for _ in range(trials)), 3)


def row(arch: str, fmt: str, n_cal: int, labels, float_pred, pred, keras_pred, size_bytes: int, ms: float,
        extra: dict | None = None) -> dict:
    from common.evaluation import paired_test

    ok_f, ok_q = float_pred == labels, pred == labels
    drop = paired_test(ok_f, ok_q, digits=3)
    return {"arch": arch, "format": fmt, "calibration_samples": n_cal,
            "float_top1": round(float(100.0 * ok_f.mean()), 3), "top1": round(float(100.0 * ok_q.mean()), 3),
            "drop_pts": drop.diff, "drop_ci95": [drop.ci.lo, drop.ci.hi], "mcnemar_p": round(drop.p_value, 6),
            "agreement": round(float(100.0 * (pred == keras_pred).mean()), 3),
            "size_mb": round(size_bytes / 1e6, 3), "host_ms": ms, "images": int(len(labels)), **(extra or {})}


# ---------------------------------------------------------------- jobs side by side
# A training step keeps about 1.1 of the 2 cores busy at 32x48 (measured: 109 s of CPU in 101 s of
# wall time), a conversion one: one job at a time leaves half of the machine idle. Two training
# jobs side by side still left a sixth of it idle (EfficientNet-B2 and ResNet50 together: 822 s,
# against 653 + 596 s one after the other), so the default is one job more than the cores.
# Seconds each job took when run alone here: only the order comes from them (longest path first).
TRAIN_SECONDS = {"mobilenet_v2": 200, "efficientnet_b2": 500, "resnet50": 600}
QAT_SECONDS = {"mobilenet_v2": 130, "efficientnet_b2": 285, "resnet50": 285}
CONVERT_SECONDS = 60


@dataclass
class Task:
    name: str
    fn: Callable[[], object]
    deps: tuple[str, ...] = ()
    seconds: float = 1.0  # expected, for the order only


def run_tasks(tasks: list[Task], workers: int) -> dict[str, object]:
    """Run `tasks` on `workers` threads, each as soon as its dependencies are done, the one with the
    longest expected path to the end first. A failure starts nothing new; what runs finishes
    (its artifacts stay for the re-run, which the step caches resume) and the first error is raised."""
    from collections import defaultdict
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
    from functools import cache

    by_name = {t.name: t for t in tasks}
    if len(by_name) != len(tasks):
        raise ValueError("two tasks share a name")
    after: dict[str, list[str]] = defaultdict(list)
    for t in tasks:
        for d in t.deps:
            if d not in by_name:
                raise ValueError(f"task {t.name} waits on {d}, which is not a task")
            after[d].append(t.name)

    @cache
    def rank(name: str) -> float:
        return by_name[name].seconds + max((rank(n) for n in after[name]), default=0.0)

    pending, done, running = set(by_name), {}, {}
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while (pending and error is None) or running:
            if error is None:
                ready = sorted((n for n in pending if all(d in done for d in by_name[n].deps)),
                               key=lambda n: (-rank(n), n))
                for n in ready[:workers - len(running)]:
                    pending.discard(n)
                    running[pool.submit(by_name[n].fn)] = n
            if not running:
                raise RuntimeError(f"tasks wait on each other: {sorted(pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                name = running.pop(f)
                try:
                    done[name] = f.result()
                except BaseException as e:  # noqa: BLE001 (SystemExit from a failed job included)
                    error = error or e
    if error is not None:
        raise error
    return done


# ---------------------------------------------------------------- the bench
def run(out: Path, work: Path, archs: list[str], formats: list[str], sweep: list[int],
        percentiles: tuple[float, ...] | list[float] = PERCENTILES, workers: int = 2) -> dict:
    from common import layout
    from common.schemas import ConvertReport, QuantDebugReport, TrainReport
    from common.store import open_store
    from jobs._io import load_run

    started = time.monotonic()
    rid = run_id()
    work.mkdir(parents=True, exist_ok=True)
    store_uri = str(work / "store")
    env = {**os.environ, "SCENEBENCH_CACHE_DIR": str(work / "cache"), "SCENEBENCH_LOG_FORMAT": "json",
           "PYTHONPATH": str(REPO)}
    log = _Log(work / "jobs.log")
    timings: dict[str, float] = {}
    state = {"rows": [], "debug": {}, "train": {}, "timings": timings, "started": started, "run_id": rid,
             "load_at_start": [round(x, 2) for x in os.getloadavg()], "workers": workers}
    size = tuple(int(v) for v in CONFIG["image_size"].split("x"))
    runs = {100.0: rid, **{pct: f"{rid}-p{pct:g}" for pct in percentiles}}
    ranged = [f for f in RANGED if f in formats]
    val: dict[str, np.ndarray] = {}

    def job(name: str, module: str, run: str, args: list[str]) -> Callable[[], list[dict]]:
        def go():
            t = time.monotonic()
            events = _job(module, ["--store", store_uri, "--run-id", run, *args], env, log)
            timings[f"{name}_s"] = round(time.monotonic() - t, 1)
            return events
        return go

    def validation():
        store = open_store(store_uri)
        _, manifest = load_run(store, rid)
        val["images"], val["labels"] = validation_set(store, manifest, size)

    def predicted(key_of_model: Callable[[], Path], name: str) -> Callable[[], np.ndarray]:
        def go():  # one thread per model: two jobs may be running beside it
            t = time.monotonic()
            out = predict(key_of_model(), val["images"], num_threads=1)
            timings[f"predict_{name}_s"] = round(time.monotonic() - t, 1)
            return out
        return go

    def sweep_models(arch: str) -> dict[int, Path]:
        """The sweep's int8 models by calibration count (the default count is the convert job's own int8)."""
        counts = [n for n in sweep if n != DEFAULT_CALIBRATION] if "int8" in formats else []
        return {n: work / "sweep" / rid / arch / f"int8-cal{n}.tflite" for n in counts}

    def tflite(run: str, arch: str, fmt: str) -> Callable[[], Path]:
        def path():
            store = open_store(store_uri)
            return store.root / store.get_model(layout.convert_json(run, arch, fmt), ConvertReport).model.key
        return path

    tasks = [Task("prepare", job("prepare", "prepare", rid, prepare_args()), seconds=15),
             Task("validation", validation, ("prepare",), seconds=5)]
    for pct, prid in runs.items():
        if prid != rid:
            tasks.append(Task(f"prepare/{prid}", job(f"prepare_p{pct:g}", "prepare", prid, prepare_args()),
                              seconds=10))
    for arch in archs:
        epochs = ["--epochs", str(EPOCHS[arch]), *_jit(arch)]
        tasks.append(Task(f"train/{arch}", job(f"train_{arch}", "train", rid, ["--arch", arch, *epochs]),
                          ("prepare",), TRAIN_SECONDS.get(arch, 600)))
        for fmt in formats:
            name = f"convert/{rid}/{arch}/{fmt}"
            # every format after float32, whose job exports the SavedModel they all convert from
            deps = (f"train/{arch}",) if fmt == "float32" else (f"convert/{rid}/{arch}/float32",)
            args = ["--arch", arch, "--format", fmt, "--calibration-samples", str(DEFAULT_CALIBRATION),
                    *(_jit(arch) if fmt == "int8-qat" else [])]
            tasks += [Task(name, job(f"convert_{arch}_{fmt}", "convert", rid, args), deps,
                           QAT_SECONDS.get(arch, 300) if fmt == "int8-qat" else CONVERT_SECONDS),
                      Task(f"predict/{rid}/{arch}/{fmt}", predicted(tflite(rid, arch, fmt), f"{arch}_{fmt}"),
                           (name, "validation"), seconds=5)]
        for pct, prid in runs.items():
            if prid == rid:
                continue
            # the trained model, from the step cache
            tasks.append(Task(f"train/{prid}/{arch}",
                              job(f"train_{arch}_p{pct:g}", "train", prid, ["--arch", arch, *epochs]),
                              (f"train/{arch}", f"prepare/{prid}"), seconds=15))
            for fmt in ranged:
                name = f"convert/{prid}/{arch}/{fmt}"
                args = ["--arch", arch, "--format", fmt, "--calibration-samples", str(DEFAULT_CALIBRATION),
                        "--calibration-percentile", f"{pct:g}"]
                tasks += [Task(name, job(f"convert_{arch}_{fmt}_p{pct:g}", "convert", prid, args),
                               (f"train/{prid}/{arch}", f"convert/{rid}/{arch}/float32"), CONVERT_SECONDS),
                          Task(f"predict/{prid}/{arch}/{fmt}",
                               predicted(tflite(prid, arch, fmt), f"{arch}_{fmt}_p{pct:g}"), (name, "validation"),
                               seconds=5)]
        for n, path in sweep_models(arch).items():
            tasks += [Task(f"sweep/{arch}/{n}", _sweep_job(store_uri, rid, arch, n, path, env, log, timings),
                           (f"convert/{rid}/{arch}/float32",), CONVERT_SECONDS * max(1.0, n / 500)),
                      Task(f"predict/sweep/{arch}/{n}", predicted(lambda p=path: p, f"{arch}_int8_cal{n}"),
                           (f"sweep/{arch}/{n}", "validation"), seconds=5)]
    print(f"bench-quant: {len(tasks)} tasks, {workers} at a time", flush=True)
    done = run_tasks(tasks, workers)
    timings["jobs_wall_s"] = round(time.monotonic() - started, 1)

    # Everything below reads what the jobs wrote; host times are taken now, with nothing beside them.
    t_rows = time.monotonic()
    store = open_store(store_uri)
    labels = val["labels"]
    for arch in archs:
        train = store.get_model(layout.train_json(rid, arch), TrainReport)
        state["train"][arch] = {
            "val_top1": round(train.last_val_top1, 3), "epochs": train.epochs, "batch_size": train.batch_size,
            "this_run": _reuse_of(done[f"train/{arch}"]), "train_wall_time_s": train.wall_time_s,
            "images_per_s": train.images_per_s, "val_top1_by_epoch": [round(h.val_top1, 2) for h in train.history],
            **{f"p{pct:g}_run": _reuse_of(done[f"train/{prid}/{arch}"]) for pct, prid in runs.items() if prid != rid}}
        ref = np.load(io.BytesIO(store.get_bytes(layout.keras_val_predictions(rid, arch))))
        if not (ref["labels"] == labels).all():
            raise SystemExit(f"{arch}: Keras validation predictions are in a different order than the validation set")
        keras_pred = ref["probs"].argmax(axis=1)
        float_pred = done[f"predict/{rid}/{arch}/float32"]
        for pct, prid in runs.items():
            for fmt in (formats if prid == rid else ranged):
                conv = store.get_model(layout.convert_json(prid, arch, fmt), ConvertReport)
                path = store.root / conv.model.key
                tag = f"{arch}/{fmt}" + ("" if prid == rid else f"/p{pct:g}")
                if store.exists(layout.quant_debug_json(prid, arch, fmt)):
                    state["debug"][tag] = _worst5(store.get_model(layout.quant_debug_json(prid, arch, fmt),
                                                                  QuantDebugReport))
                pred = done[f"predict/{prid}/{arch}/{fmt}"]
                extra = {"weights_quantization": conv.weights_quantization, "float_layers": conv.float_layers,
                         "input_dtype": conv.input.dtype, "calibration_percentile": pct,
                         **({} if prid == rid else {"run_id": prid}),
                         **(_finetuned(store, conv, labels, pred) if conv.qat else {})}
                state["rows"].append(row(arch, fmt, conv.calibration_samples, labels, float_pred, pred, keras_pred,
                                         conv.model.size, host_ms(path), extra))
        for n, path in sweep_models(arch).items():
            state["rows"].append(row(arch, "int8", n, labels, float_pred, done[f"predict/sweep/{arch}/{n}"],
                                     keras_pred, path.stat().st_size, host_ms(path),
                                     {"sweep": True, "calibration_percentile": 100.0}))
    timings["rows_and_host_times_s"] = round(time.monotonic() - t_rows, 1)
    return _write(out, state)


def _finetuned(store, conv, labels, pred) -> dict:
    """int8-qat against the fine-tuned weights in float (the convert job's reference): the part of
    the difference that quantization makes, apart from what the extra epochs trained."""
    from common.evaluation import paired_test

    ref = conv.qat.finetuned_float
    if ref is None:
        return {}
    npz = np.load(io.BytesIO(store.get_bytes(ref.key, sha256=ref.sha256)))
    if not (npz["labels"] == labels).all():
        raise SystemExit(f"{conv.arch}: the fine-tuned float predictions are in a different order than the validation set")
    ok_f, ok_q = npz["probs"].argmax(axis=1) == labels, pred == labels
    drop = paired_test(ok_f, ok_q, digits=3)
    return {"finetuned_float_top1": round(float(100.0 * ok_f.mean()), 3), "drop_vs_finetuned_pts": drop.diff,
            "drop_vs_finetuned_ci95": [drop.ci.lo, drop.ci.hi], "mcnemar_p_vs_finetuned": round(drop.p_value, 6)}


def _sweep_job(store_uri: str, rid: str, arch: str, n: int, path: Path, env: dict, log, timings: dict):
    def go():
        t = time.monotonic()
        _job("calsweep", ["--store", store_uri, "--run-id", rid, "--arch", arch, "--samples", str(n),
                          "--seed", str(CONFIG["seed"]), "--out", str(path)], env, log, package="bench")
        timings[f"sweep_{arch}_{n}_s"] = round(time.monotonic() - t, 1)
    return go


class _Log:
    """jobs.log, appended to by jobs that run side by side: each job's output in one piece."""

    def __init__(self, path: Path):
        import threading

        self.path, self.lock = path, threading.Lock()

    def write_job(self, text: str) -> None:
        with self.lock, open(self.path, "a") as f:
            f.write(text)


def _worst5(qd) -> list[dict]:
    return [{"tensor": x.tensor, "op": x.op, "layers": x.layers, "rmse_over_scale": x.rmse_over_scale,
             "mean_error": x.mean_error, "scale": x.scale}
            for x in sorted(qd.layers, key=lambda x: -(x.rmse_over_scale or 0))[:5]]


def goal(rows: list[dict]) -> dict:
    """Per architecture: the phone integer formats (default calibration) whose drop is within GOAL_PTS."""
    out: dict[str, dict] = {}
    for r in rows:
        if r.get("sweep") or r["format"] == "float32":
            continue
        g = out.setdefault(r["arch"], {"goal_pts": GOAL_PTS, "met_by": [], "float_top1": r["float_top1"]})
        # int8-qat trains as well as quantizes: it counts when it loses no more than GOAL_PTS against
        # the float model it replaces and against its own fine-tuned weights in float
        if r["format"] in PHONE_INTEGER and r["drop_pts"] <= GOAL_PTS \
                and r.get("drop_vs_finetuned_pts", -100.0) <= GOAL_PTS:
            pct = r.get("calibration_percentile", 100.0)
            g["met_by"].append(r["format"] + ("" if pct >= 100 else f" (ranges p{pct:g})"))
    for g in out.values():
        g["float_top1_at_least_80"] = g["float_top1"] >= 80.0
        # a drop measured on a model that barely learnt says nothing about quantization
        g["met"] = bool(g["met_by"]) and g["float_top1_at_least_80"]
    return out


def _write(out: Path, state: dict) -> dict:
    doc = {"what": "top-1 lost by each integer format on models trained on the synthetic set (seeded)",
           "config": {**CONFIG, "epochs": EPOCHS, "jit_compile": JIT, "calibration_samples": DEFAULT_CALIBRATION,
                      "calibration_percentiles": [100.0, *PERCENTILES]},
           "run_id": state["run_id"], "dataset": "synthetic (not photographs)",
           "float_reference": "float32 .tflite of the same trained model, same validation images",
           "host": "LiteRT on this machine's CPU, 2 threads (not an iPhone); machine shared, timings inflated",
           "cpus": os.cpu_count(), "workers": state["workers"],
           # 1/5/15-minute load averages: on a shared machine, how much else was running
           "load_average": {"start": state["load_at_start"], "end": [round(x, 2) for x in os.getloadavg()]},
           "goal": goal(state["rows"]), "train": state["train"], "rows": state["rows"],
           "worst_layers": state["debug"], "seconds": state["timings"],
           "wall_time_s": round(time.monotonic() - state["started"], 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "quant.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def table(doc: dict) -> str:
    cfg = doc["config"]
    epochs = ", ".join(f"{a} {n}" for a, n in cfg["epochs"].items())
    trained = ", ".join(f"{a}: {t['this_run']}" for a, t in doc["train"].items())
    lines = [f"## int8 that keeps its accuracy (synthetic set, {cfg['image_size']}, epochs {epochs}; "
             f"wall time {doc['wall_time_s']} s on a shared 2-core machine; training {trained})", "",
             "| arch | format | cal. | ranges | float top-1 | top-1 | drop pts [95 % CI] | McNemar p | agree % | MB | host ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lo, hi = r["drop_ci95"]
        pct = r.get("calibration_percentile", 100.0)
        ranges = "–" if r["format"] == "float32" else "min/max" if pct >= 100 else f"p{pct:g}"
        lines.append(f"| {r['arch']} | {r['format']} | {r['calibration_samples'] or '–'} | {ranges} | "
                     f"{r['float_top1']:.1f} | "
                     f"{r['top1']:.1f} | {r['drop_pts']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {r['mcnemar_p']:.3g} | "
                     f"{r['agreement']:.1f} | {r['size_mb']:.2f} | {r['host_ms']:.2f} |")
    qat = [r for r in doc["rows"] if "finetuned_float_top1" in r]
    if qat:
        lines += ["", "int8-qat fine-tunes before it converts: against its own fine-tuned weights in float "
                      "(fake quantization passed through), what the int8 conversion costs apart from what the "
                      "extra epochs trained:", "",
                  "| arch | float top-1 before | fine-tuned float top-1 | int8-qat top-1 | drop pts [95 % CI] | McNemar p |",
                  "|---|---|---|---|---|---|"]
        for r in qat:
            lo, hi = r["drop_vs_finetuned_ci95"]
            lines.append(f"| {r['arch']} | {r['float_top1']:.1f} | {r['finetuned_float_top1']:.1f} | {r['top1']:.1f} | "
                         f"{r['drop_vs_finetuned_pts']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {r['mcnemar_p_vs_finetuned']:.3g} |")
    lines += ["", f"Drop = float32 .tflite top-1 − this format's, on the same {doc['rows'][0]['images'] if doc['rows'] else 0} "
              "validation images; host ms: LiteRT "
              "on this machine's CPU, not an iPhone, timed after every job had finished. int8-qat's float reference "
              "in the first table is the model before its fine-tuning; it meets the goal only when its drop against "
              "its fine-tuned weights is within it too. Goal: a drop ≤ 0.5 pts in int8, int8-selective or int8-qat: "
              + "; ".join(f"{a} {'met by ' + ', '.join(g['met_by']) if g['met'] else 'missed'}"
                          + ("" if g["float_top1_at_least_80"] else " (float top-1 below 80 %)")
                          for a, g in doc["goal"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from bench.summary import write_section
    from common.archs import ARCH_NAMES

    parser = argparse.ArgumentParser(prog="python -m bench.quant", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("BENCH_OUT", "bench/results"),
                        help="Folder for quant.json and summary.md (default: $BENCH_OUT or bench/results).")
    parser.add_argument("--work", default=None,
                        help="Store, caches and trained models kept between runs (default: $SCENEBENCH_CACHE_DIR/bench-quant).")
    parser.add_argument("--archs", default=",".join(ARCH_NAMES))
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--sweep", default=",".join(str(n) for n in SWEEP), help="int8 calibration sample counts.")
    parser.add_argument("--percentiles", default=",".join(f"{p:g}" for p in PERCENTILES),
                        help="Activation-range percentiles for int8 and int8-selective besides min/max (empty: none).")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 2) + 1,
                        help="Jobs run side by side (default: the machine's cores plus one; a conversion keeps one "
                             "core busy, a training job at this size a little more, with gaps).")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: at least one job must run at a time")
    from common.workspace import cache_dir

    work = Path(args.work) if args.work else cache_dir() / "bench-quant"
    formats = args.formats.split(",")
    if "float32" not in formats:
        formats.insert(0, "float32")  # the reference every drop is measured against
    sweep = [int(n) for n in args.sweep.split(",") if n]
    percentiles = [float(p) for p in args.percentiles.split(",") if p]
    doc = run(Path(args.out), work, args.archs.split(","), formats, sweep, percentiles, workers=args.workers)
    text = table(doc)
    write_section(Path(args.out), "quant", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
