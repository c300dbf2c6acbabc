"""Model cards (core/model_card.py): Hub metadata, numbers equal to the run's files, the bundle's
template text kept, no absolute paths."""

from __future__ import annotations

import json
import os
import re
import shutil
import xml.etree.ElementTree as ET

import pytest
import yaml  # pinned in requirements.lock (pyyaml)

from core import model_card, paths
from core.labels import DEFAULT_LABELS
from core.run import RunFolder
from core.web_export import REPORT, TEMPLATE_DIR

TEMPLATE = (TEMPLATE_DIR / "README.md").read_text(encoding="utf-8")


def _copy(src, dst) -> RunFolder:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("onnx", "openvino", "bundle*",
                                                            "export_report.json"))
    return RunFolder(dst)


def _header(text: str) -> dict:
    header, _ = model_card.split_front_matter(text)
    assert header, "no front matter"
    return yaml.safe_load(header)


def _table_after(text: str, marker: str) -> list[list[str]]:
    """The rows (cells) of the first markdown table after ``marker``."""
    lines = text[text.index(marker):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _export_report(metrics: dict) -> dict:
    """An export_report.json shaped as core/export.py writes it (real exports take too long)."""
    gate = lambda name, g, value, limit, ok: {  # noqa: E731
        "gate": g, "passed": ok, "value": value, "limit": limit,
        "message": f"{name} {g}: {value} ({'ok' if ok else 'FAILED'}, limit {limit})"}
    int8_gates = [gate("onnx_int8_weightonly", "agreement", 98.5, 99.0, False),
                  gate("onnx_int8_weightonly", "f1_drop", 0.4, 1.0, True)]
    art = lambda name, mb, extra, gates=(): {  # noqa: E731
        "name": name, "path": f"/abs/{name}", "size_mb": mb, "seconds": 1.0,
        "metrics": {"accuracy": 60.0, "macro_f1": 58.0, **extra}, "gates": list(gates),
        "warnings": []}
    return {"out_dir": "/abs", "eval_size": metrics["split_sizes"]["val"], "max_length": 48,
            "artifacts": [art("pytorch_fp32", 50.1, {}),
                          art("onnx_fp32", 50.3, {"agreement": 100.0, "max_abs_diff": 2e-5},
                              [gate("ONNX FP32 vs PyTorch", "parity", 2e-5, 1e-4, True)]),
                          art("onnx_int8_weightonly", 13.2, {"agreement": 98.5,
                              "max_abs_diff": 0.7, "macro_f1_delta": -0.4}, int8_gates)],
            "int8": {"method": "weight-only", "file": "onnx/model_quantized.onnx",
                     "reason": "weight-only INT8 agrees with FP32 on 98.5%",
                     "artifact": "onnx_int8_weightonly", "gates": int8_gates, "passed": False,
                     "not_chosen": "onnx_int8_dynamic"}}


def test_run_card_metadata_metrics_and_image_from_the_runs_own_files(tiny_e5_run, tmp_path):
    # Training writes the card into a staging folder that is renamed afterwards.
    staging = _copy(tiny_e5_run, tmp_path / ".tiny.tmp-a1b2c3")
    path = model_card.write_run_card(staging)
    assert path == staging.model_dir / "README.md"
    os.replace(staging.root, tmp_path / "tiny")
    run = RunFolder(tmp_path / "tiny")
    text = (run.model_dir / "README.md").read_text(encoding="utf-8")
    assert str(tmp_path) not in text and str(tiny_e5_run) not in text and ".tmp-" not in text
    assert text == model_card.run_card(run)  # the same card from the renamed folder

    meta, m = _header(text), run.metrics()
    assert meta["language"] == ["ko"] and meta["pipeline_tag"] == "text-classification"
    assert meta["license"] == "other" and "base_model" not in meta  # a local base folder
    assert {"korean", "emotion-classification", "xlm-roberta"} <= set(meta["tags"])
    assert meta["library_name"] == "transformers" and meta["metrics"] == ["accuracy", "f1"]
    (entry,) = meta["model-index"]
    assert entry["name"] == "korean-emotion-tiny"
    (result,) = entry["results"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"]["split"] == "test" and result["dataset"]["type"]
    scores = {s["type"]: s for s in result["metrics"]}
    assert scores["accuracy"]["value"] == round(m["test"]["accuracy"], 4)
    assert scores["f1"]["value"] == round(m["test"]["macro_f1"], 4)
    assert scores["f1"]["args"] == {"average": "macro"}

    rows = _table_after(text, "Per class (test split)")
    assert [r[0] for r in rows] == m["labels"] == run.labels()
    for label, precision, recall, f1, support in rows:
        want = m["test"]["per_class"][label]
        assert [precision, recall, f1] == [f"{want[k]:.3f}" for k in ("precision", "recall", "f1")]
        assert int(support) == want["support"]
    for label in DEFAULT_LABELS:  # Korean and English definitions
        assert label.ko in text and label.en in text
    for fact in (f"{m['split_sizes']['train']} / validation {m['split_sizes']['val']}",
                 "encoder layer 0 frozen (K = 1 of 2 layers)", f"best epoch {m['best_epoch']}",
                 "48 tokens", "`seven.jsonl`", "not exported yet", "not built yet", "pipeline("):
        assert fact in text, fact

    assert "![confusion matrix](confusion_matrix.svg)" in text
    svg = ET.parse(run.model_dir / "confusion_matrix.svg").getroot()
    ns = "{http://www.w3.org/2000/svg}"
    counts = [int(t.text) for t in svg.iter(ns + "text") if t.text and t.text.isdigit()]
    assert counts == [c for row in m["test"]["confusion_matrix"] for c in row]
    before, after = model_card.page_parts(text)
    assert model_card.IMAGE not in before + after and not before.startswith("---")
    assert "## Labels" in before and "## Limitations" in after
    assert model_card.confusion_image(run) == (run.model_dir / model_card.IMAGE).read_text("utf-8")


def test_bundle_card_keeps_the_template_and_reports_parity(tiny_e5_run, tmp_path):
    run = _copy(tiny_e5_run, tmp_path / "tiny")
    m = run.metrics()
    paths.atomic_write_text(run.export_report_path, json.dumps(_export_report(m)))
    bundle = run.bundle_dir
    bundle.mkdir()
    files = {"onnx/model_quantized.onnx": 13_200_000, "vendor/ort/x.wasm": 14_200_000,
             "README.md": len(TEMPLATE.encode())}
    report = {"files": files, "breakdown_bytes": {"model": 13_200_000,
              "onnxruntime-web": 14_200_000, "tokenizer": 0, "page": 0, "other": 5000},
              "total_bytes": sum(files.values()), "labels": m["labels"], "max_length": 40,
              "scores": {"accuracy": 61.0, "macro_f1": 57.5, "agreement": 98.0,
                         "max_abs_diff": 0.8, "macro_f1_delta": -0.5, "eval_size": 21},
              "gates": [{"gate": "size", "passed": True, "value": 13.2, "limit": 35.0,
                         "message": "bundle model (MB): 13.2 (ok, limit 35)"}]}
    paths.atomic_write_text(bundle / REPORT, json.dumps(report))
    model_card.write_bundle_card(run, bundle, TEMPLATE)
    text = (bundle / "README.md").read_text(encoding="utf-8")
    assert (bundle / "confusion_matrix.svg").is_file() and "/abs" not in text

    meta = _header(text)
    template_meta = yaml.safe_load(model_card.split_front_matter(TEMPLATE)[0])
    assert {k: meta[k] for k in template_meta} == template_meta  # Space settings unchanged
    assert meta["library_name"] == "transformers.js" and "model-index" in meta
    assert {"onnx", "transformers.js"} <= set(meta["tags"])
    body = model_card.split_front_matter(text)[1]
    usage = body[body.index("## Hosting and usage"):]
    for line in model_card.split_front_matter(TEMPLATE)[1].splitlines():
        heading = re.match(r"(#+) (.*)", line)
        if heading and not line.startswith("# "):  # headings move two levels down
            assert f"##{heading.group(1)} {heading.group(2)}" in usage, line
        elif line.strip() and not line.startswith("# "):
            assert line in usage, line
    assert "### Korean emotion classifier — browser bundle" in usage
    assert body.index("## INT8 and browser parity") < body.index("## Hosting and usage")
    for fact in ("weight-only INT8 agrees with FP32 on 98.5%", "ONNX INT8 weight-only (shipped",
                 "❌ onnx_int8_weightonly agreement", "✅ bundle model (MB)", "98.00%",
                 "27.4 MB in all", "40 tokens", "INT8 drift (bundle): 2.00%"):
        assert fact in body, fact
    assert model_card.bundle_card(run, bundle) == model_card.bundle_card(run, bundle, report)


def test_training_writes_the_card_beside_the_model_from_metrics_json(tiny_e5_run):
    run = RunFolder(tiny_e5_run)  # trained by core.train (conftest): the card came with it
    text = (run.model_dir / model_card.CARD).read_text(encoding="utf-8")
    meta, m = _header(text), run.metrics()
    assert meta["language"] == ["ko"] and meta["pipeline_tag"] == "text-classification"
    assert meta["license"] and meta["metrics"] == ["accuracy", "f1"]
    assert {"text-classification", "korean", "emotion-classification"} <= set(meta["tags"])
    rows = _table_after(text, "Per class (test split)")
    assert {r[0]: r[1:] for r in rows} == {
        label: [f"{p['precision']:.3f}", f"{p['recall']:.3f}", f"{p['f1']:.3f}",
                str(p["support"])] for label, p in m["test"]["per_class"].items()}
    assert (run.model_dir / model_card.IMAGE).is_file() and ".tmp-" not in text
    assert "# Korean emotion classifier: tiny_e5 (model)" in text  # the run's name, not staging's
    assert str(tiny_e5_run.parent) not in text
    assert not [p for p in tiny_e5_run.parent.iterdir() if ".tmp-" in p.name]  # staging swapped


def test_page_blocks_show_a_card_and_say_when_there_is_none(tiny_e5_run, tmp_path):
    kinds = [kind for kind, _ in model_card.page_blocks(tiny_e5_run / "model", "none")]
    assert kinds == ["markdown", "image", "markdown"]
    assert model_card.page_blocks(tmp_path, "no card here") == [("info", "no card here")]
    (tmp_path / model_card.CARD).write_text(TEMPLATE, encoding="utf-8")  # front matter, no card
    assert model_card.page_blocks(tmp_path, "no card here") == [("info", "no card here")]


def test_the_run_card_reads_the_export_and_bundle_reports_there_at_call_time(tiny_e5_run,
                                                                               tmp_path):
    run = _copy(tiny_e5_run, tmp_path / "tiny")
    assert "not exported yet" in model_card.write_run_card(run).read_text(encoding="utf-8")
    paths.atomic_write_text(run.export_report_path, json.dumps(_export_report(run.metrics())))
    run.bundle_dir.mkdir()
    paths.atomic_write_text(run.bundle_dir / REPORT, json.dumps(
        {"total_bytes": 27_400_000, "max_length": 48, "breakdown_bytes": {"model": 13_200_000},
         "scores": {"agreement": 99.0, "macro_f1_delta": -0.3, "eval_size": 21}, "gates": []}))
    text = model_card.write_run_card(run).read_text(encoding="utf-8")  # what export would call
    assert "not exported yet" not in text and "not built yet" not in text
    for fact in ("ONNX INT8 weight-only (shipped INT8)", "weight-only INT8 agrees with FP32",
                 "Browser bundle: 27.4 MB in all", "INT8 drift (bundle): 1.00%"):
        assert fact in text, fact
    assert {"onnx", "int8"} <= set(_header(text)["tags"])


def test_the_card_names_recipe_levers_only_when_a_run_used_them(tiny_e5_run, tmp_path):
    assert "recipe levers" not in model_card.run_card(RunFolder(tiny_e5_run))
    run = _copy(tiny_e5_run, tmp_path / "levers")
    metrics = json.loads((run.root / "metrics.json").read_text(encoding="utf-8"))
    metrics["config"].update(label_smoothing=0.1, reinit_top=1, init_seed=14, int8_epochs=2,
                             int8_lr=3e-5)
    (run.root / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    text = model_card.run_card(run)
    assert "| recipe levers | label smoothing 0.1, top layers re-initialised: 1 |" in text
    assert ("| INT8-aware phase | 2 epoch(s) at lr 3e-05, distilled from the FP32 model") in text
    assert "14 (initialisation, batch order)" in text
