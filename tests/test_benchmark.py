"""Benchmark: adapters agree with PyTorch, statistics on known timings, skipped rows, quick CLI run,
the HTTP endpoint."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.bench import benchmark
from core.bench import cli as bench_cli
from core.bench.measure import summarize
from core.errors import ConfigError
from core.run import RunFolder

LABELS = ["기쁨", "슬픔", "분노", "불안", "상처", "당황", "중립"]
TEXTS = ["오늘 정말 기분이 좋아요!", "왜 나한테만 이런 일이 생기지", "ㅋㅋㅋ 진짜 웃기다 😂",
         "내일 발표인데 너무 떨려서 잠이 안 와", "그냥 그래"]
CPU_ROWS = ["pytorch", "ort", "ort-opt", "ort-int8", "openvino", "openvino-bf16", "openvino-int8"]
# Max |logit diff| allowed against PyTorch FP32, by the row's precision (relative to the largest
# |logit| when that exceeds 1: quantization error grows with the logits' scale).
TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2, "int8": 3e-2}


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "ws"))


@pytest.fixture(scope="module")
def tiny_run(tiny_e5_run, tmp_path_factory) -> Path:
    """The shared tiny trained run, exported (ONNX, INT8, OpenVINO) into a folder of our own so
    the shared fixture stays untouched."""
    from core import export

    run = tmp_path_factory.mktemp("bench") / "run"
    run.mkdir()
    (run / "model").symlink_to(Path(tiny_e5_run) / "model")
    shutil.copy(Path(tiny_e5_run) / "metrics.json", run / "metrics.json")
    export.run(export.ExportConfig(model=str(tiny_e5_run), out_dir=str(run), calibration_size=20,
                                   allow_int8_drift=True))
    return run


@pytest.mark.parametrize("key", CPU_ROWS[1:])
def test_each_cpu_row_matches_pytorch_within_its_precision(tiny_run, tmp_path, key):
    from core.runtimes import load

    ref = load(tiny_run / "model").logits(TEXTS)
    spec = benchmark.RUNTIMES[key]
    wspec = benchmark._worker_spec(spec, RunFolder(tiny_run), tmp_path, 2,
                                   benchmark.BenchConfig(str(tiny_run)))
    got = load(wspec["path"], **wspec["options"]).logits(TEXTS)
    assert got.shape == ref.shape == (len(TEXTS), len(LABELS))
    diff, scale = np.abs(got - ref).max(), max(1.0, np.abs(ref).max())
    assert diff <= TOLERANCE[spec.precision] * scale, f"{key}: max |diff| {diff:.3g}"


def test_browser_row_matches_onnxruntime_int8(tiny_run, tmp_path):
    from core.bench.browser import chromium_path, find_ort_web
    from core.bench.worker import ProcessWorker
    from core.runtimes import load

    config = benchmark.BenchConfig(str(tiny_run))
    if find_ort_web(tiny_run / "bundle") is None or chromium_path() is None:
        pytest.skip(benchmark.skip_reason(benchmark.RUNTIMES["browser-1t"], RunFolder(tiny_run),
                                          config))
    wspec = benchmark._worker_spec(benchmark.RUNTIMES["browser-1t"], RunFolder(tiny_run), tmp_path,
                                   1, config)
    worker = ProcessWorker(wspec)
    try:
        assert worker.start()["threads_used"] == 1
        got = worker.logits(TEXTS)
    finally:
        worker.close()
    ref = load(tiny_run / "onnx" / "model_quantized.onnx").logits(TEXTS)
    assert np.abs(got - ref).max() <= 1e-4


def test_summarize_percentiles():
    stats = summarize(list(range(1, 101)))
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p95_ms"] == pytest.approx(95.05)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["mean_ms"] == pytest.approx(50.5) and stats["iters"] == 100


class FakeWorker:
    """Known timings: each timed call of batch b takes factor * b * (1..iters) ms."""

    FACTOR = {"pytorch": 4.0, "ort-int8": 1.0, "openvino-int8": 2.0}
    MEMORY = {"pytorch": 400.0, "ort-int8": 100.0, "openvino-int8": 300.0}
    calls: list = []

    def __init__(self, wspec):
        self.spec = wspec

    def start(self):
        return {"load_s": 0.5, "import_s": 0.1, "precision": "x", "size_bytes": 2_000_000}

    def time(self, texts, warmup, iters):
        FakeWorker.calls.append(self.spec["key"])
        f = self.FACTOR[self.spec["key"]] * len(texts)
        return {"times_ms": [f * i for i in range(1, iters + 1)], "seq_len": 9,
                "batch_size": len(texts), "encode_ms": 0.1}

    def logits(self, texts):
        rng = np.random.default_rng(0)  # the same logits for every runtime: full agreement
        return rng.normal(size=(len(texts), len(LABELS))).astype(np.float32)

    def memory(self):
        return {"rss_mb": 1.0, "peak_rss_mb": self.MEMORY[self.spec["key"]]}

    def close(self):
        pass


def test_harness_statistics_ratios_and_skips_on_fake_runtimes(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"  # no openvino/ folder: those rows must be skipped, with the reason
    run.mkdir()
    for name in ("model", "onnx", "metrics.json"):
        (run / name).symlink_to(tiny_run / name)
    monkeypatch.setattr(benchmark, "_make_worker", FakeWorker)
    FakeWorker.calls = []
    config = benchmark.BenchConfig(str(run), runtimes=("pytorch", "ort-int8", "openvino-int8"),
                                   rounds=2, iters=100, warmup=0, batch_sizes=(4,),
                                   serving=False, png=False, out_dir=str(tmp_path / "out"))
    result = benchmark.run(config)
    assert result.measured == ["pytorch", "ort-int8"]
    assert [(s["key"], "openvino/model_int8.xml" in s["reason"]) for s in result.skipped] == \
        [("openvino-int8", True)]
    # Interleaved: round 1 starts with pytorch, round 2 with ort-int8 (4 blocks per visit).
    assert FakeWorker.calls == ["pytorch"] * 4 + ["ort-int8"] * 8 + ["pytorch"] * 4
    saved = json.loads(Path(result.results_path).read_text(encoding="utf-8"))
    rows = {(r["key"], r["kind"], r["case"]): r for r in saved["results"]}
    typical = rows[("ort-int8", "latency", "typical")]
    assert typical["p50_ms"] == pytest.approx(50.5) and typical["p95_ms"] == pytest.approx(95.05)
    assert typical["iters"] == 200  # both rounds pooled
    assert rows[("pytorch", "latency", "typical")]["p50_ms"] == pytest.approx(4 * 50.5)
    assert typical["speedup_vs_pytorch"] == pytest.approx(4.0)
    batch = rows[("ort-int8", "throughput", "batch")]
    # 5 timed calls per batch block (full mode): 4, 8, ... 20 ms, median 12 ms for 4 texts.
    assert batch["batch_size"] == 4 and batch["throughput"] == pytest.approx(4 / 12e-3)
    assert batch["speedup_vs_pytorch"] == pytest.approx(4.0)
    assert typical["peak_rss_mb"] == 100.0 and typical["mem_ratio_vs_pytorch"] == 0.25
    assert typical["agreement"] == 100.0 and typical["size_mb"] == 2.0
    assert saved["targets"]["best_cpu"] == "ort-int8" and saved["targets"]["speedup_met"] is False
    assert saved["targets"]["int8_mem_ratio"] == 0.25 and saved["targets"]["mem_met"] is True


def test_config_rejects_unknown_runtimes_and_bad_numbers():
    with pytest.raises(ConfigError, match="unknown runtime"):
        benchmark.BenchConfig("run", runtimes=("pytorch", "tpu"))
    with pytest.raises(ConfigError, match="batch sizes"):
        benchmark.BenchConfig("run", batch_sizes=(1,))


def _cli(argv: list[str]):
    parser = argparse.ArgumentParser()
    bench_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


def test_quick_cli_run_writes_results_with_the_fields(tiny_run, tmp_path, capsys):
    out = tmp_path / "bench"
    code, result = _cli(["bench", "--model", str(tiny_run), "--quick", "--out", str(out),
                         "--runtimes", "pytorch,ort-int8", "openvino-int8", "ort-cuda",
                         "--iters", "5", "--requests", "12", "--clients", "2"])
    assert code == 0 and result.measured == ["pytorch", "ort-int8", "openvino-int8"]
    assert [s["key"] for s in result.skipped] == ["ort-cuda"] and result.skipped[0]["reason"]
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    fields = {"runtime", "precision", "batch_size", "seq_len", "p50_ms", "p95_ms", "throughput",
              "peak_rss_mb", "size_mb", "macro_f1", "speedup_vs_pytorch"}
    assert saved["results"] and all(fields <= set(r) for r in saved["results"])
    kinds = {(r["key"], r["kind"]) for r in saved["results"]}
    assert ("ort-int8", "serving") in kinds and ("pytorch", "throughput") in kinds
    for r in saved["results"]:
        assert r["p50_ms"] > 0 and r["throughput"] > 0 and r["peak_rss_mb"] > 50
        assert r["p95_ms"] >= r["p50_ms"]
        if r["key"] == "pytorch":
            assert r["speedup_vs_pytorch"] == pytest.approx(1.0)
        else:
            assert r["agreement"] >= 80 and r["max_logit_diff"] < 0.1
    assert all(r["errors"] == 0 for r in saved["results"] if r["kind"] == "serving")
    lengths = [saved["cases"][c]["tokens"] for c in ("short", "typical", "long")]
    assert lengths == sorted(lengths) and lengths[0] < lengths[2]
    assert saved["machine"]["cpu"] and saved["machine"]["packages"]["onnxruntime"]
    with open(out / "results.csv", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == len(saved["results"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Targets" in report and "ort-cuda" in report and "--quick" in report
    assert (out / "latency.png").is_file() or saved.get("png_note")
    assert "## Summary" in capsys.readouterr().out


class EchoRuntime:
    label = "echo fp32"

    def predict(self, texts):
        from core.runtimes import Prediction

        return [Prediction("기쁨", {"기쁨": 0.9, "슬픔": 0.1}) for _ in texts]


def test_http_endpoint_serves_predictions_to_concurrent_clients():
    import http.client

    from core.bench.serving import load_test, start_server

    server = start_server(EchoRuntime())
    try:
        res = load_test(server.port, TEXTS, clients=3, requests=30, warmup=2)
        assert res["errors"] == 0 and len(res["times_ms"]) == 30 and res["rps"] > 0
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/predict", b'{"text": "\xec\x95\x88\xeb\x85\x95"}')
        assert json.loads(conn.getresponse().read())["predictions"][0]["label"] == "기쁨"
        conn.request("POST", "/predict", b'{"texts": 3}')
        assert conn.getresponse().status == 400
        conn.close()
    finally:
        server.stop()


def test_report_compare_lines_up_rows_of_two_runs(tmp_path):
    from core.bench import report as bench_report

    row = {"key": "ort-int8", "runtime": "ONNX Runtime", "precision": "int8", "kind": "latency",
           "case": "typical", "batch_size": 1, "p50_ms": 2.0, "throughput": 500.0,
           "speedup_vs_pytorch": 5.0}
    a, b = {"results": [row]}, {"results": [{**row, "p50_ms": 3.0}, {**row, "key": "x"}]}
    diff = bench_report.compare(a, b)
    assert len(diff) == 1 and diff[0]["p50 change %"] == pytest.approx(50.0)
