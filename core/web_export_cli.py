"""`python -m core web-export --model RUN_DIR --out DIR [--zip]`: build the browser bundle."""

from __future__ import annotations

_FIELDS = {"out": "out_dir", "zip": "zip", "examples": "examples", "max_length": "max_length",
           "title": "title", "export_data": "export_data",
           "allow_int8_drift": "allow_int8_drift"}


def _web_export(args) -> tuple[int, object]:
    from core import web_export
    from core.cli import overrides

    return run_web_export(web_export.WebExportConfig(model=args.model,
                                                     **overrides(args, _FIELDS)))


def run_web_export(config) -> tuple[int, object]:
    """Build the bundle with a progress bar (the CLI and background jobs)."""
    from core import web_export
    from core.progress import CliProgress

    progress = CliProgress("web-export")
    try:
        result = web_export.run(config, progress)
    finally:
        progress.close()
    return 0, result


def register(subparsers) -> None:
    from core.web_export import WebExportConfig as D  # defaults shown in --help

    p = subparsers.add_parser(
        "web-export", help="build a static browser bundle (onnxruntime-web) from a run",
        description="Copies the INT8 ONNX model (exported first if missing), the tokenizer, the "
                    "page and the onnxruntime-web files into one folder any static host can "
                    "serve, after checking the model file it ships against FP32. Preview it with "
                    "`python DIR/serve.py`.")
    p.add_argument("--model", required=True, help="run folder, e.g. workspace/runs/default")
    p.add_argument("--out", help="bundle folder (default: RUN/bundle); an earlier bundle there "
                                 "is replaced")
    p.add_argument("--zip", action="store_true", default=None, help="also write OUT.zip")
    p.add_argument("--examples", type=int,
                   help=f"example sentences on the page (default {D.examples})")
    p.add_argument("--max-length", type=int,
                   help="tokens (default: the run's own, where predict truncates)")
    p.add_argument("--title", help=f"page heading (default {D.title})")
    p.add_argument("--export-data",
                   help="labeled JSONL for the checks (default: the run's validation split)")
    p.add_argument("--allow-int8-drift", action="store_true", default=None,
                   help="ship a model that fails the agreement/F1 gates anyway")
    p.set_defaults(handler=_web_export)
