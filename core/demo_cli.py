"""`python -m core demo-prepare`: build what the hosted demo needs, each step only when missing."""

from __future__ import annotations

import sys


def _prepare(args) -> tuple[int, object]:
    from core import demo
    from core.progress import CliProgress
    from core.run import RunFolder

    run = RunFolder(args.model) if args.model else None
    steps = demo.missing_steps(run)
    if not steps:
        sys.stdout.write("demo: the default run is trained, exported and bundled; nothing to "
                         "build\n")
        return 0, {"ran": []}
    sys.stdout.write("demo: building " + ", then ".join(s[0] for s in steps) + "\n")
    progress = CliProgress("demo-prepare")
    try:
        ran = demo.prepare(run, progress)
    finally:
        progress.close()
    sys.stdout.write("demo: ready\n")
    return 0, {"ran": [" ".join(s) for s in ran]}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo-prepare", help="train, export and bundle the default run for the hosted demo, "
                             "each step only when it is missing",
        description="Runs `python -m core train`, `python -m core export --model RUN` and "
                    "`python -m core web-export --model RUN --zip`, each only when the run lacks "
                    "what it builds (make demo runs this before serving).")
    p.add_argument("--model", help="run folder (default: workspace/runs/default)")
    p.set_defaults(handler=_prepare)
