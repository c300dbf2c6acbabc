"""`python -m core selftest`: a tiny job that exercises the background-job machinery.

It reports progress steps and can crash or fail on purpose, so the job runner (and a page showing
a job) can be checked without training a model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from core.errors import ConfigError, StudioError
from core.progress import CliProgress


@dataclass(frozen=True)
class SelftestConfig:
    steps: int = 5  # progress steps
    delay: float = 0.1  # seconds per step
    fail_at: int = 0  # raise an error at this step (0 = never)
    crash_at: int = 0  # exit abruptly at this step, writing no final event (0 = never)

    def __post_init__(self):
        if self.steps < 1 or self.delay < 0:
            raise ConfigError("selftest: steps must be >= 1 and delay >= 0")


def run_selftest(config: SelftestConfig) -> tuple[int, dict]:
    progress = CliProgress("selftest")
    for step in range(1, config.steps + 1):
        time.sleep(config.delay)
        if step == config.crash_at:
            os._exit(3)  # simulate a hard crash: no final event gets written
        if step == config.fail_at:
            raise StudioError(f"failing on purpose at step {step}")
        progress({"done": step, "total": config.steps, "message": f"step {step}"})
    progress.close()
    return 0, {"steps": config.steps}


def register(subparsers) -> None:
    from core.cli import overrides

    p = subparsers.add_parser("selftest", help="a tiny job for checking the job runner")
    p.add_argument("--steps", type=int)
    p.add_argument("--delay", type=float, help="seconds per step")
    p.add_argument("--fail-at", type=int, help="raise an error at this step")
    p.add_argument("--crash-at", type=int, help="exit abruptly at this step")
    fields = {"steps": "steps", "delay": "delay", "fail_at": "fail_at", "crash_at": "crash_at"}
    p.set_defaults(handler=lambda args: run_selftest(SelftestConfig(**overrides(args, fields))))
