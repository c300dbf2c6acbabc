"""The generate stage against a loopback OpenAI-compatible server (tests/fake_openai.py)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import ConfigError, MissingAPIKey
from core.generate import APIRequestError, GenerateConfig, estimate, run
from core.generate.cli import register
from core.generate.dedup import Deduper, Rules, _gram_set, check_example, jaccard, normalize_text
from core.generate.plan import plan_requests, split_counts
from core.generate.prompts import DEFAULT_AXES, axes_for, parse_examples, response_format
from core.generate.store import batch_input_path, manifest_path, tail_rows
from core.labels import DEFAULT_LABEL_NAMES
from core.progress import EVENTS_ENV, CliProgress, EventLog

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai import FakeOpenAI, Faults  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-test-K3y-must-never-leak-0123456789"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def cfg(tmp_path, url, name="out.jsonl", **kw) -> GenerateConfig:
    base = dict(out=tmp_path / name, n=140, per_request=20, concurrency=4, base_url=url,
                request_timeout_s=2.0, backoff_base_s=0.02, backoff_max_s=0.2)
    return GenerateConfig(**{**base, **kw})


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_valid_unique(rows: list[dict], labels=DEFAULT_LABEL_NAMES, threshold=0.8) -> None:
    rules = Rules(tuple(labels))
    for r in rows:
        rec, reason = check_example(r, rules)
        assert reason is None, (r, reason)
        assert {"request_id", "model", "axes"} <= set(r)
    keys = [normalize_text(r["text"]) for r in rows]
    assert len(set(keys)) == len(keys), "exact duplicates in the output"
    grams = [_gram_set(r["text"], 3) for r in rows]
    for i in range(len(grams)):  # brute force: the reference for the indexed dedup
        for j in range(i):
            inter = len(grams[i] & grams[j])
            assert inter / (len(grams[i]) + len(grams[j]) - inter) < threshold, (rows[i], rows[j])


def assert_no_key(root: Path, key: str = KEY) -> None:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert key.encode() not in p.read_bytes(), f"API key leaked into {p}"


# --- pure parts -------------------------------------------------------------------------------

def test_normalize_and_near_duplicates():
    assert normalize_text("  오늘  정말\t좋아ＡＢ ") == "오늘 정말 좋아ab"
    d = Deduper(threshold=0.8)
    assert d.add("오늘 회사에서 칭찬을 받아서 하루 종일 기분이 좋았어") is None
    assert d.add("오늘  회사에서 칭찬을 받아서 하루 종일 기분이 좋았어") == "duplicate"
    assert d.add("오늘 회사에서 칭찬을 받아서 하루종일 기분이 좋았어!!") == "near_duplicate"
    assert d.add("오늘 회사에서 칭찬을 받아서 하루 종일 기분이 좋았어요") == "near_duplicate"
    assert d.add("내일 발표가 있는데 준비를 하나도 못 해서 걱정이야") is None
    assert len(d) == 2


def test_indexed_dedup_matches_brute_force_and_is_fast():
    rng = random.Random(1)
    words = ["오늘", "회사", "친구", "정말", "너무", "기분", "좋아", "슬퍼", "화나", "걱정", "시험", "엄마",
             "여행", "비가", "와서", "그냥", "진짜", "어제", "내일", "같이", "혼자", "밥을", "먹었어"]
    base = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) for _ in range(300)]
    texts = []
    for t in base:  # every base text with a few edited copies: many true near-duplicates
        texts.append(t)
        for _ in range(rng.randint(0, 2)):
            w = t.split()
            w[rng.randrange(len(w))] = rng.choice(words)
            texts.append(" ".join(w) + rng.choice(["", "!", "요"]))
    d, kept, expected = Deduper(threshold=0.7), [], []
    got = [d.add(t) is None for t in texts]
    for t in texts:
        ok = (normalize_text(t) not in {normalize_text(k) for k in kept}
              and all(jaccard(t, k) < 0.7 for k in kept))
        expected.append(ok)
        if ok:
            kept.append(t)
    assert got == expected
    assert 0 < sum(got) < len(texts)

    big = [" ".join(rng.choice(words + [f"{w}{i}" for i, w in enumerate(words)])
                    for _ in range(rng.randint(5, 12))) for _ in range(5000)]
    d, t0 = Deduper(threshold=0.8), time.perf_counter()
    for t in big:
        d.add(t)
    assert time.perf_counter() - t0 < 5.0
    assert d.comparisons < 5000 * 5000 / 2 / 20  # the prefix filter skips almost all pairs


def test_check_example_rules():
    rules = Rules(("기쁨", "슬픔"), min_chars=4, max_chars=30)
    nfd = "\u1100\u1175\u1108\u1173\u11b7"  # 기쁨 typed in NFD
    assert check_example({"text": " 시험에 붙었어! ", "label": nfd}, rules) == (
        {"text": "시험에 붙었어!", "label": "기쁨"}, None)
    assert check_example({"text": "시험에 붙었어", "label": "행복"}, rules)[1] == "wrong_label"
    assert check_example({"text": "좋아", "label": "기쁨"}, rules)[1] == "too_short"
    assert check_example({"text": "가" * 31, "label": "기쁨"}, rules)[1] == "too_long"
    assert check_example({"text": "I passed the exam 야호", "label": "기쁨"}, rules)[1] == "not_korean"
    assert check_example({"label": "기쁨"}, rules)[1] == "missing_text"
    assert check_example("시험", rules)[1] == "not_object"


def test_parse_examples_salvages_truncated_and_rejects_malformed():
    full = json.dumps({"examples": [{"text": "가나다라", "label": "기쁨"},
                                    {"text": "마바사아", "label": "슬픔"}]}, ensure_ascii=False)
    assert parse_examples(full) == (json.loads(full)["examples"], False)
    items, truncated = parse_examples(full[: full.index("마바") + 2])
    assert truncated and items == [{"text": "가나다라", "label": "기쁨"}]
    assert parse_examples("```json\n" + full + "\n```")[0][1]["label"] == "슬픔"
    from core.generate.prompts import MalformedReply
    for bad in ("", "Sure! here you go", '{"foo": 1}'):
        with pytest.raises(MalformedReply):
            parse_examples(bad)


def test_schema_enum_and_axes_rotation():
    labels = ("기쁨", "슬픔", "중립")
    rf = response_format(labels, "json_schema")
    assert rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["schema"]["properties"]["examples"]["items"]["properties"]["label"][
        "enum"] == list(labels)
    assert response_format(labels, "json_object") == {"type": "json_object"}
    seen = {tuple(axes_for(i, DEFAULT_AXES).values()) for i in range(50)}
    assert len(seen) == 50  # consecutive requests never repeat a combination early
    assert axes_for(7, DEFAULT_AXES) == axes_for(7, DEFAULT_AXES)


def test_split_and_plan_never_overshoot():
    need = {"a": 715, "b": 714, "c": 3, "d": 0}
    c = split_counts(need, 50)
    assert sum(c.values()) == 50 and all(c[k] <= need[k] for k in c) and "d" not in c
    specs = plan_requests(need, 50, 10, "r", DEFAULT_AXES)
    assert len(specs) == math.ceil(1432 / 50)
    assert specs[0].request_id == "r-00010"
    totals = {k: sum(s.counts.get(k, 0) for s in specs) for k in need}
    assert totals == need


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="quotas sum"):
        GenerateConfig(out=tmp_path / "x.jsonl", n=10, quotas={"기쁨": 3})
    with pytest.raises(ConfigError, match="not in the label set"):
        GenerateConfig(out=tmp_path / "x.jsonl", n=3, quotas={"행복": 3})
    with pytest.raises(ConfigError, match="base_url"):
        GenerateConfig(out=tmp_path / "x.jsonl", base_url="localhost:8000")
    c = GenerateConfig(out=tmp_path / "x.jsonl", n=10, base_url="http://u:pw@h:1/v1")
    assert c.quota_map() == {"기쁨": 2, "슬픔": 2, "분노": 2, "불안": 1, "상처": 1, "당황": 1, "중립": 1}
    assert "pw" not in json.dumps(c.describe())


# --- the pipeline against the fake server -----------------------------------------------------

def test_faults_reach_exact_target_and_key_never_written(tmp_path, monkeypatch):
    faults = Faults(script=["rate_limit", "server_error", "timeout", "malformed", "truncated",
                            "bad_body"],
                    rate_limit=0.06, server_error=0.06, timeout=0.02, malformed=0.04,
                    truncated=0.04, bad_body=0.03, wrong_label=0.05, duplicate=0.1, junk=0.05,
                    retry_after=0.1, timeout_sleep=1.2)
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv(EVENTS_ENV, str(events))
    log_file = logging.FileHandler(tmp_path / "debug.log", encoding="utf-8")
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(log_file)
    root.setLevel(logging.DEBUG)
    progress = CliProgress("generate")
    try:
        with FakeOpenAI(latency=0.02, faults=faults, seed=3, api_key=KEY) as srv:
            res = run(cfg(tmp_path, srv.url, n=700, per_request=25, concurrency=6,
                          request_timeout_s=0.5, max_retries=8), progress, api_key=KEY)
    finally:
        progress.close()
        root.removeHandler(log_file)
        root.setLevel(old_level)
        log_file.close()
    assert res.complete and res.rows == 700 and res.added == 700
    rows = rows_of(tmp_path / "out.jsonl")
    assert len(rows) == 700
    assert_valid_unique(rows)
    per_label = {lab: sum(r["label"] == lab for r in rows) for lab in DEFAULT_LABEL_NAMES}
    assert per_label == res.quotas == {lab: 100 for lab in DEFAULT_LABEL_NAMES}
    for kind in ("rate_limit", "server_error", "timeout", "malformed_json", "truncated",
                 "bad_response"):
        assert res.errors.get(kind, 0) >= 1, (kind, res.errors)
    for reason in ("duplicate", "near_duplicate", "wrong_label"):
        assert res.rejected.get(reason, 0) >= 1, (reason, res.rejected)
    assert KEY in srv.stats.keys_seen  # the key did reach the server...
    assert_no_key(tmp_path)  # ...and nothing written holds it (output, manifest, events, logs)
    prog = [e for e in EventLog.read(events) if e["type"] == "progress"]
    assert prog[-1]["done"] == 700 and prog[-1]["per_label"]["기쁨"] == 100
    assert {"rows_per_s", "prompt_tokens", "completion_tokens", "cost_usd", "errors"} <= set(prog[-1])
    man = json.loads(manifest_path(tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert man["status"] == "done" and man["counts"] == res.per_label
    assert man["completion_tokens"] == res.completion_tokens > 0
    assert res.cost_usd == pytest.approx(
        (res.prompt_tokens * 0.40 + res.completion_tokens * 1.60) / 1e6, rel=1e-3, abs=1e-6)


def test_custom_quotas_hold(tmp_path):
    quotas = {"기쁨": 37, "중립": 11, "분노": 0}
    with FakeOpenAI(faults=Faults(duplicate=0.2, wrong_label=0.1)) as srv:
        res = run(cfg(tmp_path, srv.url, n=48, labels=("기쁨", "중립", "분노"), quotas=quotas,
                      per_request=10, concurrency=3), api_key=KEY)
    rows = rows_of(tmp_path / "out.jsonl")
    assert {lab: sum(r["label"] == lab for r in rows) for lab in quotas} == quotas
    assert res.complete and len(rows) == 48
    assert_valid_unique(rows, labels=("기쁨", "중립", "분노"))


def test_dry_run_matches_request_count_and_sends_nothing(tmp_path):
    with FakeOpenAI() as srv:
        c = cfg(tmp_path, srv.url, n=333, per_request=25)
        est = estimate(c)
        assert srv.stats.chat_requests == 0 and not c.out.exists()
        assert est.requests == math.ceil(333 / 25) == 14
        assert est.prompt_tokens > 0 and est.completion_tokens > 0 and est.cost_usd > 0
        assert est.batch_cost_usd == pytest.approx(est.cost_usd / 2)
        res = run(c, api_key=KEY)
        assert res.complete and srv.stats.chat_requests == est.requests == res.requests
        assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["out.jsonl"]  # sidecars apart
        newest = tail_rows(c.out, 3)
        assert newest == rows_of(c.out)[-3:][::-1]
        # Raising the target: the resumed estimate plans exactly the requests the resume sends.
        c2 = cfg(tmp_path, srv.url, n=500, per_request=25, resume=True)
        est2 = estimate(c2)
        assert est2.have == 333 and est2.requests == math.ceil(167 / 25)
        assert any("measured" in n for n in est2.notes)
        before = srv.stats.chat_requests
        res2 = run(c2, api_key=KEY)
        assert res2.complete and srv.stats.chat_requests - before == est2.requests
    assert len(rows_of(c.out)) == 500


def test_concurrency_overlaps_requests(tmp_path):
    with FakeOpenAI(latency=0.3) as srv:
        run(cfg(tmp_path, srv.url, n=40, per_request=20, name="warm.jsonl"), api_key=KEY)
        t0 = time.perf_counter()
        res = run(cfg(tmp_path, srv.url, n=320, per_request=20, concurrency=8), api_key=KEY)
        elapsed = time.perf_counter() - t0
    assert res.requests == 16
    assert elapsed < 2.0, elapsed  # ideal 0.6 s; one at a time would take 4.8 s


def test_retry_after_is_honored_and_pauses_everyone(tmp_path):
    with FakeOpenAI(faults=Faults(script=["rate_limit"], retry_after=0.6)) as srv:
        t0 = time.perf_counter()
        res = run(cfg(tmp_path, srv.url, n=20, per_request=20, concurrency=1), api_key=KEY)
        elapsed = time.perf_counter() - t0
    assert res.errors == {"rate_limit": 1} and res.complete
    assert elapsed >= 0.6


def test_json_schema_fallback_to_json_object(tmp_path):
    with FakeOpenAI(faults=Faults(schema_support=False)) as srv:
        res = run(cfg(tmp_path, srv.url, n=60), api_key=KEY)
    assert res.complete and res.errors.get("schema_unsupported") == 1
    assert srv.stats.response_formats["json_object"] == res.requests


def test_bad_key_fails_fast_with_redacted_message(tmp_path):
    wrong = "sk-wrong-key-ECHOED-by-server-42"
    with FakeOpenAI(api_key=KEY) as srv:  # the server echoes the wrong key in its 401 body
        with pytest.raises(APIRequestError) as err:
            run(cfg(tmp_path, srv.url, n=40), api_key=wrong)
    assert "auth" in str(err.value) and wrong not in str(err.value)
    man = json.loads(manifest_path(tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert man["status"] == "failed"
    assert_no_key(tmp_path, wrong)


def test_missing_key_and_existing_output(tmp_path):
    with pytest.raises(MissingAPIKey):
        run(GenerateConfig(out=tmp_path / "a.jsonl", n=10))
    (tmp_path / "a.jsonl").write_text('{"text": "가나다라", "label": "기쁨"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="--resume"):
        run(GenerateConfig(out=tmp_path / "a.jsonl", n=10), api_key=KEY)


def test_persistent_failures_stop_with_a_report(tmp_path):
    with FakeOpenAI(faults=Faults(server_error=1.0)) as srv:
        res = run(cfg(tmp_path, srv.url, n=100, max_retries=1, max_consecutive_failures=3),
                  api_key=KEY)
    assert not res.complete and res.rows == 0
    assert res.requests_failed >= 3 and res.failed_requests[0]["kind"] == "server_error"
    assert "gave up" in res.message and "--resume" in res.message


def test_kill9_then_resume_reaches_exact_target(tmp_path):
    out = tmp_path / "killed.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    with FakeOpenAI(latency=0.1, faults=Faults(duplicate=0.1), api_key=KEY) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core", "generate", "--n", "600", "--per-request", "20",
             "--concurrency", "2", "--base-url", srv.url, "--out", str(out), "--backoff", "0.02"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 100):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        partial = out.read_text(encoding="utf-8").count("\n")
        assert 100 <= partial < 600
        with open(out, "a", encoding="utf-8") as f:  # what a write cut by the kill looks like
            f.write('{"text": "쓰다가 끊긴 줄", "lab')
        est = estimate(GenerateConfig(out=out, n=600, per_request=20, resume=True))
        assert est.have == partial and est.requests == math.ceil((600 - partial) / 20)
        res = run(GenerateConfig(out=out, n=600, per_request=20, concurrency=4, resume=True,
                                 base_url=srv.url, backoff_base_s=0.02), api_key=KEY)
    rows = rows_of(out)  # parses every line: the torn one was cut
    assert len(rows) == 600 and res.complete and res.added == 600 - partial
    assert res.rejected.get("torn_line_cut") == 1
    assert_valid_unique(rows)
    assert {lab: sum(r["label"] == lab for r in rows) for lab in DEFAULT_LABEL_NAMES} == res.quotas
    man = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    assert man["status"] == "done" and man["sessions"] == 2
    assert_no_key(tmp_path)


def test_sigterm_records_interrupted(tmp_path):
    out = tmp_path / "term.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    with FakeOpenAI(latency=0.2) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core", "generate", "--n", "2000", "--per-request", "10",
             "--concurrency", "2", "--base-url", srv.url, "--out", str(out)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline and (not out.exists() or out.stat().st_size == 0):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 130
    man = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    assert man["status"] == "interrupted"
    assert sum(man["counts"].values()) == len(rows_of(out)) > 0


def test_batch_api_path(tmp_path):
    faults = Faults(duplicate=0.15, wrong_label=0.05, batch_line_error=0.25)
    with FakeOpenAI(faults=faults, api_key=KEY, batch_delay=0.1) as srv:
        c = cfg(tmp_path, srv.url, n=210, per_request=15, batch_api=True, poll_interval_s=0.05)
        est = estimate(c)
        res = run(c, api_key=KEY)
        assert srv.stats.chat_requests == 0 and srv.stats.batches_created >= 2  # top-up rounds
    rows = rows_of(c.out)
    assert res.complete and res.mode == "batch" and len(rows) == 210 and est.requests == 14
    assert_valid_unique(rows)
    assert res.errors.get("batch_request_failed", 0) >= 1
    assert res.cost_usd == pytest.approx(
        (res.prompt_tokens * 0.40 + res.completion_tokens * 1.60) / 2e6, rel=1e-3, abs=1e-6)
    lines = batch_input_path(c.out).read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert first["url"] == "/v1/chat/completions" and first["body"]["response_format"]["type"] == "json_schema"
    assert_no_key(tmp_path)


def test_batch_resume_polls_the_pending_batch(tmp_path):
    with FakeOpenAI(batch_delay=0.5) as srv:
        c = cfg(tmp_path, srv.url, n=60, batch_api=True, poll_interval_s=0.05, batch_timeout_s=0.01)
        res = run(c, api_key=KEY)
        assert not res.complete and "still running" in res.message
        pending = json.loads(manifest_path(c.out).read_text(encoding="utf-8"))["batch"]["pending"]
        assert pending["id"] == "batch_1"
        c2 = cfg(tmp_path, srv.url, n=60, batch_api=True, poll_interval_s=0.05, resume=True)
        res2 = run(c2, api_key=KEY)
        assert res2.complete and srv.stats.batches_created == 1  # collected, not paid twice
    assert len(rows_of(c.out)) == 60


def test_cli_register_and_dry_run(tmp_path):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", "--n", "120", "--per-request", "50", "--out",
                              str(tmp_path / "d.jsonl"), "--labels", "기쁨,슬픔", "중립",
                              "--dry-run"])
    code, est = args.handler(args)
    assert code == 0 and est.requests == 3 and set(est.remaining) == {"기쁨", "슬픔", "중립"}
    args = parser.parse_args(["generate", "--quotas", "기쁨=5,슬픔=7", "--out", "x", "--dry-run"])
    code, est = args.handler(args)
    assert est.target == 12 and est.remaining == {"기쁨": 5, "슬픔": 7}
    with pytest.raises(SystemExit):  # the key is never a flag
        parser.parse_args(["generate", "--out", "x", "--api-key", KEY])


def test_generate_config_survives_the_job_round_trip(tmp_path):
    """The Generate page hands its config to a job as JSON; the job rebuilds the same config,
    None temperature and seed included (the old argv round trip lost both)."""
    from core import jobs

    c = GenerateConfig(out=tmp_path / "r.jsonl", n=30, per_request=7, concurrency=3,
                       labels=("기쁨", "슬픔", "중립"), quotas={"기쁨": 10, "슬픔": 20, "중립": 0},
                       base_url="http://127.0.0.1:9/v1", resume=True, batch_api=True,
                       axes={"domain": ["직장", "가족"], "register": ["반말"]}, max_requests=9,
                       temperature=None, seed=7)
    assert jobs.save_config(tmp_path, c) == "generate"
    assert KEY not in (tmp_path / "config.json").read_text(encoding="utf-8")
    assert jobs.load_config(tmp_path) == ("generate", c)
