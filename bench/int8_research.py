"""Research INT8 recipes: compared only by bench/int8_recipes.py (results in
bench/results/int8_recipes*.md), not shipped by the export (which builds
``core.quant_recipes.per_token_int8`` and ``folded_int8``). Moved out of core/quant_recipes.py;
they are built from its pieces (``qr._Builder``, ``qr.gptq_round``, ``qr.dynamic``, ...).

* :func:`outlier_split` — LLM.int8()-style decomposition: the ``c`` largest input channels of a
  MatMul are computed in FP32 by a tiny side MatMul, the rest in INT8 with those channels zeroed.
* :func:`gptq_refine` — GPTQ re-rounding of the int8 weights of a ``quantize_dynamic`` file.
* :func:`static_qdq` — ``quantize_static`` QDQ with per-channel weights and percentile/entropy/
  minmax calibration; calibration batches are padded to one length because the histogram
  calibrators fail on inhomogeneous shapes (shared stack notes).
* :func:`outlier_aware_int8` — outlier split + SmoothQuant + per-channel dynamic INT8 + GPTQ.
* :func:`nbits_weight_only` — 8-bit ``MatMulNBits`` weight-only (the export's weight-only file
  until 2026-12-03).
* :func:`proxy_sensitivity` — a cheaper per-node output error than
  ``core.quant_recipes.sensitivity_report`` (one FP32 pass, numpy).

Import it with ROOT/bench on ``sys.path`` (bench/int8_recipes.py runs from there)::

    import int8_research
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core import quant_recipes as qr  # noqa: E402
from core.quant_recipes import Feeds, PathLike  # noqa: E402


# --------------------------------------------------------------------------- sensitivity proxy

def proxy_sensitivity(model, batches: Sequence[Feeds], nodes: Sequence[dict] | None = None,
                      threads: int | None = None) -> dict:
    """Cheap proxy: per-node relative output error ||XqWq - XW|| / ||XW|| with each node fed its
    own FP32 input (one FP32 pass capturing every node input; per-sentence activation ranges).
    It ignores how errors propagate to the logits, so it ranks nodes, it does not predict flips."""
    from onnx import numpy_helper

    t0 = time.perf_counter()
    model = qr._load(model)
    nodes = [n for n in (nodes if nodes is not None else qr.quantizable_nodes(model))
             if n["op_type"] in ("MatMul", "Gemm")]
    inits = {i.name: i for i in model.graph.initializer}
    session = qr._session(qr._add_outputs(model, [n["activation"] for n in nodes]), threads)
    names = list(dict.fromkeys(n["activation"] for n in nodes))
    acc = {n["name"]: [0.0, 0.0] for n in nodes}
    weights = {}
    for n in nodes:
        w = numpy_helper.to_array(inits[n["weight"]]).astype(np.float32)
        if n["op_type"] == "Gemm":
            w = w.T  # classifier Gemm nodes use transB=1
        weights[n["name"]] = (w, qr.fake_quant_weight(w))
    for feeds in batches:
        values = dict(zip(names, session.run(names, qr._feeds_for(session, feeds))))
        mask = feeds["attention_mask"].astype(np.float32)
        for n in nodes:
            x = values[n["activation"]]
            w, wq = weights[n["name"]]
            xq = _fake_quant_rows(x, mask)
            y, yq = x @ w, xq @ wq
            if x.ndim == 3:
                y, yq = y * mask[..., None], yq * mask[..., None]
            acc[n["name"]][0] += float(((yq - y) ** 2).sum())
            acc[n["name"]][1] += float((y ** 2).sum())
    rows = [{**n, "rel_error": float(np.sqrt(acc[n["name"]][0] / max(acc[n["name"]][1], 1e-30)))}
            for n in nodes]
    rows.sort(key=lambda r: -r["rel_error"])
    return {"method": "per-node relative output error (FP32 inputs)", "nodes": rows,
            "seconds": round(time.perf_counter() - t0, 2)}


def _fake_quant_rows(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """ONNX ``DynamicQuantizeLinear`` then dequantize for each sentence (batch row) of x,
    padding ignored: uint8, range always includes 0, round half to even."""
    xm = x * mask[..., None] if x.ndim == 3 else x
    axes = tuple(range(1, x.ndim))
    hi = np.maximum(xm.max(axis=axes, keepdims=True), 0)
    lo = np.minimum(xm.min(axis=axes, keepdims=True), 0)
    scale = np.maximum((hi - lo) / 255.0, 1e-30)
    zp = np.clip(np.round(-lo / scale), 0, 255)
    return ((np.clip(np.round(x / scale) + zp, 0, 255) - zp) * scale).astype(np.float32)


# --------------------------------------------------------------------------- recipes

def nbits_weight_only(src: PathLike, dst: PathLike, block_size: int = 64) -> None:
    """8-bit ``MatMulNBits`` (``accuracy_level=0``) for every MatMul and per-tensor int8
    embedding tables (``quantize_dynamic`` on Gather), on the unfused graph (fused Attention
    keeps FP32 weights): the export's weight-only file until 2026-12-03, kept for comparison
    with :func:`core.quant_recipes.folded_int8` in bench/int8_recipes.py."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        gathered = Path(tmp) / "gather_int8.onnx"
        quantize_dynamic(str(src), str(gathered), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Gather"])
        qr.nbits_int8(gathered, dst, block_size=block_size)


def outlier_split(src: PathLike, dst: PathLike, batches: Sequence[Feeds], channels: int = 8,
                  roles: Iterable[str] = ("ffn_down",), layers: Iterable[int] | None = None,
                  threads: int | None = None) -> dict:
    """LLM.int8()-style decomposition (arXiv 2208.07339) on an FP32 graph; writes an FP32 graph.

    For each group the ``channels`` input channels with the largest calibration max |x| are
    zeroed in the main MatMul's input (which :func:`core.quant_recipes.dynamic` then quantizes
    with a flat range) and computed by a side FP32 MatMul ``Gather(X, idx, axis=-1) @ W[idx, :]``
    added to its output (mathematically the same model). The side MatMul's weight is
    1-D-gathered so quantize_dynamic leaves it in FP32 (listed in the returned ``keep_fp32``)."""
    import onnx
    from onnx import numpy_helper

    model = qr._load(src)
    groups = qr.smoothing_groups(model, roles, layers)
    stats = qr.activation_absmax(model, batches, [g["activation"] for g in groups], threads)
    inits = {i.name: i for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    b = qr._Builder(model)
    keep, summary = [], []
    for g in groups:
        xmax = stats[g["activation"]]
        idx = np.sort(np.argsort(-xmax)[:channels]).astype(np.int64)
        keep_mask = np.ones_like(xmax, dtype=np.float32)
        keep_mask[idx] = 0.0
        x = g["activation"]
        main_in = b.op("Mul", [x, b.const(keep_mask, "outlier_mask")], "outlier_main")
        side_in = b.op("Gather", [x, b.const(idx, "outlier_idx")], "outlier_side", axis=-1)
        for n in g["nodes"]:
            if n["op_type"] != "MatMul":
                raise ValueError("outlier_split needs the unfused graph (plain MatMul nodes)")
            node = by_name[n["name"]]
            w = numpy_helper.to_array(inits[n["weight"]]).astype(np.float32)
            node.input[0] = main_in
            side_name = b.name("outlier_side_mm")
            side_out = b.name("outlier_side_out")
            b.nodes.append(onnx.helper.make_node(
                "MatMul", [side_in, b.const(w[idx], "outlier_w")], [side_out], name=side_name))
            keep.append(side_name)
            out = node.output[0]
            main_out = b.name("outlier_main_out")
            node.output[0] = main_out
            b.nodes.append(onnx.helper.make_node("Add", [main_out, side_out], [out],
                                                 name=b.name("outlier_add")))
        summary.append({"activation": x, "role": g["nodes"][0]["role"],
                        "layer": g["nodes"][0]["layer"], "channels": idx.tolist(),
                        "ratio_kept_max": float(np.sort(xmax)[-channels - 1] / xmax.max())})
    ordered = qr._toposort(list(model.graph.node) + b.nodes)
    model.graph.ClearField("node")
    model.graph.node.extend(ordered)
    onnx.save(model, str(dst))
    return {"groups": summary, "keep_fp32": keep}


def gptq_refine(fp32_src: PathLike, quantized: PathLike, dst: PathLike,
                batches: Sequence[Feeds], damp: float = 0.01, act_order: bool = True,
                threads: int | None = None, roles: Iterable[str] | None = None) -> dict:
    """Re-round the int8 weights of a symmetric ``quantize_dynamic`` file with GPTQ.

    ``fp32_src`` is the FP32 graph ``quantized`` was made from (same initializer names: the
    quantizer writes weight W as ``W_quantized`` / ``W_scale`` / ``W_zero_point``); the
    scales and zero points are kept, only the int8 values change, so the graph, its ops and
    its size are the same. Works best with per-channel scales (``qr.dynamic(per_channel=True)``).
    Returns the number of refined weights and the mean relative output-error reduction."""
    import onnx
    from onnx import numpy_helper

    src = qr._load(fp32_src)
    qmodel = onnx.load(str(quantized))
    qinits = {i.name: i for i in qmodel.graph.initializer}
    sinits = {i.name: i for i in src.graph.initializer}
    nodes = [n for n in qr.quantizable_nodes(src) if n["op_type"] in ("MatMul", "Attention")
             and f"{n['weight']}_quantized" in qinits and (roles is None or n["role"] in roles)]
    hs = qr.input_hessians(src, batches, [n["activation"] for n in nodes], threads)
    gains = []
    for n in nodes:
        zp = numpy_helper.to_array(qinits[f"{n['weight']}_zero_point"])
        if np.any(zp != 0):
            continue  # asymmetric weights: leave them
        w = numpy_helper.to_array(sinits[n["weight"]]).astype(np.float32)
        scale = numpy_helper.to_array(qinits[f"{n['weight']}_scale"]).astype(np.float64)
        h = hs[n["activation"]]
        q_old = numpy_helper.to_array(qinits[f"{n['weight']}_quantized"]).astype(np.float64)
        # the grid the quantizer used: symmetric scales put the largest weight at qmax, so a
        # file written with reduce_range (7-bit, |q| <= 64) never holds a larger value
        qmax = 64 if np.abs(q_old).max() <= 64 else 127
        q_new = qr.gptq_round(w, scale, h, damp, act_order, qmax=qmax)

        def out_err(q):
            d = w - q * scale
            return float(np.einsum("ij,ik,kj->", d, h, d))

        before, after = out_err(q_old), out_err(q_new.astype(np.float64))
        if after < before:
            qinits[f"{n['weight']}_quantized"].CopyFrom(
                numpy_helper.from_array(q_new, f"{n['weight']}_quantized"))
        gains.append(after / before if before > 0 else 1.0)
    onnx.save(qmodel, str(dst))
    return {"refined": len(gains), "output_error_ratio_mean": float(np.mean(gains)) if gains
            else None}


class _Reader:
    """quantize_static's CalibrationDataReader over fixed feeds."""

    def __init__(self, feeds: Sequence[Feeds], names: set[str]):
        self._it = iter([{k: v for k, v in f.items() if k in names} for f in feeds])

    def get_next(self):
        return next(self._it, None)


def static_qdq(src: PathLike, dst: PathLike, batches: Sequence[Feeds],
               method: str = "percentile", percentile: float = 99.99, per_channel: bool = True,
               exclude: Iterable[str] = (), activation_symmetric: bool = False,
               op_types: Sequence[str] = ("MatMul",)) -> None:
    """Static INT8 in QDQ format (``quantize_static``): activation scales fixed from calibration.

    ``batches`` must all have the same padded length (``encode_batches(..., pad_to=L)``): the
    percentile/entropy calibrators stack every batch's outputs. Only MatMuls with a constant
    weight are quantized (``MatMulConstBOnly``: the attention-score MatMuls stay FP32); weights
    are per output channel when ``per_channel``. uint8 activations / int8 weights, the CPU
    recommendation for VNNI machines in ``quantize_static``'s docstring."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    methods = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
               "minmax": CalibrationMethod.MinMax}
    lengths = {f["input_ids"].shape[1] for f in batches}
    if len(lengths) > 1 and method != "minmax":
        raise ValueError(f"static_qdq: calibration batches have lengths {sorted(lengths)}; "
                         "pad them to one (encode_batches(..., pad_to=L))")
    names = {i.name for i in qr._load(src).graph.input}
    with tempfile.TemporaryDirectory() as tmp:
        prepped = qr._prepped(src, tmp)
        extra = {"MatMulConstBOnly": True, "ActivationSymmetric": activation_symmetric,
                 "WeightSymmetric": True}
        if method == "percentile":
            extra["CalibPercentile"] = percentile
        quantize_static(prepped, str(dst), _Reader(batches, names), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(exclude), calibrate_method=methods[method],
                        extra_options=extra)
    del onnx


def outlier_aware_int8(src: PathLike, dst: PathLike, batches: Sequence[Feeds],
                       split_down: int = 16, split_up: int = 4, split_attn: int = 0,
                       smooth_roles: Sequence[str] = ("qkv", "q", "k", "v"),
                       alpha: float = 0.7, per_channel: bool = True, gptq: bool = True,
                       keep: Iterable[str] = (), keep_as: str = "fp32",
                       reduce_range: bool = True, threads: int | None = None) -> dict:
    """The combined recipe: outlier split for the FFN inputs, SmoothQuant for the attention
    input, per-channel dynamic INT8, GPTQ re-rounding. Every step keeps the FP32 function
    except the final quantization; the graph computes with DynamicQuantizeLinear +
    MatMulInteger (DynamicQuantizeMatMul after ORT's fusion) and QAttention on a fused source.

    Why each step (measured on the fine-tuned e5-small-ko, bench/int8_recipes.py):
    the FFN-up inputs (attention LayerNorm output) and FFN-down inputs (GELU output) carry a few
    channels that are 10-60x the median, mostly on the <s>/</s> tokens (attention-sink
    "registers", Bondarenko et al. 2021/2023): ``split_down`` / ``split_up`` of those channels
    go through a tiny FP32 side MatMul (:func:`outlier_split`, LLM.int8()); the residual-stream
    input of Q/K/V (fused Attention: no side path possible) is flattened by SmoothQuant
    (``alpha`` 0.7 measured best there); per-output-channel weight scales remove most of the
    weight error (per-tensor weights alone cost 9% of labels); GPTQ (:func:`gptq_refine`)
    re-rounds the int8 weights against each layer's input statistics. ``keep``: node names left
    out of INT8 (``keep_as`` "fp32" or "nbits"). ``src``: fused (model_optimized.onnx,
    faster: QAttention) or unfused graph. ``reduce_range`` (default): 7-bit weights, no int16
    saturation on AVX2 (see :func:`core.quant_recipes.dynamic`). Returns what was done, with
    timings."""
    t0 = time.perf_counter()
    steps: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        cur = Path(src)
        keep = list(keep)
        for roles, c in ((("ffn_down",), split_down), (("ffn_up",), split_up),
                         (("attn_out",), split_attn)):
            if c:
                nxt = Path(tmp) / f"split_{roles[0]}.onnx"
                info = outlier_split(cur, nxt, batches, channels=c, roles=roles, threads=threads)
                keep_split = info["keep_fp32"]
                steps[f"split_{roles[0]}"] = {"channels": c, "groups": len(info["groups"])}
                keep += keep_split
                cur = nxt
        if smooth_roles and alpha:
            nxt = Path(tmp) / "smoothed.onnx"
            info = qr.smooth_quant(cur, nxt, batches, alpha=alpha, roles=smooth_roles,
                                   threads=threads)
            steps["smooth"] = {"alpha": alpha, "groups": len(info["groups"])}
            cur = nxt
        quantized = Path(tmp) / "dynamic.onnx" if gptq else Path(dst)
        qr.dynamic(cur, quantized, exclude=keep, per_channel=per_channel, keep_as=keep_as,
                   reduce_range=reduce_range)
        steps["dynamic"] = {"per_channel": per_channel, "reduce_range": reduce_range,
                            "kept": len(keep)}
        if gptq:
            steps["gptq"] = gptq_refine(cur, quantized, dst, batches, threads=threads)
    steps["seconds"] = round(time.perf_counter() - t0, 2)
    return steps
