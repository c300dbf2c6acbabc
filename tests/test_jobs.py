"""Background jobs: start, progress, finish, crash, cancel, no duplicate on rerun."""

import os
import signal
import time

import pytest

from core import jobs
from core.errors import ConfigError, JobError
from core.selftest_cli import SelftestConfig as Cfg


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    return tmp_path


def wait(job, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = job.status()
        if status.finished:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job still running after {timeout}s: {job.output_tail()}")


def test_job_runs_reports_progress_and_result():
    job = jobs.start("selftest:ok", Cfg(steps=4, delay=0.05))
    status = wait(job)
    assert status.state == "done", status.error
    assert status.result == {"steps": 4}
    steps = [e["done"] for e in status.events if e["type"] == "progress"]
    assert steps == [1, 2, 3, 4] and status.progress["total"] == 4


def test_same_key_while_running_returns_the_running_job():
    first = jobs.start("selftest:dup", Cfg(steps=30, delay=0.1))
    second = jobs.start("selftest:dup", Cfg(steps=30, delay=0.1))
    assert first.dir == second.dir and len(jobs.list_jobs("selftest:dup")) == 1
    first.cancel()
    assert wait(first).state == "cancelled"
    third = jobs.start("selftest:dup", Cfg(steps=1, delay=0))
    assert third.dir != first.dir and jobs.find("selftest:dup") == third
    assert wait(third).state == "done"


def test_failure_reports_the_error_message():
    status = wait(jobs.start("selftest:fail", Cfg(fail_at=2, delay=0)))
    assert status.state == "failed" and "failing on purpose at step 2" in status.error
    assert [e["done"] for e in status.events if e["type"] == "progress"] == [1]


def test_crash_without_final_event_is_reported_as_crash():
    status = wait(jobs.start("selftest:crash", Cfg(crash_at=2, delay=0)))
    assert status.state == "failed" and "ended without a result" in status.error
    assert "selftest" in status.output  # the last lines it printed (its progress bar)


def test_a_job_carries_its_config_not_a_command_line(workspace):
    job = jobs.start("selftest:cfg", Cfg(steps=2, delay=0))
    assert wait(job).state == "done"
    assert jobs.load_config(job.dir) == ("selftest", Cfg(steps=2, delay=0))
    assert job.info["stage"] == "selftest" and "argv" not in job.info
    with pytest.raises(JobError, match="not the config of a stage"):
        jobs.start("selftest:bad", {"steps": 2})
    with pytest.raises(ConfigError):
        jobs.start("selftest:bad", Cfg(steps=0))  # a bad value fails in the page, not the job


def test_cancel_stops_the_process():
    job = jobs.start("selftest:cancel", Cfg(steps=100, delay=0.1))
    deadline = time.time() + 20
    while job.status().progress is None and time.time() < deadline:
        time.sleep(0.05)
    job.cancel()
    assert not job.alive()
    assert job.status().state == "cancelled"


def test_a_job_runs_in_its_own_session_and_sigterm_unwinds_it():
    """Its own session: stopping the server (or Ctrl-C in its terminal) never reaches it. The
    SIGTERM that cancel sends unwinds it (``finally`` blocks run), and it records "cancelled"."""
    job = jobs.start("selftest:session", Cfg(steps=100, delay=0.1))
    pid = job.info["pid"]
    assert os.getsid(pid) == pid != os.getsid(0) and os.getpgid(pid) == pid
    while job.status().progress is None:
        time.sleep(0.05)
    os.killpg(pid, signal.SIGTERM)  # what cancel sends first, without cancel's own event
    status = wait(job)
    assert status.state == "cancelled"
    assert [e["type"] for e in status.events].count("cancelled") == 1


def test_cancel_after_the_job_finished_keeps_its_result():
    job = jobs.start("selftest:late", Cfg(steps=1, delay=0))
    assert wait(job).state == "done"
    job.cancel()
    assert job.status().state == "done"


def test_eta_follows_the_recent_rate_not_the_slow_start():
    from core.progress import eta_seconds, format_eta

    def ev(t, done, total=200):
        return {"type": "progress", "time": t, "done": done, "total": total}

    assert eta_seconds([]) is None
    assert eta_seconds([ev(0, 5)], now=1) is None  # one point: no rate yet
    # a model download (its own total), a slow first epoch (10 steps in 100 s), then 1 step/s
    # for 100 steps: 90 steps left at the steady rate, less the 10 s since the last event
    events = [ev(0, 1, total=9999), ev(1, 9999, total=9999), {"type": "progress", "message": "x"}]
    events += [ev(10 + 10 * i, i) for i in range(1, 11)]
    events += [ev(110 + i, 10 + i) for i in range(1, 101)]
    assert eta_seconds(events, now=220) == pytest.approx(90 - 10)
    assert eta_seconds(events, now=500) == 0.0
    assert format_eta(None) == "" and format_eta(40) == "about 40 s left"
    assert format_eta(250) == "about 4 min left"

