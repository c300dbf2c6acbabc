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
