"""Progress reporting shared by every stage.

Core functions take ``on_progress: ProgressFn | None`` and call it with a plain dict, e.g.
``{"done": 3, "total": 100, "message": "epoch 1", "loss": 0.7}``. The CLI turns those dicts into a
tqdm bar and, when it runs as a background job (``STUDIO_EVENTS`` set by core/jobs.py), appends each
one to the job's ``events.jsonl`` so a page can follow it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

ProgressFn = Callable[[dict], None]
EVENTS_ENV = "STUDIO_EVENTS"


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


class EventLog:
    """Append-only JSONL event log; each line is flushed at once so readers see it live."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, type_: str, **fields: Any) -> None:
        record = {"type": type_, "time": time.time(), **_jsonable(fields)}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()

    @staticmethod
    def read(path: str | Path) -> list[dict]:
        """Read all complete events; a torn last line (writer mid-append) is ignored."""
        events: list[dict] = []
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        events.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
        except FileNotFoundError:
            pass
        return events


def job_event_log() -> EventLog | None:
    """The events log of the background job this process runs as, if any."""
    path = os.environ.get(EVENTS_ENV)
    return EventLog(path) if path else None


class CliProgress:
    """on_progress for the CLI: a tqdm bar on stderr plus the job event log when present."""

    def __init__(self, desc: str):
        self.desc = desc
        self.log = job_event_log()
        self._bar = None

    def __call__(self, event: dict) -> None:
        if self.log is not None:
            self.log.write("progress", **event)
        total, done = event.get("total"), event.get("done")
        if total is None or done is None:
            return
        from tqdm import tqdm

        if self._bar is None or self._bar.total != total:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, desc=self.desc, leave=False)
        self._bar.n = done
        msg = event.get("message")
        if msg:
            self._bar.set_postfix_str(str(msg)[:60], refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
