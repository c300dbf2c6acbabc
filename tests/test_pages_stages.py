"""Train, Demo and Export pages under AppTest, driving real background jobs on a tiny model."""

import json
import shutil
import time

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.paths import REPO_ROOT


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    return tmp_path


@pytest.fixture
def run_in_workspace(workspace, tiny_e5_run):
    dest = workspace / "runs" / "tiny"
    shutil.copytree(tiny_e5_run, dest, ignore=shutil.ignore_patterns("onnx", "openvino",
                                                                     "export_report.json"))
    return dest


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "pages" / name), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def wait_for(key: str, timeout: float = 240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.find(key)
        if job is not None and job.status().finished:
            return job.status()
        time.sleep(0.5)
    raise AssertionError(f"job {key} did not finish: {job and job.output_tail()}")


def button(at, label):
    return next(b for b in at.button if b.label == label)


def test_train_page_trains_a_run_in_the_background(workspace, tiny_e5_dir, seven_label_dataset):
    (workspace / "datasets").mkdir()
    shutil.copy(seven_label_dataset, workspace / "datasets" / "small.jsonl")
    at = page("3_Train.py")
    next(s for s in at.selectbox if s.label == "Dataset").set_value("small").run()
    base_box = next(s for s in at.selectbox if s.label == "Base model")
    base_box.set_value("other (hub id or local folder)").run()
    next(t for t in at.text_input if t.label == "Hub id or local model folder").set_value(
        str(tiny_e5_dir)).run()
    next(n for n in at.number_input if n.label == "Max epochs").set_value(1).run()
    next(n for n in at.number_input if n.label == "Freeze layers below K").set_value(1).run()
    next(t for t in at.text_input if t.label == "Run name").set_value("pagerun").run()
    next(n for n in at.number_input if n.label == "Label smoothing").set_value(0.1).run()
    next(n for n in at.number_input if n.label == "INT8-aware epochs").set_value(2).run()
    button(at, "Start training").click().run()
    assert not at.exception, at.exception
    status = wait_for("train:pagerun")
    assert status.state == "done", status.error
    metrics = json.loads((workspace / "runs" / "pagerun" / "metrics.json").read_text("utf-8"))
    assert metrics["config"]["label_smoothing"] == pytest.approx(0.1)
    assert metrics["config"]["int8_epochs"] == 2
    assert [r["phase"] for r in metrics["history"]] == ["train", "int8", "int8", "int8"]
    model_config = (workspace / "runs" / "pagerun" / "model" / "config.json").read_text("utf-8")
    assert json.loads(model_config)["studio_int8_aware"] is True
    at.run()
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["run"]) == ["pagerun"]


def test_train_page_rejects_a_path_as_run_name(workspace):
    at = page("3_Train.py")
    next(t for t in at.text_input if t.label == "Run name").set_value("../outside").run()
    button(at, "Start training").click().run()
    assert any("run name '../outside' is not allowed" in e.value for e in at.error)
    assert jobs.list_jobs() == []


def test_demo_page_predicts(run_in_workspace):
    at = page("4_Demo.py")
    box = next(s for s in at.selectbox if s.label == "Example")
    box.set_value(box.options[1]).run()
    assert not at.exception, at.exception
    assert at.metric[0].label == "PyTorch FP32"
    assert at.metric[0].value in {"기쁨", "슬픔", "분노", "불안", "상처", "당황", "중립"}


def test_export_page_runs_an_export_job_and_shows_artifacts(run_in_workspace):
    at = page("5_Export.py")
    assert any("not been exported" in i.value for i in at.info)
    next(c for c in at.checkbox if c.label == "OpenVINO IR + INT8").uncheck().run()
    button(at, "Export").click().run()
    status = wait_for("export:tiny")
    assert status.state == "done", status.error
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["artifact"]) == ["pytorch_fp32", "onnx_fp32", "onnx_fp32_optimized",
                                       "onnx_int8_integer", "onnx_int8_dynamic",
                                       "onnx_int8_weightonly"]
    assert any(h.value == "INT8 sensitivity per node" for h in at.subheader)
    assert any("Gates measured on" in c.value for c in at.caption)
    at2 = page("4_Demo.py")
    assert "ONNX INT8" in next(m for m in at2.multiselect if m.label == "Runtimes").options


def test_train_page_shows_the_model_card_or_says_there_is_none(run_in_workspace):
    at = page("3_Train.py")
    (card,) = [e for e in at.expander if e.label == "Model card"]
    text = "\n".join(m.value for m in card.markdown)
    for section in ("## Labels", "Per class (test split)", "## INT8 and browser parity",
                    "## Limitations"):
        assert section in text, section
    assert "---" not in text.splitlines()[0] and len(card.image) == 1  # no YAML; the matrix
    assert [d.label for d in card.get("download_button")] == ["Download README.md"]
    (run_in_workspace / "model" / "README.md").unlink()
    at = page("3_Train.py")
    (card,) = [e for e in at.expander if e.label == "Model card"]
    assert any("has no model card" in i.value for i in card.info) and not card.markdown
    assert not card.get("download_button")
