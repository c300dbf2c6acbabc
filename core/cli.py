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
                   "core.web_export_cli", "core.bench.cli", "core.selftest_cli", "core.demo_cli"]


def overrides(args: argparse.Namespace, fields: dict[str, str]) -> dict:
    """{config field: value} for each flag the user gave. Flags default to None ("not given"), so
    the config dataclass keeps the only copy of every default."""
    return {field: getattr(args, flag) for flag, field in fields.items()
            if getattr(args, flag, None) is not None}


def _job(args) -> tuple[int, object]:
    from core import jobs

    stage, config = jobs.load_config(args.folder)
    return jobs.run_config(stage, config)


def _status(args) -> tuple[int, object]:
    from core import paths, state

    stages = state.pipeline()
    for stage in stages:
        sys.stdout.write(f"[{'x' if stage.done else ' '}] {stage.name:<11} {stage.detail}\n")
    step = state.next_step(stages)
    if step is not None:
        sys.stdout.write(f"next: {step.name} ({step.page})\n")
    sys.stdout.write(f"workspace: {paths.workspace()}\n")
    return 0, {"stages": stages, "next": step and step.name}


def _register_own(sub) -> None:
    s = sub.add_parser("status", help="what exists in the workspace and the next step",
                       description="The pipeline's state, as the home page shows it.")
    s.set_defaults(handler=_status)
    p = sub.add_parser("job", help="run a background job folder (what the pages start)",
                       description="Runs the stage saved in FOLDER/config.json by core/jobs.py.")
    p.add_argument("folder", help="workspace/jobs/<id>")
    p.set_defaults(handler=_job)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="python -m core",
                                     description="Korean emotion-classifier studio")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _register_own(sub)
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
