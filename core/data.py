"""JSONL datasets: line-level validation, duplicates, stats, stratified split, atomic save.

A record is one JSON object per line: ``{"text": str, "label": str}``; any other keys are kept as
metadata. Validation never stops at the first problem: every invalid line is reported with its
1-based line number and every valid line is kept.
"""

from __future__ import annotations

import json
import logging
import random
import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from core import paths
from core.errors import ConfigError, DatasetError
from core.labels import DEFAULT_LABEL_NAMES, normalize_label

MAX_CHARS = 512
_BOM = b"\xef\xbb\xbf"
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}


@dataclass
class Record:
    text: str
    label: str
    meta: dict = field(default_factory=dict)  # every other key of the line
    line: int = 0  # 1-based line in the source file (0 when built in code)

    def to_json(self) -> dict:
        return {"text": self.text, "label": self.label, **self.meta}


@dataclass(frozen=True)
class Problem:
    line: int
    error: str


@dataclass(frozen=True)
class Duplicate:
    line: int
    first_line: int  # the earlier line it repeats
    kind: str  # "exact" or "normalized" (NFKC, case and whitespace ignored)
    same_label: bool


@dataclass
class Report:
    """Everything validation found; ``fatal`` is set when the file is not JSONL at all."""

    source: str
    records: list[Record] = field(default_factory=list)
    invalid: list[Problem] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    blank_lines: int = 0
    fatal: str | None = None

    @property
    def exit_code(self) -> int:
        return 2 if self.fatal else (1 if self.invalid else 0)

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "valid": len(self.records),
            "invalid": [{"line": p.line, "error": p.error} for p in self.invalid],
            "duplicates": [d.__dict__ for d in self.duplicates],
            "blank_lines": self.blank_lines,
            "fatal": self.fatal,
            "stats": stats(self.records),
        }

    def deduplicated(self) -> list[Record]:
        """Valid records without the later copies of duplicates."""
        return dedupe(self.records)


def normalize_text(text: str) -> str:
    """The key for normalized duplicates: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def dedupe(records: list[Record]) -> list[Record]:
    """Keep the first record of each normalized text (exact copies are normalized copies too)."""
    seen: set[str] = set()
    kept = []
    for record in records:
        key = normalize_text(record.text)
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept


def _whole_file_problem(data: bytes) -> str | None:
    """Why the bytes are not a JSONL text file at all, or None."""
    expected = 'expected JSON Lines: UTF-8 text, one {"text": ..., "label": ...} object per line'
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return f"the file is UTF-16 encoded; {expected}. Re-encode it as UTF-8 and try again."
    if b"\x00" in data[:65536] or data.startswith((b"\x1f\x8b", b"PK\x03\x04", b"%PDF")):
        return f"this is a binary file (e.g. a zip, gzip, PDF or spreadsheet), not text; {expected}."
    body = data[len(_BOM):] if data.startswith(_BOM) else data
    if not body.strip():
        return f"the file is empty; {expected}."
    lines = [ln for ln in body.split(b"\n") if ln.strip()]
    if not any(_decodes(ln) for ln in lines):
        hint = " (it decodes as CP949/EUC-KR)" if _decodes(body, "cp949") else ""
        return (f"the file is not UTF-8 text{hint}; {expected}. Re-encode it as UTF-8, "
                "e.g. `iconv -f cp949 -t utf-8 in.jsonl > out.jsonl`.")
    text = body.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped.startswith("{") and len(lines) > 1):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, list):
            return (f"the file is one JSON array, not JSON Lines; {expected}. "
                    "Convert it with `jq -c '.[]' in.json > out.jsonl`.")
        if isinstance(whole, dict) and len(lines) > 1:
            return (f"the file is one JSON object spread over several lines; {expected}. "
                    "Write each record on a single line (e.g. `jq -c .`).")
    if not any(ln.lstrip().startswith(b"{") or _is_json(ln) for ln in lines):
        first = lines[0].decode("utf-8", errors="replace")[:80]
        kind = "CSV/TSV" if re.search(r"[,\t;]", first) else "plain text"
        return f"the file looks like {kind} (first line: {first!r}), not JSON Lines; {expected}."
    return None


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
        return False


def _decodes(data: bytes, encoding: str = "utf-8") -> bool:
    try:
        data.decode(encoding)
        return True
    except UnicodeDecodeError:
        return False


def _check_fields(obj: dict, labels: tuple[str, ...] | None, max_chars: int,
                  text_key: str, label_key: str) -> tuple[Record | None, list[str]]:
    errors: list[str] = []
    text = obj.get(text_key)
    if text_key not in obj:
        errors.append(f'missing "{text_key}" field')
    elif not isinstance(text, str):
        errors.append(f'"{text_key}" must be a string, got {_JSON_TYPES.get(type(text), "?")}')
    elif not text:
        errors.append(f'"{text_key}" is empty')
    elif not text.strip():
        errors.append(f'"{text_key}" is only whitespace')
    elif len(text) > max_chars:
        errors.append(f'"{text_key}" is {len(text)} characters, over the maximum of {max_chars}; '
                      "shorten or split it (or raise --max-chars)")
    label = obj.get(label_key)
    if label_key not in obj:
        errors.append(f'missing "{label_key}" field')
    elif label is None:
        errors.append(f'"{label_key}" is null')
    elif not isinstance(label, str):
        errors.append(f'"{label_key}" must be a string, got {_JSON_TYPES.get(type(label), "?")}')
    elif not normalize_label(label):
        errors.append(f'"{label_key}" is empty')
    elif labels is not None and normalize_label(label) not in labels:
        errors.append(f'unknown label "{label}"; expected one of {", ".join(labels)} '
                      "(use --labels for another label set)")
    if errors:
        return None, errors
    meta = {k: v for k, v in obj.items() if k not in (text_key, label_key)}
    return Record(text, normalize_label(label), meta), []


def _parse_line(raw: bytes, labels, max_chars, text_key, label_key) -> tuple[Record | None, str]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}); "
                      "re-encode the file as UTF-8 (e.g. `iconv -f cp949 -t utf-8`)")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(obj, dict):
        return None, (f'expected a JSON object like {{"{text_key}": ..., "{label_key}": ...}}, '
                      f"got {_JSON_TYPES.get(type(obj), 'something else')}")
    record, errors = _check_fields(obj, labels, max_chars, text_key, label_key)
    return record, "; ".join(errors)


def validate_bytes(data: bytes, source: str = "<upload>", labels=DEFAULT_LABEL_NAMES,
                   max_chars: int = MAX_CHARS, text_key: str = "text",
                   label_key: str = "label") -> Report:
    """Validate JSONL bytes. ``labels=None`` accepts any label; blank lines are skipped."""
    report = Report(source)
    report.fatal = _whole_file_problem(data)
    if report.fatal:
        return report
    labels = tuple(normalize_label(x) for x in labels) if labels is not None else None
    first_seen: dict[str, tuple[int, str]] = {}
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\r").removeprefix(_BOM)  # CRLF endings and BOMs are fine
        if not raw.strip():
            report.blank_lines += 1
            continue
        record, error = _parse_line(raw, labels, max_chars, text_key, label_key)
        if record is None:
            report.invalid.append(Problem(number, error))
            continue
        record.line = number
        report.records.append(record)
        _note_duplicate(report, record, first_seen)
    return report


def _note_duplicate(report: Report, record: Record, first_seen: dict) -> None:
    for kind, key in (("exact", "\0" + record.text), ("normalized", normalize_text(record.text))):
        if key in first_seen:
            line, label = first_seen[key]
            report.duplicates.append(Duplicate(record.line, line, kind, label == record.label))
            return
    first_seen["\0" + record.text] = first_seen[normalize_text(record.text)] = (record.line,
                                                                                 record.label)


def validate_file(path: str | Path, **kwargs) -> Report:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        report = Report(str(path))
        report.fatal = f"cannot read {path}: {exc.strerror or exc}"
        return report
    return validate_bytes(data, str(path), **kwargs)


def stats(records: list[Record]) -> dict:
    """Counts per label and the distribution of text lengths (characters)."""
    lengths = sorted(len(r.text) for r in records)
    if not lengths:
        return {"count": 0, "labels": {}, "length": {}}
    pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
    return {
        "count": len(records),
        "labels": dict(sorted(Counter(r.label for r in records).items())),
        "length": {"min": lengths[0], "p50": pick(0.5), "mean": round(statistics.fmean(lengths), 1),
                   "p95": pick(0.95), "max": lengths[-1]},
    }


@dataclass
class Split:
    train: list[Record]
    val: list[Record]
    test: list[Record]

    def sizes(self) -> dict:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_records(records: list[Record], val_frac: float = 0.15, test_frac: float = 0.15,
                  seed: int = 13) -> Split:
    """Stratified split: each label is shuffled with ``seed`` and cut by the fractions.

    Deterministic for a given input order and seed. A label with at least 3 records gets at least
    one in each non-empty split, so every class is evaluated.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError(f"split fractions val={val_frac}, test={test_frac} must be in [0, 1) "
                          "and leave room for training (val + test < 1)")
    by_label: dict[str, list[Record]] = {}
    for record in records:
        by_label.setdefault(record.label, []).append(record)
    out = Split([], [], [])
    for label in sorted(by_label):
        group = list(by_label[label])
        random.Random(f"{seed}:{label}").shuffle(group)
        n = len(group)
        n_test, n_val = round(n * test_frac), round(n * val_frac)
        if n >= 3:
            n_test, n_val = max(n_test, test_frac > 0), max(n_val, val_frac > 0)
        out.test += group[:n_test]
        out.val += group[n_test:n_test + n_val]
        out.train += group[n_test + n_val:]
    return out


def to_jsonl(records: list[Record]) -> str:
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)


def splits_zip(split: Split, name: str = "dataset") -> bytes:
    """train/val/test JSONL files in one zip, for download."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in ("train", "val", "test"):
            zf.writestr(f"{name}-{part}.jsonl", to_jsonl(getattr(split, part)))
    return buf.getvalue()


def save_dataset(name: str, records: list[Record]) -> Path:
    """Save records as ``workspace/datasets/<name>.jsonl`` atomically (temp file, then rename)."""
    name = paths.check_name(name.strip().removesuffix(".jsonl"), "dataset name")
    if not records:
        raise ConfigError("there are no valid records to save")
    return paths.atomic_write_text(paths.datasets_dir() / f"{name}.jsonl", to_jsonl(records))


def list_datasets() -> dict[str, Path]:
    """Named datasets: the shipped seed set first, then the workspace's."""
    found = {"seed": paths.SEED_PATH}
    for path in sorted(paths.datasets_dir().glob("*.jsonl")):
        found.setdefault(path.stem, path)
    return found


def resolve_dataset(path_or_name: str | Path | None) -> Path:
    """A dataset path from a name in the workspace or a file path; None means the seed set."""
    if path_or_name is None:
        return paths.SEED_PATH
    path = Path(path_or_name)
    if path.is_file():
        return path
    named = list_datasets().get(str(path_or_name))
    if named is None:
        raise DatasetError(f"no dataset file or saved dataset named {str(path_or_name)!r}; "
                           f"saved datasets: {', '.join(list_datasets())}")
    return named


def load_dataset(path_or_name: str | Path | None = None, labels=None, **kwargs) -> list[Record]:
    """Load the valid, deduplicated records of a dataset; refuse a file that is not JSONL.

    ``labels=None`` accepts whatever labels the file uses (training derives its label set from it).
    Invalid lines are skipped and logged: validate first to see them.
    """
    report = validate_file(resolve_dataset(path_or_name), labels=labels, **kwargs)
    if report.fatal:
        raise DatasetError(report.fatal, path=report.source)
    if report.invalid:
        logging.getLogger(__name__).warning("%s: skipped %d invalid lines (first: line %d: %s)",
                                            report.source, len(report.invalid),
                                            report.invalid[0].line, report.invalid[0].error)
    records = report.deduplicated()
    if not records:
        raise DatasetError("no valid records", path=report.source)
    return records
