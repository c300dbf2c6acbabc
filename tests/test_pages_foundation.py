"""Home and Dataset pages under Streamlit's AppTest (no browser)."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from core.paths import REPO_ROOT
from core.selftest_cli import SelftestConfig
from core.train import TrainConfig


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("STUDIO_AUTOBUILD", raising=False)
    return tmp_path


def run(page: str) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / page), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_home_shows_pipeline_and_next_step():
    at = run("streamlit_app.py")
    text = " ".join(m.value for m in at.markdown)
    assert "**Dataset**" in text and "**Train**" in text
    assert any("Next step" in i.value for i in at.info)


def test_dataset_page_shows_the_seed_set_by_default():
    at = run("pages/1_Dataset.py")
    assert at.selectbox[0].value == "seed"
    from core import data, paths

    expected = len(data.validate_file(paths.SEED_PATH).records)
    assert expected >= 1400
    assert at.metric[0].value == str(expected) and at.metric[1].value == "0"
    assert any("every line is valid" in s.value for s in at.success)


class Upload:
    """Stands in for st.file_uploader's UploadedFile in AppTest, which cannot upload."""

    def __init__(self, name, content: bytes):
        self.name, self._content = name, content

    def getvalue(self):
        return self._content


def upload_and_run(monkeypatch, files):
    import streamlit as st

    monkeypatch.setattr(st, "file_uploader", lambda *a, **k: files)
    at = AppTest.from_file(str(REPO_ROOT / "pages/1_Dataset.py"), default_timeout=60)
    at.run()
    at.radio[0].set_value("Upload JSONL files").run()
    assert not at.exception, at.exception
    return at


def test_dataset_page_reports_bad_lines_and_saves_the_good(monkeypatch, workspace):
    good = "\n".join(json.dumps({"text": t, "label": l}, ensure_ascii=False)
                     for t, l in [("퇴근길 붕어빵 득템", "기쁨"), ("내일 발표 망하면 어쩌지", "불안")])
    bad = '{"text": "ok", "label": "기쁨"}\n{broken\n{"text": "x", "label": "없음"}\n'
    at = upload_and_run(monkeypatch, [Upload("good.jsonl", good.encode()),
                                      Upload("bad.jsonl", bad.encode()),
                                      Upload("table.csv", b"text,label\na,b\n")])
    assert any("good.jsonl" in s.value for s in at.success)
    assert any("bad.jsonl" in w.value and "2 invalid" in w.value for w in at.warning)
    assert any("table.csv" in e.value and "CSV" in e.value for e in at.error)
    lines = list(at.dataframe[0].value["line"])
    assert lines == [2, 3]
    name_box = [t for t in at.text_input if t.label == "Save as dataset named"][0]
    name_box.set_value("uploaded").run()
    [b for b in at.button if b.label == "Save to workspace"][0].click().run()
    saved = (workspace / "datasets" / "uploaded.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(saved) == 3


def test_first_launch_starts_the_default_training_job(monkeypatch):
    from core import jobs

    started = []
    monkeypatch.setenv("STUDIO_AUTOBUILD", "1")
    monkeypatch.setattr(jobs, "start", lambda key, config, **_: started.append((key, config)))
    run("streamlit_app.py")
    assert started == [("train:default", TrainConfig())]


def test_rerun_while_default_job_runs_starts_no_second_copy(monkeypatch):
    from core import jobs

    monkeypatch.setenv("STUDIO_AUTOBUILD", "1")
    job = jobs.start("train:default", SelftestConfig(steps=100, delay=0.1))
    try:
        at = run("streamlit_app.py")
        at.run()
        assert len(jobs.list_jobs("train:default")) == 1
        assert any("Default model" in h.value for h in at.subheader)
    finally:
        job.cancel()


def test_second_launch_never_retrains_over_a_run_trained_from_the_cli(monkeypatch, workspace,
                                                                    tiny_e5_run):
    """The data-loss bug: the home page looked for runs/default/config.json (it lives in
    model/), so a run trained with `python -m core train` was trained over on the next launch."""
    import shutil

    from core import jobs

    default = workspace / "runs" / "default"
    shutil.copytree(tiny_e5_run, default)  # what `python -m core train` leaves: no job record
    weights = (default / "model" / "model.safetensors").read_bytes()
    started = []
    monkeypatch.setenv("STUDIO_AUTOBUILD", "1")
    monkeypatch.setattr(jobs, "start", lambda key, config, **_: started.append(key))
    at = run("streamlit_app.py")
    at.run()
    assert started == [] and jobs.list_jobs() == []
    assert (default / "model" / "model.safetensors").read_bytes() == weights
    assert any("1 trained runs" in m.value for m in at.markdown)


def test_home_page_shows_the_time_left_of_the_default_run(monkeypatch):
    import time

    from core import jobs

    monkeypatch.setenv("STUDIO_AUTOBUILD", "1")
    job = jobs.start("train:default", SelftestConfig(steps=400, delay=0.05))
    try:
        deadline = time.time() + 30
        while time.time() < deadline and len(job.status().events) < 20:
            time.sleep(0.2)
        at = run("streamlit_app.py")
        texts = [str(getattr(el, "proto", "")) for el in at.main]
        assert any("left" in t and "/400" in t for t in texts), texts
    finally:
        job.cancel()
