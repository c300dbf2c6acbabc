"""The Generate page under AppTest, with background jobs talking to the loopback fake server."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.paths import REPO_ROOT

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai import FakeOpenAI  # noqa: E402

KEY = "sk-page-test-key-never-stored-777"


def _generate_is_wired() -> bool:
    import core.cli

    return "core.generate.cli" in getattr(core.cli, "COMMAND_MODULES", [])


needs_cli = pytest.mark.skipif(not _generate_is_wired(),
                               reason="core/cli.py does not register core.generate.cli yet")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return tmp_path


def page() -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "pages" / "2_Generate.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def widget(items, label):
    return next(w for w in items if w.label == label)


def fill(at: AppTest, url: str, rows: int, per_request: int, name: str, key: str | None = KEY,
         concurrency: int = 4) -> AppTest:
    widget(at.text_input, "Base URL").set_value(url)
    if key:
        widget(at.text_input, "API key").set_value(key)
    widget(at.text_input, "Dataset name").set_value(name)
    widget(at.number_input, "Rows").set_value(rows)
    widget(at.number_input, "Examples per request").set_value(per_request)
    widget(at.number_input, "Concurrent requests").set_value(concurrency)
    at.run()
    assert not at.exception, at.exception
    return at


def wait_for(key: str, timeout: float = 60) -> jobs.JobStatus:
    deadline = time.time() + timeout
    job = None
    while time.time() < deadline:
        job = jobs.find(key)
        if job is not None and job.status().finished:
            return job.status()
        time.sleep(0.2)
    raise AssertionError(f"job {key} did not finish: {job and job.output_tail()}")


def assert_no_key(root: Path) -> None:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert KEY.encode() not in p.read_bytes(), f"API key leaked into {p}"


def test_estimate_and_no_key(workspace):
    with FakeOpenAI() as srv:
        at = fill(page(), srv.url, rows=130, per_request=25, name="est", key=None)
        assert widget(at.metric, "Requests").value == "6"
        assert widget(at.metric, "Cost (USD)").value.startswith("$")
        assert any("API key" in i.value for i in at.info)
        assert widget(at.button, "Start").disabled
        widget(at.checkbox, "Use the Batch API (50% cheaper; results within 24 h)").check().run()
        assert "24 h" in widget(at.metric, "Time").value
        widget(at.number_input, "Examples per request").set_value(0).run()  # below the minimum
        assert srv.stats.chat_requests == 0
    assert jobs.list_jobs() == []


def test_bad_quotas_show_an_error(workspace):
    at = page()
    widget(at.checkbox, "Balanced quotas").uncheck().run()
    widget(at.text_input, "Quotas").set_value("기쁨=10").run()
    assert any("quotas sum to 10" in e.value for e in at.error)


@needs_cli
def test_generate_job_runs_and_key_is_never_written(workspace):
    with FakeOpenAI(latency=0.05, api_key=KEY) as srv:
        at = fill(page(), srv.url, rows=70, per_request=20, name="pagegen")
        widget(at.button, "Start").click().run()
        assert not at.exception, at.exception
        status = wait_for("generate:pagegen")
        assert status.state == "done", status.error
        assert KEY in srv.stats.keys_seen
    at.run()
    assert not at.exception, at.exception
    assert any("70/70 rows" in s.value for s in at.success)
    preview = at.dataframe[-1].value
    assert list(preview.columns) == ["label", "text"] and len(preview) == 10
    out = workspace / "datasets" / "pagegen.jsonl"
    assert len(out.read_text(encoding="utf-8").splitlines()) == 70
    stage, config = jobs.load_config(jobs.find("generate:pagegen").dir)
    assert stage == "generate" and config.out == out
    assert_no_key(workspace)  # job.json, events.jsonl, output.log, dataset, manifest


@needs_cli
def test_stop_then_resume_reaches_the_target(workspace):
    with FakeOpenAI(latency=0.25, api_key=KEY) as srv:
        at = fill(page(), srv.url, rows=120, per_request=10, name="stopgo", concurrency=1)
        widget(at.button, "Start").click().run()
        out = workspace / "datasets" / "stopgo.jsonl"
        deadline = time.time() + 30
        while time.time() < deadline and (not out.exists() or out.stat().st_size == 0):
            time.sleep(0.1)
        jobs.find("generate:stopgo").cancel()  # what the Cancel button does
        assert jobs.find("generate:stopgo").status().state == "cancelled"
        partial = len(out.read_text(encoding="utf-8").splitlines())
        assert 0 < partial < 120
        at.run()
        assert any("Resume continues" in i.value for i in at.info)
        widget(at.button, "Resume").click().run()
        status = wait_for("generate:stopgo")
        assert status.state == "done", status.error
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 120 and len({r["text"] for r in rows}) == 120
    assert_no_key(workspace)
