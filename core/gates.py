"""Every threshold the pipeline holds itself to, and the verdicts built from them.

The export, the web export (on the file it ships), the benchmark's targets and the pages all read
these verdicts; the reports store them (``export_report.json`` / ``bundle_report.json`` /
``results.json``) so pages show what was decided, not a recomputation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PARITY_ATOL = 1e-4  # max |logit diff| between ONNX FP32 and PyTorch
MIN_AGREEMENT = 99.0  # % of validation labels an INT8 model must share with FP32
MIN_REPRODUCED = 99.5  # % of validation labels an INT8-aware run's INT8 file must share with the
# labels the run's own evaluation computed (what was validated is what runs)
MAX_F1_DROP = 1.0  # macro-F1 points an INT8 model may lose against FP32
MAX_MODEL_MB = 35.0  # the browser bundle's INT8 model (decimal MB)
MAX_BUNDLE_MB = 60.0  # every file of the browser bundle
MIN_SPEEDUP = 5.0  # benchmark: best CPU runtime vs PyTorch FP32, batch 1, typical sentence
MAX_MEM_RATIO = 0.5  # benchmark: INT8 peak memory vs PyTorch FP32's


@dataclass(frozen=True)
class Verdict:
    gate: str  # e.g. "int8_agreement"
    passed: bool
    value: float | None  # what was measured
    limit: float  # the threshold
    message: str  # one line a person reads: what, how much, against what

    def as_dict(self) -> dict:
        return asdict(self)


def _check(gate: str, value: float | None, limit: float, ok: bool, what: str) -> Verdict:
    shown = "not measured" if value is None else f"{value:.4g}"
    mark = "ok" if ok else "FAILED"
    return Verdict(gate, ok, value, limit, f"{what}: {shown} ({mark}, limit {limit:g})")


def parity(max_abs_diff: float, atol: float = PARITY_ATOL, what: str = "ONNX FP32 vs PyTorch"
           ) -> Verdict:
    return _check("parity", max_abs_diff, atol, max_abs_diff <= atol,
                  f"{what} max |logit diff|")


def agreement(agree: float | None, name: str, minimum: float = MIN_AGREEMENT) -> Verdict:
    ok = agree is not None and agree >= minimum
    return _check("agreement", agree, minimum, ok, f"{name} labels agreeing with FP32 (%)")


def f1_drop(delta: float | None, name: str, max_drop: float = MAX_F1_DROP,
            what: str = "FP32") -> Verdict:
    """``delta`` = macro-F1 of the model minus the reference's, in points (negative = worse)."""
    ok = delta is not None and -delta <= max_drop
    return _check("f1_drop", None if delta is None else -delta, max_drop, ok,
                  f"{name} macro-F1 drop vs {what} (points)")


def reproduces(agree: float | None, name: str, minimum: float = MIN_REPRODUCED) -> Verdict:
    ok = agree is not None and agree >= minimum
    return _check("reproduces_run", agree, minimum, ok,
                  f"{name} labels equal to the run's own evaluated labels (%)")


def quantized(metrics: dict, name: str, against_run: bool = False) -> list[Verdict]:
    """An INT8 (or other reduced-precision) model against its yardstick: for a plain run, FP32
    (agreement and macro-F1 drop); for an INT8-aware run (``against_run``), the labels and
    macro-F1 its own training evaluated (``agreement_with_run``, ``macro_f1_delta``)."""
    if against_run:
        return [reproduces(metrics.get("agreement_with_run"), name),
                f1_drop(metrics.get("macro_f1_delta"), name, what="the run's evaluation")]
    return [agreement(metrics.get("agreement"), name), f1_drop(metrics.get("macro_f1_delta"), name)]


def size(mb: float, limit: float, what: str) -> Verdict:
    return _check("size", mb, limit, mb <= limit, f"{what} (MB)")


def passed(verdicts: list[Verdict | dict]) -> bool:
    return all((v.passed if isinstance(v, Verdict) else v["passed"]) for v in verdicts)


def failures(verdicts: list[Verdict | dict]) -> list[str]:
    return [(v.message if isinstance(v, Verdict) else v["message"]) for v in verdicts
            if not (v.passed if isinstance(v, Verdict) else v["passed"])]


def bench_targets(rows: list[dict], runtimes: list[dict], baseline: str = "pytorch") -> dict:
    """The benchmark's headline: the fastest CPU runtime at batch 1 on the typical sentence whose
    accuracy is kept (agreement with PyTorch and macro-F1 drop within the INT8 gates), and the
    leanest INT8 row's peak memory ratio."""
    by_key = {rt["key"]: rt for rt in runtimes}

    def kept(key: str) -> bool:  # an INT8-aware run's rows: against the run's own labels
        rt = by_key[key]
        if "agreement_with_run" in rt:
            return passed(quantized({"agreement_with_run": rt["agreement_with_run"],
                                     "macro_f1_delta": rt.get("f1_delta_vs_run")}, key, True))
        return agreement(rt.get("agreement"), key).passed and \
            f1_drop(rt.get("f1_delta_vs_pytorch"), key).passed

    typical = [r for r in rows if r["kind"] == "latency" and r["case"] == "typical"
               and r["device"] == "cpu" and r["key"] != baseline
               and r.get("speedup_vs_pytorch") is not None]
    fair = [r for r in typical if kept(r["key"])]
    best = max(fair, key=lambda r: r["speedup_vs_pytorch"], default=None)
    int8 = [rt for rt in runtimes if rt.get("precision") == "int8"
            and rt.get("mem_ratio_vs_pytorch") is not None]
    lean = min(int8, key=lambda rt: rt["mem_ratio_vs_pytorch"], default=None)
    return {
        "best_cpu": best and best["key"],
        "best_cpu_speedup": best and best["speedup_vs_pytorch"],
        "best_cpu_f1_delta": best and by_key[best["key"]]["f1_delta_vs_pytorch"],
        "best_cpu_agreement": best and by_key[best["key"]].get("agreement"),
        "best_cpu_agreement_with_run": best and by_key[best["key"]].get("agreement_with_run"),
        "yardstick": "run" if any("agreement_with_run" in rt for rt in runtimes) else "pytorch",
        "reproduced_target": MIN_REPRODUCED,
        # faster rows left out because they lose accuracy (shown beside the headline)
        "excluded_faster": [r["key"] for r in typical if not kept(r["key"]) and (
            best is None or r["speedup_vs_pytorch"] > best["speedup_vs_pytorch"])],
        "speedup_target": MIN_SPEEDUP, "agreement_target": MIN_AGREEMENT,
        "f1_drop_target": MAX_F1_DROP,
        "speedup_met": None if best is None else best["speedup_vs_pytorch"] >= MIN_SPEEDUP,
        "int8_lowest_mem": lean and lean["key"],
        "int8_mem_ratio": lean and lean["mem_ratio_vs_pytorch"],
        "mem_target": MAX_MEM_RATIO,
        "mem_met": None if lean is None else lean["mem_ratio_vs_pytorch"] <= MAX_MEM_RATIO,
    }
