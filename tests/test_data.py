"""Dataset validation: exact line numbers, exit codes, nothing valid lost."""

import json
import subprocess
import sys

import pytest

from core import data
from core.errors import ConfigError, DatasetError
from core.paths import REPO_ROOT


def cli(*args, cwd=REPO_ROOT):
    proc = subprocess.run([sys.executable, "-m", "core", "data", "validate", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=60)
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc


def write(tmp_path, content: bytes | str, name="d.jsonl"):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def line(text="오늘 시험 망쳤어", label="슬픔", **extra):
    return json.dumps({"text": text, "label": label, **extra}, ensure_ascii=False)


def test_valid_file_with_bom_crlf_and_blank_lines(tmp_path):
    body = "\ufeff" + line() + "\r\n\r\n" + line("승진했다!!", "기쁨", src="x") + "\r\n   \n"
    report = data.validate_bytes(body.encode())
    assert report.exit_code == 0 and report.blank_lines == 2
    assert [r.line for r in report.records] == [1, 3]
    assert report.records[1].meta == {"src": "x"}
    out = cli(write(tmp_path, body), "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout)["valid"] == 2 and json.loads(out.stdout)["invalid"] == []


BAD_LINES = [
    ('{"text": "a", "label": "기쁨"', "invalid JSON"),
    ('["a", "기쁨"]', "expected a JSON object"),
    ('"just a string"', "expected a JSON object"),
    ('{"label": "기쁨"}', 'missing "text"'),
    ('{"text": "", "label": "기쁨"}', '"text" is empty'),
    ('{"text": "   \\t", "label": "기쁨"}', "only whitespace"),
    ('{"text": 5, "label": "기쁨"}', "must be a string"),
    ('{"text": null, "label": "기쁨"}', "must be a string"),
    ('{"text": "좋다"}', 'missing "label"'),
    ('{"text": "좋다", "label": null}', '"label" is null'),
    ('{"text": "좋다", "label": "행복"}', 'unknown label "행복"'),
    ('{"text": "좋다", "label": 3}', "must be a string"),
    ('{"text": "' + "가" * 513 + '", "label": "기쁨"}', "over the maximum of 512"),
    # Lines that used to crash validation, or pass it and then fail to save (issue #13).
    ('{"text": "\\ud800", "label": "기쁨"}', '"text" contains a lone surrogate \\ud800'),
    ('{"text": "좋아\\udc00요", "label": "기쁨"}', "lone surrogate"),
    ('{"text": "좋아", "label": "기쁨\\ud83d"}', '"label" contains a lone surrogate'),
    ('{"text": "좋아", "label": "기쁨", "\\udfff": 1}', "a key in the line contains a lone"),
    ('{"text": "좋아", "label": "기쁨", "m": {"k": [1, "\\ud800"]}}', 'field "m"["k"][1]'),
    ('{"text": "좋아", "label": "기쁨", "m": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested"),
    ('{"text": "좋아", "label": "기쁨", "m": ' + "[" * 70 + "]" * 70 + "}", "more than 64"),
    ('{"text": "좋아", "label": "기쁨", "n": ' + "7" * 100_000 + "}", "100000 digits"),
    ('{"text": "좋아", "label": "기쁨", "n": -' + "7" * 5000 + "}", "5000 digits"),
    ('{"text": "좋아", "label": "기쁨", "x": NaN}', "NaN is not valid JSON"),
    ('{"text": "좋아", "label": "기쁨", "x": -Infinity}', "-Infinity is not valid JSON"),
    ('{"text": "좋아", "label": "기쁨", "x": 1e999}', "overflows to infinity"),
    ('{"text": "좋\\u0000아", "label": "기쁨"}', "control character U+0000 (NUL) at character 2"),
    ('{"text": "좋아\\u001b[31m", "label": "기쁨"}', "control character U+001B"),
    ('{"text": "좋\x00아", "label": "기쁨"}', "invalid JSON: Invalid control character"),
    ('{"text": "\\u200b\\u0301", "label": "기쁨"}', "no visible characters"),
    ('{"text": "좋아", "text": "싫어", "label": "기쁨"}', 'the key "text" appears twice'),
    ('{"text": "좋아", "label": "기쁨", "m": {"a": 1, "a": 2}}', 'the key "a" appears twice'),
    ('{"text": "좋아", "label": "기쁨"} \ufeff', "invalid JSON"),
]


@pytest.mark.parametrize("bad, reason", BAD_LINES, ids=[r[:40] for _, r in BAD_LINES])
def test_each_bad_line_reported_with_its_line_number(bad, reason):
    body = "\n".join([line(), "", bad, line("내일 면접인데 잠이 안 와", "불안")]) + "\n"
    report = data.validate_bytes(body.encode())
    assert [(p.line, reason in p.error) for p in report.invalid] == [(3, True)]
    assert [r.line for r in report.records] == [1, 4]
    assert report.exit_code == 1


def test_cli_json_lists_every_invalid_line(tmp_path):
    lines = [line(), "{oops", line(label="없는감정"), line("퇴근!", "기쁨"), "[]", "", line("흠", "중립")]
    path = write(tmp_path, "\n".join(lines))  # no final newline: the last line still counts
    out = cli(path, "--json")
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert [p["line"] for p in result["invalid"]] == [2, 3, 5]
    assert result["valid"] == 3
    assert all(isinstance(p["error"], str) and p["error"] for p in result["invalid"])
    text = cli(path)
    assert text.returncode == 1 and "line 2:" in text.stdout and "line 5:" in text.stdout


def test_non_utf8_line_is_reported_and_the_rest_kept(tmp_path):
    body = (line() + "\n").encode() + '{"text": "화난다", "label": "분노"}\n'.encode("cp949")
    body += (line("됐다", "기쁨") + "\n").encode()
    report = data.validate_bytes(body)
    assert [p.line for p in report.invalid] == [2]
    assert "UTF-8" in report.invalid[0].error and "re-encode" in report.invalid[0].error
    assert cli(write(tmp_path, body), "--json").returncode == 1


@pytest.mark.parametrize("content, words", [
    (json.dumps([{"text": "a", "label": "기쁨"}]), "JSON array"),
    ('[\n  {"text": "a", "label": "기쁨"}\n]\n', "JSON array"),
    ('{\n  "text": "a",\n  "label": "기쁨"\n}\n', "several lines"),
    ("text,label\n좋아,기쁨\n", "CSV"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"PK\x03\x04\x14\x00\x00\x00", "binary"),
    ('{"text": "화난다", "label": "분노"}\n'.encode("utf-16"), "UTF-16"),
    ('{"text": "화난다", "label": "분노"}\n{"text": "슬퍼", "label": "슬픔"}\n'.encode("cp949"),
     "not UTF-8"),
    ("", "empty"),
    ("\n\n  \n", "empty"),
])
def test_whole_file_not_jsonl_exits_2_with_one_message(tmp_path, content, words):
    path = write(tmp_path, content)
    out = cli(path, "--json")
    assert out.returncode == 2
    result = json.loads(out.stdout)
    assert words in result["fatal"] and "expected JSON Lines" in result["fatal"]
    assert result["valid"] == 0
    plain = cli(path)
    assert plain.returncode == 2 and words in plain.stdout


def test_missing_file_exits_2(tmp_path):
    out = cli(tmp_path / "nope.jsonl")
    assert out.returncode == 2 and "cannot read" in out.stdout


def test_custom_labels_and_key_mapping(tmp_path):
    rows = [{"sentence": "야호", "emotion": "happy", "id": 1},
            {"sentence": "에휴", "emotion": "sad", "id": 2},
            {"sentence": "흠", "emotion": "angry", "id": 3}]
    path = write(tmp_path, "\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    out = cli(path, "--labels", "happy,sad", "--text-key", "sentence", "--label-key", "emotion",
              "--json")
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert result["valid"] == 2 and [p["line"] for p in result["invalid"]] == [3]
    report = data.validate_file(path, labels=None, text_key="sentence", label_key="emotion")
    assert report.records[0].to_json() == {"text": "야호", "label": "happy", "id": 1}


def test_max_chars_option(tmp_path):
    path = write(tmp_path, line("가" * 20, "기쁨"))
    assert cli(path, "--max-chars", "10").returncode == 1
    assert cli(path, "--max-chars", "20").returncode == 0


def test_nfd_label_is_accepted():
    import unicodedata
    report = data.validate_bytes(line(label=unicodedata.normalize("NFD", "슬픔")).encode())
    assert report.exit_code == 0 and report.records[0].label == "슬픔"


def test_duplicates_exact_and_normalized():
    body = "\n".join([
        line("오늘  진짜 최고야", "기쁨"),
        line("오늘 진짜 최고야", "기쁨"),  # whitespace
        line("ＯＫ 알겠어", "중립"),
        line("ok 알겠어", "중립"),  # NFKC + case
        line("오늘  진짜 최고야", "분노"),  # exact copy of line 1, another label
    ])
    report = data.validate_bytes(body.encode())
    dups = {(d.line, d.first_line, d.kind, d.same_label) for d in report.duplicates}
    assert dups == {(2, 1, "normalized", True), (4, 3, "normalized", True), (5, 1, "exact", False)}
    assert report.exit_code == 0
    assert [r.line for r in report.deduplicated()] == [1, 3]


def test_stats_counts_and_lengths():
    records = [data.Record("가" * n, lab) for n, lab in [(2, "기쁨"), (4, "기쁨"), (10, "슬픔")]]
    st = data.stats(records)
    assert st["labels"] == {"기쁨": 2, "슬픔": 1}
    assert st["length"]["min"] == 2 and st["length"]["max"] == 10 and st["length"]["p50"] == 4


def test_split_is_stratified_deterministic_and_complete():
    records = [data.Record(f"문장 {lab} {i}", lab) for lab in "ABC" for i in range(20)]
    records += [data.Record("드문 예 1", "D"), data.Record("드문 예 2", "D"),
                data.Record("드문 예 3", "D")]
    a = data.split_records(records, 0.2, 0.2, seed=1)
    b = data.split_records(records, 0.2, 0.2, seed=1)
    c = data.split_records(records, 0.2, 0.2, seed=2)
    assert [r.text for r in a.train] == [r.text for r in b.train]
    assert [r.text for r in a.train] != [r.text for r in c.train]
    assert sorted(r.text for r in a.train + a.val + a.test) == sorted(r.text for r in records)
    for part in (a.val, a.test):
        counts = {lab: sum(r.label == lab for r in part) for lab in "ABCD"}
        assert counts == {"A": 4, "B": 4, "C": 4, "D": 1}
    with pytest.raises(ConfigError):
        data.split_records(records, 0.6, 0.5)


def test_save_is_atomic_and_named(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    path = data.save_dataset("my set", [data.Record("좋아", "기쁨", {"k": 1})])
    assert path == tmp_path / "datasets" / "my set.jsonl"
    assert json.loads(path.read_text(encoding="utf-8")) == {"text": "좋아", "label": "기쁨", "k": 1}
    assert not list(path.parent.glob(".*tmp"))
    assert "my set" in data.list_datasets() and "seed" in data.list_datasets()
    with pytest.raises(ConfigError):
        data.save_dataset("../evil", [data.Record("좋아", "기쁨")])
    with pytest.raises(DatasetError):
        data.resolve_dataset("no-such-dataset")


def test_seed_set_is_valid_and_balanced():
    report = data.validate_file(data.paths.SEED_PATH)
    assert report.exit_code == 0, report.invalid[:3]
    assert not report.duplicates
    counts = data.stats(report.records)["labels"]
    assert sum(counts.values()) >= 1400
    assert set(counts) == set(data.DEFAULT_LABEL_NAMES) and min(counts.values()) >= 200


def in_process_cli(*args) -> tuple[int, str]:
    """`python -m core data validate ARGS` in this process, stdout as a strict UTF-8 stream."""
    import contextlib
    import io

    from core.cli import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    with contextlib.redirect_stdout(out):
        code = main(["data", "validate", *map(str, args)])
    return code, out.buffer.getvalue().decode("utf-8")


def test_one_binary_ish_line_keeps_the_valid_lines(tmp_path):
    """Regression: a NUL byte in the first 64 KB made the whole file "binary" (issue #13)."""
    body = (line() + "\n").encode() + b'{"text": "\x00\x01\xff\xfe\x00", "label": "\x00"}\n'
    body += b"\x00\x00\x00\x00\xde\xad\xbe\xef\n" + (line("됐다", "기쁨") + "\n").encode()
    report = data.validate_bytes(body)
    assert report.fatal is None
    assert [r.line for r in report.records] == [1, 4] and [p.line for p in report.invalid] == [2, 3]
    assert in_process_cli(write(tmp_path, body), "--json")[0] == 1


@pytest.mark.parametrize("content, words", [
    (b"\x1f\x8b\x08\x00" + bytes(range(256)), "gzip"),
    (b"%PDF-1.7\n" + bytes(range(256)), "PDF"),
    (b"SQLite format 3\x00" + bytes(200), "SQLite"),
    ('{"text": "화난다", "label": "분노"}\n'.encode("utf-16-le"), "UTF-16"),
    (bytes(range(256)) * 20, "binary"),
])
def test_files_that_really_are_not_text_exit_2(content, words):
    report = data.validate_bytes(content)
    assert report.exit_code == 2 and words in report.fatal and not report.records


def test_cr_only_and_mixed_line_endings_number_lines_like_an_editor():
    rows = [line("하나", "기쁨"), line("둘", "슬픔"), "{broken", line("넷", "분노")]
    body = rows[0] + "\r" + rows[1] + "\r\n" + "\r" + rows[2] + "\n" + rows[3] + "\r"
    report = data.validate_bytes(body.encode())
    assert [r.line for r in report.records] == [1, 2, 5] and report.blank_lines == 1
    assert [p.line for p in report.invalid] == [4]
    classic_mac = "\r".join(rows[:2] + [rows[3]]).encode()  # CR only, no final newline
    assert [r.text for r in data.validate_bytes(classic_mac).records] == ["하나", "둘", "넷"]


def test_a_bom_in_the_middle_of_the_file_is_ignored():
    """`cat a.jsonl b.jsonl` where b.jsonl starts with a BOM: the BOM starts line 2."""
    body = ("\ufeff" + line() + "\n\ufeff" + line("됐다", "기쁨") + "\n").encode()
    report = data.validate_bytes(body)
    assert report.exit_code == 0 and [r.line for r in report.records] == [1, 2]
    inside = data.validate_bytes((line() + "\n" + line("됐\ufeff다", "기쁨") + "\n").encode())
    assert inside.exit_code == 0 and inside.records[1].text == "됐\ufeff다"  # in a string: text


@pytest.mark.parametrize("content", [
    "[" * 100_000 + "]" * 100_000,  # RecursionError in the whole-file shape check
    "[" + "1" * 5000 + "]\n",  # ValueError (int digit limit) in the whole-file shape check
    "{" + '"a": ' * 50_000 + "1" + "}" * 50_000,
    "[" * 100_000 + "\n" + "[" * 100_000,
])
def test_whole_file_parser_traps_give_exit_2_not_a_traceback(tmp_path, content):
    report = data.validate_bytes(content.encode())
    assert report.exit_code in (1, 2)
    code, out = in_process_cli(write(tmp_path, content), "--json")
    assert code == report.exit_code and json.loads(out)["valid"] == 0


def test_valid_lines_with_strange_unicode_round_trip_exactly(tmp_path, monkeypatch):
    texts = ["e\u0301\u0301 조합", "탭\t과 줄\n바꿈\r", "\u2028줄 구분\u2029", "😀👍🏽 이모지", "ㅋㅋㅋ\u200d",
             "\ufeffBOM 글자"]
    meta = {"n": 10 ** 900, "f": 1e308, "neg": -0.0, "deep": [[[{"x": None}]]], "\u2028": "키"}
    body = "".join(line(t, "기쁨", **meta) + "\n" for t in texts).encode()
    report = data.validate_bytes(body)
    assert report.exit_code == 0, report.invalid
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    path = data.save_dataset("strange", report.records)
    again = data.validate_file(path)
    assert [r.to_json() for r in again.records] == [r.to_json() for r in report.records]
    assert [r.text for r in again.records] == texts


def test_key_mapping_that_would_overwrite_a_text_key_is_invalid():
    raw = json.dumps({"sentence": "야호", "emotion": "기쁨", "text": "다른 문장"}, ensure_ascii=False)
    report = data.validate_bytes(raw.encode(), text_key="sentence", label_key="emotion")
    assert report.exit_code == 1 and '"text" key besides the mapped "sentence"' in report.invalid[0].error
    swapped = json.dumps({"text": "기쁨", "label": "야호"}, ensure_ascii=False)
    report = data.validate_bytes(swapped.encode(), labels=None, text_key="label", label_key="text")
    assert report.exit_code == 0 and report.records[0].to_json() == {"text": "야호", "label": "기쁨"}


@pytest.mark.parametrize("record, words", [
    (data.Record("좋아\ud800", "기쁨"), "lone surrogate"),
    (data.Record("좋아", "기쁨", {"k\udc00": 1}), "lone surrogate"),
    (data.Record("좋\x00아", "기쁨"), "control character"),
    (data.Record("좋아", "기쁨", {"x": float("nan")}), "not valid JSON"),
    (data.Record("좋아", "기쁨", {"x": {1, 2}}), "not writable as JSON"),
])
def test_saving_a_record_that_cannot_be_stored_is_a_dataset_error(tmp_path, monkeypatch, record,
                                                                   words):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    record.line = 7
    with pytest.raises(DatasetError, match=words) as err:
        data.save_dataset("bad", [data.Record("괜찮아", "기쁨"), record])
    assert err.value.line == 7
    assert not (tmp_path / "datasets" / "bad.jsonl").exists()


def test_cli_output_survives_names_and_values_stdout_cannot_encode(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "ws"))
    path = os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xff\xfe-name.jsonl")  # not UTF-8
    with open(os.fsencode(path), "wb") as f:
        f.write((line() + '\n{"text": "좋아", "label": "\\ud800"}\n').encode())
    for flags in (["--json"], [], ["--any-label"]):
        code, out = in_process_cli(path, *flags)
        assert code == 1 and "lone surrogate" in out
    assert in_process_cli("x" * 5000)[0] == 2  # a name too long for the file system


def test_dataset_page_shows_reports_for_nasty_uploads(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import streamlit as st

    class Upload:
        def __init__(self, name, content):
            self.name, self.getvalue = name, lambda: content

    nasty = "\n".join([line(), '{"text": "\\ud800", "label": "기쁨"}',
                       '{"text": "좋아", "label": "기쁨", "m": ' + "[" * 50_000 + "]" * 50_000 + "}",
                       '{"text": "좋아", "label": "기쁨", "n": ' + "9" * 10_000 + "}",
                       '{"text": "a\\u0000", "label": "기쁨"}\r' + line("됐다", "기쁨")]).encode()
    files = [Upload("nasty.jsonl", nasty), Upload("zip.jsonl", b"PK\x03\x04" + bytes(100))]
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    monkeypatch.setattr(st, "file_uploader", lambda *a, **k: files)
    at = AppTest.from_file(str(REPO_ROOT / "pages/1_Dataset.py"), default_timeout=60)
    at.run()
    at.radio[0].set_value("Upload JSONL files").run()
    assert not at.exception, at.exception
    assert any("nasty.jsonl" in w.value and "4 invalid" in w.value for w in at.warning)
    assert list(at.dataframe[0].value["line"]) == [2, 3, 4, 5]
    assert any("zip.jsonl" in e.value and "binary" in e.value for e in at.error)
    assert at.metric[0].value == "2"  # lines 1 and 6 are valid


def test_generated_rows_with_characters_a_dataset_refuses_are_rejected():
    from core.generate.dedup import Rules, check_example
    from core.generate.prompts import MalformedReply, parse_examples

    rules = Rules(data.DEFAULT_LABEL_NAMES)
    for text in ["시험에 붙었어\ud800", "시험에\x00 붙었어", "시험에 붙었어\x1b[0m", "\u200b\u200b\u0301\u0301"]:
        assert check_example({"text": text, "label": "기쁨"}, rules) == (None, "bad_characters")
    deep = '{"examples": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(MalformedReply):
        parse_examples(deep)
    big = '{"examples": [{"text": "시험에 붙었어", "label": "기쁨", "n": ' + "1" * 5000 + "}]}"
    assert parse_examples(big)[0] == []  # the item no parser can read is dropped, not a crash
