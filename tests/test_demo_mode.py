"""Hosted demo mode (STUDIO_MODE=demo): what visitors can and cannot do, the limits, and the
demo server itself in real headless Chromium (XSS payloads render as text; the rate limit bites).

The published run is `tiny_e5_run` exported as a host would (INT8, drift allowed: the tiny model's
INT8 may drift), with a bundle zip and a saved benchmark whose results name absolute paths.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from google.protobuf import text_format
from streamlit.testing.v1 import AppTest

from core import demo, jobs, paths, web_export
from core.paths import REPO_ROOT
from core.run import RunFolder

SECRET = "sk-demo-test-SECRET-4f1c9a"
PAGES = ["streamlit_app.py", "pages/1_Dataset.py", "pages/2_Generate.py", "pages/3_Train.py",
         "pages/4_Demo.py", "pages/5_Export.py", "pages/6_Benchmark.py", "pages/7_Web_Bundle.py"]
REFUSED = "not available in this demo"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = '<img src=x onerror=alert(1)><script>alert(2)</script>'


@pytest.fixture(scope="module")
def demo_workspace(tiny_e5_run, tmp_path_factory) -> Path:
    """A workspace as `make demo` leaves it: runs/default trained, exported, bundled, benched."""
    ws = tmp_path_factory.mktemp("demo") / "workspace"
    run = ws / "runs" / "default"
    shutil.copytree(tiny_e5_run, run, ignore=shutil.ignore_patterns(
        "onnx", "openvino", "bundle*", "bench", "export_report.json"))
    small = ws.parent / "small.jsonl"
    small.write_text("\n".join(paths.SEED_PATH.read_text("utf-8").splitlines()[:21]) + "\n",
                     encoding="utf-8")
    from core.export import ExportConfig, run as export

    export(ExportConfig(model=str(run), openvino=False, data=str(small), allow_int8_drift=True))
    if not web_export.missing_vendor_files():
        web_export.run(web_export.WebExportConfig(model=str(run), zip=True, examples=2,
                                                  allow_int8_drift=True, export_data=str(small)))
    from test_benchmark_page import fake_results  # the saved-results shape the page reads

    results = fake_results(1.0)
    results["model"], results["command"] = str(run), f"python -m core bench --model {run}"
    results["runtimes"][0]["path"] = str(run / "model")
    (run / "bench" / "20260101-000000").mkdir(parents=True)
    (run / "bench" / "20260101-000000" / "results.json").write_text(json.dumps(results), "utf-8")
    return ws


@pytest.fixture
def demo_env(demo_workspace, monkeypatch):
    monkeypatch.setenv(paths.WORKSPACE_ENV, str(demo_workspace))
    monkeypatch.setenv(demo.MODE_ENV, "demo")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("STUDIO_AUTOBUILD", raising=False)
    monkeypatch.delenv(demo.RATE_ENV, raising=False)
    import streamlit as st

    shown = st.get_option("client.showErrorDetails")  # demo pages set it for the whole process
    yield demo_workspace
    st.set_option("client.showErrorDetails", shown)


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / page), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def everything_shown(at: AppTest) -> str:
    """The text of every element and block on the page (labels, values, help, chart specs)."""
    out = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(text_format.MessageToString(proto, as_utf8=True))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


class Upload:
    """Stands in for st.file_uploader's UploadedFile in AppTest, which cannot upload."""

    def __init__(self, name: str, content: bytes):
        self.name, self._content = name, content

    def getvalue(self) -> bytes:
        return self._content


def upload(monkeypatch, page: str, file, source_radio: bool = False) -> AppTest:
    import streamlit as st

    monkeypatch.setattr(st, "file_uploader", lambda *a, **k: [file] if source_radio else file)
    at = open_page(page)
    if source_radio:
        at.radio[0].set_value("Upload JSONL files").run()
        assert not at.exception, at.exception
    return at


def lines(rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


# --- core/demo.py --------------------------------------------------------------------------------
def test_rate_limiter_is_a_sliding_window():
    now = [100.0]
    limiter = demo.RateLimiter(3, 60, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after() == pytest.approx(60)
    now[0] += 59.9
    assert not limiter.allow()
    now[0] += 0.1  # the first three leave the window together
    assert limiter.allow() and limiter.allow()
    assert "3 every 60 seconds" in limiter.message()


def test_mode_limits_and_scrubbing(monkeypatch, tmp_path):
    monkeypatch.delenv(demo.MODE_ENV, raising=False)
    assert not demo.is_demo() and demo.page_allowed("train")
    monkeypatch.setenv(demo.MODE_ENV, "demo")
    assert demo.is_demo() and not demo.page_allowed("train") and not demo.page_allowed("x")
    assert demo.page_allowed("benchmark")
    monkeypatch.setenv(demo.RATE_ENV, "7")
    assert demo.rate_limit() == 7
    monkeypatch.setenv(demo.RATE_ENV, "lots")
    assert demo.rate_limit() == demo.RATE_LIMIT
    monkeypatch.setenv(paths.WORKSPACE_ENV, str(tmp_path / "ws"))
    assert demo.scrub(f"{tmp_path}/ws/runs/default/x.onnx") == "workspace/runs/default/x.onnx"
    assert demo.scrub("cannot read /srv/data/in.jsonl: gone; see http://a.b/c/d") == \
        "cannot read …/in.jsonl: gone; see http://a.b/c/d"
    assert demo.scrub_obj({"p": [str(REPO_ROOT / "core")]}) == {"p": ["./core"]}
    with pytest.raises(demo.DemoLimit, match="at most 2 MB"):
        demo.check_upload(b"x" * (demo.MAX_UPLOAD_BYTES + 1))
    with pytest.raises(demo.DemoLimit, match="5,000 lines"):
        demo.check_upload(b"{}\r\n" * 5001)
    demo.check_upload(b"{}\n" * 5000)


class SlowRuntime:
    """A runtime whose every batch takes 10 s of the injected clock."""

    labels, max_length = ["기쁨", "슬픔"], 8

    def __init__(self, clock):
        self.clock = clock

    def tokenizer(self, texts, **_):
        return {"input_ids": [[0] * len(t) for t in texts]}

    def predict(self, texts, batch_size=32):
        from core.runtimes import Prediction

        self.clock[0] += 10
        return [Prediction("기쁨", {"기쁨": 0.75, "슬픔": 0.25}) for _ in texts]


def test_classify_upload_stops_at_its_time_limit_and_scores_labels():
    clock = [0.0]
    blob = lines([{"text": f"문장 {i}번은 아주 길어요", "label": "슬픔", "id": i} for i in range(10)])
    result = demo.classify_upload(SlowRuntime(clock), blob, time_limit_s=15, batch_size=4,
                                  clock=lambda: clock[0])
    assert result.labeled and not result.complete and len(result.rows) == 8
    assert "first 8 of 10" in result.notes()[0] and result.cut == 8
    assert result.metrics["accuracy"] == 0.0 and result.metrics["confusion_matrix"][1][0] == 8
    first = json.loads(result.to_jsonl().splitlines()[0])
    assert first["id"] == 0 and first["pred"] == "기쁨" and first["label"] == "슬픔"
    unlabeled = demo.classify_upload(SlowRuntime([0.0]), b'{"text": "hi", "n": 1}\n{"text": ""}\n')
    assert not unlabeled.labeled and unlabeled.metrics is None and len(unlabeled.rows) == 1
    assert [p.error for p in unlabeled.report.invalid] == ['"text" is empty']
    assert json.loads(unlabeled.to_jsonl()) == {"text": "hi", "n": 1, "pred": "기쁨",
                                                "probs": {"기쁨": 0.75, "슬픔": 0.25}}


def test_prepare_builds_only_what_is_missing(studio_workspace, demo_workspace):
    from core.cli import build_parser

    assert build_parser().parse_args(["demo-prepare"]).command == "demo-prepare"
    ran: list[list[str]] = []
    demo.prepare(runner=ran.append)
    default = str(RunFolder.default().root)
    assert ran == [["train"], ["export", "--model", default],
                   ["web-export", "--model", default, "--zip"]]
    shutil.copytree(demo_workspace / "runs" / "default", RunFolder.default().root,
                    ignore=shutil.ignore_patterns("model.onnx", "model_optimized.onnx"))
    run = RunFolder.default()
    if run.bundle_report() is None:
        pytest.skip("npm packages missing: no bundle was built")
    assert demo.prepare(runner=ran.append) == []
    run.bundle_zip.unlink()
    assert demo.missing_steps() == [["web-export", "--model", default, "--zip"]]
    run.onnx("int8").unlink()
    assert [s[0] for s in demo.missing_steps()] == ["export", "web-export"]


# --- the pages in demo mode ----------------------------------------------------------------------
def test_menu_lists_only_the_demo_pages(demo_env, monkeypatch):
    from pages.common import menu

    assert [label for _, label in menu()] == ["Home", "Demo", "Upload check", "Benchmark",
                                              "Web bundle"]
    monkeypatch.delenv(demo.MODE_ENV)
    assert len(menu()) == len(PAGES)


@pytest.mark.parametrize("page", ["pages/2_Generate.py", "pages/3_Train.py", "pages/5_Export.py"])
def test_job_pages_refuse_and_draw_no_controls(demo_env, page):
    at = open_page(page)
    assert any(REFUSED in i.value for i in at.info)
    assert not at.button and not at.text_input and not at.number_input and not at.selectbox
    assert jobs.list_jobs() == []


def test_benchmark_and_bundle_pages_are_read_only(demo_env):
    at = open_page("pages/6_Benchmark.py")
    assert any("Running a benchmark is " + REFUSED in i.value for i in at.info)
    assert not at.button and not at.multiselect
    assert list(at.dataframe[0].value["runtime"]) == ["PyTorch FP32", "ONNX Runtime INT8"]
    assert len(at.get("download_button")) == 3
    at = open_page("pages/7_Web_Bundle.py")
    assert any("Building a bundle is " + REFUSED in i.value for i in at.info)
    assert not at.button and not at.text_input and not at.number_input
    if RunFolder.default().bundle_zip.is_file():
        downloads = at.get("download_button")
        assert [d.proto.label for d in downloads] == ["Download bundle (zip)"]
    assert not at.get("iframe") and not at.get("link_button")
    assert jobs.list_jobs() == []


def test_demo_page_classifies_with_the_shipped_int8_model(demo_env, monkeypatch):
    monkeypatch.setenv(demo.RATE_ENV, "2")
    at = open_page("pages/4_Demo.py")
    assert not at.multiselect  # one model, not chosen by the visitor
    box = next(s for s in at.selectbox if s.label == "Example")
    box.set_value(box.options[1]).run()
    labels = RunFolder.default().labels()
    assert at.metric[0].label == "ONNX INT8" and at.metric[0].value in labels
    assert at.metric[0].proto.delta.endswith(" ms") and at.get("plotly_chart")
    long_text = "오늘 회사에서 있었던 일을 길게 이야기해 볼게 " * 12
    at.text_area[0].set_value(long_text).run()
    assert any("tokens long" in w.value and "was cut" in w.value for w in at.warning)
    at.text_area[0].set_value("세 번째 문장").run()  # over the limit of 2 a minute
    assert any("Too many predictions" in w.value for w in at.warning) and not at.metric


def test_uploads_over_the_limits_are_refused(demo_env, monkeypatch):
    big = Upload("big.jsonl", '{"text": "a", "label": "기쁨"}\n'.encode() * 80_000)
    at = upload(monkeypatch, "pages/4_Demo.py", big)
    assert any("**big\\.jsonl**" in e.value and "at most 2 MB" in e.value for e in at.error)
    many = Upload("many.jsonl", b"\n" * 5001)
    at = upload(monkeypatch, "pages/1_Dataset.py", many, source_radio=True)
    assert any("5,000 lines" in e.value for e in at.error) and not at.metric


def test_labeled_upload_gets_predictions_and_metrics_and_writes_nothing(demo_env, monkeypatch):
    before = files_under(demo_env)
    seed = [json.loads(x) for x in paths.SEED_PATH.read_text("utf-8").splitlines()[:14]]
    blob = lines(seed) + b'{"text": "no label here"}\n'
    at = upload(monkeypatch, "pages/4_Demo.py", Upload("mine.jsonl", blob))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Valid lines"] == "14" and metrics["Invalid lines"] == "1"
    assert 0 <= float(metrics["Accuracy"]) <= 1 and 0 <= float(metrics["Macro-F1"]) <= 1
    table = next(d.value for d in at.dataframe if "pred" in d.value.columns)
    assert len(table) == 14 and set(table["pred"]) <= set(RunFolder.default().labels())
    assert any("Confusion matrix" in text_format.MessageToString(p.proto, as_utf8=True)
               for p in at.get("plotly_chart"))
    assert [d.proto.label for d in at.get("download_button")] == ["Download predictions (JSONL)"]
    at = upload(monkeypatch, "pages/1_Dataset.py", Upload("mine.jsonl", blob), source_radio=True)
    assert not [b for b in at.button if "Save" in b.label]
    assert any("Saving to the workspace is " + REFUSED in i.value for i in at.info)
    assert files_under(demo_env) == before


def test_no_page_shows_the_api_key_server_paths_or_tracebacks(demo_env):
    for page in PAGES:
        shown = everything_shown(open_page(page))
        for secret in (SECRET, str(demo_env.parent), str(REPO_ROOT), "Traceback"):
            assert secret not in shown, (page, secret)
    at = open_page("pages/1_Dataset.py")  # the seed set by name, not by its path
    assert any("**seed**" in s.value for s in at.success)


# --- the demo server in headless Chromium --------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def demo_server(demo_workspace, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "STUDIO_AUTOBUILD"}
    env.update({paths.WORKSPACE_ENV: str(demo_workspace), demo.MODE_ENV: "demo",
                demo.RATE_ENV: "3", "OPENAI_API_KEY": SECRET})
    log = open(tmp_path / "server.log", "wb")
    # `timeout`: the server stops by itself even if this test process dies.
    proc = subprocess.Popen(
        ["timeout", "180", sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
         "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port",
         str(port), "--server.maxUploadSize", "2", "--client.showErrorDetails", "none",
         "--client.toolbarMode", "viewer", "--browser.gatherUsageStats", "false"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise AssertionError((tmp_path / "server.log").read_text(errors="replace"))
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")
def test_browser_demo_renders_html_as_text_and_rate_limits(demo_server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(demo_server + "/Generate")
            expect(page.get_by_text("Generate is " + REFUSED)).to_be_visible(timeout=30_000)
            assert page.locator("input[type=password]").count() == 0
            assert page.locator("[data-testid=stMainBlockContainer] button").count() == 0

            page.goto(demo_server + "/Demo")
            box = page.locator("textarea").first
            box.wait_for(timeout=30_000)
            said = page.locator("[data-testid=stCaptionContainer]", has_text="Read by the model")

            def classify(text: str) -> None:
                box.fill(text)
                box.press("Control+Enter")

            classify(XSS)
            expect(said).to_contain_text(XSS, timeout=30_000)  # the payload, shown as text
            assert page.locator("img[src=x]").count() == 0 and not dialogs
            assert page.locator("[data-testid=stMetric]").count() == 1
            for n in (2, 3):
                classify(f"{n}번째 문장이에요")
                expect(said).to_contain_text(f"{n}번째 문장이에요", timeout=30_000)
            classify("네 번째는 막혀야 해요")
            expect(page.get_by_text("Too many predictions")).to_be_visible(timeout=30_000)
            assert page.locator("[data-testid=stMetric]").count() == 0
            assert SECRET not in page.content() and not dialogs
        finally:
            browser.close()
