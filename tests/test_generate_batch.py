"""The Batch API path against the loopback server: failed batches, the request cap, the run-wide
summary, and stopping (SIGTERM cancels the open batch; SIGKILL leaves it for --resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from openai.types.batch import Errors
from openai.types.batch_error import BatchError

from core.generate import APIRequestError, run
from core.generate.batch import _batch_errors
from core.generate.client import Redactor
from core.generate.store import manifest_path
from fake_openai import FakeOpenAI, Faults
from test_generate import KEY, REPO, _isolated, assert_no_key, cfg, rows_of  # noqa: F401

FAST = dict(batch_api=True, poll_interval_s=0.02)


def manifest(out) -> dict:
    return json.loads(manifest_path(out).read_text(encoding="utf-8"))


def test_batch_errors_are_read_in_every_form():
    raw = {"code": "model_not_found", "line": 3, "param": "body.model",
           "message": f"no model for key {KEY}"}
    want = [{**raw, "message": "no model for key [redacted]"}]
    for errors in ({"object": "list", "data": [raw]}, [raw], Errors(data=[BatchError(**raw)])):
        assert _batch_errors(SimpleNamespace(errors=errors), Redactor(KEY)) == want
    assert _batch_errors(SimpleNamespace(errors=None), Redactor(KEY)) == []


def test_failed_batch_reports_the_api_errors_and_is_not_collected(tmp_path):
    with FakeOpenAI(faults=Faults(batch_models=("gpt-4.1-mini",)), api_key=KEY,
                    batch_delay=0.05) as srv:
        with pytest.raises(APIRequestError) as err:
            run(cfg(tmp_path, srv.url, n=40, model="gpt-4.1-mnii", **FAST), api_key=KEY)
        msg = str(err.value)
        assert "line 1: The model 'gpt-4.1-mnii' does not exist" in msg and "line 2: " in msg
        assert "--model" in msg and KEY not in msg
        man = manifest(tmp_path / "out.jsonl")
        assert man["status"] == "failed" and man["errors"] == {"batch_failed": 1}
        assert man["batch"]["pending"] is None and "collected" not in man["batch"]
        [failed] = man["batch"]["failed"]
        assert failed["id"] == "batch_1" and failed["status"] == "failed"
        assert failed["errors"][0] == {
            "code": "model_not_found", "line": 1, "param": "body.model",
            "message": "The model 'gpt-4.1-mnii' does not exist or you do not have access to it."}
        # The advice holds: with the model fixed, --resume sends a new batch, not the failed one.
        res = run(cfg(tmp_path, srv.url, n=40, resume=True, **FAST), api_key=KEY)
        assert res.complete and res.batch_ids == ["batch_1", "batch_2"]
    assert_no_key(tmp_path)


def test_max_requests_caps_batch_requests_across_sessions(tmp_path):
    out = tmp_path / "out.jsonl"
    with FakeOpenAI(batch_delay=0.05) as srv:
        res = run(cfg(tmp_path, srv.url, max_requests=2, **FAST), api_key=KEY)  # plan: 7 requests
        assert srv.stats.batch_requests == 2 and not res.complete
        assert "request cap (2 requests" in res.message and len(rows_of(out)) == 40
        res = run(cfg(tmp_path, srv.url, max_requests=3, resume=True, **FAST), api_key=KEY)
        assert srv.stats.batch_requests == 3 and srv.stats.batches_created == 2
    assert len(rows_of(out)) == 60 and manifest(out)["requests"] == 3


def test_resume_summary_counts_every_batch_of_the_run(tmp_path):
    with FakeOpenAI(batch_delay=0.05) as srv:
        run(cfg(tmp_path, srv.url, n=60, max_requests=1, **FAST), api_key=KEY)
        res = run(cfg(tmp_path, srv.url, n=60, resume=True, **FAST), api_key=KEY)
    assert res.complete
    assert res.message == "60/60 rows (40 added now) via 2 batch(es) of 3 requests in all"
    assert res.batch_ids == ["batch_1", "batch_2"]
    assert manifest(tmp_path / "out.jsonl")["batch"]["collected"] == ["batch_1", "batch_2"]


def _start_cli(srv: FakeOpenAI, out) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "core", "generate", "--n", "40", "--per-request", "20",
         "--base-url", srv.url, "--out", str(out), "--batch-api", "--poll-interval", "0.05"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_pending(proc: subprocess.Popen, out) -> None:
    deadline = time.time() + 15
    while not (manifest_path(out).exists() and manifest(out)["batch"].get("pending")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no batch was submitted"
        time.sleep(0.05)


def test_sigterm_cancels_the_open_batch(tmp_path):
    out = tmp_path / "term.jsonl"
    with FakeOpenAI(batch_delay=5.0, api_key=KEY) as srv:
        proc = _start_cli(srv, out)
        _wait_for_pending(proc, out)
        proc.send_signal(signal.SIGTERM)  # what jobs.Job.cancel sends (then SIGKILL after 5 s)
        assert proc.wait(timeout=5) == 130
        assert srv.stats.cancel_calls == ["batch_1"]
        assert srv.batches["batch_1"]["status"] == "cancelling"
    assert b"Traceback" not in proc.stderr.read()
    man = manifest(out)
    assert man["status"] == "interrupted" and man["batch"]["cancelled"] == ["batch_1"]
    assert man["batch"]["pending"] is None and man["batch"]["submitted"] == ["batch_1"]
    assert_no_key(tmp_path)


def test_kill9_then_resume_collects_the_open_batch(tmp_path):
    out = tmp_path / "kill.jsonl"
    with FakeOpenAI(batch_delay=1.0, api_key=KEY) as srv:
        proc = _start_cli(srv, out)
        _wait_for_pending(proc, out)
        proc.kill()
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert manifest(out)["batch"]["pending"]["id"] == "batch_1"
        res = run(cfg(tmp_path, srv.url, name="kill.jsonl", n=40, resume=True, **FAST),
                  api_key=KEY)
        assert srv.stats.batches_created == 1 and srv.stats.cancel_calls == []
    assert res.complete and len(rows_of(out)) == 40 and res.batch_ids == ["batch_1"]
    assert "via 1 batch(es)" in res.message
