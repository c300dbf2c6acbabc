"""INT8 recipes for issue #11, built and measured side by side in one process.

For a run folder that `python -m core export` has written (onnx/model.onnx unfused FP32,
onnx/model_optimized.onnx fused FP32), this script:

1. runs the per-node sensitivity report (core.quant_recipes.sensitivity_report, simulated dynamic
   INT8 one node at a time) and the cheap proxy on calibration sentences from the training split;
2. builds every candidate recipe (core/quant_recipes.py, the research ones in
   bench/int8_research.py) into RUN/int8_recipes/;
3. measures each one: file MB, integer-op counts (in the file and after ONNX Runtime's fusions),
   label agreement with ONNX FP32 and macro-F1 on the validation split at batch 1 (one sentence a
   call, as the browser and the Demo run it) and at batch 32 (what the export gates measure),
   max |Δlogit|, and p50 latency at batch 1 on the typical (median-length) validation sentence,
   interleaved with ORT FP32 optimized and PyTorch FP32 in the same process (2 threads,
   OMP_WAIT_POLICY=PASSIVE as in core/bench/worker.py), reported as ratios to those baselines;
4. writes bench/results/int8_recipes.json and .md (with the CPU flags and the command line).

    .venv/bin/python bench/int8_recipes.py workspace/runs/int8probe [--only NAME ...] [--rounds 7]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see worker.py)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))  # int8_research (already there when run as a script)

import int8_research as research  # noqa: E402
from core import quant_recipes as qr  # noqa: E402
from core.bench.measure import write_results  # noqa: E402


def cpu_info() -> dict:
    """core.bench.measure's CPU model and flags, plus what this run's numbers depend on."""
    from core.bench.measure import cpu_info as flags

    return {**flags(), "logical_cores": os.cpu_count(), "load_avg": list(os.getloadavg()),
            "python": platform.python_version()}


def versions() -> dict:
    import onnx
    import onnxruntime

    out = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out


class Context:
    """What every candidate builder needs: sources, calibration data, the sensitivity report."""

    def __init__(self, run: Path, out: Path, calib_batches, calib_padded, report):
        self.run, self.out = run, out
        self.unfused = run / "onnx" / "model.onnx"
        self.fused = run / "onnx" / "model_optimized.onnx"
        self.calib, self.calib_padded, self.report = calib_batches, calib_padded, report

    def top(self, k: int, roles=None) -> list[str]:
        """The k most damaging MatMul/Gemm nodes of the unfused graph (sensitivity report)."""
        rows = [r for r in self.report["nodes"] if r["op_type"] in ("MatMul", "Gemm")
                and (roles is None or r["role"] in roles)]
        return [r["name"] for r in rows[:k]]


def _smooth_then(ctx: Context, dst: Path, src: Path, alpha: float, **dyn) -> dict:
    tmp = dst.with_suffix(".smoothed.onnx")
    info = qr.smooth_quant(src, tmp, ctx.calib, alpha=alpha)
    qr.dynamic(tmp, dst, **dyn)
    tmp.unlink()
    return {"smoothing_groups": len(info["groups"]),
            "flatness_before_max": round(max(g["x_flatness_before"] for g in info["groups"]), 1),
            "flatness_after_max": round(max(g["x_flatness_after"] for g in info["groups"]), 1)}


def _outlier_then(ctx: Context, dst: Path, channels: int, roles, smooth: float | None = None):
    src = ctx.unfused
    tmp1 = dst.with_suffix(".split.onnx")
    info = research.outlier_split(src, tmp1, ctx.calib, channels=channels, roles=roles)
    if smooth is not None:
        tmp2 = dst.with_suffix(".smoothed.onnx")
        qr.smooth_quant(tmp1, tmp2, ctx.calib, alpha=smooth)
        tmp1.unlink()
        tmp1 = tmp2
    qr.dynamic(tmp1, dst, exclude=info["keep_fp32"])
    tmp1.unlink()
    return {"split_groups": len(info["groups"])}


def candidate_specs() -> list[tuple[str, str, object]]:
    """(name, what it is, builder(ctx, dst) -> info dict or None)."""
    from core import quantize

    specs = [
        ("weight_only_nbits", "MatMulNBits 8-bit, block 64, accuracy_level 0 (dequantized inside "
         "each call), per-tensor int8 embeddings, unfused source (the weight-only file until "
         "2026-12-03)", lambda c, d: research.nbits_weight_only(c.unfused, d)),
    ]
    for block, gptq in ((64, False), (64, True), (128, True), (0, True)):
        grid = f"block {block}" if block else "per column"
        rounding = "GPTQ" if gptq else "round to nearest"
        specs.append((f"folded_{'gptq' if gptq else 'rtn'}_{block or 'col'}", "core.quant_recipes."
                      f"folded_int8: int8 weights ({grid}, {rounding}) decoded by constant ops "
                      "that ONNX Runtime folds at load, fused FP32 graph, per-row int8 embeddings",
                      lambda c, d, b=block, g=gptq: qr.folded_int8(
                          c.fused, d, c.calib if g else None, block_size=b)))
    specs += [
        ("dynamic_fused", "quantize_dynamic QInt8 on the fused graph (core.quantize.dynamic_int8)",
         lambda c, d: quantize.dynamic_int8(c.fused, d)),
        ("dynamic_unfused", "quantize_dynamic QInt8 on the unfused graph",
         lambda c, d: qr.dynamic(c.unfused, d)),
        ("dynamic_fused_perchannel", "quantize_dynamic per-channel weights, fused graph",
         lambda c, d: qr.dynamic(c.fused, d, per_channel=True)),
    ]
    for alpha in (0.5, 0.65, 0.8):
        specs.append((f"smooth{int(alpha * 100)}_fused", f"SmoothQuant alpha {alpha} on the fused "
                      "graph (Mul before QKV/FFN-up/FFN-down, attn-out folded into V), then dynamic",
                      lambda c, d, a=alpha: _smooth_then(c, d, c.fused, a)))
    specs += [
        ("smooth50_unfused", "SmoothQuant alpha 0.5 on the unfused graph, then dynamic",
         lambda c, d: _smooth_then(c, d, c.unfused, 0.5)),
        ("smooth50_fused_perchannel", "SmoothQuant alpha 0.5, fused, per-channel weights",
         lambda c, d: _smooth_then(c, d, c.fused, 0.5, per_channel=True)),
    ]
    for k in (4, 8, 16):
        specs.append((f"mixed_top{k}_nbits", f"dynamic INT8 except the {k} most sensitive nodes "
                      "(report), those as 8-bit weight-only MatMulNBits (accuracy_level 0)",
                      lambda c, d, k=k: qr.dynamic(c.unfused, d, exclude=c.top(k),
                                                   keep_as="nbits")))
    for k in (4, 8):
        specs.append((f"smooth50_mixed_top{k}", f"SmoothQuant 0.5 (unfused) + top-{k} sensitive "
                      "nodes as MatMulNBits", lambda c, d, k=k: _smooth_then(
                          c, d, c.unfused, 0.5, exclude=c.top(k), keep_as="nbits")))
    specs += [
        ("outlier8_ffn_down", "LLM.int8()-style split: 8 largest FFN-down input channels in a "
         "side FP32 MatMul, rest dynamic INT8",
         lambda c, d: _outlier_then(c, d, 8, ("ffn_down",))),
        ("outlier8_all", "the same split for every projection's input (Q/K/V, attn-out, FFN)",
         lambda c, d: _outlier_then(c, d, 8, ("q", "k", "v", "attn_out", "ffn_up", "ffn_down"))),
        ("static_qdq_percentile", "quantize_static QDQ, per-channel weights, percentile 99.99 "
         "calibration (padded batches), unfused",
         lambda c, d: research.static_qdq(c.unfused, d, c.calib_padded)),
        ("smooth50_static_qdq", "SmoothQuant 0.5 (unfused) then static QDQ percentile",
         lambda c, d: _smooth_static(c, d, 0.5)),
        ("perchannel_rr_gptq_fused", "per-channel 7-bit weights (reduce_range: no int16 "
         "saturation on AVX2), GPTQ re-rounding, fused graph",
         lambda c, d: _gptq_then(c, d, c.fused, per_channel=True, reduce_range=True)),
        ("perchannel_gptq_fused", "per-channel 8-bit weights, GPTQ re-rounding, fused graph "
         "(saturates on AVX2 kernels)",
         lambda c, d: _gptq_then(c, d, c.fused, per_channel=True)),
    ]
    for src in ("fused", "unfused"):
        for rr in (True, False):
            specs.append((f"outlier_aware_{src}{'_rr' if rr else ''}", "int8_research."
                          f"outlier_aware_int8 on the {src} graph (FFN outlier split 16/4, "
                          f"SmoothQuant 0.7 on Q/K/V, per-channel {7 if rr else 8}-bit weights, "
                          "GPTQ)", lambda c, d, s=src, r=rr: research.outlier_aware_int8(
                              getattr(c, s), d, c.calib, reduce_range=r)))
    specs.append(("per_token_default", "core.quantize.integer_int8, what the export builds: "
                  "per-token int8 activations (MatMulInteger, MultiHeadAttention), SmoothQuant "
                  "0.5 on Q/K/V + FFN-up inputs, 7-bit per-channel GPTQ weights, per-row int8 "
                  "embeddings", lambda c, d: qr.per_token_int8(c.fused, d, c.calib,
                                                               **qr.DEFAULT_PER_TOKEN)))
    for name, what, kw in (
            ("per_token_plain", "per-token, no SmoothQuant", {}),
            ("per_token_mmitf", "per_token_default with one MatMulIntegerToFloat (contrib op, "
             "per-token A scale) per matmul instead of MatMulInteger + Cast + Mul + Mul",
             {**qr.DEFAULT_PER_TOKEN, "fused_matmul": True}),
            ("per_token_nogptq", "per-token + SmoothQuant, round-to-nearest weights",
             {**qr.DEFAULT_PER_TOKEN, "gptq": False}),
            ("per_token_qattention", "per-token for attn-out/FFN, Q/K/V as QAttention "
             "(per-tensor) after SmoothQuant 0.7", {"attention": "qattention",
                                                    "smooth_alpha": 0.7}),
            ("per_token_fp32_qkv", "per-token for attn-out/FFN, Q/K/V projection FP32 "
             "(50 MB: over the size limit)", {"attention": "fp32"})):
        specs.append((name, what, lambda c, d, kw=kw: qr.per_token_int8(c.fused, d, c.calib,
                                                                        **kw)))
    for k in (4, 6, 8, 12):
        specs.append((f"per_token_keep{k}_folded", f"per-token default, except the {k} most "
                      "sensitive MatMuls (report), which keep float activations with folded "
                      "GPTQ block-128 int8 weights", lambda c, d, k=k: _per_token_keep_folded(
                          c, d, k)))
    specs.append(("outlier_aware_fused_rr_nogptq", "outlier_aware_int8, fused, 7-bit weights, "
                  "without GPTQ re-rounding", lambda c, d: research.outlier_aware_int8(
                      c.fused, d, c.calib, gptq=False)))
    for down, up, attn in ((32, 8, 0), (16, 4, 8), (32, 8, 8), (64, 16, 16)):
        specs.append((f"outlier_aware_fused_rr_d{down}u{up}a{attn}", "outlier_aware_int8, fused, "
                      f"7-bit weights, split channels: FFN-down {down}, FFN-up {up}, attention "
                      f"output {attn}",
                      lambda c, d, a=(down, up, attn): research.outlier_aware_int8(
                          c.fused, d, c.calib, split_down=a[0], split_up=a[1], split_attn=a[2])))
    return specs


def _per_token_keep_folded(ctx: Context, dst: Path, k: int) -> dict:
    tmp = dst.with_suffix(".keep.onnx")
    keep = ctx.top(k, roles=("attn_out", "ffn_up", "ffn_down"))
    info = qr.per_token_int8(ctx.fused, tmp, ctx.calib, keep=keep, **qr.DEFAULT_PER_TOKEN)
    info["folded"] = qr.folded_int8(tmp, dst, ctx.calib, block_size=128)
    tmp.unlink()
    return {**info, "keep": keep}


def _gptq_then(ctx: Context, dst: Path, src: Path, **dyn) -> dict:
    tmp = dst.with_suffix(".dyn.onnx")
    qr.dynamic(src, tmp, **dyn)
    info = research.gptq_refine(src, tmp, dst, ctx.calib)
    tmp.unlink()
    return info


def _smooth_static(ctx: Context, dst: Path, alpha: float):
    tmp = dst.with_suffix(".smoothed.onnx")
    qr.smooth_quant(ctx.unfused, tmp, ctx.calib, alpha=alpha)
    research.static_qdq(tmp, dst, ctx.calib_padded)
    tmp.unlink()


def one_by_one(tokenizer_rt, texts):
    return [tokenizer_rt.encode([t]) for t in texts]


def evaluate(path: Path, singles, batched, gold, ref1, ref32, threads: int) -> dict:
    from core.predict import logit_scores

    session = qr._session(path, threads)
    l1 = np.concatenate([session.run(["logits"], qr._feeds_for(session, f))[0] for f in singles])
    l32 = np.concatenate([session.run(["logits"], qr._feeds_for(session, f))[0]
                          for f in batched])
    s1 = logit_scores(gold, l1, ref1)
    s32 = logit_scores(gold, l32, ref32)
    return {"agreement": round(s1["agreement"], 2), "macro_f1": round(s1["macro_f1"], 2),
            "accuracy": round(s1["accuracy"], 2), "max_abs_dlogit": float(s1["max_abs_diff"]),
            "mean_abs_dlogit": float(np.abs(l1 - ref1).mean()),
            "agreement_b32": round(s32["agreement"], 2), "macro_f1_b32": round(s32["macro_f1"], 2),
            "logits_b1": l1}


def time_interleaved(runners: dict, rounds: int, iters: int, warmup: int) -> dict:
    """Median ms per call of each runner; runners are interleaved round by round."""
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            for _ in range(warmup):
                fn()
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: {"p50_ms": round(statistics.median(v), 3),
                "p90_ms": round(sorted(v)[int(0.9 * (len(v) - 1))], 3), "n": len(v)}
            for k, v in times.items()}


def markdown(result: dict) -> str:
    lines = [f"# INT8 recipes on `{result['run']}`", "",
             f"Command: `{result['command']}`", "",
             f"CPU: {result['cpu']['model']}, {result['cpu']['logical_cores']} logical cores, "
             f"flags {', '.join(result['cpu']['flags'])}; load average at start "
             f"{result['cpu']['load_avg'][0]:.2f}; {result['versions']}", "",
             f"Validation split: {result['val_size']} sentences (agreement/F1 at batch 1 = one "
             "sentence a call; `b32` = padded batches of 32 as the export gates run them). "
             f"Latency: batch 1, typical sentence ({result['typical_tokens']} tokens), "
             f"{result['threads']} threads, medians of {result['timing']['n']} calls in "
             f"{result['timing']['rounds']} interleaved rounds. FP32 macro-F1 "
             f"{result['fp32']['macro_f1']}.", "",
             "| candidate | MB | agree % | macro-F1 | ΔF1 | agree % b32 | max \\|Δlogit\\| | "
             "p50 ms | x PyTorch | x ORT opt | integer ops (file) | ORT runs | build s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
    for row in result["baselines"]:
        lines.append(f"| {row['name']} | {row['mb']} | | {row.get('macro_f1', '')} | | | | "
                     f"{row['p50_ms']} | {row['x_pytorch']} | {row['x_ort_opt']} | | | |")
    for r in result["candidates"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'][:80]} |" + " |" * 11)
            continue
        ops = ", ".join(f"{k} {v}" for k, v in r["ops"].items())
        rops = ", ".join(f"{k} {v}" for k, v in r["runtime_ops"].items())
        lines.append(
            f"| {r['name']} | {r['mb']} | {r['agreement']} | {r['macro_f1']} | "
            f"{r['f1_delta']:+.2f} | {r['agreement_b32']} | {r['max_abs_dlogit']:.3f} | "
            f"{r['p50_ms']} | {r['x_pytorch']} | {r['x_ort_opt']} | {ops} | {rops} | "
            f"{r['build_s']} |")
    lines += ["", "Candidates:", ""]
    lines += [f"- `{r['name']}`: {r['what']}" for r in result["candidates"]]
    rep = result["sensitivity"]
    lines += ["", f"## Sensitivity report ({rep['sentences']} training sentences, "
              f"{len(rep['nodes'])} nodes, {rep['seconds']} s; proxy {result['proxy']['seconds']} s, "
              f"Spearman rank correlation with the full report {result['proxy']['spearman']})", "",
              "| rank | node | role | layer | mean \\|Δlogit\\| | max \\|Δlogit\\| | flips |",
              "| ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    for i, r in enumerate(rep["nodes"][:20], 1):
        lines.append(f"| {i} | `{r['name']}` | {r['role']} | {r['layer']} | "
                     f"{r['mean_abs_dlogit']:.4f} | {r['max_abs_dlogit']:.3f} | {r['flips']} |")
    if result.get("sweep"):
        lines += ["", "## Simulated sweep (validation, batch-1 semantics): dynamic INT8 on every "
                  "MatMul except the top-k of the report", "",
                  "| k | agree % | mean \\|Δlogit\\| |", "| ---: | ---: | ---: |"]
        for s in result["sweep"]:
            lines.append(f"| {s['k']} | {s['agreement']} | {s['mean_abs_dlogit']:.4f} |")
    if result.get("openvino"):
        ov = result["openvino"]
        lines += ["", f"## OpenVINO NNCF INT8 (model_type TRANSFORMER, {ov['calibration']} "
                  f"calibration sentences; INFERENCE_PRECISION_HINT {ov['hint']}, "
                  f"{ov['threads']} threads; agreement vs ONNX FP32, batch 1)", "",
                  "| variant | MB | agree % | macro-F1 | max \\|Δlogit\\| | p50 ms | x OV FP32 |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in ov["rows"]:
            if "error" in r:
                lines.append(f"| {r['name']} | failed: {r['error'][:80]} | | | | | |")
                continue
            lines.append(f"| {r['name']} | {r.get('mb', '')} | {r['agreement']} | "
                         f"{r['macro_f1']} | {r['max_abs_dlogit']:.3f} | {r['p50_ms']} | "
                         f"{r['x_ov_fp32']} |")
    return "\n".join(lines) + "\n"


def _folded_unfused(run: Path, batches, block: int) -> Path:
    """folded_int8 (GPTQ) on the unfused graph (OpenVINO cannot read ORT's fused ops), in the
    layout OpenVINO keeps as compressed int8 weights."""
    dst = run / "int8_recipes" / "openvino" / f"folded_gptq_{block or 'col'}.onnx"
    qr.folded_int8(run / "onnx" / "model.onnx", dst, batches, block_size=block)
    return dst


def _with_dq_group(model, group: int):
    from core.onnx_export import set_dynamic_quant_group

    set_dynamic_quant_group(model, group)
    return model


def openvino_stage(run: Path, model_dir: Path, calib_feeds, singles, gold, ref1, report,
                   threads: int, rounds: int, iters: int, warmup: int, ignored_k: int,
                   only: list[str] | None = None, calib_batches=None) -> dict:
    """NNCF INT8 variants (``only``: those named) vs OpenVINO FP32 (INFERENCE_PRECISION_HINT
    f32), same process; also INT8 weights with float activations (NNCF weight compression, and
    the run's shipped ONNX INT8 file converted as it is)."""
    import nncf
    import openvino as ov

    from core.predict import logit_scores

    core = ov.Core()
    out_dir = run / "int8_recipes" / "openvino"
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = ov.convert_model(str(run / "onnx" / "model.onnx"))
    names = {op.get_friendly_name() for op in fp32.get_ops() if op.get_type_name() == "MatMul"}
    top = [r["name"] for r in report["nodes"] if r["op_type"] in ("MatMul", "Gemm")]
    ignored = [n for n in top if n in names][:ignored_k]
    frozen = [n for n in names if any(f"layer.{i}/" in n for i in range(7))]
    dataset = nncf.Dataset(calib_feeds)
    sq = nncf.AdvancedQuantizationParameters
    smooth = nncf.quantization.advanced_parameters.AdvancedSmoothQuantParameters
    quantize = lambda **kw: nncf.quantize(  # noqa: E731
        fp32, dataset, subset_size=len(calib_feeds), model_type=nncf.ModelType.TRANSFORMER, **kw)
    folded = run / "onnx" / "model_quantized.onnx"
    builders = {  # INT8 weights, float activations: no calibration
        "ov_weights_int8_sym": lambda: nncf.compress_weights(
            fp32, mode=nncf.CompressWeightsMode.INT8_SYM),
        "ov_weights_int8_asym": lambda: nncf.compress_weights(
            fp32, mode=nncf.CompressWeightsMode.INT8_ASYM),
        "ov_from_shipped_onnx_int8": lambda: ov.convert_model(str(folded)),
        **{f"ov_folded_gptq_{b or 'col'}": (lambda b=b: ov.convert_model(str(
            _folded_unfused(run, calib_batches, b)))) for b in (0, 128)},
        # OpenVINO quantizes the activations of compressed-weight MatMuls per group of input
        # channels at run time (DYNAMIC_QUANTIZATION_GROUP_SIZE, 32 by default; 0 = off); the
        # group stored in the IR's rt_info, as the export does
        **{f"ov_folded_gptq_128_dq{g}": (lambda g=g: _with_dq_group(ov.convert_model(str(
            _folded_unfused(run, calib_batches, 128))), g)) for g in (0, 16, 64)}}
    variants = {
        "ov_int8_default": {},  # what core.onnx_export.openvino_ir does (model_type TRANSFORMER)
        "ov_int8_mixed": {"preset": nncf.QuantizationPreset.MIXED},
        "ov_int8_sq050": {"advanced_parameters": sq(smooth_quant_alphas=smooth(matmul=0.5))},
        "ov_int8_sq080": {"advanced_parameters": sq(smooth_quant_alphas=smooth(matmul=0.8))},
        "ov_int8_mixed_sq050": {"preset": nncf.QuantizationPreset.MIXED,
                                "advanced_parameters": sq(smooth_quant_alphas=smooth(matmul=0.5))},
        f"ov_int8_ignore_top{ignored_k}": {"ignored_scope": nncf.IgnoredScope(names=ignored)},
        "ov_int8_ignore_layers0-6": {"ignored_scope": nncf.IgnoredScope(names=frozen)},
    }
    rows, compiled = [], {}
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    ov.save_model(fp32, str(out_dir / "model.xml"), compress_to_fp16=False)
    compiled["ov_fp32"] = core.compile_model(fp32, "CPU", config)
    builders.update({name: (lambda kw=kw: quantize(**kw)) for name, kw in variants.items()})
    if only:
        builders = {k: v for k, v in builders.items() if k in only}
    for name, build in builders.items():
        kw = variants.get(name, {})
        t0 = time.perf_counter()
        try:
            q = build()
        except Exception as exc:
            rows.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        path = out_dir / f"{name}.xml"
        ov.save_model(q, str(path), compress_to_fp16=False)
        rows.append({"name": name, "build_s": round(time.perf_counter() - t0, 1),
                     "mb": round((path.stat().st_size + path.with_suffix(".bin").stat().st_size)
                                 / 1e6, 2), "options": {k: str(v) for k, v in kw.items()}})
        compiled[name] = core.compile_model(q, "CPU", config)
    requests = {k: c.create_infer_request() for k, c in compiled.items()}
    scores = {}
    for name, req in requests.items():
        lg = np.concatenate([np.asarray(req.infer(f)[compiled[name].output("logits")])
                             for f in singles])
        s = logit_scores(gold, lg, ref1)
        scores[name] = {"agreement": round(s["agreement"], 2), "macro_f1": round(s["macro_f1"], 2),
                        "max_abs_dlogit": float(s["max_abs_diff"])}
    typical = singles[int(np.argsort([f["input_ids"].shape[1] for f in singles],
                                     kind="stable")[(len(singles) - 1) // 2])]
    runners = {k: (lambda r=r: r.infer(typical)) for k, r in requests.items()}
    timing = time_interleaved(runners, rounds, iters, warmup)
    base = timing["ov_fp32"]["p50_ms"]
    table = [{"name": "ov_fp32", **scores["ov_fp32"], "p50_ms": base, "x_ov_fp32": 1.0}]
    for r in rows:
        if r["name"] in scores:
            r.update(scores[r["name"]])
            r["p50_ms"] = timing[r["name"]]["p50_ms"]
            r["x_ov_fp32"] = round(base / r["p50_ms"], 2)
        table.append(r)
    return {"rows": table, "ignored_top": ignored, "hint": "f32", "threads": threads,
            "calibration": len(calib_feeds)}


def run_split(run: Path):
    """(labels, Split) of a run: the exact split it was trained on (metrics.json)."""
    config = json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    labels = [id2label[str(i)] for i in range(len(id2label))]
    try:
        from core.run import RunFolder

        return labels, RunFolder(run).saved_split()[1]
    except ImportError:  # before the core.run refactor
        from core.train import saved_split

        return labels, saved_split(run)[1]


def spearman(a: list[str], b: list[str]) -> float:
    common = [x for x in a if x in set(b)]
    ra = {x: i for i, x in enumerate([x for x in a if x in common])}
    rb = {x: i for i, x in enumerate([x for x in b if x in common])}
    n = len(common)
    if n < 2:
        return float("nan")
    d2 = sum((ra[x] - rb[x]) ** 2 for x in common)
    return round(1 - 6 * d2 / (n * (n * n - 1)), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", default="workspace/runs/int8probe")
    parser.add_argument("--only", nargs="+", help="candidate names to build (default: all)")
    parser.add_argument("--calib", type=int, default=256, help="training sentences to calibrate")
    parser.add_argument("--sens", type=int, default=128, help="sentences for the report")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--stages", nargs="+", default=["ort", "openvino"],
                        choices=["ort", "openvino"])
    parser.add_argument("--ov-ignore", type=int, default=8,
                        help="OpenVINO: leave the top-k nodes of the report out of INT8")
    parser.add_argument("--ov-only", nargs="+", help="OpenVINO variants to build (default: all)")
    parser.add_argument("--keep", action="store_true", help="reuse candidate files already built")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "int8_recipes"))
    args = parser.parse_args()
    t_start = time.perf_counter()
    cpu = cpu_info()

    from core.predict import logit_scores
    from core.runtimes.base import Runtime

    run = Path(args.run)
    model_dir = run / "model"
    labels, split = run_split(run)
    val = [r for r in split.val if r.label in labels]
    texts = [r.text for r in val]
    gold = np.array([labels.index(r.label) for r in val])
    train_texts = [r.text for r in split.train]
    calib_texts = train_texts[:args.calib]
    sens_texts = train_texts[args.calib:args.calib + args.sens]  # disjoint from calibration
    tok = Runtime(model_dir)
    calib = qr.encode_batches(model_dir, calib_texts)
    longest = max(len(x) for x in tok.tokenizer(calib_texts)["input_ids"])
    calib_padded = qr.encode_batches(model_dir, calib_texts, pad_to=longest)
    sens = qr.encode_batches(model_dir, sens_texts)
    singles = one_by_one(tok, texts)
    batched = [tok.encode(texts[i:i + 32]) for i in range(0, len(texts), 32)]

    unfused = run / "onnx" / "model.onnx"
    print(f"sensitivity report on {len(sens_texts)} sentences ...", flush=True)
    report = qr.sensitivity_report(unfused, sens, threads=args.threads)
    proxy = research.proxy_sensitivity(unfused, sens, threads=args.threads)
    full_rank = [r["name"] for r in report["nodes"] if r["op_type"] in ("MatMul", "Gemm")]
    proxy["spearman"] = spearman(full_rank, [r["name"] for r in proxy["nodes"]])
    print(f"  report {report['seconds']} s, proxy {proxy['seconds']} s, "
          f"spearman {proxy['spearman']}", flush=True)

    fp32_sess = qr._session(unfused, args.threads)
    ref1 = np.concatenate([fp32_sess.run(["logits"], f)[0] for f in singles])
    ref32 = np.concatenate([fp32_sess.run(["logits"], f)[0] for f in batched])
    fp32_scores = logit_scores(gold, ref1, None)

    sweep = []
    if not args.no_sweep:
        matmuls = [n for n in qr.quantizable_nodes(unfused)]
        sim = qr.Simulator(unfused, qr.encode_batches(model_dir, texts), matmuls, args.threads)
        order = qr.batch_order(tok.tokenizer(texts)["input_ids"])
        for k in (0, 1, 2, 4, 8, 12, 16, 24):
            drop = set(full_rank[:k])
            lg = sim.logits([n["name"] for n in matmuls if n["name"] not in drop])
            ref_sorted = ref1[order]
            sweep.append({"k": k, "agreement": round(100 * float(
                (lg.argmax(1) == ref_sorted.argmax(1)).mean()), 2),
                "mean_abs_dlogit": float(np.abs(lg - ref_sorted).mean())})
            print(f"  sweep k={k}: {sweep[-1]}", flush=True)
        del sim

    out_dir = run / "int8_recipes"
    out_dir.mkdir(exist_ok=True)
    ctx = Context(run, out_dir, calib, calib_padded, report)
    rows = []
    for name, what, build in candidate_specs():
        if "ort" not in args.stages or (args.only and name not in args.only):
            continue
        dst = out_dir / f"{name}.onnx"
        row = {"name": name, "what": what}
        try:
            t0 = time.perf_counter()
            info = None
            if not (args.keep and dst.exists()):
                info = build(ctx, dst)
            row["build_s"] = round(time.perf_counter() - t0, 1)
            row["info"] = info
            row["mb"] = round(dst.stat().st_size / 1e6, 2)
            row["ops"] = qr.op_counts(dst)
            row["runtime_ops"] = qr.runtime_op_counts(dst)
            ev = evaluate(dst, singles, batched, gold, ref1, ref32, args.threads)
            ev.pop("logits_b1")
            row.update(ev)
            row["f1_delta"] = round(row["macro_f1"] - fp32_scores["macro_f1"], 2)
            row["path"] = str(dst)
            print(f"{name}: {row['mb']} MB agree {row['agreement']} (b32 {row['agreement_b32']}) "
                  f"F1 {row['macro_f1']} ({row['f1_delta']:+.2f}) build {row['build_s']} s",
                  flush=True)
        except Exception as exc:  # a failing recipe is a result too
            row["error"] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: FAILED {row['error']}", flush=True)
        rows.append(row)

    # --- latency, interleaved
    typical_idx = int(np.argsort([f["input_ids"].shape[1] for f in singles],
                                 kind="stable")[(len(singles) - 1) // 2])
    feed = singles[typical_idx]
    from core.runtimes.torch import TorchRuntime

    torch_rt = TorchRuntime(model_dir, threads=args.threads)
    runners = {"pytorch_fp32": lambda: torch_rt.forward(feed)}
    sessions = {"ort_fp32": unfused, "ort_fp32_optimized": run / "onnx" / "model_optimized.onnx"}
    sessions.update({r["name"]: Path(r["path"]) for r in rows if "path" in r})
    for name, path in sessions.items():
        s = qr._session(path, args.threads)
        f = qr._feeds_for(s, feed)
        runners[name] = (lambda s=s, f=f: s.run(["logits"], f))
    print(f"timing {len(runners)} models, {args.rounds} rounds x {args.iters} ...", flush=True)
    timing = time_interleaved(runners, args.rounds, args.iters, args.warmup)
    base_pt = timing["pytorch_fp32"]["p50_ms"]
    base_opt = timing["ort_fp32_optimized"]["p50_ms"]
    baselines = []
    for name, path in [("pytorch_fp32", model_dir / "model.safetensors"), ("ort_fp32", unfused),
                       ("ort_fp32_optimized", run / "onnx" / "model_optimized.onnx")]:
        t = timing[name]
        baselines.append({"name": name, "mb": round(path.stat().st_size / 1e6, 2),
                          "p50_ms": t["p50_ms"], "macro_f1": round(fp32_scores["macro_f1"], 2),
                          "x_pytorch": round(base_pt / t["p50_ms"], 2),
                          "x_ort_opt": round(base_opt / t["p50_ms"], 2)})
    for r in rows:
        if r["name"] in timing:
            t = timing[r["name"]]
            r.update({"p50_ms": t["p50_ms"], "p90_ms": t["p90_ms"],
                      "x_pytorch": round(base_pt / t["p50_ms"], 2),
                      "x_ort_opt": round(base_opt / t["p50_ms"], 2)})
    ov_result = None
    if "openvino" in args.stages:
        print("OpenVINO NNCF variants ...", flush=True)
        ov_result = openvino_stage(run, model_dir, one_by_one(tok, calib_texts), singles, gold,
                                   ref1, report, args.threads, args.rounds, args.iters,
                                   args.warmup, args.ov_ignore, args.ov_only, calib)
    result = {"run": str(run), "command": " ".join(shlex.quote(a) for a in
                                                   [".venv/bin/python", *sys.argv]),
              "cpu": cpu, "versions": versions(), "threads": args.threads,
              "env": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
              "val_size": len(texts), "typical_tokens": int(feed["input_ids"].shape[1]),
              "fp32": {"macro_f1": round(fp32_scores["macro_f1"], 2),
                       "accuracy": round(fp32_scores["accuracy"], 2)},
              "timing": {"rounds": args.rounds, "iters": args.iters, "warmup": args.warmup,
                         "n": args.rounds * args.iters, "all": timing},
              "baselines": baselines, "candidates": rows, "sweep": sweep, "openvino": ov_result,
              "sensitivity": report, "proxy": {k: v for k, v in proxy.items() if k != "nodes"}
              | {"top": [r["name"] for r in proxy["nodes"][:20]]},
              "seconds": round(time.perf_counter() - t_start, 1),
              "load_avg_end": list(os.getloadavg())}
    write_results(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
