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
        # The bar is drawn (and flushed) before the event is logged, so whoever sees the event
        # also finds the bar in the job's output.log, even if the process dies right after.
        self._draw(event)
        if self.log is not None:
            self.log.write("progress", **event)

    def _draw(self, event: dict) -> None:
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


def eta_seconds(events: list[dict], now: float | None = None, window_s: float = 90.0
                ) -> float | None:
    """Seconds left for a job, from its progress events (``done``/``total`` and write ``time``).

    The rate is taken over the last ``window_s`` seconds of progress (at least two events of the
    same total), so a slow start (a training run's first, uncached epoch; a model download) does
    not skew the estimate once the job runs at its steady speed. None until a rate is known."""
    points = [(e["time"], float(e["done"]), float(e["total"])) for e in events
              if e.get("type", "progress") == "progress" and isinstance(e.get("time"), (int, float))
              and isinstance(e.get("done"), (int, float)) and isinstance(e.get("total"), (int, float))
              and e["total"] > 0]
    if not points:
        return None
    total = points[-1][2]
    points = [p for p in points if p[2] == total]  # one bar: a stage that restarts its count
    last_t, last_done, _ = points[-1]
    recent = [p for p in points if p[0] >= last_t - window_s]
    first_t, first_done, _ = recent[0] if len(recent) > 1 else points[0]
    if last_t <= first_t or last_done <= first_done:
        return None
    rate = (last_done - first_done) / (last_t - first_t)
    since = max((time.time() if now is None else now) - last_t, 0.0)
    return max((total - last_done) / rate - since, 0.0)


def format_eta(seconds: float | None) -> str:
    """'about 4 min left', 'about 40 s left', '' when unknown."""
    if seconds is None:
        return ""
    if seconds >= 90:
        return f"about {round(seconds / 60)} min left"
    return f"about {max(5, round(seconds / 5) * 5)} s left"
