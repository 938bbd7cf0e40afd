"""`make bench-quant`: how much top-1 each integer format loses on models trained to a useful accuracy.

Trains every architecture on a synthetic set (seeded) until float top-1 is at least 80 %,
converts it to every format through the convert job (so convert.json and quant_debug.json are
the real artifacts), evaluates every model over the whole validation split with LiteRT, and
writes BENCH_OUT/quant.json (one row per architecture x format) and a table in summary.md.
The int8 calibration sample count is swept (50 / 200 / 1000) on the side.

Training is reused through the train step's cache: its code version is a hash of the files
that decide training (not the git commit), so a change to conversion or to this bench does
not retrain three networks. Timings come from a shared 2-core machine; wall time is recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

# Why this is enough (README "Quantization benchmark"): every class has a colour/pattern cue;
# at 64x96, 60 training images per class and 8 epochs from scratch every architecture
# validates above 80 % top-1 (measured: MobileNetV2 97.3 %), and 20 validation images per
# class give 600 images, so one flipped image moves top-1 by 0.17 points.
CONFIG = {"data": "synthetic", "synthetic_per_class": 60, "image_size": "64x96", "epochs": 8,
          "weights": "none", "seed": 0}
FORMATS = ("float32", "int8", "int8-selective", "int16x8", "float16", "dynamic")
INTEGER = ("int8", "int8-selective", "int16x8")
SWEEP = (50, 200, 1000)
DEFAULT_CALIBRATION = 200
RUN_ID = "quant-bench"
# What decides a trained model; their hash stands in for the code version of the train step.
TRAIN_CODE = ("common/archs.py", "common/training.py", "common/dataset.py", "common/synthetic.py",
              "jobs/train.py", "jobs/prepare.py", "jobs/_io.py")


def train_code_version() -> str:
    h = hashlib.sha256()
    for rel in TRAIN_CODE:
        h.update(rel.encode() + b"\0" + (REPO / rel).read_bytes())
    return "train-" + h.hexdigest()[:16]


def _job(module: str, args: list[str], env: dict, log) -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", f"jobs.{module}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    log.write(proc.stdout)
    log.write(proc.stderr)
    log.flush()
    if proc.returncode != 0:
        raise SystemExit(f"jobs.{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"  jobs.{module} {' '.join(a for a in args if not a.startswith('/'))}: {time.monotonic() - t0:.0f} s",
          flush=True)


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


def predict(path: Path, images: np.ndarray) -> np.ndarray:
    from common.evaluation import TFLiteClassifier

    clf = TFLiteClassifier(path, num_threads=2)
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
    from common.stats import mcnemar_exact, paired_difference_interval

    ok_f, ok_q = float_pred == labels, pred == labels
    float_top1, top1 = 100.0 * ok_f.mean(), 100.0 * ok_q.mean()
    ci = paired_difference_interval(ok_f, ok_q)
    return {"arch": arch, "format": fmt, "calibration_samples": n_cal,
            "float_top1": round(float(float_top1), 3), "top1": round(float(top1), 3),
            "drop_pts": round(float(float_top1 - top1), 3), "drop_ci95": [round(ci.lo, 3), round(ci.hi, 3)],
            "mcnemar_p": round(mcnemar_exact(ok_f, ok_q).p_value, 6),
            "agreement": round(float(100.0 * (pred == keras_pred).mean()), 3),
            "size_mb": round(size_bytes / 1e6, 3), "host_ms": ms, "images": int(len(labels)), **(extra or {})}


# ---------------------------------------------------------------- the bench
def run(out: Path, work: Path, archs: list[str], formats: list[str], sweep: list[int]) -> dict:
    from common import layout
    from common.schemas import ConvertReport, QuantDebugReport, TrainReport
    from common.store import open_store

    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    store_uri = str(work / "store")
    env = {**os.environ, "SCENEBENCH_CACHE_DIR": str(work / "cache"), "SCENEBENCH_LOG_FORMAT": "json",
           "PYTHONPATH": str(REPO)}
    train_env = {**env, "SCENEBENCH_CODE_VERSION": train_code_version()}
    base = ["--store", store_uri, "--run-id", RUN_ID]
    log = open(work / "jobs.log", "a")
    timings: dict[str, float] = {}

    t = time.monotonic()
    from common.archs import ARCH_NAMES

    # The run's parameters stay the same whatever subset this invocation measures, so that the
    # run (and its trained models) is found again rather than refused as different.
    _job("prepare", base + ["--data", CONFIG["data"], "--archs", ",".join(ARCH_NAMES), "--formats", ",".join(FORMATS),
                            "--image-size", CONFIG["image_size"], "--epochs", str(CONFIG["epochs"]),
                            "--weights", CONFIG["weights"], "--seed", str(CONFIG["seed"]),
                            "--synthetic-per-class", str(CONFIG["synthetic_per_class"])], train_env, log)
    timings["prepare_s"] = round(time.monotonic() - t, 1)
    store = open_store(store_uri)
    from jobs._io import load_run

    _, manifest = load_run(store, RUN_ID)
    size = tuple(int(v) for v in CONFIG["image_size"].split("x"))
    images, labels = validation_set(store, manifest, size)

    rows, debug, train_info = [], {}, {}
    for arch in archs:
        t = time.monotonic()
        _job("train", base + ["--arch", arch], train_env, log)
        train = store.get_model(layout.train_json(RUN_ID, arch), TrainReport)
        timings[f"train_{arch}_s"] = round(time.monotonic() - t, 1)
        train_info[arch] = {"val_top1": round(train.last_val_top1, 3), "epochs": train.epochs,
                            "train_wall_time_s": train.wall_time_s, "images_per_s": train.images_per_s}
        ref = np.load(io.BytesIO(store.get_bytes(layout.keras_val_predictions(RUN_ID, arch))))
        if not (ref["labels"] == labels).all():
            raise SystemExit(f"{arch}: Keras validation predictions are in a different order than the validation set")
        keras_pred = ref["probs"].argmax(axis=1)
        preds, paths = {}, {}
        for fmt in formats:
            t = time.monotonic()
            _job("convert", base + ["--arch", arch, "--format", fmt,
                                    "--calibration-samples", str(DEFAULT_CALIBRATION)], env, log)
            timings[f"convert_{arch}_{fmt}_s"] = round(time.monotonic() - t, 1)
            conv = store.get_model(layout.convert_json(RUN_ID, arch, fmt), ConvertReport)
            paths[fmt] = store.root / conv.model.key
            preds[fmt] = predict(paths[fmt], images)
            if store.exists(layout.quant_debug_json(RUN_ID, arch, fmt)):
                qd = store.get_model(layout.quant_debug_json(RUN_ID, arch, fmt), QuantDebugReport)
                debug[f"{arch}/{fmt}"] = [{"tensor": x.tensor, "op": x.op, "layers": x.layers,
                                           "rmse_over_scale": x.rmse_over_scale, "mean_error": x.mean_error,
                                           "scale": x.scale}
                                          for x in sorted(qd.layers, key=lambda x: -(x.rmse_over_scale or 0))[:5]]
            extra = {"weights_quantization": conv.weights_quantization, "float_layers": conv.float_layers,
                     "input_dtype": conv.input.dtype}
            if fmt != "float32":
                rows.append(row(arch, fmt, conv.calibration_samples, labels, preds["float32"], preds[fmt],
                                keras_pred, conv.model.size, host_ms(paths[fmt]), extra))
        f = store.get_model(layout.convert_json(RUN_ID, arch, "float32"), ConvertReport)
        rows.append(row(arch, "float32", 0, labels, preds["float32"], preds["float32"], keras_pred,
                        f.model.size, host_ms(paths["float32"]), {"input_dtype": f.input.dtype}))
        if "int8" in formats:
            rows += calibration_sweep(store, manifest, arch, size, sweep, images, labels, preds["float32"],
                                      keras_pred, work, timings)
        _write(out, rows, debug, train_info, timings, started)
    return _write(out, rows, debug, train_info, timings, started)


def calibration_sweep(store, manifest, arch, size, sweep, images, labels, float_pred, keras_pred, work, timings):
    """int8 at other calibration counts, converted in-process from the same SavedModel."""
    from common import conversion, layout
    from common.schemas import TrainReport
    from jobs._io import shard_paths
    from jobs.convert import saved_model_for

    os.environ["SCENEBENCH_CACHE_DIR"] = str(work / "cache")
    train = store.get_model(layout.train_json(RUN_ID, arch), TrainReport)
    sm = saved_model_for(store, train)
    shards = shard_paths(store, manifest, "train")
    out = []
    for n in sweep:
        if n == DEFAULT_CALIBRATION:
            continue  # the convert job's own int8 row
        t = time.monotonic()
        cal, _ = conversion.calibration_images(shards, size, n, CONFIG["seed"])
        blob = conversion.convert(sm, "int8", conversion.representative_from(cal))
        path = work / "sweep" / arch / f"int8-cal{n}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        timings[f"sweep_{arch}_{n}_s"] = round(time.monotonic() - t, 1)
        out.append(row(arch, "int8", len(cal), labels, float_pred, predict(path, images), keras_pred,
                       len(blob), host_ms(path), {"sweep": True}))
    return out


def _write(out: Path, rows, debug, train_info, timings, started) -> dict:
    doc = {"what": "top-1 lost by each integer format on models trained on the synthetic set (seeded)",
           "config": CONFIG, "run_id": RUN_ID, "dataset": "synthetic (not photographs)",
           "float_reference": "float32 .tflite of the same trained model, same validation images",
           "host": "LiteRT on this machine's CPU, 2 threads (not an iPhone); machine shared, timings inflated",
           "train": train_info, "rows": rows, "worst_layers": debug, "seconds": timings,
           "wall_time_s": round(time.monotonic() - started, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "quant.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def table(doc: dict) -> str:
    lines = [f"## int8 that keeps its accuracy (synthetic set, {doc['config']['image_size']}, "
             f"{doc['config']['epochs']} epochs; wall time {doc['wall_time_s']} s on a shared machine)", "",
             "| arch | format | cal. | float top-1 | top-1 | drop pts [95 % CI] | McNemar p | agree % | MB | host ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lo, hi = r["drop_ci95"]
        lines.append(f"| {r['arch']} | {r['format']} | {r['calibration_samples'] or '–'} | {r['float_top1']:.1f} | "
                     f"{r['top1']:.1f} | {r['drop_pts']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {r['mcnemar_p']:.3g} | "
                     f"{r['agreement']:.1f} | {r['size_mb']:.2f} | {r['host_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def update_summary(out: Path, text: str) -> None:
    """Replace this bench's section of summary.md, keeping the other benches' figures."""
    path = out / "summary.md"
    old = path.read_text() if path.is_file() else "# scenebench benchmark figures\n"
    head = "## int8 that keeps its accuracy"
    kept = old.split(head)[0].rstrip() + "\n\n"
    path.write_text(kept + text)


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    from common.workspace import cache_dir

    work = Path(args.work) if args.work else cache_dir() / "bench-quant"
    formats = args.formats.split(",")
    if "float32" not in formats:
        formats.insert(0, "float32")  # the reference every drop is measured against
    doc = run(Path(args.out), work, args.archs.split(","), formats, [int(n) for n in args.sweep.split(",")])
    text = table(doc)
    update_summary(Path(args.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
