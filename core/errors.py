"""Typed errors, in one place. Each message says what went wrong, where, and what to do."""

from __future__ import annotations


class StudioError(Exception):
    """Base class: anything the UI and CLI show as a plain message, never a traceback."""


class DatasetError(StudioError):
    """A problem with one line of a dataset (line is 1-based) or with the whole file (line=None)."""

    def __init__(self, reason: str, line: int | None = None, path: str | None = None):
        self.reason, self.line, self.path = reason, line, path
        where = f"{path}:" if path else ""
        where += f"line {line}: " if line is not None else (" " if path else "")
        super().__init__(f"{where}{reason}".strip())


class ConfigError(StudioError, ValueError):
    """A configuration value that cannot work; the message says how to fix it."""


class ModelError(StudioError):
    """A base model or run folder that cannot be loaded."""


class ParityError(StudioError):
    """Two runtimes disagree beyond the allowed tolerance."""

    def __init__(self, max_abs_diff: float, atol: float, what: str = "ONNX FP32 vs PyTorch"):
        self.max_abs_diff, self.atol = max_abs_diff, atol
        super().__init__(f"{what}: max |logit diff| {max_abs_diff:.3g} exceeds {atol:.0e}")


class MissingAPIKey(StudioError):
    def __init__(self):
        super().__init__(
            "No API key: set OPENAI_API_KEY in the environment or type the key into the page."
        )


class APIRequestError(StudioError):
    """The LLM server refused in a way retrying cannot fix (bad key, unknown model, bad request)."""


class WebExportError(StudioError):
    """The browser bundle cannot be built (e.g. the npm packages are not installed)."""


class JobError(StudioError):
    """A background job that cannot be started or read."""


class RunError(ModelError):
    """A run folder that is missing a part (model, metrics.json, an export); says how to rebuild."""


class RunBusy(RunError):
    """Another job is writing this run folder (training, export, web export or benchmark)."""


class GateError(StudioError):
    """A build whose result failed one of core/gates.py's checks (the message lists them)."""
