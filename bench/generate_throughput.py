"""Generation throughput against a loopback OpenAI-compatible server with fixed latency.

Measures, in one process run, the full pipeline (requests, parsing, validation, dedup, appending)
generating ``--rows`` rows with ``--concurrency`` requests in flight, and the same pipeline sending
one request at a time. Targets (issue 7): concurrent time <= 1.25x the ideal
(requests / concurrency x latency) and >= 7x faster than one-at-a-time.

One-at-a-time is measured on ``--serial-requests`` requests (not all of them: 100 x 0.5 s is 50 s
a repeat) and extrapolated by its per-request time; the output says so. Runs are interleaved and
repeated; medians are reported.

    .venv/bin/python bench/generate_throughput.py [--rows 5000] [--latency 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_openai import FakeOpenAI  # noqa: E402

from core.generate import GenerateConfig, run  # noqa: E402

KEY = "sk-bench-not-a-real-key"


def timed_run(url: str, out: Path, rows: int, per_request: int, concurrency: int) -> tuple[float, int]:
    cfg = GenerateConfig(out=out, n=rows, per_request=per_request, concurrency=concurrency,
                         base_url=url, request_timeout_s=30.0)
    t0 = time.perf_counter()
    result = run(cfg, api_key=KEY)
    elapsed = time.perf_counter() - t0
    if not result.complete or result.rows != rows:
        raise SystemExit(f"run incomplete: {result.message}")
    return elapsed, result.requests


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--per-request", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.5, help="server latency per request (s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--serial-requests", type=int, default=10,
                    help="requests measured one at a time (then extrapolated)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    requests = math.ceil(args.rows / args.per_request)
    ideal = requests / args.concurrency * args.latency
    conc_times, serial_per_req = [], []
    with FakeOpenAI(latency=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        # Warm-up: the first run pays for importing the SDK (~0.5 s) and opening connections.
        timed_run(server.url, Path(tmp) / "warmup.jsonl", 2 * args.per_request, args.per_request, 2)
        for i in range(args.repeats):  # interleaved: both modes see the same machine noise
            t, sent = timed_run(server.url, Path(tmp) / f"c{i}.jsonl", args.rows, args.per_request,
                                args.concurrency)
            assert sent == requests, (sent, requests)
            conc_times.append(t)
            n_serial = args.serial_requests * args.per_request
            t, sent = timed_run(server.url, Path(tmp) / f"s{i}.jsonl", n_serial, args.per_request, 1)
            serial_per_req.append(t / sent)
            print(f"repeat {i + 1}: concurrent {conc_times[-1]:.2f} s, "
                  f"one-at-a-time {serial_per_req[-1] * 1000:.0f} ms/request", flush=True)

    conc = statistics.median(conc_times)
    serial = statistics.median(serial_per_req) * requests
    res = {
        "rows": args.rows, "requests": requests, "per_request": args.per_request,
        "concurrency": args.concurrency, "latency_s": args.latency, "repeats": args.repeats,
        "ideal_s": round(ideal, 3), "concurrent_s_median": round(conc, 3),
        "concurrent_s_all": [round(t, 3) for t in conc_times],
        "ratio_vs_ideal": round(conc / ideal, 3),
        "serial_ms_per_request_median": round(statistics.median(serial_per_req) * 1000, 1),
        "serial_s_extrapolated": round(serial, 3),
        "serial_measured_requests": args.serial_requests,
        "speedup_vs_serial": round(serial / conc, 2),
        "rows_per_s": round(args.rows / conc, 1),
    }
    res["pass"] = res["ratio_vs_ideal"] <= 1.25 and res["speedup_vs_serial"] >= 7.0
    print(f"ideal {ideal:.2f} s ({requests} requests / {args.concurrency} x {args.latency} s); "
          f"concurrent median {conc:.2f} s = {res['ratio_vs_ideal']:.3f}x ideal (target <= 1.25x)")
    print(f"one-at-a-time: {res['serial_ms_per_request_median']:.0f} ms/request measured on "
          f"{args.serial_requests} requests, extrapolated to {requests}: {serial:.2f} s; "
          f"speed-up {res['speedup_vs_serial']:.2f}x (target >= 7x)")
    print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
