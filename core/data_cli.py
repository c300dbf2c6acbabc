"""`python -m core data ...`: validate, stats, split and audit JSONL datasets."""

from __future__ import annotations

import argparse
import json
import sys

from core import data
from core.labels import parse_labels


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="JSONL file (or a saved dataset name)")
    p.add_argument("--labels", help="comma-separated label set (default: the 7 default labels)")
    p.add_argument("--any-label", action="store_true", help="accept any label value")
    p.add_argument("--max-chars", type=int, default=data.MAX_CHARS, help="longest allowed text")
    p.add_argument("--text-key", default="text", help="key holding the text (e.g. sentence)")
    p.add_argument("--label-key", default="label", help="key holding the label (e.g. emotion)")


VALIDATE_HELP = """Check every line of a JSON Lines file and report each problem with its line.

Exit status: 0 every non-blank line is valid; 1 some lines are invalid (each is listed with its
1-based line number, the field and the reason; the valid lines are kept); 2 the file cannot be
read as JSON Lines at all (missing, empty, binary, UTF-16, not UTF-8 at all, one JSON array,
CSV). Validation never stops with a traceback, whatever the bytes.

Lines end at LF, CRLF or a lone CR (old Mac files), so line numbers are the ones an editor shows.
A UTF-8 BOM at the start of the file or of any line (files joined with cat) and blank lines are
ignored. A line is invalid, with the reason, when it is not one JSON object; its text or label is
missing, empty, only whitespace, too long, without a visible character, or holds a control
character other than tab/LF/CR; any string or key holds a lone surrogate (a "\\ud800" escape,
which cannot be written as UTF-8); it has NaN/Infinity, a number over 1000 digits or one that
overflows to infinity, a key twice in one object, or nesting over 64 levels; or, with
--text-key/--label-key, it also has a "text"/"label" key that saving would overwrite.
"""


def _write(text: str) -> None:
    """Print without a traceback for characters stdout cannot encode (e.g. a non-UTF-8 file name)."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    sys.stdout.write(text.encode(encoding, "backslashreplace").decode(encoding))


def _validate_args(args) -> data.Report:
    labels = None if args.any_label else parse_labels(args.labels)
    try:
        path = data.resolve_dataset(args.path)
    except (data.DatasetError, OSError, ValueError):  # e.g. a name too long for the file system
        path = args.path  # validate_file reports the unreadable path as a fatal problem
    return data.validate_file(path, labels=labels, max_chars=args.max_chars,
                              text_key=args.text_key, label_key=args.label_key)


def _print_report(report: data.Report) -> None:
    out = _write
    if report.fatal:
        out(f"{report.source}: {report.fatal}\n")
        return
    out(f"{report.source}: {len(report.records)} valid, {len(report.invalid)} invalid, "
        f"{report.blank_lines} blank lines skipped, {len(report.duplicates)} duplicates\n")
    for p in report.invalid:
        out(f"  line {p.line}: {p.error}\n")
    for d in report.duplicates:
        note = "" if d.same_label else " (with a different label)"
        out(f"  line {d.line}: {d.kind} duplicate of line {d.first_line}{note}\n")
    st = data.stats(report.records)
    if st["count"]:
        out("  labels: " + ", ".join(f"{k} {v}" for k, v in st["labels"].items()) + "\n")
        out("  length (chars): " + ", ".join(f"{k} {v}" for k, v in st["length"].items()) + "\n")


def _validate(args) -> tuple[int, dict]:
    report = _validate_args(args)
    if args.json:
        _write(json.dumps(report.to_json(), ensure_ascii=False) + "\n")
    else:
        _print_report(report)
    return report.exit_code, {"valid": len(report.records), "invalid": len(report.invalid)}


def _split(args) -> tuple[int, dict]:
    report = _validate_args(args)
    if report.fatal:
        sys.stderr.write(f"{report.source}: {report.fatal}\n")
        return 2, {"error": report.fatal}
    records = report.deduplicated() if args.drop_duplicates else report.records
    split = data.split_records(records, args.val, args.test, args.seed)
    out = {}
    for part in ("train", "val", "test"):
        path = data.save_dataset(f"{args.name}-{part}", getattr(split, part))
        out[part] = str(path)
        sys.stdout.write(f"{part}: {len(getattr(split, part))} rows -> {path}\n")
    return 0, out


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="validate, inspect and split JSONL datasets")
    sub = p.add_subparsers(dest="data_command", required=True)
    v = sub.add_parser("validate", help="check every line; exit 0 all valid, 1 some invalid, "
                       "2 not readable as JSONL", description=VALIDATE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(v)
    v.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    v.set_defaults(handler=_validate)
    s = sub.add_parser("split", help="stratified train/val/test split saved into the workspace")
    _add_common(s)
    s.add_argument("--name", required=True, help="saved as NAME-train/-val/-test")
    s.add_argument("--val", type=float, default=data.VAL_FRAC)
    s.add_argument("--test", type=float, default=data.TEST_FRAC)
    s.add_argument("--seed", type=int, default=data.SPLIT_SEED)
    s.add_argument("--drop-duplicates", action="store_true")
    s.set_defaults(handler=_split)
    a = sub.add_parser("audit", help="likely label errors (cleanlab) and near-duplicates that "
                       "fall in different splits", description=AUDIT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("path", help="JSONL file (or a saved dataset name)")
    a.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    a.add_argument("--folds", type=int, help="stratified k-fold for out-of-fold probabilities")
    a.add_argument("--top", type=int, help="flagged rows to list, worst first (0 = all)")
    a.add_argument("--base", help="encoder: bundled name, Hugging Face id or model folder")
    a.add_argument("--cosine", type=float, help="near-duplicate embedding cosine threshold")
    a.add_argument("--jaccard", type=float, help="near-duplicate char-3-gram Jaccard threshold")
    a.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    a.add_argument("--no-cache", dest="use_cache", action="store_false", default=None,
                   help="recompute the embeddings even when cached")
    a.set_defaults(handler=_audit)


AUDIT_HELP = """Find likely label errors and train/test leakage in a dataset.

Every text is embedded once with a frozen encoder (the bundled e5-small-ko by default; cached in
workspace/cache/embeddings), a logistic regression gives out-of-fold probabilities (stratified
k-fold), and cleanlab flags the rows whose label the held-out model doubts: each is listed with its
line, the given label, the model's label and its probability, worst first. Then pairs of
near-duplicates (embedding cosine or character-3-gram Jaccard over the thresholds) that fall in
different splits of the dataset's split (the one saved with it, or the defaults) are listed.
Exit status 0 when the audit ran (whatever it found).
"""

_AUDIT_FIELDS = {"folds": "folds", "top": "top", "base": "base", "cosine": "cosine_threshold",
                 "jaccard": "jaccard_threshold", "threads": "num_threads",
                 "use_cache": "use_cache"}


def _audit(args) -> tuple[int, object]:
    from core.audit import AuditConfig
    from core.cli import overrides

    return run_audit(AuditConfig(data=args.path, **overrides(args, _AUDIT_FIELDS)),
                     as_json=args.json)


def run_audit(config, as_json: bool = False) -> tuple[int, object]:
    """Run an audit with a progress bar; print a summary (or the JSON result)."""
    import dataclasses

    from core import audit
    from core.progress import CliProgress

    progress = CliProgress("audit")
    try:
        result = audit.run(config, on_progress=progress)
    finally:
        progress.close()
    payload = dataclasses.asdict(result)
    if as_json:
        _write(json.dumps(payload, ensure_ascii=False) + "\n")
    else:
        _print_audit(result)
    return 0, {k: v for k, v in payload.items() if k not in ("issues", "leaks")}


def _print_audit(result) -> None:
    out = _write
    how = result.split
    out(f"{result.source}: {result.count} records, out-of-fold accuracy "
        f"{result.oof_accuracy:.3f}, {result.flagged} flagged as likely mislabeled "
        f"({len(result.issues)} listed), {len(result.leaks)} near-duplicate pairs across splits "
        f"({result.seconds:.0f}s{', embeddings cached' if result.cached else ''})\n")
    if result.issues:
        out("likely label errors (line: given -> suggested, model probability, quality):\n")
    for i in result.issues:
        out(f"  line {i.line}: {i.label} -> {i.suggested} (p={i.confidence:.2f}, "
            f"q={i.quality:.3f})  {i.text}\n")
    sizes = ", ".join(f"{k} {v}" for k, v in how["sizes"].items())
    out(f"split: val {how['val_frac']}, test {how['test_frac']}, seed {how['seed']} "
        f"({how['source']}; {sizes})\n")
    for p in result.leaks:
        out(f"  line {p.line_a} ({p.split_a}) ~ line {p.line_b} ({p.split_b}): cosine "
            f"{p.cosine:.3f}, jaccard {p.jaccard:.2f}\n    {p.text_a} [{p.label_a}]\n"
            f"    {p.text_b} [{p.label_b}]\n")
