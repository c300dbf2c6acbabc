"""`python -m core bench --model RUN_DIR [--runtimes ...] [--quick] [--out DIR]`."""

from __future__ import annotations

import argparse
import sys


def _keys(value: str) -> list[str]:
    return [k.strip() for k in value.split(",") if k.strip()]


def _sizes(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be integers like 8,32: {value!r}")


def register(subparsers) -> None:
    from core.bench.benchmark import RUNTIMES, BenchConfig  # light: no heavy imports at top

    p = subparsers.add_parser(
        "bench", help="benchmark a run on every runtime (latency, throughput, memory, accuracy)",
        description="Each runtime runs in its own process, warmed up, in interleaved rounds. "
                    "Writes results.json, results.csv, report.md, charts.html (and latency.png) "
                    "to --out (default RUN/bench/<timestamp>/). Rows: " + ", ".join(RUNTIMES))
    p.add_argument("--model", required=True, help="run folder (exported with `export`)")
    p.add_argument("--runtimes", nargs="+", type=_keys, default=None, metavar="KEY",
                   help="rows to run, space- or comma-separated (default: all; rows that cannot "
                        "run here are listed as skipped)")
    p.add_argument("--quick", action="store_true", default=None,
                   help="about a minute on a small model")
    p.add_argument("--out", help="output folder")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    p.add_argument("--iters", type=int, help="timed batch-1 calls per sentence per round")
    p.add_argument("--warmup", type=int, help="untimed calls before each timed block")
    p.add_argument("--batch-sizes", type=_sizes, help="throughput batch sizes, e.g. 8,32")
    p.add_argument("--threads", type=int, help="threads per runtime (default: all cores)")
    p.add_argument("--eval-size", type=int, help="labeled sentences to score (default: all)")
    p.add_argument("--data", help="labeled JSONL (default: the run's test split)")
    p.add_argument("--no-serving", dest="serving", action="store_false", default=None,
                   help="skip the HTTP serving rows")
    p.add_argument("--clients", type=int,
                   help=f"concurrent HTTP clients (default {BenchConfig.serving_clients})")
    p.add_argument("--requests", type=int, help="HTTP requests per runtime (default 200)")
    p.add_argument("--ort-web-dir", help="onnxruntime-web dist folder for the browser rows")
    p.add_argument("--no-png", dest="png", action="store_false", default=None,
                   help="do not render latency.png")
    p.set_defaults(handler=_run)


_FIELDS = {"quick": "quick", "out": "out_dir", "rounds": "rounds", "iters": "iters",
           "warmup": "warmup", "batch_sizes": "batch_sizes", "threads": "threads",
           "eval_size": "eval_size", "data": "data", "serving": "serving",
           "clients": "serving_clients", "requests": "serving_requests",
           "ort_web_dir": "ort_web_dir", "png": "png"}


def _run(args) -> tuple[int, object]:
    from core.bench import benchmark
    from core.cli import overrides

    kwargs = overrides(args, _FIELDS)
    if args.runtimes:
        kwargs["runtimes"] = tuple(k for group in args.runtimes for k in group)
    return run_bench(benchmark.BenchConfig(model=args.model, **kwargs))


def run_bench(config) -> tuple[int, object]:
    """Benchmark with a progress bar, then print the report (the CLI and background jobs)."""
    from pathlib import Path

    from core.bench import benchmark
    from core.progress import CliProgress

    progress = CliProgress("bench")
    try:
        result = benchmark.run(config, on_progress=progress)
    finally:
        progress.close()
    sys.stdout.write(Path(result.report_path).read_text(encoding="utf-8") + "\n")
    return 0, result
