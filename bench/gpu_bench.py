"""GPU rows on a CUDA machine, written to the same results.json as `python -m core bench`.

    .venv/bin/python bench/gpu_bench.py --model workspace/runs/default [--out DIR] [--full]

Rows: PyTorch CPU FP32 (the baseline every speed-up is computed against, as on the CPU report),
PyTorch CUDA FP32 and FP16, ONNX Runtime CUDA EP FP32 and TensorRT EP FP16. A row whose packages
are missing (TensorRT/CUDA EPs need `onnxruntime-gpu`, TensorRT needs its libraries) is listed as
skipped with the reason; PyTorch CUDA FP16 needs only a CUDA build of torch. Defaults finish in a
few minutes (2 rounds, no HTTP rows); --full uses the CPU report's settings.

Not run on the 2-core development machine (no GPU there): it is a thin wrapper over
core.bench.benchmark, whose CUDA paths are only the adapters' `device="cuda"` / provider options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.bench import benchmark  # noqa: E402

GPU_ROWS = ("pytorch", "pytorch-cuda", "pytorch-cuda-fp16", "ort-cuda", "ort-trt-fp16")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="exported run folder")
    parser.add_argument("--out", help="output folder (default RUN/bench/gpu-<timestamp>/)")
    parser.add_argument("--full", action="store_true", help="3 rounds, 30 iterations, HTTP rows")
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        import time

        out = str(Path(args.model) / "bench" / time.strftime("gpu-%Y%m%d-%H%M%S"))
    config = benchmark.BenchConfig(
        model=args.model, runtimes=GPU_ROWS, out_dir=out, serving=args.full,
        rounds=None if args.full else 2, batch_sizes=None if args.full else (8, 64))
    result = benchmark.run(config, on_progress=lambda e: print(e.get("message", ""),
                                                                file=sys.stderr))
    print(Path(result.report_path).read_text(encoding="utf-8"))
    for row in result.skipped:
        print(f"skipped {row['key']}: {row['reason']}", file=sys.stderr)
    return 0 if len(result.measured) > 1 else 1


if __name__ == "__main__":
    sys.exit(main())
