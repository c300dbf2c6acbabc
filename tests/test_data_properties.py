"""Property-based tests of dataset validation: any bytes give a report, never an exception.

The contract checked here (README, "data validate"): validation never raises; line numbers are
exact (a line ends at LF, CRLF or a lone CR); a line reported valid can be saved, loaded and
validated again with the same result; the CLI exits 0 / 1 / 2 as the report says; a generated row
the generate stage accepts is a valid dataset line.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from core import data
from core.cli import main
from core.generate.dedup import Rules, check_example
from core.labels import DEFAULT_LABEL_NAMES

# No .hypothesis/ folder in the working directory: tests write only to temporary folders.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "hypothesis-test-data")
BOUNDED = settings(max_examples=200, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
SMALL = settings(max_examples=60, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])

# Characters that have broken validators: NUL and other controls, lone surrogates, BOMs, combining
# marks, zero-width and line-separator characters, CR/LF, plus ordinary Korean and ASCII.
SPECIAL_CHARS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\ud800", "\udbff", "\udc00", "\udfff",
                 "\ufeff", "\u0301", "\u1160", "\u200b", "\u2028", "\u2029", "\r", "\n", "\t",
                 " ", "\u3000", "가", "힣", "ㅋ", "a", "Z", "0", "😀", '"', "\\", "{", "}"]
chars = st.sampled_from(SPECIAL_CHARS) | st.characters(codec=None, exclude_categories=())
texts = st.lists(chars, max_size=12).map("".join)  # st.text() drops surrogates here
labels = st.sampled_from(DEFAULT_LABEL_NAMES)
json_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | texts
                | st.integers(min_value=10**30, max_value=10**60))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
# Byte fragments that JSON lines are made of, so random files are often almost-valid.
FRAGMENTS = [b"{", b"}", b"[", b"]", b'"text"', b'"label"', b":", b",", b" ", b'"',
             '"기쁨"'.encode(), '"오늘 좋아"'.encode(), b"\n", b"\r", b"\r\n", b"\xef\xbb\xbf",
             b"\x00", b"\xff", b"\xed\xa0\x80", b"\\ud800", b"\\u0000", b"NaN", b"1e999",
             b"1" * 40, b"[" * 50, b"null", b"true", b"\x1f\x8b", b"PK\x03\x04"]
byte_files = st.binary(max_size=300) | st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join)


def _tokenizer():
    """A tiny Rust tokenizer, like training's: it refuses text Python cannot encode as UTF-8."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    tok = Tokenizer(WordLevel({"[UNK]": 0, "가": 1}, unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


TOKENIZER = _tokenizer()


def physical_lines(raw: bytes) -> list[bytes]:
    """The file's lines as the contract defines them (an independent re-statement of it)."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    lines = re.split(rb"\r\n|\r|\n", raw)
    if lines[-1] == b"":
        lines.pop()
    return lines


def assert_round_trip(report: data.Report, **options) -> None:
    """Valid records save, load and validate again to the same records."""
    if not report.records:
        return
    saved = data.to_jsonl(report.records).encode("utf-8")  # must not raise
    again = data.validate_bytes(saved, "<saved>", **options)
    assert again.exit_code == 0, again.invalid[:3]
    assert [r.to_json() for r in again.records] == [r.to_json() for r in report.records]
    assert [r.line for r in again.records] == list(range(1, len(report.records) + 1))


def assert_contract(raw: bytes, report: data.Report, **options) -> None:
    assert report.exit_code == (2 if report.fatal else 1 if report.invalid else 0)
    json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8")  # printable as is
    if report.fatal:
        assert not report.records and not report.invalid
        return
    lines = physical_lines(raw)
    valid = [r.line for r in report.records]
    invalid = [p.line for p in report.invalid]
    assert valid == sorted(set(valid)) and invalid == sorted(set(invalid))
    assert not set(valid) & set(invalid)
    assert len(valid) + len(invalid) + report.blank_lines == len(lines)
    for record in report.records:  # the record really is that line
        obj = json.loads(lines[record.line - 1].removeprefix(b"\xef\xbb\xbf"))
        assert obj[options.get("text_key", "text")] == record.text
    for problem in report.invalid:
        assert lines[problem.line - 1].strip() and problem.error
        assert "could not be checked" not in problem.error  # the safety net caught a bug
        problem.error.encode("utf-8")
    assert_round_trip(report, **options)


@BOUNDED
@given(byte_files)
def test_any_bytes_give_a_report_with_exact_line_numbers(raw):
    report = data.validate_bytes(raw, labels=None)
    assert_contract(raw, report, labels=None)


@BOUNDED
@given(json_values, st.sampled_from(["text", "label", "meta", "line"]), st.booleans())
def test_any_json_value_anywhere_in_a_line(value, where, ascii_escapes):
    obj = {"text": "오늘 시험 망쳤어", "label": "슬픔"}
    if where == "line":
        obj = value
    elif where == "meta":
        obj["extra"] = value
    else:
        obj[where] = value
    # ensure_ascii writes a lone surrogate as a "\ud800" escape; without it the raw surrogate
    # is written with surrogatepass, i.e. as bytes that are not UTF-8.
    line = json.dumps(obj, ensure_ascii=ascii_escapes).encode("utf-8", "surrogatepass")
    raw = "\n".join([json.dumps({"text": "좋은 아침", "label": "기쁨"}, ensure_ascii=False),
                     ""]).encode() + line + b"\n"
    report = data.validate_bytes(raw, labels=None)
    assert_contract(raw, report, labels=None)
    assert report.fatal is None and report.records[0].line == 1


@BOUNDED
@given(texts, st.booleans())
def test_any_unicode_text_is_valid_exactly_when_it_can_be_stored(text, ascii_escapes):
    line = json.dumps({"text": text, "label": "기쁨", "k": text}, ensure_ascii=ascii_escapes)
    raw = line.encode("utf-8", "surrogatepass") + b"\n"
    report = data.validate_bytes(raw)
    assert_contract(raw, report)
    has_surrogate = bool(re.search("[\ud800-\udfff]", text))
    has_control = bool(re.search("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]", text))
    if has_surrogate or has_control:
        assert report.exit_code == 1
        if ascii_escapes:  # the line is UTF-8; the reason names the character class
            assert re.search("surrogate|control character|whitespace|visible",
                             report.invalid[0].error)
    if report.records:
        assert report.records[0].text == text
        assert TOKENIZER.encode(text).ids  # a Rust tokenizer takes it (a surrogate would raise)


def valid_record(text: str, label: str) -> dict:
    return {"text": text, "label": label}


safe_text = st.text(st.sampled_from(list("가나다라마바사 아자차카타파하ㅋ!?.abcXYZ019😀\t")),
                    min_size=1, max_size=15).filter(lambda t: t.strip())
junk_line = st.one_of(
    st.binary(max_size=10).map(lambda b: b"#" + b.replace(b"\n", b"").replace(b"\r", b"")),
    st.binary(max_size=10).map(lambda b: b'{"text": ' + b.replace(b"\n", b"").replace(b"\r", b"")),
    st.just(b'{"text": "\\ud800", "label": "\xea\xb8\xb0\xec\x81\xa8"}'),
    st.just(b'{"text": "a\\u0000b", "label": "\xea\xb8\xb0\xec\x81\xa8"}'),
    st.just(b'{"text": "a", "label": "\xea\xb8\xb0\xec\x81\xa8", "n": ' + b"9" * 5000 + b"}"),
    st.just(b'{"text": "a", "label": "\xea\xb8\xb0\xec\x81\xa8", "x": NaN}'),
    st.just(b'{"text": "a", "text": "b", "label": "\xea\xb8\xb0\xec\x81\xa8"}'),
    st.just(b'{"text": "a", "label": "\xea\xb8\xb0\xec\x81\xa8", "d": ' + b"[" * 3000
            + b"]" * 3000 + b"}"),
    st.just(b"\x00\x00\x00\xff\xfe"),
    st.just(b"[1, 2]"),
)


@BOUNDED
@given(st.lists(st.tuples(safe_text, labels), min_size=1, max_size=8),
       st.lists(st.tuples(st.integers(0, 8), junk_line), max_size=8),
       st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1, max_size=3),
       st.booleans(), st.booleans())
def test_valid_lines_survive_junk_between_them(rows, junk, endings, bom, bom_per_line):
    assume(len(junk) <= len(rows))
    lines = [(True, json.dumps(valid_record(t, lab), ensure_ascii=False).encode())
             for t, lab in rows]
    for pos, bad in sorted(junk, reverse=True):
        lines.insert(min(pos, len(lines)), (False, bad))
    body = b""
    for i, (_, line) in enumerate(lines):
        prefix = b"\xef\xbb\xbf" if (bom and i == 0) or (bom_per_line and i % 3 == 2) else b""
        body += prefix + line + endings[i % len(endings)]
    report = data.validate_bytes(body)
    assert report.fatal is None, report.fatal
    expected = [i + 1 for i, (ok, _) in enumerate(lines) if ok]
    assert [r.line for r in report.records] == expected
    assert [r.to_json() for r in report.records] == [valid_record(t, lab) for t, lab in rows]
    bad = [i + 1 for i, (ok, _) in enumerate(lines) if not ok]
    assert [p.line for p in report.invalid] == bad
    assert_contract(body, report)


def cli_validate(raw: bytes, *flags: str) -> tuple[int, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        path.write_bytes(raw)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["data", "validate", str(path), "--json", *flags])
    return code, json.loads(out.getvalue())


@SMALL
@given(byte_files)
def test_cli_exit_code_follows_the_report(raw):
    code, printed = cli_validate(raw, "--any-label")
    report = data.validate_bytes(raw, labels=None)
    assert code == report.exit_code == (2 if printed["fatal"] else 1 if printed["invalid"] else 0)
    assert printed["valid"] == len(report.records)
    assert [p["line"] for p in printed["invalid"]] == [p.line for p in report.invalid]


RULES = Rules(DEFAULT_LABEL_NAMES, min_chars=1, max_chars=300, min_hangul_ratio=0.0)


@BOUNDED
@given(st.dictionaries(st.sampled_from(["text", "label", "x"]), json_values | labels, max_size=3)
       | st.fixed_dictionaries({"text": texts, "label": labels}))
def test_a_generated_row_that_is_accepted_is_a_valid_dataset_line(item):
    row, reason = check_example(item, RULES)
    if row is None:
        assert isinstance(reason, str) and reason
        return
    line = json.dumps(row, ensure_ascii=False).encode("utf-8")  # must not raise
    report = data.validate_bytes(line)
    assert report.exit_code == 0, report.invalid
    assert report.records[0].to_json() == row
