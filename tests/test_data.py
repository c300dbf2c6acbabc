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
]


@pytest.mark.parametrize("bad, reason", BAD_LINES)
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
