"""`python -m core selftest`: a tiny job that exercises the background-job machinery.

It reports progress steps and can crash or hang on purpose, so the job runner (and a page showing
a job) can be checked without training a model.
"""

from __future__ import annotations

import os
import time

from core.errors import StudioError
from core.progress import CliProgress


def _selftest(args) -> tuple[int, dict]:
    progress = CliProgress("selftest")
    for step in range(1, args.steps + 1):
        time.sleep(args.delay)
        if step == args.crash_at:
            os._exit(3)  # simulate a hard crash: no final event gets written
        if step == args.fail_at:
            raise StudioError(f"failing on purpose at step {step}")
        progress({"done": step, "total": args.steps, "message": f"step {step}"})
    progress.close()
    return 0, {"steps": args.steps}


def register(subparsers) -> None:
    p = subparsers.add_parser("selftest", help="a tiny job for checking the job runner")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--delay", type=float, default=0.1, help="seconds per step")
    p.add_argument("--fail-at", type=int, default=0, help="raise an error at this step")
    p.add_argument("--crash-at", type=int, default=0, help="exit abruptly at this step")
    p.set_defaults(handler=_selftest)
