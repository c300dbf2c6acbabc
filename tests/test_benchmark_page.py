"""The Benchmark page under Streamlit's AppTest: start a job, show a saved run, compare two."""

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.bench.measure import add_ratios, build_rows
from core.gates import bench_targets as targets
from core.paths import REPO_ROOT

PAGE = str(REPO_ROOT / "pages" / "6_Benchmark.py")


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    return tmp_path


def _runtime(key, runtime, precision, rss, size, f1, **extra):
    return {"key": key, "runtime": runtime, "precision": precision, "device": "cpu",
            "peak_rss_mb": rss, "size_mb": size, "load_s": 1.0, "accuracy": f1 + 5,
            "macro_f1": f1, "threads": 2, **extra}


def fake_results(scale: float) -> dict:
    """A results.json as core.bench.benchmark writes it, from known timings (ORT INT8 6x faster)."""
    runtimes = [_runtime("pytorch", "PyTorch", "fp32", 400.0, 30.0, 45.0),
                _runtime("ort-int8", "ONNX Runtime", "int8", 120.0, 8.0, 44.5, agreement=99.5,
                         max_logit_diff=0.01)]
    samples = {}
    for rt, ms in (("pytorch", 12.0 * scale), ("ort-int8", 2.0 * scale)):
        blocks = {f"b1:{c}": {"times": list(ms * n * np.linspace(1, 1.5, 20)), "rounds": [ms],
                              "encode_ms": [0.1], "seq_len": 8 * n, "batch_size": 1}
                  for n, c in enumerate(("short", "typical", "long"), 1)}
        blocks["b8"] = {"times": [ms * 5] * 5, "rounds": [ms * 5], "encode_ms": [],
                        "seq_len": 16, "batch_size": 8}
        samples[rt] = blocks
    rows = build_rows(runtimes, samples)
    add_ratios(rows, runtimes)
    machine = {"cpu": "Test CPU", "cpu_flags": ["avx512_vnni"], "logical_cores": 2,
               "threads": 2, "load_avg": [0.5, 0.5, 0.5], "memory_gb": 8.0, "python": "3.11",
               "packages": {"onnxruntime": "1.32.0"}}
    return {"schema": 1, "model": "demo", "command": "python -m core bench --model demo",
            "plan": {"rounds": 3, "warmup": 10, "iters": 30}, "machine": machine,
            "eval": {"dataset": "seed", "split": "test", "size": 50},
            "cases": {"short": {"text": "응", "tokens": 8}, "typical": {"text": "좋아", "tokens": 16},
                      "long": {"text": "아주 긴 문장", "tokens": 24}},
            "runtimes": runtimes, "results": rows, "targets": targets(rows, runtimes),
            "skipped": [{"key": "ort-cuda", "runtime": "ONNX Runtime CUDA", "precision": "fp32",
                         "reason": "no CUDA device on this machine"}]}


def make_run(workspace, stamps=()):
    run = workspace / "runs" / "demo"
    (run / "model").mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json"):
        (run / "model" / name).write_text("{}", encoding="utf-8")
    (run / "metrics.json").write_text("{}", encoding="utf-8")
    for i, stamp in enumerate(stamps):
        (run / "bench" / stamp).mkdir(parents=True)
        (run / "bench" / stamp / "results.json").write_text(
            json.dumps(fake_results(1.0 + i), ensure_ascii=False), encoding="utf-8")
    return run


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_without_runs_the_page_says_what_to_do():
    at = run_page()
    assert any("No trained run" in i.value for i in at.info)


def test_run_button_starts_a_background_bench_job(workspace, monkeypatch):
    from core import jobs

    run = make_run(workspace)
    started = []
    monkeypatch.setattr(jobs, "start", lambda key, config, **_: started.append((key, config)))
    at = run_page()
    assert at.multiselect[0].value == ["pytorch"]  # the only row whose files exist
    assert any("No saved benchmark" in i.value for i in at.info)
    at.multiselect[0].set_value(["pytorch", "ort-int8"]).run()
    assert any("ort-int8" in c.value and "missing" in c.value for c in at.caption)
    [b for b in at.button if b.label == "Run benchmark"][0].click().run()
    assert not at.exception, at.exception
    key, config = started[0]
    assert key == "bench:demo" and jobs.stage_of(config) == "bench"
    assert config.model == str(run) and config.runtimes == ("pytorch", "ort-int8")
    assert config.quick and config.serving


def test_saved_benchmark_shows_targets_charts_table_and_compares(workspace):
    make_run(workspace, ["20260101-000000", "20260102-000000"])
    at = run_page()
    assert at.selectbox[1].value.name == "20260102-000000"  # newest first
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Best CPU runtime, accuracy kept (batch 1, typical)"] == "ort-int8"
    assert metrics["Speed-up vs PyTorch FP32"] == "6.0x"
    assert metrics["Lowest INT8 peak memory vs PyTorch"] == "0.30x"
    summary = at.dataframe[0].value
    assert list(summary["runtime"]) == ["PyTorch FP32", "ONNX Runtime INT8"]
    assert len(at.get("plotly_chart")) == 5
    skipped = [d.value for d in at.dataframe if "reason" in d.value.columns][0]
    assert list(skipped["key"]) == ["ort-cuda"]
    diff = at.dataframe[-1].value  # A = newest (scale 2), B = older (scale 1): B is 50% faster
    assert list(diff["p50 change %"].round(1).unique()) == [-50.0]
    assert len(at.get("download_button")) == 3
