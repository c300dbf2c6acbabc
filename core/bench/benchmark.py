"""Benchmark a trained run on every runtime, side by side, in one command.

Rows (``RUNTIMES``): PyTorch FP32 eager (the baseline), ONNX Runtime FP32 / optimized / INT8,
OpenVINO FP32 / device-default (bf16 where the CPU runs it that way) / INT8, GPU rows (TensorRT and
CUDA through ONNX Runtime, PyTorch CUDA) and onnxruntime-web in headless Chromium. Each runtime
runs in its own process (core.bench.worker), is warmed up, and is measured in interleaved rounds
(core.bench.measure); rows that cannot run here are listed in ``skipped`` with the reason. Results
go to ``results.json`` first; CSV, Markdown and charts are drawn from it (core.bench.report).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.bench.measure import BASELINE, Plan, add_ratios, build_rows, machine, measure, scores, \
    summarize
from core.gates import bench_targets
from core.bench.worker import worker_env
from core.errors import ConfigError
from core.progress import ProgressFn
from core.run import RunFolder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowSpec:
    key: str  # short id used on the command line, e.g. "ort-int8"
    runtime: str  # display name
    precision: str  # nominal precision of the row
    file: str  # what it loads, as a core.run.RunFolder.artifact kind ("model", "onnx:int8"...)
    library: str  # what the worker imports: torch | onnxruntime | openvino | browser
    device: str = "cpu"  # cpu | cuda | browser
    options: tuple = ()  # adapter options as (name, value) pairs


RUNTIMES = {s.key: s for s in [
    RowSpec("pytorch", "PyTorch", "fp32", "model", "torch"),
    RowSpec("ort", "ONNX Runtime", "fp32", "onnx:fp32", "onnxruntime"),
    RowSpec("ort-opt", "ONNX Runtime optimized", "fp32", "onnx:optimized",
            "onnxruntime"),
    RowSpec("ort-int8", "ONNX Runtime", "int8", "onnx:int8", "onnxruntime"),
    RowSpec("ort-int8-integer", "ONNX Runtime per-token integer", "int8", "onnx:int8-integer",
            "onnxruntime"),
    RowSpec("ort-int8-dynamic", "ONNX Runtime dynamic", "int8", "onnx:int8-dynamic",
            "onnxruntime"),
    RowSpec("openvino", "OpenVINO", "fp32", "openvino:fp32", "openvino", "cpu",
            (("hint", "f32"),)),
    RowSpec("openvino-bf16", "OpenVINO default hint", "bf16", "openvino:fp32", "openvino",
            "cpu", (("hint", None),)),
    RowSpec("openvino-int8", "OpenVINO", "int8", "openvino:int8", "openvino"),
    RowSpec("browser-1t", "Browser wasm 1 thread", "int8", "onnx:int8",
            "browser", "browser", (("threads", 1),)),
    RowSpec("browser-mt", "Browser wasm threaded", "int8", "onnx:int8",
            "browser", "browser"),
    RowSpec("ort-trt-fp16", "TensorRT (ORT EP)", "fp16", "onnx:fp32", "onnxruntime",
            "cuda"),
    RowSpec("ort-cuda", "ONNX Runtime CUDA", "fp32", "onnx:fp32", "onnxruntime", "cuda"),
    RowSpec("pytorch-cuda", "PyTorch CUDA", "fp32", "model", "torch", "cuda",
            (("device", "cuda"),)),
    RowSpec("pytorch-cuda-fp16", "PyTorch CUDA", "fp16", "model", "torch", "cuda",
            (("device", "cuda"), ("half", True))),
]}
DEFAULT_RUNTIMES = tuple(RUNTIMES)


@dataclass(frozen=True)
class BenchConfig:
    model: str  # run folder (model/ + onnx/ + openvino/ from `python -m core export`)
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES  # row keys (see RUNTIMES); unavailable = skipped
    quick: bool = False  # fewer rounds/iterations/sentences: about a minute on a small model
    out_dir: str | None = None  # None = RUN/bench/<timestamp>/
    rounds: int | None = None  # interleaved rounds; None = 3 (quick: 2)
    iters: int | None = None  # timed batch-1 calls per case per round; None = 30 (quick: 10)
    warmup: int | None = None  # untimed calls before each block; None = 10 (quick: 3)
    batch_sizes: tuple[int, ...] | None = None  # throughput batches; None = (8, 32) (quick: (8,))
    threads: int | None = None  # intra-op threads per runtime; None = every logical core
    eval_size: int | None = None  # labeled sentences scored; None = the whole set (quick: 64)
    data: str | None = None  # labeled JSONL; None = the run's own test split
    serving: bool = True  # also serve each process runtime over HTTP and load it
    serving_clients: int = 4  # concurrent HTTP clients
    serving_requests: int | None = None  # requests per runtime; None = 200 (quick: 40)
    ort_web_dir: str | None = None  # onnxruntime-web dist folder; None = look in bundle/ and web_export/
    png: bool = True  # also render the latency chart to PNG with headless Chromium

    def __post_init__(self):
        unknown = [k for k in self.runtimes if k not in RUNTIMES]
        if unknown or not self.runtimes:
            raise ConfigError(f"bench: unknown runtime(s) {unknown or '(none given)'}; choose "
                              f"from {', '.join(RUNTIMES)}")
        for name in ("rounds", "iters", "threads", "eval_size", "serving_requests"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"bench: {name} must be >= 1 (or left out for the default)")
        if self.warmup is not None and self.warmup < 0:
            raise ConfigError("bench: warmup must be >= 0, e.g. 10")
        if self.batch_sizes is not None and (not self.batch_sizes or min(self.batch_sizes) < 2):
            raise ConfigError("bench: throughput batch sizes must be >= 2, e.g. 8,32")
        if self.serving_clients < 1:
            raise ConfigError("bench: serving_clients must be >= 1, e.g. 4")

    def plan(self) -> Plan:
        q = self.quick
        return Plan(rounds=self.rounds or (2 if q else 3),
                    warmup=self.warmup if self.warmup is not None else (3 if q else 10),
                    iters=self.iters or (10 if q else 30),
                    batch_sizes=tuple(self.batch_sizes or ((8,) if q else (8, 32))),
                    batch_iters=3 if q else 5, gap_s=0.05 if q else 0.2)


@dataclass
class BenchResult:
    out_dir: str
    results_path: str
    report_path: str
    measured: list[str]  # row keys that ran
    skipped: list[dict]  # {"key", "runtime", "precision", "reason"}
    targets: dict  # see core.gates.bench_targets
    files: dict = field(default_factory=dict)  # every file written, by kind


def skip_reason(spec: RowSpec, run: RunFolder, config: BenchConfig) -> str | None:
    """Why this row cannot run on this machine, or None."""
    from core.bench.browser import chromium_path, find_ort_web

    path = run.artifact(spec.file)
    if not path.exists():
        return (f"missing {path.relative_to(run.root).as_posix()}: run `python -m core export "
                f"--model {run.root}` first")
    if spec.device == "cuda":
        if not (shutil.which("nvidia-smi") or Path("/dev/nvidiactl").exists()):
            return "no CUDA device on this machine"
        if spec.library == "onnxruntime":
            import onnxruntime

            ep = "TensorrtExecutionProvider" if "trt" in spec.key else "CUDAExecutionProvider"
            if ep not in onnxruntime.get_available_providers():
                return f"onnxruntime has no {ep} here (install onnxruntime-gpu" + \
                    (" and TensorRT)" if "trt" in spec.key else ")")
    if spec.device == "browser":
        if find_ort_web(run.bundle_dir, config.ort_web_dir) is None:
            return ("onnxruntime-web files not found: build the web bundle (`python -m core "
                    "web-export`) or run `npm ci` in web_export/, or pass --ort-web-dir")
        if chromium_path() is None:
            return "no Chromium on this machine (apt-get install chromium)"
    return None


def _worker_spec(spec: RowSpec, run: RunFolder, out: Path, threads: int, config) -> dict:
    from core.bench.browser import chromium_path, find_ort_web

    options = dict(spec.options)
    base = {"key": spec.key, "path": str(run.artifact(spec.file)), "library": spec.library,
            "log": str(out / "logs" / f"{spec.key}.log")}
    if spec.library == "browser":
        return {**base, "threads": options.get("threads", threads), "chromium": chromium_path(),
                "ort_web_dir": str(find_ort_web(run.bundle_dir, config.ort_web_dir)),
                "hide_torch": True}
    if spec.device == "cpu":
        options["threads"] = threads
    if spec.key == "ort-trt-fp16":
        cache = str(out / "trt_cache")
        options["providers"] = [["TensorrtExecutionProvider", {
            "trt_fp16_enable": True, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache}], "CUDAExecutionProvider", "CPUExecutionProvider"]
        options["precision"] = "fp16"
    elif spec.key == "ort-cuda":
        options["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # Non-PyTorch CPU rows run without torch, as they would be deployed (see bench_worker).
    hide = spec.device == "cpu" and spec.library != "torch"
    return {**base, "options": options, "hide_torch": hide}


def _make_worker(wspec: dict):
    from core.bench.worker import ProcessWorker

    return ProcessWorker(wspec)


def _loaded_reason(spec: RowSpec, info: dict) -> str | None:
    """Why a row that loaded still does not measure what it claims, or None."""
    providers = info.get("providers") or []
    actual = str(info.get("precision")).replace("bfloat16", "bf16")
    if spec.key == "openvino-bf16" and "bf16" not in actual:
        return (f"this CPU runs FP32 models as {info.get('precision')} by default; the OpenVINO "
                "FP32 row already covers it")
    if spec.key == "ort-trt-fp16" and providers[:1] != ["TensorrtExecutionProvider"]:
        return f"ONNX Runtime fell back to {providers[:1]} instead of TensorRT"
    if spec.key == "ort-cuda" and providers[:1] != ["CUDAExecutionProvider"]:
        return f"ONNX Runtime fell back to {providers[:1]} instead of CUDA"
    return None


def _start(specs: list[RowSpec], wspecs: dict, skipped: list, emit) -> tuple[list, list]:
    """Start and load each worker in turn (never two loading at once: load time is measured)."""
    workers, runtimes = [], []
    for i, spec in enumerate(specs):
        emit({"done": i, "total": len(specs), "message": f"loading {spec.key}"})
        worker = _make_worker(wspecs[spec.key])
        try:
            info = worker.start()
            reason = _loaded_reason(spec, info)
        except Exception as exc:  # one row failing to load must not sink the others
            info, reason = {}, f"failed to load: {exc}"
        if reason:
            worker.close()
            skipped.append({"key": spec.key, "runtime": spec.runtime,
                            "precision": spec.precision, "reason": reason})
            log.warning("bench: skipping %s: %s", spec.key, reason)
            continue
        workers.append(worker)
        runtimes.append({"key": spec.key, "runtime": spec.runtime, "precision": spec.precision,
                         "device": spec.device, "file": spec.file,
                         "actual_precision": str(info.get("precision")),
                         "threads": info.get("threads_used", wspecs[spec.key].get(
                             "options", {}).get("threads")),
                         "load_s": info.get("load_s"), "import_s": info.get("import_s"),
                         # resident memory once loaded and called once (the steady state of a
                         # server between requests); peak_rss_mb comes after every timed batch
                         "loaded_rss_mb": info.get("rss_after_mb"),
                         "size_mb": info.get("size_bytes", 0) / 1e6,
                         "providers": info.get("providers")})
    return workers, runtimes


def _quality(workers: list, runtimes: list, texts: list[str], gold: np.ndarray, emit,
             run_labels: np.ndarray | None = None) -> None:
    """Accuracy/macro-F1 of each runtime; agreement and max logit diff against PyTorch. For an
    INT8-aware run (``run_labels``: the labels its own evaluation computed, core.quant.
    shipped.run_yardstick) also ``agreement_with_run`` (%) and ``f1_delta_vs_run`` (points): that
    model is the INT8 computation, and PyTorch runs its FP32 twin."""
    logits = {}
    for i, worker in enumerate(workers):
        emit({"done": i, "total": len(workers), "message": f"scoring {worker.spec['key']}"})
        logits[worker.spec["key"]] = worker.logits(texts)
    ref = logits.get(BASELINE)
    if run_labels is not None:  # the run's labels as one-hot logits: its macro-F1 here
        width = next(iter(logits.values())).shape[1]
        run_f1 = scores(gold, np.eye(width, dtype=np.float32)[run_labels], None)["macro_f1"]
    for rt in runtimes:
        rt.update(scores(gold, logits[rt["key"]], None if rt["key"] == BASELINE else ref))
        if run_labels is not None and rt["key"] != BASELINE:
            rt["agreement_with_run"] = float((logits[rt["key"]].argmax(-1) == run_labels).mean()
                                             ) * 100
            rt["f1_delta_vs_run"] = rt["macro_f1"] - run_f1


def _serving(workers: list, runtimes: list, texts: list[str], seq_len: int, config, emit) -> list:
    from core.bench.serving import load_test

    rows, requests = [], config.serving_requests or (40 if config.quick else 200)
    procs = [w for w in workers if w.spec["library"] != "browser"]
    for i, worker in enumerate(procs):
        emit({"done": i, "total": len(procs), "message": f"serving {worker.spec['key']}"})
        rt = next(r for r in runtimes if r["key"] == worker.spec["key"])
        port = worker.serve()
        try:
            res = load_test(port, texts, config.serving_clients, requests)
        finally:
            worker.unserve()
        rows.append({**{k: rt.get(k) for k in ("key", "runtime", "precision", "device",
                                               "peak_rss_mb", "size_mb", "load_s", "accuracy",
                                               "macro_f1", "agreement", "max_logit_diff",
                                               "threads")},
                     "kind": "serving", "case": "http", "batch_size": 1, "seq_len": seq_len,
                     **summarize(res["times_ms"]), "throughput": res["rps"],
                     "clients": res["clients"], "errors": res["errors"],
                     "first_error": res["first_error"], "encode_ms": None,
                     "round_spread": None})
    return rows


def _measure_all(workers, runtimes, texts, gold, cases, batches, config, emit,
                 run_labels=None) -> list[dict]:
    samples = measure(workers, {n: c["text"] for n, c in cases.items()}, batches, config.plan(),
                      emit)
    _quality(workers, runtimes, texts, gold, emit, run_labels)
    for worker, rt in zip(workers, runtimes):  # after timing and scoring, before serving
        rt.update(worker.memory())
    rows = build_rows(runtimes, samples)
    if config.serving:
        rows += _serving(workers, runtimes, texts, cases["typical"]["tokens"], config, emit)
    add_ratios(rows, runtimes)
    return rows


def run(config: BenchConfig, on_progress: ProgressFn | None = None) -> BenchResult:
    """Measure every chosen row of a run, holding the run's lock (no export rewrites the files
    being measured), and write results.json and the reports drawn from it."""
    run_folder = RunFolder.of(config.model)
    with run_folder.lock("bench"):
        return _run(config, run_folder, on_progress or (lambda event: None))


def _run(config: BenchConfig, run: RunFolder, emit: ProgressFn) -> BenchResult:
    from core.bench import report as bench_report
    from core.bench.inputs import eval_set, pick_batches, pick_cases
    from core.quant.shipped import YARDSTICKS, run_yardstick

    out = Path(config.out_dir) if config.out_dir else \
        run.bench_dir / time.strftime("%Y%m%d-%H%M%S")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    threads = config.threads or os.cpu_count() or 1
    emit({"done": 0, "total": 1, "message": "choosing sentences"})
    texts, gold, labels, source, picked = eval_set(
        run, config.data, config.eval_size or (64 if config.quick else None))
    yardstick = run_yardstick(run, config.data, source["split"])
    run_labels = None if yardstick is None else (
        yardstick["labels"] if picked is None else yardstick["labels"][picked])
    cases, lengths = pick_cases(run.model_dir, texts)
    batches = pick_batches(texts, lengths, config.plan().batch_sizes)
    specs = [RUNTIMES[k] for k in dict.fromkeys(config.runtimes)]
    skipped = [{"key": s.key, "runtime": s.runtime, "precision": s.precision, "reason": r}
               for s in specs if (r := skip_reason(s, run, config))]
    specs = [s for s in specs if s.key not in {x["key"] for x in skipped}]
    wspecs = {s.key: _worker_spec(s, run, out, threads, config) for s in specs}
    started = time.time()
    load_before = machine(threads)["load_avg"]
    workers, runtimes = _start(specs, wspecs, skipped, emit)
    try:
        rows = _measure_all(workers, runtimes, texts, gold, cases, batches, config, emit,
                            run_labels)
    finally:
        for worker in workers:
            getattr(worker, "begin_close", lambda: None)()
        for worker in workers:
            worker.close()
    results = {
        "schema": 1, "created": started, "seconds": round(time.time() - started, 1),
        "model": str(run.root), "command": command_line(config), "config": asdict(config),
        "plan": asdict(config.plan()),
        "machine": {**machine(threads), "load_avg_before": load_before, "env": worker_env()},
        "eval": {**source, "size": len(texts), "labels": labels,
                 "yardstick": YARDSTICKS[yardstick is not None]}, "cases": cases,
        "runtimes": runtimes, "results": rows, "skipped": skipped,
        "targets": bench_targets(rows, runtimes, BASELINE)}
    emit({"done": 1, "total": 1, "message": "writing the report"})
    files = bench_report.write_all(results, out, png=config.png)
    return BenchResult(str(out), str(files["json"]), str(files["markdown"]),
                       [rt["key"] for rt in runtimes], skipped, results["targets"],
                       {k: str(v) for k, v in files.items()})


def command_line(config: BenchConfig) -> str:
    """The CLI command that reproduces ``config`` (recorded in the report)."""
    import shlex

    flags = {"runtimes": "--runtimes", "out_dir": "--out", "rounds": "--rounds",
             "iters": "--iters", "warmup": "--warmup", "batch_sizes": "--batch-sizes",
             "threads": "--threads", "eval_size": "--eval-size", "data": "--data",
             "serving_requests": "--requests", "ort_web_dir": "--ort-web-dir"}
    parts = ["python", "-m", "core", "bench", "--model", config.model]
    for name, flag in flags.items():
        value = getattr(config, name)
        if value is None or (name == "runtimes" and value == DEFAULT_RUNTIMES):
            continue
        parts += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    parts += ["--quick"] * config.quick + ["--no-serving"] * (not config.serving)
    parts += ["--no-png"] * (not config.png)
    if config.serving_clients != 4:
        parts += ["--clients", str(config.serving_clients)]
    return shlex.join(parts)


def load_results(path: str | Path) -> dict:
    """A saved results.json (path to the file or to its folder)."""
    path = Path(path)
    return json.loads((path / "results.json" if path.is_dir() else path).read_text("utf-8"))
