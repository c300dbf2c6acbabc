"""The measuring half of the benchmark: interleaved rounds over workers, statistics, result rows.

Everything here works on *workers* (``core.bench.worker.ProcessWorker``,
``core.bench.browser.BrowserWorker`` or a test's fake): objects with ``spec`` (a dict with at least
``key``), ``info`` (from ``start()``), ``time(texts, warmup, iters)``, ``logits(texts)`` and
``memory()``. Ratios are always against the PyTorch FP32 row measured in the same run.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata

import numpy as np

BASELINE = "pytorch"  # the row every speed-up and memory ratio is computed against
PACKAGES = ("torch", "transformers", "tokenizers", "onnxruntime", "onnxruntime-gpu", "openvino",
            "numpy", "starlette", "uvicorn", "playwright")
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
             "amx_bf16")


@dataclass(frozen=True)
class Plan:
    rounds: int  # interleaved rounds; every runtime is measured once per round
    warmup: int  # untimed calls before each timed block (thread pools spin up, caches fill)
    iters: int  # timed batch-1 calls per case per round
    batch_sizes: tuple[int, ...]  # throughput batch sizes
    batch_iters: int  # timed calls per batch size per round
    gap_s: float  # pause between blocks so the previous process's threads stop spinning


def summarize(times_ms) -> dict:
    """Percentiles (linear interpolation, numpy's default) of one list of timings."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "iters": 0}
    p50, p95, p99 = np.percentile(t, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "mean_ms": float(t.mean()), "iters": int(t.size)}


def _spread(round_medians: list[float]) -> float | None:
    """(max - min) / median of the per-round medians: how much the machine's noise moved them."""
    if len(round_medians) < 2:
        return None
    med = float(np.median(round_medians))
    return (max(round_medians) - min(round_medians)) / med if med > 0 else None


def measure(workers: list, cases: dict, batches: dict, plan: Plan, emit=None) -> dict:
    """Interleave: each round visits every worker (the order rotates each round) and times every
    case at batch 1 and every throughput batch. Returns {key: {block: {"times": [...], "rounds":
    [per-round medians], "seq_len": n, "batch_size": b, "encode_ms": [...]}}}."""
    emit = emit or (lambda event: None)
    samples: dict = {w.spec["key"]: {} for w in workers}
    blocks = [(f"b1:{name}", [text]) for name, text in cases.items()]
    blocks += [(f"b{bs}", texts) for bs, texts in batches.items()]
    for r in range(plan.rounds):
        order = workers[r % len(workers):] + workers[:r % len(workers)] if workers else []
        for i, worker in enumerate(order):
            emit({"done": r * len(workers) + i, "total": plan.rounds * len(workers),
                  "message": f"round {r + 1}/{plan.rounds}: {worker.spec['key']}"})
            for block, texts in blocks:
                single = block.startswith("b1:")
                iters = plan.iters if single else plan.batch_iters
                # A big batch warms the pools as well as many small calls do, at a fraction
                # of the wall time.
                warmup = plan.warmup if single else min(plan.warmup, 2)
                time.sleep(plan.gap_s)
                res = worker.time(texts, warmup, iters)
                slot = samples[worker.spec["key"]].setdefault(
                    block, {"times": [], "rounds": [], "encode_ms": [],
                            "seq_len": res["seq_len"], "batch_size": res["batch_size"]})
                slot["times"] += list(res["times_ms"])
                slot["rounds"].append(float(np.median(res["times_ms"])))
                if res.get("encode_ms") is not None:
                    slot["encode_ms"].append(res["encode_ms"])
    return samples


def scores(gold: np.ndarray, logits: np.ndarray, ref: np.ndarray | None) -> dict:
    """Accuracy and macro-F1 in points (0-100); agreement and max |logit diff| against ``ref``."""
    from core.predict import logit_scores

    out = logit_scores(gold, logits, ref)
    if "max_abs_diff" in out:
        out["max_logit_diff"] = out.pop("max_abs_diff")  # the results.json field name
    return out


def _row(meta: dict, block: str, slot: dict) -> dict:
    stats = summarize(slot["times"])
    bs = slot["batch_size"]
    kind, case = ("latency", block[3:]) if block.startswith("b1:") else ("throughput", "batch")
    throughput = bs / (stats["p50_ms"] / 1e3) if stats["p50_ms"] else None
    enc = float(np.median(slot["encode_ms"])) if slot["encode_ms"] else None
    return {**meta, "kind": kind, "case": case, "batch_size": bs, "seq_len": slot["seq_len"],
            **stats, "throughput": throughput, "encode_ms": enc,
            "round_spread": _spread(slot["rounds"])}


def build_rows(runtimes: list[dict], samples: dict) -> list[dict]:
    """One row per runtime x block, each carrying the runtime's memory, size and quality."""
    rows = []
    for rt in runtimes:
        meta = {k: rt.get(k) for k in ("key", "runtime", "precision", "device", "peak_rss_mb",
                                       "size_mb", "load_s", "accuracy", "macro_f1", "agreement",
                                       "max_logit_diff", "threads")}
        for block, slot in samples.get(rt["key"], {}).items():
            rows.append(_row(meta, block, slot))
    return rows


def add_ratios(rows: list[dict], runtimes: list[dict]) -> None:
    """speedup_vs_pytorch (p50 ratio for latency, throughput ratio otherwise) and, per runtime,
    mem_ratio_vs_pytorch (peak RSS over PyTorch's) and f1_delta_vs_pytorch (points)."""
    base = {(r["kind"], r["case"], r["batch_size"]): r for r in rows if r["key"] == BASELINE}
    base_rt = next((rt for rt in runtimes if rt["key"] == BASELINE), None)
    for row in rows:
        ref = base.get((row["kind"], row["case"], row["batch_size"]))
        row["speedup_vs_pytorch"] = None
        if ref is not None and row["kind"] == "latency" and row["p50_ms"] and ref["p50_ms"]:
            row["speedup_vs_pytorch"] = ref["p50_ms"] / row["p50_ms"]
        elif ref is not None and row["throughput"] and ref["throughput"]:
            row["speedup_vs_pytorch"] = row["throughput"] / ref["throughput"]
    for rt in runtimes:
        rt["mem_ratio_vs_pytorch"] = rt["f1_delta_vs_pytorch"] = None
        if base_rt is None:
            continue
        if rt.get("peak_rss_mb") and base_rt.get("peak_rss_mb"):
            rt["mem_ratio_vs_pytorch"] = rt["peak_rss_mb"] / base_rt["peak_rss_mb"]
        if rt.get("macro_f1") is not None and base_rt.get("macro_f1") is not None:
            rt["f1_delta_vs_pytorch"] = rt["macro_f1"] - base_rt["macro_f1"]
    for row in rows:
        rt = next(r for r in runtimes if r["key"] == row["key"])
        row["mem_ratio_vs_pytorch"] = rt["mem_ratio_vs_pytorch"]


def cpu_info() -> dict:
    """The CPU's model name and which of ``CPU_FLAGS`` it has: INT8 kernels (and so speed and
    even labels) depend on them, so every measurement records them."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    present = set(value.split())
                    flags = [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return {"model": model, "flags": flags}


def _gpus() -> list[str]:
    """GPU names from nvidia-smi, when there is one (the report names the device)."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def machine(threads: int) -> dict:
    import psutil

    cpu = cpu_info()
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"cpu": cpu["model"], "cpu_flags": cpu["flags"], "logical_cores": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False), "threads": threads,
            "memory_gb": round(psutil.virtual_memory().total / 1e9, 1), "gpus": _gpus(),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "os": platform.platform(), "packages": versions}


def write_results(out: str | Path, result: dict, markdown: str) -> None:
    """A benchmark script's result as ``OUT.json`` and its table as ``OUT.md``."""
    import json
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False),
                                        encoding="utf-8")
    out.with_suffix(".md").write_text(markdown, encoding="utf-8")
