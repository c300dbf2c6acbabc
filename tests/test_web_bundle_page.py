"""The Web bundle page under Streamlit's AppTest: build button -> job config, size, zip, preview."""

from __future__ import annotations

import dataclasses
import shutil
import time
import urllib.request

import pytest
from streamlit.testing.v1 import AppTest

from core import cli, jobs, paths, web_export
from core.labels import DEFAULT_LABEL_NAMES
from core.run import RunFolder

PAGE = str(paths.REPO_ROOT / "pages" / "7_Web_Bundle.py")
needs_npm = pytest.mark.skipif(bool(web_export.missing_vendor_files()),
                               reason="npm packages missing: run `cd web_export && npm ci`")


@pytest.fixture(scope="module")
def int8_run(request, tmp_path_factory):
    """A run folder with onnx/model_quantized.onnx: `tiny_e5_run` when conftest has it, else one
    built here from `tiny_e5_dir` (7 default labels, random head); INT8 from core.export."""
    try:
        src = request.getfixturevalue("tiny_e5_run")
    except pytest.FixtureLookupError:
        src = None
    run = tmp_path_factory.mktemp("page_run") / "tiny"
    if src is not None:
        shutil.copytree(src, run, ignore=shutil.ignore_patterns("bundle*", "openvino"))
    else:
        import torch
        from transformers import AutoModelForSequenceClassification

        base = request.getfixturevalue("tiny_e5_dir")
        labels = list(DEFAULT_LABEL_NAMES)
        torch.manual_seed(0)
        AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)}).save_pretrained(run / "model")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(base / name, run / "model" / name)
    if not (run / web_export.INT8_PATH).is_file():
        from core import export

        small = run.parent / "small.jsonl"
        seed = paths.SEED_PATH.read_text(encoding="utf-8").splitlines()
        small.write_text("\n".join(seed[:21]) + "\n", encoding="utf-8")
        export.run(export.ExportConfig(model=str(run), openvino=False, data=str(small),
                                       allow_int8_drift=True))
    return run


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.WORKSPACE_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture
def run_in_workspace(workspace, int8_run):
    dest = workspace / "runs" / "tiny"
    shutil.copytree(int8_run, dest)
    return dest


def open_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_without_runs_the_page_says_to_train_first(workspace):
    at = open_page()
    assert any("Train page" in i.value for i in at.info)


@needs_npm
def test_build_button_starts_the_cli_job_then_shows_size_zip_and_preview(run_in_workspace,
                                                                           monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "start", lambda key, config, env=None: started.append((key, config)))
    at = open_page()
    assert any("No bundle" in i.value for i in at.info)
    next(n for n in at.number_input if n.label == "Example sentences").set_value(4).run()
    next(b for b in at.button if b.label == "Build bundle").click().run()
    assert not at.exception, at.exception
    key, config = started[0]
    assert key == "webexport:tiny"
    bundle = run_in_workspace / "bundle"
    assert config.model == str(run_in_workspace) and config.zip and config.examples == 4

    # Run the config as the job would (`python -m core job`: the same function as the CLI).
    code, result = jobs.run_config(jobs.stage_of(config),
                                   dataclasses.replace(config, allow_int8_drift=True))
    assert code == 0 and result.out_dir == str(bundle)

    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    # from the report's exact bytes (result.*_mb are already rounded to 2 decimals)
    report = RunFolder.of(bundle).bundle_report(bundle)
    assert metrics["Bundle"] == f"{report['total_bytes'] / 1e6:.1f} MB"
    assert metrics["Model (INT8 ONNX)"] == f"{report['breakdown_bytes']['model'] / 1e6:.1f} MB"
    assert "Zip" in metrics and any("Within the targets" in s.value for s in at.success)
    parts = at.dataframe[0].value
    assert list(parts["part"]) == ["model", "onnxruntime-web", "tokenizer", "page", "other"]
    assert [d.label for d in at.get("download_button")] == ["Download bundle (zip)"]

    frames = [e for e in at.main if getattr(e, "type", None) == "iframe"]
    url = frames[0].proto.src
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200 and b"app.js" in resp.read()
        assert resp.headers["Cross-Origin-Embedder-Policy"] == "require-corp"


@needs_npm
@pytest.mark.skipif("core.web_export_cli" not in cli.COMMAND_MODULES,
                    reason="core/cli.py does not register web-export yet")
def test_build_runs_as_a_real_background_job(run_in_workspace):
    at = open_page()
    next(b for b in at.button if b.label == "Build bundle").click().run()
    deadline = time.time() + 120
    while time.time() < deadline:
        status = jobs.find("webexport:tiny").status()
        if status.finished:
            break
        time.sleep(0.5)
    assert status.state == "done", status.error
    assert status.result["total_mb"] > 0
    at = open_page()
    assert [d.label for d in at.get("download_button")] == ["Download bundle (zip)"]


@needs_npm
def test_the_bundle_readme_is_its_model_card_and_the_page_shows_it(run_in_workspace):
    import json
    import re

    import yaml  # pinned in requirements.lock (pyyaml)

    from core import model_card

    result = web_export.run(web_export.WebExportConfig(model=str(run_in_workspace), examples=2,
                                                       allow_int8_drift=True))
    bundle = run_in_workspace / "bundle"
    text = (bundle / "README.md").read_text(encoding="utf-8")
    header, body = model_card.split_front_matter(text)
    meta = yaml.safe_load(header)
    assert meta["language"] == ["ko"] and meta["pipeline_tag"] == "text-classification"
    assert meta["license"] and meta["metrics"] == ["accuracy", "f1"] and meta["sdk"] == "static"
    assert meta["library_name"] == "transformers.js" and "transformers.js" in meta["tags"]
    template = (web_export.TEMPLATE_DIR / "README.md").read_text(encoding="utf-8")
    (snippet,) = re.findall(r"```js\n(import \{ pipeline.*?)```", template, re.S)
    assert len(snippet.splitlines()) == 3 and snippet in body
    assert "Texts longer than the model's maximum length are cut to it" in body
    assert "drops the final `</s>`" in body and "Per class (test split)" in body
    # The report's files, breakdown and total include the card as written.
    report = json.loads((bundle / web_export.REPORT).read_text(encoding="utf-8"))
    files = web_export.file_sizes(bundle)
    assert report["files"] == {k: v for k, v in files.items() if k != web_export.REPORT}
    assert report["files"]["README.md"] == len(text.encode()) and "confusion_matrix.svg" in files
    assert report["total_bytes"] == sum(report["breakdown_bytes"].values())
    assert result.total_mb == round(report["total_bytes"] / 1e6, 2)
    assert f"{report['total_bytes'] / 1e6:.1f} MB in all" in body

    at = open_page()
    (card,) = [e for e in at.expander if e.label.startswith("Model card")]
    shown = "\n".join(m.value for m in card.markdown)
    assert "## INT8 and browser parity" in shown and "Browser bundle:" in shown
    assert len(card.image) == 1 and not card.info
    shutil.copyfile(web_export.TEMPLATE_DIR / "README.md", bundle / "README.md")  # an old bundle
    at = open_page()
    (card,) = [e for e in at.expander if e.label.startswith("Model card")]
    assert any("not a model card" in i.value for i in card.info) and not card.markdown
