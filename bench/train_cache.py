"""Frozen-prefix caching: epoch time with and without the cache, in one process.

Trains e5-small-ko on the seed set for a few epochs at each K, once with the cache and once
without (same seed, same batches), and prints the median training-epoch time after the first
epoch, the ratio cached/uncached and the whole run's wall time:

    .venv/bin/python bench/train_cache.py [--k 7] [--epochs 3] [--threads 2]

Why the ratio cannot fall far below (layers trained x 3) / (layers frozen + layers trained x 3):
the cache removes only the frozen layers' forward pass; the trained layers still run forward and
backward (about three forward passes' worth) every epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[7])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    os.environ.setdefault("STUDIO_WORKSPACE", tempfile.mkdtemp(prefix="train_cache_"))
    from core.train import TrainConfig, run

    rows = []
    for k in args.k:
        for cache in (False, True):
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(freeze_below=k, epochs=args.epochs, cache_frozen=cache,
                                     patience=0, num_threads=args.threads, out_dir=out)
                t0 = time.perf_counter()
                result = run(config)
                wall = time.perf_counter() - t0
            later = result.epoch_seconds[1:]
            rows.append({"k": k, "cache": cache, "epoch_seconds": result.epoch_seconds,
                         "median_later_epoch_s": round(statistics.median(later), 2),
                         "wall_s": round(wall, 1), "trainable": result.trainable_params,
                         "total": result.total_params})
            print(json.dumps(rows[-1]), flush=True)
    for k in args.k:
        plain, cached = [r for r in rows if r["k"] == k]
        ratio = cached["median_later_epoch_s"] / plain["median_later_epoch_s"]
        print(f"K={k}: uncached epoch {plain['median_later_epoch_s']} s, cached epoch "
              f"{cached['median_later_epoch_s']} s -> ratio {ratio:.2f} "
              f"(trainable {cached['trainable']:,} of {cached['total']:,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
