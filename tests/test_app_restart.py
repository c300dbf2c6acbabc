"""The app survives its own restart: a job started by a real Streamlit server keeps running when
the server is stopped, and the page of the next server shows its progress, then its result. A job
whose process died without a result is shown as failed with its output, never as running.

The page is driven over Streamlit's own websocket protocol (the protobuf messages the browser
sends and receives), so what is checked is what a browser would be sent. Servers listen on
127.0.0.1 only and are always stopped by the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest
from websockets.sync.client import connect

from core import jobs, paths
from core.selftest_cli import SelftestConfig

STREAMLIT = Path(sys.executable).parent / "streamlit"


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setenv(paths.WORKSPACE_ENV, str(ws))
    monkeypatch.delenv("STUDIO_AUTOBUILD", raising=False)
    monkeypatch.delenv("STUDIO_MODE", raising=False)
    yield ws
    for job in jobs.list_jobs():  # a failed test leaves no job running
        job.cancel()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run streamlit_app.py` on 127.0.0.1 in its own process group, stopped on exit
    by SIGTERM to that whole group (what Ctrl-C in its terminal or a supervisor does)."""

    def __init__(self, log: Path):
        self.port, self.log = _free_port(), log
        env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
        env[paths.WORKSPACE_ENV] = str(paths.workspace())
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(STREAMLIT), "run", "streamlit_app.py", "--server.address", "127.0.0.1",
                 "--server.port", str(self.port), "--server.headless", "true",
                 "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                cwd=paths.REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self) -> Server:
        try:
            deadline = time.time() + 90
            while time.time() < deadline:
                assert self.proc.poll() is None, f"server exited: {self.output()}"
                try:
                    url = f"http://127.0.0.1:{self.port}/_stcore/health"
                    if urllib.request.urlopen(url, timeout=2).read() == b"ok":
                        return self
                except OSError:
                    time.sleep(0.2)
            raise AssertionError(f"server not up after 90 s: {self.output()}")
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class Browser:
    """One browser tab: asks the server to run a page and collects the elements it sends."""

    def __init__(self, server: Server):
        self.ws = connect(f"ws://127.0.0.1:{server.port}/_stcore/stream",
                          subprotocols=["streamlit"], open_timeout=30, max_size=None)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.ws.close()

    def show(self, page: str, widgets: list[WidgetState] = ()) -> list[tuple[str, object]]:
        """(element type, element) of one run of ``page`` with these widget values."""
        msg = BackMsg()
        msg.rerun_script.page_name = page
        msg.rerun_script.widget_states.widgets.extend(widgets)
        self.ws.send(msg.SerializeToString())
        elements = []
        while True:
            forward = ForwardMsg()
            forward.ParseFromString(self.ws.recv(timeout=120))
            kind = forward.WhichOneof("type")
            if kind == "script_finished":
                return elements
            if kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                element = forward.delta.new_element
                elements.append((element.WhichOneof("type"), getattr(element,
                                                                     element.WhichOneof("type"))))


def _of(view, kind: str) -> list:
    return [element for k, element in view if k == kind]


def _widget(view, kind: str, label: str, **value) -> WidgetState:
    element = next(e for e in _of(view, kind) if e.label == label)
    return WidgetState(id=element.id, **value)


def _wait(job: jobs.Job, done, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = job.status()
        if done(status):
            return status
        assert not status.finished, f"{job.key} ended early: {status.error}"
        time.sleep(0.1)
    raise AssertionError(f"{job.key}: nothing happened in {timeout} s: {job.output_tail()}")


def test_a_job_outlives_a_server_restart_and_the_next_server_shows_it(workspace, tiny_e5_run,
                                                                     tmp_path):
    shutil.copytree(tiny_e5_run, workspace / "runs" / "tiny", ignore=shutil.ignore_patterns(
        "onnx", "openvino", "bundle*", "export_report.json"))
    with Server(tmp_path / "first.log") as first:
        with Browser(first) as tab:
            view = tab.show("Export")
            assert "This run has not been exported yet." in [a.body for a in _of(view, "alert")]
            view = tab.show("Export", [
                _widget(view, "checkbox", "OpenVINO IR + INT8", bool_value=False),
                _widget(view, "checkbox", "Ship INT8 even if it fails the gates", bool_value=True),
                _widget(view, "number_input", "Calibration sentences", int_value=8),
                _widget(view, "button", "Export", trigger_value=True)])
            assert not _of(view, "exception"), _of(view, "exception")
        job = jobs.find("export:tiny")
        assert job is not None, first.output()
        pid = job.info["pid"]
        assert psutil.Process(pid).ppid() == first.proc.pid  # the server started it
        _wait(job, lambda s: s.progress is not None)
    assert first.proc.returncode is not None  # the first server is gone...
    assert job.alive() and job.status().state == "running"  # ...its job is not
    # Hold the job while the next server starts, so that page must find it running whatever
    # the machine's load; it goes on as soon as the page has shown it.
    os.killpg(pid, signal.SIGSTOP)
    try:
        with Server(tmp_path / "second.log") as second, Browser(second) as tab:
            view = tab.show("Export")
            bars = [p.text for p in _of(view, "progress")]
            assert bars and "/" in bars[0], view  # e.g. "ONNX export (opset 17) (2/5)"
            assert "Cancel" in [b.label for b in _of(view, "button")]
            os.killpg(pid, signal.SIGCONT)
            status = _wait(job, lambda s: s.finished, timeout=180)
            assert status.state == "done", status.error
            view = tab.show("Export")
            assert "Finished (export:tiny)." in [a.body for a in _of(view, "alert")]
            assert "Artifacts" in [h.body for h in _of(view, "heading")]
            assert "Cancel" not in [b.label for b in _of(view, "button")]
            assert not _of(view, "exception")
    finally:
        try:
            os.killpg(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        job.cancel()


def test_a_job_killed_without_a_result_is_shown_failed_with_its_output(workspace):
    job = jobs.start("train:default", SelftestConfig(steps=10_000, delay=0.01))  # a home-page key
    _wait(job, lambda s: s.progress is not None)
    os.killpg(job.info["pid"], signal.SIGKILL)
    deadline = time.time() + 20
    while job.alive() and time.time() < deadline:
        time.sleep(0.05)
    status = job.status()
    assert status.state == "failed" and "ended without a result" in status.error
    assert "selftest" in status.output  # the tail of what it printed (its progress bar)
    at = AppTest.from_file(str(paths.REPO_ROOT / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["Failed: the process ended without a result "
                                           "(crashed or killed)"]
    assert [c.value for c in at.code] == [status.output]
    assert "Cancel" not in [b.label for b in at.button]
    # Its pid now taken by another process (ours, started at another time): still failed.
    info = job.info
    (job.dir / "job.json").write_text(json.dumps({**info, "pid": os.getpid()}), encoding="utf-8")
    assert job.status().state == "failed"
