"""`python -m core export`: ONNX FP32, optimized graph, INT8 and OpenVINO, with parity gates."""

from __future__ import annotations

import sys

_FIELDS = {"out": "out_dir", "opset": "opset", "optimize": "optimize",
           "per_channel": "per_channel", "reduce_range": "reduce_range",
           "int8_method": "int8_method", "block_size": "block_size", "openvino": "openvino",
           "calibration_size": "calibration_size", "sensitivity_size": "sensitivity_size",
           "data": "data", "atol": "atol",
           "max_length": "max_length", "allow_int8_drift": "allow_int8_drift"}


def _export(args) -> tuple[int, object]:
    from core.cli import overrides
    from core.export import ExportConfig

    return run_export(ExportConfig(model=args.model, **overrides(args, _FIELDS)))


def run_export(config) -> tuple[int, object]:
    """Export with a progress bar, then print the artifact table (the CLI and background jobs)."""
    from core.export import run
    from core.progress import CliProgress

    progress = CliProgress("export")
    try:
        result = run(config, progress)
    finally:
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
    from core.export import AUTO_ORDER, INT8_METHODS
    from core.export import ExportConfig as D  # defaults shown in --help come from the config

    p = subparsers.add_parser("export", help="export a run to ONNX FP32/INT8 and OpenVINO, "
                              "checking parity and accuracy")
    p.add_argument("--model", required=True, help="run folder (workspace/runs/NAME)")
    p.add_argument("--out", help="output folder (default: the run folder)")
    p.add_argument("--opset", type=int, help=f"ONNX opset (default {D.opset})")
    p.add_argument("--per-channel", action="store_true", default=None,
                   help="plain dynamic INT8: per-channel weight scales")
    p.add_argument("--reduce-range", action="store_true", default=None,
                   help="plain dynamic INT8: 7-bit weights (no-VNNI CPUs)")
    p.add_argument("--int8-method", choices=INT8_METHODS,
                   help=f"which INT8 becomes onnx/model_quantized.onnx (default {D.int8_method}; "
                        f"auto: the first of {', '.join(AUTO_ORDER)} that passes the gates)")
    p.add_argument("--block-size", type=int, help=f"weight-only INT8 block size (default {D.block_size})")
    p.add_argument("--no-optimize", dest="optimize", action="store_false", default=None,
                   help="skip ORT's transformer optimizer")
    p.add_argument("--no-openvino", dest="openvino", action="store_false", default=None,
                   help="skip OpenVINO IR (FP32 and INT8)")
    p.add_argument("--calibration-size", type=int,
                   help=f"training sentences to calibrate INT8 (default {D.calibration_size})")
    p.add_argument("--sensitivity-size", type=int, help="training sentences for the per-node "
                   f"INT8 sensitivity report (default {D.sensitivity_size})")
    p.add_argument("--data", help="labeled JSONL for the gates (default: the run's val split)")
    p.add_argument("--atol", type=float, help=f"max |logit diff| ONNX vs PyTorch (default {D.atol:g})")
    p.add_argument("--max-length", type=int,
                   help="tokens per text (default: the run's, as trained)")
    p.add_argument("--allow-int8-drift", action="store_true", default=None,
                   help="ship the INT8 model even when it fails the agreement/F1 gates")
    p.set_defaults(handler=_export)
