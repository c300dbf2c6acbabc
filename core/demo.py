"""Hosted demo mode: what a public visitor may do, and the limits that keep a hosted copy safe.

``STUDIO_MODE=demo`` turns the app into a public demo (``make demo``): visitors classify text and
uploaded JSONL files with the default run's shipped INT8 model, and read the saved benchmark and
bundle; every page that starts a job (generate, train, export, benchmark runs, bundle builds) is
refused, nothing a visitor sends is written to the workspace, and no page shows server paths or
environment values. This module holds the rules and the bounded work; pages/common wires them
into the pages (core never imports streamlit).

``prepare()`` builds what the demo needs (train, export, web bundle), each step only when the
default run lacks it, through the same CLI commands a person would type.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core import data, data_format, paths
from core.errors import StudioError
from core.progress import ProgressFn
from core.run import RunFolder

MODE_ENV = "STUDIO_MODE"
RATE_ENV = "STUDIO_DEMO_RATE"  # predictions per minute per browser session (default RATE_LIMIT)

# Uploads. Streamlit's server.maxUploadSize counts megabytes of 1024 * 1024 bytes and takes an
# integer: `make demo` passes `--server.maxUploadSize 2`; the code checks the bytes itself too.
MAX_UPLOAD_MB = 2
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
MAX_UPLOAD_LINES = 5000
MAX_UPLOAD_FILES = 5  # files at once on the Dataset page (upload check)
UPLOAD_TIME_S = 20.0  # batch classification of one upload stops after this many seconds
BATCH_SLOTS = 2  # uploads classified at the same time, across every session of the server
MAX_TEXT_CHARS = 2000  # a typed text longer than this is cut before tokenizing

RATE_LIMIT = 30  # predictions of typed text ...
RATE_WINDOW_S = 60.0  # ... per this many seconds, per browser session
BATCH_LIMIT, BATCH_WINDOW_S = 5, 300.0  # classified uploads per session
SERVER_RATE_LIMIT = 600  # predictions per RATE_WINDOW_S over all sessions (many tabs, one bot)

REFUSAL = "is not available in this demo"
# Page kinds a visitor may open in demo mode, in menu order, with their menu label.
OPEN_PAGES = {"home": "Home", "demo": "Demo", "dataset": "Upload check",
              "benchmark": "Benchmark", "web-bundle": "Web bundle"}


class DemoLimit(StudioError):
    """A visitor's request over one of the demo's limits; the message says which and why."""


def is_demo() -> bool:
    """True when the app runs as a public demo (``STUDIO_MODE=demo``)."""
    return os.environ.get(MODE_ENV, "").strip().lower() == "demo"


def page_allowed(kind: str) -> bool:
    """Whether a page of this kind may be opened now (every page outside demo mode; in demo mode
    only OPEN_PAGES: an unknown kind is refused)."""
    return not is_demo() or kind in OPEN_PAGES


def rate_limit() -> int:
    """Predictions per minute per session: $STUDIO_DEMO_RATE when it is a positive integer."""
    try:
        value = int(os.environ.get(RATE_ENV, ""))
    except ValueError:
        return RATE_LIMIT
    return value if value > 0 else RATE_LIMIT


class RateLimiter:
    """At most ``limit`` events in any ``window_s`` seconds (a sliding window). Thread-safe: one
    limiter may be shared by every session of the server. ``clock`` is injectable for tests."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic):
        if limit < 1 or window_s <= 0:
            raise ValueError("RateLimiter needs limit >= 1 and window_s > 0")
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._times: deque[float] = deque()
        self._guard = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()

    def allow(self) -> bool:
        """Count one event and return True, or return False (counting nothing) when the window
        is full."""
        with self._guard:
            now = self.clock()
            self._expire(now)
            if len(self._times) >= self.limit:
                return False
            self._times.append(now)
            return True

    def retry_after(self) -> float:
        """Seconds until the next event would be allowed (0 when it would be now)."""
        with self._guard:
            now = self.clock()
            self._expire(now)
            if len(self._times) < self.limit:
                return 0.0
            return max(self._times[0] + self.window_s - now, 0.0)

    def message(self, what: str = "predictions") -> str:
        return (f"Too many {what}: this demo allows {self.limit} every "
                f"{self.window_s:g} seconds. Try again in {self.retry_after():.0f} s.")


# --- what pages show ---------------------------------------------------------------------------
_PATH = re.compile(r"(?<![\w:/.~-])(?:/[^\s/\"'`()<>\[\]{},;|*]+){2,}/?")


def scrub(text: str) -> str:
    """``text`` without server paths: the workspace and the repository become relative names,
    any other absolute path keeps only its last part (``/srv/x/model.onnx`` -> ``…/model.onnx``)."""
    text = str(text)
    roots = {str(paths.workspace()): "workspace", str(paths.workspace().resolve()): "workspace",
             str(paths.REPO_ROOT): ".", str(Path.home()): "~", sys.prefix: "<python>"}
    for root in sorted(roots, key=len, reverse=True):
        if root.startswith("/") and len(root) > 1:  # never a relative name: it is in words
            text = text.replace(root, roots[root])
    return _PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def scrub_obj(value):
    """``scrub`` applied to every string (keys included) of a JSON-like value."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_obj(k): scrub_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_obj(v) for v in value]
    return value


def public_error(exc: BaseException) -> str:
    """What a visitor reads about an error: its message with paths removed."""
    if isinstance(exc, StudioError):
        return scrub(str(exc))
    return f"{type(exc).__name__}: {scrub(str(exc))}"


# --- typed text --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """How much of a text the model reads."""

    tokens: int  # tokens of the whole text (special tokens included)
    max_tokens: int  # the model's window (RunFolder.max_length)
    kept_chars: int  # characters of the text inside the window
    chars: int

    @property
    def cut(self) -> bool:
        return self.tokens > self.max_tokens

    def note(self) -> str:
        return (f"This text is {self.tokens} tokens long; the model reads at most "
                f"{self.max_tokens}, so it classified the first {self.kept_chars} of "
                f"{self.chars} characters and the rest was cut.")


def window(runtime, text: str) -> Window:
    """Token count of ``text`` and the part of it inside ``runtime``'s window."""
    tok = runtime.tokenizer
    full = len(tok(text, truncation=False, verbose=False)["input_ids"])
    if full <= runtime.max_length:
        return Window(full, runtime.max_length, len(text), len(text))
    kept = tok(text, truncation=True, max_length=runtime.max_length,
               return_offsets_mapping=True)["offset_mapping"]
    return Window(full, runtime.max_length, max((end for _, end in kept), default=0), len(text))


def clip_text(text: str) -> str:
    """A typed text bounded before it reaches the tokenizer."""
    return text[:MAX_TEXT_CHARS]


# --- uploads -----------------------------------------------------------------------------------
def check_upload(blob: bytes) -> None:
    """Raise DemoLimit when an upload is over the size or line limit."""
    if len(blob) > MAX_UPLOAD_BYTES:
        raise DemoLimit(f"The file is {len(blob) / 2**20:.1f} MB; this demo takes files of at "
                        f"most {MAX_UPLOAD_MB} MB and {MAX_UPLOAD_LINES:,} lines.")
    if len(data_format.split_lines(blob)) > MAX_UPLOAD_LINES:
        raise DemoLimit(f"The file has more than {MAX_UPLOAD_LINES:,} lines; this demo takes "
                        f"files of at most {MAX_UPLOAD_LINES:,} lines and {MAX_UPLOAD_MB} MB.")


def _has_label_key(blob: bytes, label_key: str = "label") -> bool:
    """Whether any line is a JSON object with a ``label_key`` key (a labeled file)."""
    if json.dumps(label_key).encode() not in blob:
        return False
    for raw in data_format.split_lines(blob):
        try:
            obj = json.loads(raw.decode("utf-8-sig"))
        except Exception:  # any bad line: validation reports it
            continue
        if isinstance(obj, dict) and label_key in obj:
            return True
    return False


@dataclass
class UploadResult:
    report: data.Report  # the line-level validation report
    labeled: bool  # the file has labels: metrics were computed
    rows: list[dict] = field(default_factory=list)  # per predicted line, in file order
    metrics: dict | None = None  # accuracy, macro_f1, per_class, confusion_matrix, labels
    valid: int = 0  # valid lines
    cut: int = 0  # predicted lines longer than the model's window
    complete: bool = True  # False: the time limit stopped it (rows holds the first lines)
    seconds: float = 0.0
    time_limit_s: float = UPLOAD_TIME_S

    def to_jsonl(self) -> str:
        """Each predicted line's object plus ``pred`` and ``probs`` (like `core predict`)."""
        return "".join(json.dumps(r["object"], ensure_ascii=False) + "\n" for r in self.rows)

    def notes(self) -> list[str]:
        out = []
        if not self.complete:
            out.append(f"Stopped after {self.time_limit_s:g} s: predicted the first "
                       f"{len(self.rows):,} of {self.valid:,} valid lines.")
        if self.cut:
            out.append(f"{self.cut:,} lines are longer than the model's window and were cut "
                       "to it before classifying.")
        return out


def _validate(blob: bytes, source: str, labels: list[str]) -> tuple[data.Report, bool]:
    if _has_label_key(blob):
        return data.validate_bytes(blob, source, labels=tuple(labels)), True
    # No labels: a line needs only its text. Mapping the label to the text key makes the
    # validator check the text twice (deduplicated below) and demand nothing else.
    report = data.validate_bytes(blob, source, labels=None, label_key="text")
    for i, problem in enumerate(report.invalid):
        parts = list(dict.fromkeys(problem.error.split("; ")))
        report.invalid[i] = data.Problem(problem.line, "; ".join(parts))
    return report, False


_batch_slots = threading.BoundedSemaphore(BATCH_SLOTS)


def classify_upload(runtime, blob: bytes, source: str = "upload", *,
                    time_limit_s: float = UPLOAD_TIME_S, batch_size: int = 32,
                    clock: Callable[[], float] = time.monotonic) -> UploadResult:
    """Validate an uploaded JSONL file, predict every valid line with ``runtime`` and, when the
    file has labels, score it. Bounded: DemoLimit for a file over the limits or when the server is
    busy with other uploads; prediction stops after ``time_limit_s``. Writes nothing."""
    check_upload(blob)
    if not _batch_slots.acquire(timeout=time_limit_s):
        raise DemoLimit("The demo is busy classifying other files: try again in a minute.")
    try:
        start = clock()
        report, labeled = _validate(blob, source, runtime.labels)
        result = UploadResult(report, labeled, valid=len(report.records),
                              time_limit_s=time_limit_s)
        records = report.records
        for i in range(0, len(records), batch_size):
            if clock() - start > time_limit_s:
                result.complete = False
                break
            _predict_batch(runtime, records[i:i + batch_size], labeled, result)
        if labeled and result.rows:
            from core.predict import classification_metrics

            ids = {lab: i for i, lab in enumerate(runtime.labels)}
            result.metrics = classification_metrics([ids[r["label"]] for r in result.rows],
                                                    [ids[r["pred"]] for r in result.rows],
                                                    list(runtime.labels))
        result.seconds = clock() - start
        return result
    finally:
        _batch_slots.release()


def _predict_batch(runtime, batch: list[data.Record], labeled: bool, result: UploadResult) -> None:
    texts = [r.text for r in batch]
    lengths = runtime.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
    result.cut += sum(len(ids) > runtime.max_length for ids in lengths)
    for record, pred in zip(batch, runtime.predict(texts, len(texts))):
        obj = record.to_json() if labeled else {"text": record.text, **record.meta}
        obj.update(pred=pred.label, probs=pred.probs)
        row = {"line": record.line, "text": record.text, "pred": pred.label,
               "confidence": max(pred.probs.values()), "object": obj}
        if labeled:
            row["label"] = record.label
        result.rows.append(row)


def digest(blob: bytes) -> str:
    """A key for an upload's result in a session (a rerun does not classify it again)."""
    return hashlib.sha256(blob).hexdigest()


# --- preparing a host --------------------------------------------------------------------------
def missing_steps(run: RunFolder | None = None) -> list[list[str]]:
    """The CLI commands (``python -m core`` arguments) that build what the demo lacks, in order;
    a retrained model needs a new export and bundle, so training brings every step."""
    run = run or RunFolder.default()
    model = str(run.root)
    train = ["train"] if run.root == RunFolder.default().root else ["train", "--out", model]
    export = ["export", "--model", model]
    bundle = ["web-export", "--model", model, "--zip"]
    if not run.is_trained():
        return [train, export, bundle]
    steps = [] if run.onnx("int8").is_file() else [export]
    if not run.bundle_zip.is_file() or run.bundle_report() is None:
        steps.append(bundle)
    return steps


def _run_cli(args: list[str]) -> None:
    code = subprocess.run([sys.executable, "-m", "core", *args], cwd=paths.REPO_ROOT).returncode
    if code != 0:
        raise StudioError(f"`python -m core {' '.join(args)}` failed (exit {code}); its output "
                          "above says why")


def prepare(run: RunFolder | None = None, on_progress: ProgressFn | None = None,
            runner: Callable[[list[str]], None] = _run_cli) -> list[list[str]]:
    """Build what the hosted demo needs (trained default run, INT8 export, bundle zip), each
    step only when it is missing; returns the commands it ran."""
    steps = missing_steps(run)
    for done, args in enumerate(steps):
        if on_progress:
            on_progress({"done": done, "total": len(steps),
                         "message": "python -m core " + " ".join(args)})
        runner(args)
    if on_progress and steps:
        on_progress({"done": len(steps), "total": len(steps), "message": "ready"})
    return steps
