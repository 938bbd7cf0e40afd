"""int8 of one trained model at another calibration sample count (`make bench-quant`'s sweep).

The same conversion as `jobs.convert --format int8` (the train step's SavedModel export, the
converter's full-integer path on raw pixels) with N stratified training images, written to
--out only: the sweep's models are compared against the run's own int8, not published in it.
A process of its own so that it can run beside the bench's other jobs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calsweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--samples", type=int, required=True, help="calibration images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help=".tflite to write")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error(f"--samples {args.samples}: at least one calibration image is needed")

    from common import conversion, layout
    from common.schemas import TrainReport
    from common.store import open_store
    from jobs._io import load_run, shard_paths
    from jobs.convert import saved_model_for

    t0 = time.monotonic()
    store = open_store(args.store)
    _, manifest = load_run(store, args.run_id)
    train = store.get_model(layout.train_json(args.run_id, args.arch), TrainReport)
    saved_model = saved_model_for(store, train)
    images, _ = conversion.calibration_images(shard_paths(store, manifest, "train"), tuple(train.image_size),
                                              args.samples, args.seed)
    blob = conversion.convert(saved_model, "int8", conversion.representative_from(images))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(out)
    print(json.dumps({"event": "calibration_sweep", "arch": args.arch, "samples": len(images), "bytes": len(blob),
                      "seconds": round(time.monotonic() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
