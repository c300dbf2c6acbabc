"""`python -m core export`: ONNX FP32, optimized graph, INT8 and OpenVINO, with parity gates."""

from __future__ import annotations

import sys


def _export(args) -> tuple[int, object]:
    from core.export import ExportConfig, run
    from core.progress import CliProgress

    config = ExportConfig(model=args.model, out_dir=args.out, opset=args.opset,
                          optimize=not args.no_optimize, per_channel=args.per_channel,
                          reduce_range=args.reduce_range, int8_method=args.int8_method,
                          block_size=args.block_size, openvino=not args.no_openvino,
                          calibration_size=args.calibration_size, data=args.data,
                          atol=args.atol)
    progress = CliProgress("export")
    result = run(config, progress)
    progress.close()
    out = sys.stdout.write
    out(f"{'artifact':<22}{'MB':>8}{'ratio':>7}{'acc':>7}{'F1':>7}{'ΔF1':>7}{'agree':>7}"
        f"{'max|Δ|':>10}\n")
    for a in result.artifacts:
        m = a.metrics
        out(f"{a.name:<22}{a.size_mb:>8.1f}{m.get('size_ratio', 1):>7.2f}{m['accuracy']:>7.1f}"
            f"{m['macro_f1']:>7.1f}{m.get('macro_f1_delta', 0):>7.2f}{m.get('agreement', 100):>7.1f}"
            f"{m.get('max_abs_diff', 0):>10.2e}\n")
    out(f"fused operators: {result.fused_ops}\n")
    out(f"onnx/model_quantized.onnx = {result.int8['method']} INT8: {result.int8['reason']}\n")
    for w in result.warnings:
        out(f"WARNING: {w}\n")
    out(f"report: {result.report_path}\n")
    return 0, result


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a run to ONNX FP32/INT8 and OpenVINO, "
                              "checking parity and accuracy")
    p.add_argument("--model", required=True, help="run folder (workspace/runs/NAME)")
    p.add_argument("--out", help="output folder (default: the run folder)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--per-channel", action="store_true",
                   help="dynamic INT8: per-channel weight scales")
    p.add_argument("--reduce-range", action="store_true",
                   help="dynamic INT8: 7-bit weights (no-VNNI CPUs)")
    p.add_argument("--int8-method", choices=["auto", "dynamic", "weight-only"], default="auto",
                   help="which INT8 becomes onnx/model_quantized.onnx (auto: dynamic if it passes "
                        "the gates, else weight-only)")
    p.add_argument("--block-size", type=int, default=64, help="weight-only INT8 block size")
    p.add_argument("--no-optimize", action="store_true", help="skip ORT's transformer optimizer")
    p.add_argument("--no-openvino", action="store_true", help="skip OpenVINO IR and NNCF INT8")
    p.add_argument("--calibration-size", type=int, default=300,
                   help="training sentences used to calibrate OpenVINO INT8")
    p.add_argument("--data", help="labeled JSONL for the gates (default: the run's val split)")
    p.add_argument("--atol", type=float, default=1e-4, help="max |logit diff| ONNX vs PyTorch")
    p.set_defaults(handler=_export)
