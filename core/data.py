"""JSONL datasets: line-level validation, duplicates, stats, stratified split, atomic save.

A record is one JSON object per line: ``{"text": str, "label": str}``; any other keys are kept as
metadata. Validation never stops at the first problem: every invalid line is reported with its
1-based line number and every valid line is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from core import data_format, paths, safe_json
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
        """The saved line; text and label win over metadata keys of those names."""
        meta = {k: v for k, v in self.meta.items() if k not in ("text", "label")}
        return {"text": self.text, "label": self.label, **meta}


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


def _kind(value: object) -> str:
    return _JSON_TYPES.get(type(value), "something else")


def _text_errors(obj: dict, text_key: str, max_chars: int) -> list[str]:
    key = safe_json.show(text_key)
    if text_key not in obj:
        return [f"missing {key} field"]
    text = obj[text_key]
    if not isinstance(text, str):
        return [f"{key} must be a string, got {_kind(text)}"]
    if not text:
        return [f"{key} is empty"]
    if not text.strip():
        return [f"{key} is only whitespace"]
    if len(text) > max_chars:
        return [f"{key} is {len(text)} characters, over the maximum of {max_chars}; "
                "shorten or split it (or raise --max-chars)"]
    problem = safe_json.text_problem(text, key)
    return [problem] if problem else []


def _label_errors(obj: dict, label_key: str, labels: tuple[str, ...] | None) -> list[str]:
    key = safe_json.show(label_key)
    if label_key not in obj:
        return [f"missing {key} field"]
    label = obj[label_key]
    if label is None:
        return [f"{key} is null"]
    if not isinstance(label, str):
        return [f"{key} must be a string, got {_kind(label)}"]
    if not normalize_label(label):
        return [f"{key} is empty"]
    problem = safe_json.text_problem(label, key)
    if problem:
        return [problem]
    if labels is not None and normalize_label(label) not in labels:
        return [f"unknown label {safe_json.show(label)}; expected one of {', '.join(labels)} "
                "(use --labels for another label set)"]
    return []


def _check_fields(obj: dict, labels: tuple[str, ...] | None, max_chars: int,
                  text_key: str, label_key: str) -> tuple[Record | None, list[str]]:
    errors = _text_errors(obj, text_key, max_chars) + _label_errors(obj, label_key, labels)
    for saved in ("text", "label"):  # a saved dataset writes the text and label under these keys
        if saved in obj and saved not in (text_key, label_key):
            errors.append(f"the line has a {safe_json.show(saved)} key besides the mapped "
                          f"{safe_json.show(text_key if saved == 'text' else label_key)}; saving "
                          f'would overwrite it: rename or drop the "{saved}" key')
    meta = {k: v for k, v in obj.items() if k not in (text_key, label_key)}
    problem = safe_json.find_problem(meta)  # keys and values that cannot be saved, deep nesting
    if problem:
        errors.append(problem)
    if errors:
        return None, errors
    return Record(obj[text_key], normalize_label(obj[label_key]), meta), []


def _parse_line(raw: bytes, labels, max_chars, text_key, label_key) -> tuple[Record | None, str]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}); "
                      "re-encode the file as UTF-8 (e.g. `iconv -f cp949 -t utf-8`)")
    try:
        obj = safe_json.loads(line)
    except safe_json.LineProblem as exc:
        return None, str(exc)
    if not isinstance(obj, dict):
        return None, (f"expected a JSON object like {{{safe_json.show(text_key)}: ..., "
                      f"{safe_json.show(label_key)}: ...}}, got {_kind(obj)}")
    record, errors = _check_fields(obj, labels, max_chars, text_key, label_key)
    return record, "; ".join(errors)


def validate_bytes(data: bytes, source: str = "<upload>", labels=DEFAULT_LABEL_NAMES,
                   max_chars: int = MAX_CHARS, text_key: str = "text",
                   label_key: str = "label") -> Report:
    """Validate JSONL bytes; never raises. ``labels=None`` accepts any label.

    Lines end at LF, CRLF or a lone CR; blank lines are skipped; a UTF-8 BOM at the start of the
    file or of any line (files joined with ``cat``) is ignored.
    """
    report = Report(source)
    body = data.removeprefix(_BOM)
    lines = data_format.split_lines(body)
    try:
        report.fatal = data_format.whole_file_problem(data, body, lines)
    except Exception:  # a bug in a whole-file guess must not hide the line-by-line report
        logging.getLogger(__name__).exception("%s: whole-file check", source)
    if report.fatal:
        return report
    labels = tuple(normalize_label(x) for x in labels) if labels is not None else None
    first_seen: dict[str, tuple[int, str]] = {}
    for number, raw in enumerate(lines, start=1):
        raw = raw.removeprefix(_BOM)
        if not raw.strip():
            report.blank_lines += 1
            continue
        try:
            record, error = _parse_line(raw, labels, max_chars, text_key, label_key)
        except Exception as exc:  # a bug here must cost one line, not the whole report
            logging.getLogger(__name__).exception("%s: line %d", source, number)
            record, error = None, f"could not be checked ({type(exc).__name__}); please report it"
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
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        report = Report(str(path))
        report.fatal = f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
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


# The default split (the Dataset page, data split, and training all start from these).
VAL_FRAC, TEST_FRAC, SPLIT_SEED = 0.15, 0.15, 13


def split_records(records: list[Record], val_frac: float = VAL_FRAC, test_frac: float = TEST_FRAC,
                  seed: int = SPLIT_SEED) -> Split:
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
    """JSON Lines that validate again to the same records; DatasetError for a record that cannot
    be stored (e.g. built in code with a lone surrogate), instead of a UnicodeEncodeError later."""
    return "".join(map(_record_line, records))


def _record_line(record: Record) -> str:
    obj = record.to_json()
    problem = safe_json.find_problem(obj)
    for key in ("text", "label"):
        if problem is None:
            value = obj[key]
            problem = (safe_json.text_problem(value, f'"{key}"') if isinstance(value, str)
                       else f'"{key}" must be a string, got {_kind(value)}')
    if problem is None:
        try:
            return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:  # e.g. a set, or an int of 5000 digits
            problem = f"not writable as JSON ({exc})"
    raise DatasetError(f"cannot save this record: {problem}", line=record.line or None)


def splits_zip(split: Split, name: str = "dataset") -> bytes:
    """train/val/test JSONL files in one zip, for download."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in ("train", "val", "test"):
            zf.writestr(f"{name}-{part}.jsonl", to_jsonl(getattr(split, part)))
    return buf.getvalue()


def save_dataset(name: str, records: list[Record], split: dict | None = None) -> Path:
    """Save records as ``workspace/datasets/<name>.jsonl`` atomically (temp file, then rename).

    ``split`` ({"val_frac", "test_frac", "seed"}) is saved beside it as ``<name>.split.json``, with
    the file's sha256: training on this dataset then uses exactly that split."""
    name = paths.check_name(name.strip().removesuffix(".jsonl"), "dataset name")
    if not records:
        raise ConfigError("there are no valid records to save")
    body = to_jsonl(records)
    path = paths.datasets_dir() / f"{name}.jsonl"
    sidecar = _split_sidecar(path)
    sidecar.unlink(missing_ok=True)  # a split of the old contents must not survive a re-save
    paths.atomic_write_text(path, body)
    if split is not None:
        split_records([], split["val_frac"], split["test_frac"], split["seed"])  # checks fractions
        saved = {k: split[k] for k in ("val_frac", "test_frac", "seed")}
        saved["sha256"] = hashlib.sha256(body.encode("utf-8")).hexdigest()
        paths.atomic_write_text(sidecar, json.dumps(saved, indent=2))
    return path


def _split_sidecar(path: Path) -> Path:
    return path.with_name(path.stem + ".split.json")


def saved_split_params(path_or_name: str | Path | None) -> dict | None:
    """The split saved with a dataset on the Dataset page ({"val_frac", "test_frac", "seed"}), or
    None when it has none or the file changed since (its sha256 no longer matches)."""
    path = resolve_dataset(path_or_name)
    try:
        saved = json.loads(_split_sidecar(path).read_text(encoding="utf-8"))
        if saved.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
            logging.getLogger(__name__).warning("%s changed after its split was saved; "
                                                "ignoring the saved split", path)
            return None
        return {k: saved[k] for k in ("val_frac", "test_frac", "seed")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
