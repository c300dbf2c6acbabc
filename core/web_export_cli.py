"""`python -m core web-export --model RUN_DIR --out DIR [--zip]`: build the browser bundle."""

from __future__ import annotations

from core.progress import CliProgress


def _web_export(args) -> tuple[int, object]:
    from core import web_export

    config = web_export.WebExportConfig(
        model=args.model, out_dir=args.out, zip=args.zip, examples=args.examples,
        max_length=args.max_length, title=args.title, export_data=args.export_data)
    progress = CliProgress("web-export")
    try:
        result = web_export.run(config, progress)
    finally:
        progress.close()
    return 0, result


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "web-export", help="build a static browser bundle (onnxruntime-web) from a run",
        description="Copies the INT8 ONNX model (exported first if missing), the tokenizer, the "
                    "page and the onnxruntime-web files into one folder any static host can "
                    "serve. Preview it with `python DIR/serve.py`.")
    p.add_argument("--model", required=True, help="run folder, e.g. workspace/runs/default")
    p.add_argument("--out", default=None, help="bundle folder (default: RUN/bundle); an earlier "
                                               "bundle there is replaced")
    p.add_argument("--zip", action="store_true", help="also write OUT.zip")
    p.add_argument("--examples", type=int, default=8, help="example sentences on the page")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens (default: the tokenizer's limit, at most 512)")
    p.add_argument("--title", default="한국어 감정 분류", help="page heading")
    p.add_argument("--export-data", default=None,
                   help="labeled JSONL for the INT8 export's checks, if it has to run first")
    p.set_defaults(handler=_web_export)
