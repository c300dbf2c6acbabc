"""The output file (source of truth), its manifest (progress record) and a writer lock.

Rows are appended and flushed per reply, so a killed process loses at most the line it was writing.
On resume the file is re-read: a torn last line (no trailing newline) is cut off, every complete row
is counted per label and fed back into the deduplicator. The manifest only carries what the file
cannot (tokens, cost, request counters, a pending Batch API job).
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError
from core.generate.dedup import Deduper
from core.labels import normalize_label
from core.paths import atomic_write_text

log = logging.getLogger(__name__)


def sidecar_dir(out: Path) -> Path:
    """``<stem>.generate/`` beside the output: the manifest and Batch API files live there, so a
    folder of datasets (``*.jsonl``) holds only datasets."""
    return out.with_name(out.stem + ".generate")


def manifest_path(out: Path) -> Path:
    return sidecar_dir(out) / "manifest.json"


def batch_input_path(out: Path) -> Path:
    return sidecar_dir(out) / "batch_input.jsonl"


@dataclass
class Existing:
    """What an output file already holds."""

    counts: Counter = field(default_factory=Counter)  # label -> rows (labels of the current set)
    rows: int = 0  # complete JSON lines
    other_labels: int = 0  # rows whose label is not in the current set
    bad_lines: int = 0  # complete lines that are not a {"text", "label"} object
    duplicates: int = 0  # rows that duplicate an earlier row (only if edited by hand)
    torn_bytes: int = 0  # bytes of a torn last line that were cut off
    max_index: int = -1  # highest request index found in row metadata


def load_existing(path: Path, labels: tuple[str, ...], deduper: Deduper,
                  repair: bool = True) -> Existing:
    """Count the rows of ``path`` and register their texts with ``deduper``.

    A last line without a newline is a write cut off by a kill: with ``repair`` it is truncated
    away (appending after it would glue the next row onto it); without (dry runs) it is skipped.
    """
    found = Existing()
    if not path.exists():
        return found
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    found.torn_bytes = len(data) - keep
    if found.torn_bytes:
        log.warning("%s: torn last line (%d bytes) left by an interrupted write%s", path,
                    found.torn_bytes, "; cut off" if repair else "")
        if repair:
            with open(path, "rb+") as f:
                f.truncate(keep)
    for line in data[:keep].decode("utf-8", errors="replace").splitlines():
        if line.strip():
            found.rows += 1
            _count_line(line, labels, deduper, found)
    if found.bad_lines:
        log.warning("%s: %d lines are not {text, label} records; left as they are", path,
                    found.bad_lines)
    return found


def _count_line(line: str, labels: tuple[str, ...], deduper: Deduper, found: Existing) -> None:
    try:
        rec = json.loads(line)
        text, label = rec["text"], normalize_label(rec["label"])
        if not isinstance(text, str):
            raise TypeError("text is not a string")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        found.bad_lines += 1
        return
    if deduper.add(text) is not None:
        found.duplicates += 1  # not counted: the target means unique rows
        return
    if label in labels:
        found.counts[label] += 1
    else:
        found.other_labels += 1
    rid = rec.get("request_id")
    if isinstance(rid, str) and rid.rsplit("-", 1)[-1].isdigit():
        found.max_index = max(found.max_index, int(rid.rsplit("-", 1)[-1]))


def tail_rows(path: Path, n: int = 10, max_bytes: int = 256_000) -> list[dict]:
    """The newest ``n`` complete rows (for previews), reading only the end of the file."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            chunk = f.read()
    except FileNotFoundError:
        return []
    lines = chunk.split(b"\n")
    lines = lines[1:-1] if size > max_bytes else lines[:-1]  # drop a cut first / torn last line
    rows = []
    for line in reversed(lines):
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError):
            continue
        if len(rows) == n:
            break
    return rows


class RowWriter:
    """Appends rows; each call is one write + flush so a kill leaves whole lines (or one torn one)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def append(self, rows: list[dict]) -> None:
        if rows:
            self._f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            self._f.flush()

    def close(self) -> None:
        self._f.close()


@contextmanager
def writer_lock(out: Path):
    """One writer per output file: a second run on the same file fails fast instead of interleaving
    rows. The lock is an flock on the output file itself, so no lock file is left behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another generate run is writing {out}; wait for it or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_manifest(out: Path) -> dict:
    try:
        return json.loads(manifest_path(out).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        log.warning("%s is unreadable; starting a fresh manifest (the output file is kept)",
                    manifest_path(out))
        return {}


def write_manifest(out: Path, data: dict) -> None:
    data = {**data, "updated": time.time()}
    atomic_write_text(manifest_path(out), json.dumps(data, ensure_ascii=False, indent=1))
