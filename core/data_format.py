"""Is a file JSON Lines at all? Whole-file checks, and how a file is cut into numbered lines.

A file is refused as a whole only on evidence about the whole file: a binary signature, a UTF-16
byte order mark, mostly non-text bytes, no UTF-8 line at all, or a shape that is not JSON Lines (one
array, one object over several lines, CSV). Anything less is reported line by line by
``core.data.validate_bytes``, which keeps the valid lines.
"""

from __future__ import annotations

import re

from core import safe_json

_EXPECTED = 'expected JSON Lines: UTF-8 text, one {"text": ..., "label": ...} object per line'
_MAGIC = ((b"PK\x03\x04", "a zip archive, e.g. .xlsx or .docx"), (b"PK\x05\x06", "a zip archive"),
          (b"\x1f\x8b", "gzip-compressed"), (b"%PDF", "a PDF"), (b"\x89PNG", "a PNG image"),
          (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"), (b"\xfd7zXZ\x00", "an xz archive"),
          (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office file, e.g. .xls"),
          (b"SQLite format 3\x00", "an SQLite database"), (b"PAR1", "a Parquet file"),
          (b"\x7fELF", "a program"))
# A file with more non-text bytes than this share is binary. Random data scores about 0.6, text
# about 0; refusing a file loses its valid lines, so only "mostly not text" counts.
NON_TEXT_SHARE = 0.5
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_LINE_END = re.compile(rb"\r\n|\r|\n")


def split_lines(body: bytes) -> list[bytes]:
    """The lines of a file as an editor numbers them: each ends at LF, CRLF or a lone CR."""
    lines = _LINE_END.split(body)
    if lines[-1] == b"":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    return lines


def _non_text_bytes(line: bytes) -> int:
    """Control bytes, plus (in a line that is not UTF-8, CP949 or UTF-8 with encoded surrogates)
    the bytes that are not part of a UTF-8 character."""
    bad = len(_CONTROL_BYTES.findall(line))
    if not any(_decodes(line, *how) for how in (("utf-8",), ("cp949",), ("utf-8", "surrogatepass"))):
        bad += len(line) - len(line.decode("utf-8", errors="ignore").encode("utf-8"))
    return bad


def _not_text(data: bytes, lines: list[bytes]) -> str | None:
    """Why the bytes are not text at all, or None. Only evidence about the whole file counts
    (a signature, a UTF-16 mark, mostly non-text bytes): a few bad lines are reported one by one."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        return f"the file is UTF-16 encoded; {_EXPECTED}. Re-encode it as UTF-8 and try again."
    kind = next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)
    if kind:
        return f"this is a binary file ({kind}), not text; {_EXPECTED}."
    nuls = sorted((data[0::2].count(0) / max(1, len(data[0::2])),
                   data[1::2].count(0) / max(1, len(data[1::2]))))
    if len(data) >= 8 and nuls[1] > 0.4 and nuls[0] < 0.05:
        return (f"the file looks UTF-16 encoded (without a byte order mark); {_EXPECTED}. "
                "Re-encode it as UTF-8 and try again.")
    bad = sum(map(_non_text_bytes, lines))
    if bad > NON_TEXT_SHARE * len(data):
        return (f"this is a binary file ({100 * bad // len(data)}% of its bytes are not text), "
                f"not text; {_EXPECTED}.")
    return None


def whole_file_problem(data: bytes, body: bytes, lines: list[bytes]) -> str | None:
    """Why the bytes are not a JSONL text file at all, or None."""
    if not body.strip():
        return f"the file is empty; {_EXPECTED}."
    problem = _not_text(data, lines)
    if problem:
        return problem
    lines = [ln for ln in lines if ln.strip()]
    # UTF-8 with encoded surrogates (ED A0 80...) is broken UTF-8, not CP949 that it may pass for.
    cp949 = _decodes(body, "cp949") and not _decodes(body, "utf-8", "surrogatepass")
    # Not one UTF-8 line: the file is in another encoding (a single line of it is reported as
    # that line's problem, unless it is CP949 as a whole).
    if not any(_decodes(ln) for ln in lines) and (len(lines) > 1 or cp949):
        hint = " (it decodes as CP949/EUC-KR)" if cp949 else ""
        return (f"the file is not UTF-8 text{hint}; {_EXPECTED}. Re-encode it as UTF-8, "
                "e.g. `iconv -f cp949 -t utf-8 in.jsonl > out.jsonl`.")
    text = body.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped.startswith("{") and len(lines) > 1):
        whole = safe_json.loads_lenient(text)
        if isinstance(whole, list):
            return (f"the file is one JSON array, not JSON Lines; {_EXPECTED}. "
                    "Convert it with `jq -c '.[]' in.json > out.jsonl`.")
        if isinstance(whole, dict) and len(lines) > 1:
            return (f"the file is one JSON object spread over several lines; {_EXPECTED}. "
                    "Write each record on a single line (e.g. `jq -c .`).")
    if not any(ln.lstrip().startswith(b"{") or _is_json(ln) for ln in lines):
        first = lines[0].decode("utf-8", errors="replace")[:80]
        kind = ("JSON that is not one object per line" if first.lstrip().startswith("[")
                else "CSV/TSV" if re.search(r"[,\t;]", first) else "plain text")
        return f"the file looks like {kind} (first line: {first!r}), not JSON Lines; {_EXPECTED}."
    return None


def _is_json(line: bytes) -> bool:
    return safe_json.loads_lenient(line.decode("utf-8", errors="replace")) is not None


def _decodes(data: bytes, encoding: str = "utf-8", errors: str = "strict") -> bool:
    try:
        data.decode(encoding, errors)
        return True
    except UnicodeDecodeError:
        return False
