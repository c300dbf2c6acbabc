"""`python -m core <command>`: one subcommand per stage, each a thin wrapper over a core call.

Every handler returns (exit code, result). When the command runs as a background job
(core/jobs.py), the result or the error is written to the job's event log as its final event.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from core.errors import StudioError
from core.progress import job_event_log

# Modules that add subcommands; each keeps heavy imports inside its handlers.
COMMAND_MODULES = ["core.data_cli", "core.generate.cli", "core.train_cli", "core.export_cli",
                   "core.web_export_cli", "core.bench_cli", "core.selftest_cli"]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="python -m core",
                                     description="Korean emotion-classifier studio")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    log = job_event_log()
    try:
        code, result = args.handler(args)
    except StudioError as exc:
        sys.stderr.write(f"error: {exc}\n")
        if log:
            log.write("error", message=str(exc))
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        if log:
            log.write("cancelled")
        return 130
    except Exception as exc:  # an unexpected bug: keep the traceback in the job's output log
        traceback.print_exc()
        if log:
            log.write("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    if log:
        if code == 0:
            log.write("result", result=result)
        else:
            log.write("error", message=f"exited with code {code}", result=result)
    return code
