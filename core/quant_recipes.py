"""INT8 recipes the export ships, their building blocks, and the per-node sensitivity report.

Why this module exists (issue #11). Plain dynamic INT8 (``quantize_dynamic``, QInt8 weights, one
uint8 scale per activation tensor computed at run time) is fast on the fine-tuned e5-small-ko but
changes 6-12% of its labels: a few channels of the residual stream (the LayerNorm outputs that feed
Q/K/V and the FFN) and of the FFN-down inputs are 10-100x larger than the rest, so one scale per
tensor leaves the ordinary channels only a handful of levels (Bondarenko et al., "Understanding
and Overcoming the Challenges of Efficient Transformer Quantization", EMNLP 2021,
arXiv 2109.12948; Dettmers et al., "LLM.int8()", arXiv 2208.07339). This module holds the
recipes the export ships (through ``core.quantize``, ``core.export``, ``core.onnx_export``),
what they are built from, and plain dynamic INT8, the baseline they are measured against:

* :func:`per_token_int8` — the export's integer file (``core.quantize.integer_int8`` with
  :data:`DEFAULT_PER_TOKEN`): integer matmuls with one activation scale per token
  (ZeroQuant-style), 7-bit per-column GPTQ-rounded weights, per-row int8 embeddings.
* :func:`folded_int8` — the export's weight-only file (``core.quantize.weight_only_int8``):
  int8 weight blocks decoded by constant ops that ONNX Runtime folds when it loads the file.
* :func:`smooth_quant` — SmoothQuant scale migration (Xiao et al., arXiv 2211.10438): divide each
  input channel of an activation by ``s_j = max|X_j|^a / max|W_j|^(1-a)`` and multiply the matching
  weight rows by ``s_j``; the product is unchanged in exact arithmetic, but the activation becomes
  flat enough for one scale per tensor. The division is a ``Mul`` node inserted in front of the
  weight-bearing node (the residual branch keeps the unscaled tensor, so LayerNorm gamma cannot
  absorb it in a post-LN encoder) or, for the attention output projection, folded exactly into
  the V projection's columns (attention is linear in V).
* :func:`gptq_round` with :func:`input_hessians` — GPTQ rounding (Frantar et al.,
  arXiv 2210.17323) of a weight on a fixed grid against its layer's input statistics.
* :func:`dynamic` — ``quantize_dynamic``; with ``exclude`` / ``keep_as="nbits"``, mixed
  precision from the sensitivity report (keep the most damaging nodes out of activation
  quantization; ``nbits`` stores them as 8-bit weight-only ``MatMulNBits`` via :func:`nbits_int8`
  so the file does not grow, see the ONNX Runtime quantization docs,
  onnxruntime.ai/docs/performance/model-optimizations/quantization.html).

:func:`sensitivity_report` quantizes each quantizable node alone and measures how far the logits
move. It does that in ONE ONNX Runtime session: every quantizable node gets a simulated
("fake-quant") INT8 branch with exactly dynamic quantization's arithmetic (per-sentence uint8
activation range including 0, symmetric per-tensor int8 weights, round-half-even) behind a 0/1 gate
input, so measuring node i is one more run with gate i set, not one more model build.

The research recipes that bench/int8_recipes.py compares with these (outlier split, GPTQ
re-rounding of ``quantize_dynamic`` files, static QDQ, the outlier-aware combination, the
proxy sensitivity, MatMulNBits weight-only) are in bench/int8_research.py, not shipped.

Everything takes ``batches``: a list of ONNX Runtime feeds (``{"input_ids": int64 [B, S],
"attention_mask": int64 [B, S]}``), e.g. from :func:`encode_batches`. Functions that write a model
take ``(src, dst, ...)`` paths and return None (or a small dict describing what they did).

Use (the export's default, ``core.quantize.integer_int8``; bench/int8_recipes.py measured the
alternatives side by side)::

    from core import quant_recipes as qr
    batches = qr.encode_batches(model_dir, calibration_texts)
    qr.per_token_int8(fused_onnx, dst, batches, **qr.DEFAULT_PER_TOKEN)
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from core.quant import grids
from core.quant.grids import W7  # noqa: F401  (the per-token recipe's weight grid)

PathLike = str | Path
Feeds = dict[str, np.ndarray]

ROLES = ("embedding", "q", "k", "v", "qkv", "attn_out", "ffn_up", "ffn_down", "head")
INTEGER_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul",
               "QAttention", "QGemm", "QuantizeLinear", "DequantizeLinear",
               "DynamicQuantizeLinear", "MatMulNBits", "GatherBlockQuantized")
_PREFIX = "qr_"  # names this module adds to graphs


# --------------------------------------------------------------------------- inputs

def encode_batches(model_dir: PathLike, texts: Sequence[str], batch_size: int = 32,
                   max_length: int | None = None, pad_to: int | None = None) -> list[Feeds]:
    """Tokenize ``texts`` into ONNX Runtime feeds, sorted by length so batches carry little padding.

    ``pad_to`` pads every batch to that many tokens (``quantize_static``'s histogram calibrators
    need one shape); otherwise each batch is padded to its own longest text. Only the inputs the
    model takes are produced (XLM-R has no token_type_ids). The order of sentences in the
    batches is the sorted order: use :func:`batch_order` to map results back."""
    from core.runtimes.base import Runtime

    rt = Runtime(model_dir, max_length)
    enc = rt.tokenizer(list(texts), truncation=True, max_length=rt.max_length)
    order = batch_order(enc["input_ids"])
    pad_id = rt.tokenizer.pad_token_id if rt.tokenizer.pad_token_id is not None else 0
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        length = pad_to or max(len(enc["input_ids"][i]) for i in idx)
        feeds = {}
        for name in rt.input_names:
            fill = pad_id if name == "input_ids" else 0
            arr = np.full((len(idx), length), fill, dtype=np.int64)
            for row, i in enumerate(idx):
                seq = enc[name][i][:length]
                arr[row, :len(seq)] = seq
            feeds[name] = arr
        out.append(feeds)
    return out


def batch_order(input_ids: Sequence[Sequence[int]]) -> list[int]:
    """The order :func:`encode_batches` puts sentences in (stable sort by token count)."""
    return sorted(range(len(input_ids)), key=lambda i: (len(input_ids[i]), i))


def single_feeds(batches: Iterable[Feeds]) -> list[Feeds]:
    """Split padded batches back into one unpadded feed per sentence (the batch-1 deployment)."""
    out = []
    for feeds in batches:
        mask = feeds["attention_mask"]
        for row in range(mask.shape[0]):
            n = int(mask[row].sum())
            out.append({k: v[row:row + 1, :n] for k, v in feeds.items()})
    return out


# --------------------------------------------------------------------------- graph facts

def _load(model) -> "onnx.ModelProto":  # noqa: F821
    import onnx

    if isinstance(model, (str, Path)):
        return onnx.load(str(model))
    return model


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def _role(name: str, op_type: str) -> str:
    n = name.lower()
    if op_type == "Gather":
        return "embedding"
    if op_type == "Attention":
        return "qkv"
    if "classifier" in n or op_type == "Gemm":
        return "head"
    for key, role in (("attention/self/query", "q"), ("attention/self/key", "k"),
                      ("attention/self/value", "v"), ("attention/output/dense", "attn_out"),
                      ("intermediate/dense", "ffn_up"), ("output/dense", "ffn_down")):
        if key in n:
            return role
    return "other"


def quantizable_nodes(model) -> list[dict]:
    """Every node INT8 can touch: MatMul/Gemm/fused Attention with a constant 2-D weight, and
    Gather on a float table (embeddings). One dict each: name, op_type, role (see ``ROLES``),
    layer (None outside the encoder), activation (input tensor name, None for Gather), weight
    (initializer name), shape, params, topo (position in the graph)."""
    import onnx

    model = _load(model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = []
    for topo, node in enumerate(graph.node):
        weight_idx = {"MatMul": 1, "Gemm": 1, "Attention": 1, "Gather": 0}.get(node.op_type)
        if weight_idx is None or len(node.input) <= weight_idx:
            continue
        init = inits.get(node.input[weight_idx])
        if init is None or len(init.dims) != 2 or init.data_type != onnx.TensorProto.FLOAT:
            continue
        layer = _layer_of(node, consumers)
        out.append({"name": node.name, "op_type": node.op_type, "role": _role(node.name,
                                                                             node.op_type),
                    "layer": layer,
                    "activation": None if node.op_type == "Gather" else node.input[0],
                    "weight": init.name, "shape": [int(d) for d in init.dims],
                    "params": int(np.prod(init.dims)), "topo": topo})
    return out


def _layer_of(node, consumers) -> int | None:
    m = re.search(r"layer\.(\d+)/", node.name)
    if m:
        return int(m.group(1))
    if node.op_type == "Attention":  # fused: its output feeds layer N's attention/output/dense
        for nxt in consumers.get(node.output[0], []):
            m = re.search(r"layer\.(\d+)/", nxt.name)
            if m:
                return int(m.group(1))
    return None


def op_counts(model, ops: Iterable[str] | None = INTEGER_OPS) -> dict[str, int]:
    """Node counts by op type in a graph file (``ops=None``: every type). Also counts
    ``float_weight_matmul``: MatMul/Gemm/Attention nodes whose weight is still a float initializer
    (what runs in FP32)."""
    model = _load(model)
    counts: dict[str, int] = {}
    inits = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if ops is None or node.op_type in ops:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        if node.op_type in ("MatMul", "Gemm", "Attention") and len(node.input) > 1 \
                and node.input[1] in inits:
            counts["float_weight_matmul"] = counts.get("float_weight_matmul", 0) + 1
    return dict(sorted(counts.items()))


def runtime_op_counts(path: PathLike, ops: Iterable[str] | None = INTEGER_OPS) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime actually runs on this CPU after its own fusions
    (e.g. DynamicQuantizeLinear + MatMulInteger -> DynamicQuantizeMatMul, DQ + MatMul ->
    MatMulIntegerToFloat), read back through ``optimized_model_filepath``."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return op_counts(Path(tmp) / "opt.onnx", ops)


def _session(model, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    data = model if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(str(data) if isinstance(data, Path) else data, options,
                                providers=["CPUExecutionProvider"])


def _feeds_for(session, feeds: Feeds) -> Feeds:
    names = {i.name for i in session.get_inputs()}
    return {k: v for k, v in feeds.items() if k in names}


def run_logits(model, batches: Sequence[Feeds], threads: int | None = None,
               session=None) -> np.ndarray:
    """Logits of ``model`` (path or ModelProto) over ``batches``, concatenated in batch order."""
    session = session or _session(model, threads)
    return np.concatenate([session.run(["logits"], _feeds_for(session, f))[0] for f in batches])


# --------------------------------------------------------------------------- activation statistics

def _add_outputs(model, names: Iterable[str]):
    """A copy of ``model`` that also returns the tensors ``names`` (float, shape unspecified)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for name in dict.fromkeys(names):
        if name not in have:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, None))
    return copy


def _masked_rows(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[tokens, channels] of the real (unpadded) tokens of a [B, S, C] activation."""
    if x.ndim == 3:
        return x[mask.astype(bool)]
    return x.reshape(-1, x.shape[-1])


def activation_absmax(model, batches: Sequence[Feeds], tensors: Iterable[str],
                      threads: int | None = None) -> dict[str, np.ndarray]:
    """Per-channel max |x| of each named tensor over the real tokens of ``batches`` (FP32 run)."""
    model = _load(model)
    tensors = list(dict.fromkeys(tensors))
    session = _session(_add_outputs(model, tensors), threads)
    out: dict[str, np.ndarray] = {}
    for feeds in batches:
        values = session.run(tensors, _feeds_for(session, feeds))
        for name, x in zip(tensors, values):
            m = np.abs(_masked_rows(x, feeds["attention_mask"])).max(axis=0)
            out[name] = m if name not in out else np.maximum(out[name], m)
    return out


# --------------------------------------------------------------------------- quantization math

def fake_quant_weight(w: np.ndarray, axis: int | None = None, qmax: int = 127) -> np.ndarray:
    """Symmetric int8 weights as ``quantize_dynamic(weight_type=QInt8)`` stores them
    (range -127..127; ``axis`` = per-channel along that axis; qmax 64 = reduce_range)."""
    amax = np.abs(w).max() if axis is None else np.abs(w).max(axis=1 - axis, keepdims=True)
    scale = grids.scales(amax, qmax)
    return (grids.codes(w, scale, qmax) * scale).astype(np.float32)


# --------------------------------------------------------------------------- sensitivity

class _Builder:
    """Tiny helper to append nodes/initializers with unique names."""

    def __init__(self, model):
        self.model = model
        self.n = 0
        self.nodes: list = []
        g = model.graph
        self.taken = {i.name for i in g.initializer} | {i.name for i in g.input} | \
            {o for n in g.node for o in n.output} | {n.name for n in g.node}

    def name(self, hint: str) -> str:
        """A fresh name (graphs rewritten twice, e.g. split then smoothed, keep unique names)."""
        while True:
            self.n += 1
            name = f"{_PREFIX}{hint}_{self.n}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def const(self, array: np.ndarray, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str = "", **attrs) -> str:
        import onnx

        out = self.name(hint or op_type.lower())
        self.nodes.append(onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def reduce(self, op_type: str, x: str, axes: list[int]) -> str:
        if _opset(self.model) >= 18:
            return self.op(op_type, [x, self.const(np.array(axes, np.int64), "axes")],
                           keepdims=1)
        return self.op(op_type, [x], axes=axes, keepdims=1)


def _fake_quant_graph_activation(b: _Builder, x: str, rank: int, mask3: str | None,
                                 per_token: bool = False) -> str:
    """Per-sentence DynamicQuantizeLinear -> dequantize of tensor x, as ONNX ops (pad tokens are
    zeroed before the min/max, which changes nothing because the range always includes 0);
    ``per_token``: one range per row instead (what no ORT integer op offers; a what-if)."""
    axes = [rank - 1] if per_token else list(range(1, rank))
    xm = b.op("Mul", [x, mask3]) if (rank == 3 and mask3 and not per_token) else x
    zero = b.const(np.array(0, np.float32), "zero")
    hi = b.op("Max", [b.reduce("ReduceMax", xm, axes), zero])
    lo = b.op("Min", [b.reduce("ReduceMin", xm, axes), zero])
    scale = b.op("Div", [b.op("Sub", [hi, lo]), b.const(np.array(255, np.float32))])
    scale = b.op("Max", [scale, b.const(np.array(1e-30, np.float32))])
    c0, c255 = b.const(np.array(0, np.float32)), b.const(np.array(255, np.float32))
    zp = b.op("Clip", [b.op("Round", [b.op("Div", [b.op("Neg", [lo]), scale])]), c0, c255])
    q = b.op("Clip", [b.op("Add", [b.op("Round", [b.op("Div", [x, scale])]), zp]), c0, c255])
    return b.op("Mul", [b.op("Sub", [q, zp]), scale])


def simulation_model(model, nodes: Sequence[dict] | None = None, per_channel: bool = False,
                     weights: str | None = None, activations: str = "sentence"):
    """A copy of ``model`` where each listed node's dynamic-INT8 version sits behind a gate.

    Adds the graph input ``qr_gates`` (float [n]); with gate i = 1 node i sees its activation
    fake-quantized per sentence and its weight fake-quantized per tensor (int8 symmetric); with 0
    it computes exactly the FP32 graph (x + 0 * (xq - x) == x). Returns (model, nodes).
    What-if modes: ``weights`` "tensor" (default; "channel" = per output column, as
    ``per_channel``; "none" = FP32 weights) and ``activations`` "sentence" (default; "token" =
    one range per token; "none" = FP32 activations) split the error into its sources."""
    weights = weights or ("channel" if per_channel else "tensor")
    import onnx
    from onnx import numpy_helper

    model = _load(model)
    sim = onnx.ModelProto()
    sim.CopyFrom(model)
    nodes = list(nodes if nodes is not None else quantizable_nodes(model))
    inits = {i.name: i for i in sim.graph.initializer}
    b = _Builder(sim)
    gates = f"{_PREFIX}gates"
    sim.graph.input.append(onnx.helper.make_tensor_value_info(gates, onnx.TensorProto.FLOAT,
                                                              [len(nodes)]))
    mask3 = None
    if any(n["op_type"] not in ("Gather", "Gemm") for n in nodes):
        if "attention_mask" not in {i.name for i in sim.graph.input}:  # a suffix sub-model
            sim.graph.input.append(onnx.helper.make_tensor_value_info(
                "attention_mask", onnx.TensorProto.INT64, ["batch", "sequence"]))
        maskf = b.op("Cast", ["attention_mask"], to=onnx.TensorProto.FLOAT)
        mask3 = b.op("Unsqueeze", [maskf, b.const(np.array([2], np.int64), "axes")])
    by_name = {n.name: n for n in sim.graph.node}
    fq_cache: dict[str, str] = {}
    for i, info in enumerate(nodes):
        node = by_name[info["name"]]
        g = b.op("Gather", [gates, b.const(np.array(i, np.int64), "idx")], "gate")
        w = numpy_helper.to_array(inits[info["weight"]]).astype(np.float32)
        transposed = info["op_type"] == "Gemm" and any(
            a.name == "transB" and a.i for a in node.attribute)
        if info["op_type"] == "Gather":  # weight-only: Gather(W) + g * Gather(Wq - W)
            dw = b.const(fake_quant_weight(w) - w, "dw")
            delta = b.op("Gather", [dw, node.input[1]])
            out = node.output[0]
            tmp = b.name("gather_fp32")
            node.output[0] = tmp
            b.nodes.append(onnx.helper.make_node("Add", [tmp, b.op("Mul", [delta, g])], [out],
                                                 name=b.name("gather_mix")))
            continue
        axis = (0 if transposed else 1) if weights == "channel" else None
        if weights != "none":
            dw = b.const(fake_quant_weight(w, axis) - w, "dw")
            node.input[1] = b.op("Add", [info["weight"], b.op("Mul", [dw, g])])
        if activations == "none":
            continue
        x = info["activation"]
        rank = 2 if info["op_type"] == "Gemm" else 3
        if x not in fq_cache:
            fq_cache[x] = _fake_quant_graph_activation(b, x, rank, mask3,
                                                       activations == "token")
        node.input[0] = b.op("Add", [x, b.op("Mul", [b.op("Sub", [fq_cache[x], x]), g])])
    # the added nodes go where their inputs allow: one topological sort of everything
    ordered = _toposort(list(b.nodes) + list(sim.graph.node))
    sim.graph.ClearField("node")
    sim.graph.node.extend(ordered)
    return sim, nodes


def _toposort(nodes: list) -> list:
    """Nodes in a topological order (Kahn's algorithm, earliest list position first), as
    copies: callers then ``ClearField("node")`` and ``extend`` without aliasing problems."""
    import heapq

    import onnx

    produced = {o: i for i, n in enumerate(nodes) for o in n.output}
    deps = [{produced[x] for x in n.input if x in produced and produced[x] != i}
            for i, n in enumerate(nodes)]
    users: list[list[int]] = [[] for _ in nodes]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    remaining = [len(d) for d in deps]
    ready = [i for i, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle: cannot order its nodes")
    out = []
    for i in order:
        copy = onnx.NodeProto()
        copy.CopyFrom(nodes[i])
        out.append(copy)
    return out


def _damage(ref: np.ndarray, logits: np.ndarray) -> dict:
    diff = np.abs(logits - ref)
    flips = int((logits.argmax(-1) != ref.argmax(-1)).sum())
    return {"mean_abs_dlogit": float(diff.mean()), "max_abs_dlogit": float(diff.max()),
            "flips": flips, "flip_pct": round(100.0 * flips / max(len(ref), 1), 2)}


class Simulator:
    """One ORT session over :func:`simulation_model`: logits for any set of quantized nodes.

    ``logits(on)`` runs the batches with the nodes in ``on`` (names or indices) quantized, so a
    sweep ("all but the top k", "only layers 7-11") costs one pass each, no model builds."""

    def __init__(self, model, batches: Sequence[Feeds], nodes: Sequence[dict] | None = None,
                 threads: int | None = None, per_channel: bool = False, **modes):
        sim, self.nodes = simulation_model(model, nodes, per_channel, **modes)
        self.session = _session(sim, threads)
        self.batches = list(batches)
        self.index = {n["name"]: i for i, n in enumerate(self.nodes)}
        self.reference = self.logits([])

    def logits(self, on: Iterable[str | int]) -> np.ndarray:
        gates = np.zeros(len(self.nodes), np.float32)
        for item in on:
            gates[self.index[item] if isinstance(item, str) else item] = 1.0
        out = []
        for feeds in self.batches:
            f = _feeds_for(self.session, feeds)
            f[f"{_PREFIX}gates"] = gates
            out.append(self.session.run(["logits"], f)[0])
        return np.concatenate(out)

    def damage(self, on: Iterable[str | int]) -> dict:
        return _damage(self.reference, self.logits(on))


def _suffix_model(model, boundary: str):
    """The part of ``model`` computing ``logits`` from tensor ``boundary`` (plus whatever graph
    inputs that part still reads, e.g. attention_mask): later layers without the prefix."""
    import onnx

    produced = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    graph_inputs = {i.name for i in model.graph.input}
    keep, stack, used_inputs = set(), ["logits"], set()
    while stack:
        name = stack.pop()
        if name == boundary or not name:
            continue
        if name in graph_inputs:
            used_inputs.add(name)
            continue
        i = produced.get(name)
        if i is None or i in keep:
            continue
        keep.add(i)
        stack.extend(model.graph.node[i].input)
    nodes = [model.graph.node[i] for i in sorted(keep)]
    needed = {x for n in nodes for x in n.input}
    inits = [t for t in model.graph.initializer if t.name in needed]
    inputs = [onnx.helper.make_tensor_value_info(boundary, onnx.TensorProto.FLOAT, None)] + \
        [i for i in model.graph.input if i.name in used_inputs]
    graph = onnx.helper.make_graph(nodes, "suffix", inputs, list(model.graph.output), inits)
    sub = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    return sub


def _boundaries(nodes: Sequence[dict]) -> dict:
    """Group key -> the hidden-state tensor where that group's layer starts (None: whole model).
    Layer L starts at its Q/K/V (or fused Attention) input; the head at its first Gemm's input."""
    starts: dict = {}
    for n in sorted(nodes, key=lambda n: n["topo"]):
        if n["layer"] is not None and n["role"] in ("q", "k", "v", "qkv"):
            starts.setdefault(("layer", n["layer"]), n["activation"])
        elif n["role"] == "head":
            starts.setdefault(("head", None), n["activation"])
    return starts


def _group_key(n: dict, starts: dict):
    if n["layer"] is not None and ("layer", n["layer"]) in starts:
        return ("layer", n["layer"])
    if n["role"] == "head" and ("head", None) in starts:
        return ("head", None)
    return ("model", None)


class LayeredSimulator:
    """Single-node sensitivity without recomputing unchanged prefixes: one FP32 pass caches the
    hidden state entering each layer, then node i of layer L is measured on a sub-model that
    starts at layer L (only that layer's nodes gated). About 4x cheaper than :class:`Simulator`
    for the 12-layer encoder; same numbers (the prefix is FP32 either way)."""

    def __init__(self, model, batches: Sequence[Feeds], nodes: Sequence[dict] | None = None,
                 threads: int | None = None):
        model = _load(model)
        self.nodes = list(nodes if nodes is not None else quantizable_nodes(model))
        self.batches = list(batches)
        starts = _boundaries(self.nodes)
        keys = [_group_key(n, starts) for n in self.nodes]
        tensors = sorted({starts[k] for k in keys if k in starts})
        session = _session(_add_outputs(model, tensors), threads)
        self.cache, ref = [], []
        for feeds in self.batches:
            values = session.run(["logits"] + tensors, _feeds_for(session, feeds))
            ref.append(values[0])
            self.cache.append(dict(zip(tensors, values[1:])))
        del session
        self.reference = np.concatenate(ref)
        self.groups = {}
        for key in dict.fromkeys(keys):
            members = [i for i, k in enumerate(keys) if k == key]
            sub = model if key not in starts else _suffix_model(model, starts[key])
            sim, _ = simulation_model(sub, [self.nodes[i] for i in members])
            self.groups[key] = (starts.get(key), members, _session(sim, threads))
        self.key_of = dict(enumerate(keys))

    def logits_one(self, i: int) -> np.ndarray:
        boundary, members, session = self.groups[self.key_of[i]]
        gates = np.zeros(len(members), np.float32)
        gates[members.index(i)] = 1.0
        out = []
        for feeds, cached in zip(self.batches, self.cache):
            f = {**feeds, **({boundary: cached[boundary]} if boundary else {})}
            f = _feeds_for(session, f)
            f[f"{_PREFIX}gates"] = gates
            out.append(session.run(["logits"], f)[0])
        return np.concatenate(out)


def sensitivity_report(model, batches: Sequence[Feeds], nodes: Sequence[dict] | None = None,
                       threads: int | None = None, roles: Iterable[str] | None = None,
                       with_all: bool = False) -> dict:
    """Quantize each quantizable node alone (simulated dynamic INT8) and measure the logits.

    ``model``: the FP32 graph (use the unfused ``onnx/model.onnx``: its node names are the ones
    ``quantize_dynamic(nodes_to_exclude=...)`` sees, one MatMul per projection). ``batches``: a
    fixed set of ~100-200 sentences (:func:`encode_batches`); padding does not matter (each
    sentence gets its own activation range, as at batch 1; the simulation matched real
    single-node ``quantize_dynamic`` files to <1e-6 on MatMuls). Returns ``{"nodes": [...],
    "seconds", "sentences", "method"}`` where each node row adds mean_abs_dlogit,
    max_abs_dlogit, flips, flip_pct to :func:`quantizable_nodes`' fields, sorted by mean
    |Δlogit| (most damaging first). ``with_all`` adds ``all_quantized``: the simulated damage
    with every listed node quantized (one full gated pass; a check against the real file)."""
    t0 = time.perf_counter()
    if nodes is None:
        nodes = quantizable_nodes(model)
        if roles is not None:
            nodes = [n for n in nodes if n["role"] in set(roles)]
    sim = LayeredSimulator(model, batches, nodes, threads)
    t_build = time.perf_counter() - t0
    rows = [{**info, **_damage(sim.reference, sim.logits_one(i))}
            for i, info in enumerate(sim.nodes)]
    rows.sort(key=lambda r: (-r["mean_abs_dlogit"], -r["flips"]))
    report = {"method": "simulated dynamic INT8 (per-sentence uint8 activations, int8 weights), "
                        "one node at a time, layer prefixes cached",
              "sentences": int(len(sim.reference)), "nodes": rows,
              "build_seconds": round(t_build, 2)}
    if with_all:
        report["all_quantized"] = Simulator(model, batches, nodes, threads).damage(
            range(len(nodes)))
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


# --------------------------------------------------------------------------- recipes

def _prepped(src: PathLike, tmp: str) -> str:
    """quant_pre_process (symbolic shape inference) in a temporary folder: quantize_dynamic
    needs it on fused graphs, and a failed run leaves large temp files in the cwd."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = str(Path(tmp) / "prepped.onnx")
    quant_pre_process(str(src), out, skip_optimization=True)
    return out


def dynamic(src: PathLike, dst: PathLike, exclude: Iterable[str] = (), per_channel: bool = False,
            keep_as: str = "fp32", quantize_embeddings: bool = True,
            nbits_accuracy_level: int = 0, reduce_range: bool = False) -> None:
    """Dynamic INT8 (QInt8 weights, uint8 activations at run time) except the ``exclude`` nodes.

    ``keep_as="fp32"`` leaves the excluded nodes as float MatMuls (+1.8 MB per FFN matmul,
    +0.44 MB per 384x384 one); ``"nbits"`` stores them as 8-bit weight-only ``MatMulNBits``
    (block 64, same size as INT8; float activations, so accurate; ``nbits_accuracy_level=0``
    keeps the browser and Python computing it the same way). ``quantize_embeddings=False``
    leaves the Gather tables FP32 (+34 MB: only for experiments). ``reduce_range``: weights on
    the 7-bit grid [-64, 64], so that no pair of uint8 x int8 products can overflow int16: the
    AVX2 / AVX512-without-VNNI kernels (VPMADDUBSW) saturate there, VNNI does not, so only with
    it is every integer product exact on every x86 CPU (see :data:`W7`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = _dynamic_names(src, exclude)
    ops = ["MatMul", "Attention"] + (["Gather"] if quantize_embeddings else [])
    with tempfile.TemporaryDirectory() as tmp:
        prepped = _prepped(src, tmp)
        out = str(Path(tmp) / "dyn.onnx") if (exclude and keep_as == "nbits") else str(dst)
        quantize_dynamic(prepped, out, per_channel=per_channel, weight_type=QuantType.QInt8,
                         nodes_to_exclude=exclude, op_types_to_quantize=ops,
                         reduce_range=reduce_range)
        if exclude and keep_as == "nbits":
            nbits_int8(out, dst, include=exclude, accuracy_level=nbits_accuracy_level)


def _dynamic_names(src: PathLike, names: Iterable[str]) -> list[str]:
    """quantize_dynamic turns Gemm X into MatMul "X_MatMul" before matching node names."""
    names = list(names)
    gemms = {n["name"] for n in quantizable_nodes(src) if n["op_type"] == "Gemm"}
    return names + [f"{n}_MatMul" for n in names if n in gemms]


def nbits_int8(src: PathLike, dst: PathLike, include: Iterable[str] | None = None,
               block_size: int = 64, accuracy_level: int = 0) -> None:
    """8-bit weight-only ``MatMulNBits`` for the float MatMuls named in ``include`` (all if None)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=block_size,
                                     is_symmetric=True, accuracy_level=accuracy_level,
                                     nodes_to_include=list(include) if include else None)
    quantizer.process()
    onnx.save(quantizer.model.model, str(dst))


def smoothing_groups(model, roles: Iterable[str] = ("qkv", "q", "k", "v", "attn_out", "ffn_up",
                                                     "ffn_down"),
                     layers: Iterable[int] | None = None) -> list[dict]:
    """Weight-bearing nodes grouped by the activation tensor they read (Q/K/V share one):
    ``[{"activation": name, "nodes": [node dicts]}]`` for the given roles and layers."""
    roles, layers = set(roles), (set(layers) if layers is not None else None)
    groups: dict[str, list] = {}
    for n in quantizable_nodes(model):
        if n["op_type"] not in ("MatMul", "Attention") or n["role"] not in roles:
            continue
        if layers is not None and n["layer"] not in layers:
            continue
        groups.setdefault(n["activation"], []).append(n)
    return [{"activation": a, "nodes": ns} for a, ns in groups.items()]


def _v_fold_target(model, group: dict):
    """For an attention-output group, the V projection (unfused MatMul + bias Add, or the fused
    Attention node) whose columns can absorb the smoothing division exactly; else None."""
    if group["nodes"][0]["role"] != "attn_out":
        return None
    layer = group["nodes"][0]["layer"]
    for n in quantizable_nodes(model):
        if n["layer"] == layer and n["role"] in ("v", "qkv"):
            return n
    return None


def smooth_quant(src: PathLike, dst: PathLike, batches: Sequence[Feeds], alpha: float = 0.5,
                 roles: Iterable[str] = ("qkv", "q", "k", "v", "attn_out", "ffn_up", "ffn_down"),
                 layers: Iterable[int] | None = None, fold_attn_out: bool = True,
                 threads: int | None = None, alphas: dict[str, float] | None = None) -> dict:
    """SmoothQuant scale migration on an FP32 graph (unfused or fused); writes an FP32 graph.

    For each activation X feeding weight-bearing nodes W_i (arXiv 2211.10438, eq. 4):
    ``s_j = max|X_j|^alpha / max_i max_n |W_i[j, n]|^(1 - alpha)``; X is divided by s (a ``Mul``
    node in front of the consumers, or folded into the V projection for ``attn_out`` when
    ``fold_attn_out``), each W_i's row j is multiplied by s_j. The output is mathematically the
    FP32 model (check: max |Δlogit| ~1e-5), ready for :func:`dynamic`. ``alpha`` trades
    activation flatness for weight range (0.5 is the paper's default; 0.75-0.85 when activations
    are very spiky). ``alphas`` overrides alpha per role. Returns the scales' summary."""
    import onnx
    from onnx import numpy_helper

    model = _load(src)
    groups = smoothing_groups(model, roles, layers)
    stats = activation_absmax(model, batches, [g["activation"] for g in groups], threads)
    inits = {i.name: i for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    b = _Builder(model)
    summary = []
    for g in groups:
        role = g["nodes"][0]["role"]
        a = (alphas or {}).get(role, alpha)
        ws = [numpy_helper.to_array(inits[n["weight"]]).astype(np.float32) for n in g["nodes"]]
        wmax = np.max([np.abs(w).max(axis=1) for w in ws], axis=0)
        xmax = np.maximum(stats[g["activation"]], 1e-5)
        s = (xmax ** a) / np.maximum(wmax, 1e-5) ** (1 - a)
        s = np.clip(s, 1e-3, 1e3).astype(np.float32)
        for n, w in zip(g["nodes"], ws):
            inits[n["weight"]].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(
                np.float32), n["weight"]))
        target = _v_fold_target(model, g) if fold_attn_out else None
        if target is not None:
            _fold_into_v(model, inits, by_name, target, s)
        else:
            scaled = b.op("Mul", [g["activation"], b.const((1.0 / s).astype(np.float32),
                                                           "smooth_inv")], "smooth")
            for n in g["nodes"]:
                by_name[n["name"]].input[0] = scaled
        summary.append({"activation": g["activation"], "role": role, "layer":
                        g["nodes"][0]["layer"], "alpha": a, "x_absmax": float(xmax.max()),
                        "x_flatness_before": float(xmax.max() / np.median(xmax)),
                        "x_flatness_after": float((xmax / s).max() / np.median(xmax / s)),
                        "folded": target is not None})
    ordered = _toposort(list(model.graph.node) + b.nodes)
    model.graph.ClearField("node")
    model.graph.node.extend(ordered)
    onnx.save(model, str(dst))
    return {"groups": summary, "alpha": alpha}


def _fold_into_v(model, inits, by_name, target: dict, s: np.ndarray) -> None:
    """Divide the V projection's output channels (and bias) by s: attention's context is a convex
    mix of V rows, so its channel j is divided by s_j too, exactly (no extra node)."""
    from onnx import numpy_helper

    h = len(s)
    if target["op_type"] == "Attention":  # packed [K, 3H] weight and [3H] bias: V is the last H
        node = by_name[target["name"]]
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32).copy()
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32).copy()
        w[:, 2 * h:] /= s[None, :]
        bias[2 * h:] /= s
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(w, node.input[1]))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(bias, node.input[2]))
        return
    w = numpy_helper.to_array(inits[target["weight"]]).astype(np.float32)
    inits[target["weight"]].CopyFrom(numpy_helper.from_array(w / s[None, :], target["weight"]))
    matmul_out = by_name[target["name"]].output[0]
    for node in model.graph.node:  # the bias Add right after the V MatMul
        if node.op_type == "Add" and matmul_out in node.input:
            other = [i for i in node.input if i != matmul_out][0]
            if other in inits:
                bias = numpy_helper.to_array(inits[other]).astype(np.float32)
                inits[other].CopyFrom(numpy_helper.from_array(bias / s, other))
                return
    raise ValueError(f"no bias Add after {target['name']}: cannot fold the smoothing into V")


def input_hessians(model, batches: Sequence[Feeds], tensors: Iterable[str],
                   threads: int | None = None) -> dict[str, np.ndarray]:
    """``X^T X / tokens`` (float64, [K, K]) of each named 3-D activation over the real tokens of
    ``batches``: the proxy Hessian GPTQ uses for a layer's squared output error."""
    model = _load(model)
    tensors = list(dict.fromkeys(tensors))
    session = _session(_add_outputs(model, tensors), threads)
    out: dict[str, np.ndarray] = {}
    count = 0
    for feeds in batches:
        values = session.run(tensors, _feeds_for(session, feeds))
        mask = feeds["attention_mask"]
        count += int(mask.sum()) if values[0].ndim == 3 else mask.shape[0]
        for name, x in zip(tensors, values):
            rows = _masked_rows(x, mask).astype(np.float64)
            out[name] = out.get(name, 0) + rows.T @ rows
    return {k: v / max(count, 1) for k, v in out.items()}


def gptq_round(w: np.ndarray, scale: np.ndarray, h: np.ndarray, damp: float = 0.01,
               act_order: bool = True, block: int = 128, qmax: int = 127) -> np.ndarray:
    """GPTQ (Frantar et al., arXiv 2210.17323) for one weight ``w`` [K in, N out] on a fixed
    symmetric grid ``scale`` (per output column [N], per weight [K, N] for blocks, or scalar):
    rows are rounded one input channel at a time and the rounding error is pushed onto the rows
    not yet rounded, weighted by the inverse Hessian ``h`` (= X^T X of the layer's input),
    which minimises the layer's output error ||XW - XQ||, not the weight error. Returns int8 Q
    with the same grid, so ``Q * scale`` drops into quantize_dynamic's MatMulInteger/QAttention
    unchanged."""
    w = w.astype(np.float64).copy()
    k_dim = w.shape[0]
    h = h.astype(np.float64).copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[dead, :] = 0.0
    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(k_dim)
    scale = np.broadcast_to(np.asarray(scale, np.float64), w.shape)[perm]  # one per weight
    w, h = w[perm], h[np.ix_(perm, perm)]
    h[np.diag_indices(k_dim)] += damp * float(np.mean(np.diag(h)))
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: H^-1 = U^T U
    q = np.zeros_like(w)
    for i1 in range(0, k_dim, block):
        i2 = min(i1 + block, k_dim)
        err = np.zeros((i2 - i1, w.shape[1]))
        for i in range(i1, i2):
            row = w[i]
            q[i] = np.clip(np.round(row / scale[i]), -qmax, qmax)
            e = (row - q[i] * scale[i]) / hinv[i, i]
            w[i + 1:i2] -= np.outer(hinv[i, i + 1:i2], e)
            err[i - i1] = e
        w[i2:] -= hinv[i1:i2, i2:].T @ err
    out = np.empty_like(q)
    out[perm] = q
    return out.astype(np.int8)


# --------------------------------------------------------------------------- per-token INT8

# what the export ships (bench/results/int8_recipes.md: the best agreement among the integer
# recipes that are also >= 1.5x ORT FP32 optimized at batch 1)
DEFAULT_PER_TOKEN = {"smooth_alpha": 0.5, "smooth_roles": ("qkv", "ffn_up")}


def _quantize_columns(w: np.ndarray, h: np.ndarray | None, qmax: int) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Symmetric per-output-column int8 weights of ``w`` [K, N] (GPTQ-rounded when the input
    Hessian ``h`` is given): (q int8 [K, N], scale float32 [N])."""
    scale = grids.scales(np.abs(w).max(axis=0), qmax).astype(np.float64)
    if h is None:
        q = grids.codes(w, scale, qmax)
    else:
        q = gptq_round(w, scale, h, qmax=qmax)
    return q, scale.astype(np.float32)


def _per_token_quant(b: _Builder, x: str) -> tuple[str, str]:
    """ONNX ops quantizing ``x`` [..., K] with one symmetric scale per token (row): returns
    (uint8 tensor holding q + 128, float scale [..., 1]); MatMulInteger takes it with the scalar
    zero point 128, which selects ONNX Runtime's fast u8 x s8 kernels (its s8 x s8 path is 3x
    slower on x86). Outlier *tokens* (the <s>/</s> "attention sinks" carry channels 10-60x the
    rest) then cost only their own precision."""
    import onnx

    amax = b.reduce("ReduceMax", b.op("Abs", [x]), [-1])
    scale = b.op("Max", [b.op("Mul", [amax, b.const(np.array(1 / grids.ACT_QMAX, np.float32))]),
                         b.const(np.array(grids.EPS, np.float32), "eps")], "tok_scale")
    shifted = b.op("Add", [b.op("Round", [b.op("Div", [x, scale])]),
                           b.const(np.array(128, np.float32), "c128")])
    q = b.op("Cast", [shifted], "tok_q", to=onnx.TensorProto.UINT8)
    return q, scale


def _int8_rows(b: _Builder, node, table: np.ndarray) -> None:
    """Replace embedding lookup ``node`` (Gather of ``table`` [V, H]) by a lookup in an int8
    table with one symmetric scale per row: Gather, Cast, Mul by the gathered scale (standard
    ops, decoded per lookup, so the table stays int8 in memory). The caller drops ``node``."""
    import onnx

    q, scale = grids.rows(table)
    ids = node.input[1]
    rows = b.op("Cast", [b.op("Gather", [b.const(q, "emb_q"), ids])], to=onnx.TensorProto.FLOAT)
    row_scale = b.op("Gather", [b.const(scale, "emb_scale"), ids])
    b.nodes.append(onnx.helper.make_node("Mul", [rows, row_scale], [node.output[0]],
                                         name=b.name("emb_dq")))


def _integer_matmul(b: _Builder, xq: str, xs: str, wq: str, ws: str, zp: str, out: str,
                    fused: bool) -> None:
    """``out`` = (xq - zp) @ wq x token scale ``xs`` [..., 1] x column scale ``ws`` [N].
    ``fused``: ONNX Runtime's contrib ``MatMulIntegerToFloat``, which takes a per-row A scale
    (measured exact against the unfused form) and does it in one op; else the standard ops
    MatMulInteger, Cast, Mul, Mul (4 ops and 3 intermediate tensors per matmul)."""
    import onnx

    if fused:
        b.nodes.append(onnx.helper.make_node("MatMulIntegerToFloat", [xq, wq, xs, ws, zp], [out],
                                             domain="com.microsoft", name=b.name("mmitf")))
        return
    acc = b.op("MatMulInteger", [xq, wq, zp], "mmi")
    y = b.op("Mul", [b.op("Cast", [acc], to=onnx.TensorProto.FLOAT), ws])
    b.nodes.append(onnx.helper.make_node("Mul", [y, xs], [out], name=b.name("tok_dq")))


def _replace_nodes(model, dead: set[str], new_nodes: list) -> None:
    """Drop the nodes named in ``dead``, add ``new_nodes``, sort, and drop unused initializers."""
    kept = [nd for nd in model.graph.node if nd.name not in dead]
    model.graph.ClearField("node")
    model.graph.node.extend(_toposort(kept + new_nodes))
    used = {i for nd in model.graph.node for i in nd.input}
    alive = [i for i in model.graph.initializer if i.name in used]
    model.graph.ClearField("initializer")
    model.graph.initializer.extend(alive)


def per_token_int8(src: PathLike, dst: PathLike, batches: Sequence[Feeds],
                   roles: Iterable[str] = ("attn_out", "ffn_up", "ffn_down"),
                   gptq: bool = True, embeddings: bool = True, attention: str = "per_token",
                   smooth_alpha: float | None = None, smooth_roles: Sequence[str] = ("qkv",),
                   qmax: dict[str, int] | None = None, keep: Iterable[str] = (),
                   fused_matmul: bool = False, threads: int | None = None) -> dict:
    """INT8 with integer matmuls and a scale per token instead of per tensor (ZeroQuant-style,
    Yao et al., arXiv 2206.01861), on the fused graph (``model_optimized.onnx``) or unfused.

    * MatMuls of ``roles``: the activation is quantized per token to int8 by plain ONNX ops
      (ReduceMax/Div/Round/Cast, shared by the MatMuls reading it), the weight per output column
      on the 7-bit grid (:data:`W7`; GPTQ-rounded against the calibration Hessian), and
      ``MatMulIntegerToFloat`` (u8 x s8 -> int32, rescaled by the token and column scales in
      the same op; ``fused_matmul=False``: ``MatMulInteger`` and two Muls) computes the product.
      7-bit weights keep every x86 kernel exact (AVX2's VPMADDUBSW saturates with 8 bits). The
      float parts (LayerNorm, GELU, softmax) still differ by ~1e-6 between ISAs and wasm, and
      a value that lands on a rounding boundary then quantizes one step apart: measured, the
      browser and Python agree on 99.4% of labels with this graph (max |Δlogit| 0.8), where a
      float-activation graph agrees exactly (bench/browser_latency.py --parity).
    * fused ``Attention`` (Q/K/V), ``attention``: "per_token" (default) projects Q/K/V the
      same way and hands them to ORT's ``MultiHeadAttention``; "qattention": ``quantize_dynamic``
      makes it ``QAttention`` (per-tensor activations, the only input scale that op takes) after
      SmoothQuant (``smooth_alpha``); "fp32" keeps it as it is.
    * embeddings: int8 rows with one scale per row (Gather of the int8 table, Cast, Mul by the
      gathered scale), all standard ops, instead of one scale for the whole table.
    The classifier head stays FP32 (0.6 MB). Returns what was done."""
    import onnx
    from onnx import numpy_helper

    t0 = time.perf_counter()
    roles = set(roles)
    with tempfile.TemporaryDirectory() as tmp:
        cur = Path(src)
        if smooth_alpha:
            nxt = Path(tmp) / "smoothed.onnx"
            smooth_quant(cur, nxt, batches, alpha=smooth_alpha, roles=smooth_roles,
                         threads=threads)
            cur = nxt
        model = _load(cur)
        nodes = [n for n in quantizable_nodes(model)
                 if (n["op_type"] == "MatMul" and n["role"] in roles)
                 or (embeddings and n["op_type"] == "Gather")
                 or (attention == "per_token" and n["op_type"] == "Attention")]
        keep = set(keep)
        nodes = [n for n in nodes if n["name"] not in keep]
        hs = (input_hessians(model, batches, [n["activation"] for n in nodes if n["activation"]],
                             threads) if gptq else {})
        inits = {i.name: i for i in model.graph.initializer}
        by_name = {n.name: n for n in model.graph.node}
        b = _Builder(model)
        quantized: dict[str, tuple[str, str]] = {}
        zp128 = b.const(np.array(128, np.uint8), "zp128")
        done = {"matmul": 0, "gather": 0, "attention": 0}
        for n in nodes:
            node = by_name[n["name"]]
            w = numpy_helper.to_array(inits[n["weight"]]).astype(np.float32)
            if n["op_type"] == "Gather":  # per-row int8 table
                _int8_rows(b, node, w)
                done["gather"] += 1
                continue
            x = n["activation"]
            if x not in quantized:
                quantized[x] = _per_token_quant(b, x)
            xq, xs = quantized[x]
            q, ws = _quantize_columns(w, hs.get(x), (qmax or {}).get(n["role"], W7))
            is_attention = n["op_type"] == "Attention"
            out = b.name("qkv") if is_attention else node.output[0]
            _integer_matmul(b, xq, xs, b.const(q, "w_q"), b.const(ws, "w_scale"), zp128, out,
                            fused_matmul)
            if is_attention:  # the projection out, ORT's fused attention kept
                _attention_after_projection(b, node, out, w.shape[0])
            done["attention" if is_attention else "matmul"] += 1
        _replace_nodes(model, {n["name"] for n in nodes}, b.nodes)
        staged = Path(tmp) / "per_token.onnx"
        onnx.save(model, str(staged))
        if attention == "qattention":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(_prepped(staged, tmp), str(dst), per_channel=True,
                             reduce_range=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["Attention"])
        else:
            onnx.save(model, str(dst))
    return {**done, "attention_mode": attention, "gptq": gptq, "fused_matmul": fused_matmul,
            "smooth_alpha": smooth_alpha, "smooth_roles": list(smooth_roles),
            "seconds": round(time.perf_counter() - t0, 2)}


def folded_int8(src: PathLike, dst: PathLike, batches: Sequence[Feeds] | None = None,
                block_size: int = 64, embeddings: bool = True,
                threads: int | None = None) -> dict:
    """Weight-only INT8 that runs at the FP32 graph's speed, on the fused graph
    (``model_optimized.onnx``; the export's weight-only file) or the unfused one (OpenVINO's).

    Every MatMul / fused Attention weight [K, N] is stored as int8 with one symmetric scale per
    ``block_size`` input rows of each output column (the grid of 8-bit ``MatMulNBits``; one
    per column when it is 0 or does not divide K), GPTQ-rounded against the calibration Hessian
    when ``batches`` are given, and decoded by a chain of constant ops (Cast, Mul, Reshape,
    Transpose) in the layout OpenVINO keeps as compressed int8 weights (multiplied without
    expanding them: 1.4-1.6x OpenVINO FP32). ONNX Runtime and onnxruntime-web fold the chain into
    one float initializer when they load the file, so the session then runs the optimized
    FP32 graph, fused attention included, with the rounded weights: the file is INT8-sized, the
    speed is FP32-optimized, memory is FP32-sized or more (peak RSS 530 vs 346 MB for the FP32
    file in ``python -m core bench``; where the peak comes from was not investigated), and
    activations stay float, so the labels are what weight rounding alone gives.
    ``MatMulNBits`` (:func:`nbits_int8`) computes the same products but dequantizes inside
    every call, and on AVX2 that was slower than PyTorch
    (bench/results/int8_recipes_avx2.md). No QDQ ``DequantizeLinear``: ONNX Runtime would fuse
    it with the MatMul into ``MatMulNBits`` with integer activations unless a session option is
    set. Embeddings (``embeddings``): per-row int8, decoded per lookup. The classifier head
    stays FP32 (0.6 MB). Returns what was done."""
    import onnx
    from onnx import numpy_helper

    t0 = time.perf_counter()
    model = _load(src)
    nodes = [n for n in quantizable_nodes(model) if n["op_type"] in ("MatMul", "Attention")
             or (embeddings and n["op_type"] == "Gather")]
    hs = (input_hessians(model, batches, [n["activation"] for n in nodes if n["activation"]],
                         threads) if batches else {})
    inits = {i.name: i for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    b = _Builder(model)
    done = {"weights": 0, "gather": 0, "blocked": 0}
    for n in nodes:
        node = by_name[n["name"]]
        w = numpy_helper.to_array(inits[n["weight"]]).astype(np.float32)
        if n["op_type"] == "Gather":
            _int8_rows(b, node, w)
            done["gather"] += 1
            continue
        k_dim, n_dim = w.shape
        blk = block_size if block_size and k_dim % block_size == 0 else k_dim
        amax = np.abs(w.reshape(k_dim // blk, blk, n_dim)).max(axis=1)  # [K/blk, N]
        scale = grids.scales(amax, 127).astype(np.float32)
        full = np.repeat(scale, blk, axis=0)  # [K, N]
        h = hs.get(n["activation"])
        q = gptq_round(w, full, h) if h is not None else grids.codes(w, full, 127)
        # stored [N, K/blk, blk] with scales [N, K/blk, 1] (OpenVINO's layout for grouped
        # compressed weights: it keeps them int8), then Reshape to [N, K] and Transpose
        codes = b.const(np.ascontiguousarray(q.T).reshape(n_dim, k_dim // blk, blk), "wq")
        decoded = b.op("Mul", [b.op("Cast", [codes], to=onnx.TensorProto.FLOAT),
                               b.const(np.ascontiguousarray(scale.T)[:, :, None], "w_scale")])
        rows = b.op("Reshape", [decoded, b.const(np.array([n_dim, k_dim], np.int64))])
        weight = b.op("Transpose", [rows], "w", perm=[1, 0])
        node.input[1] = weight
        done["weights"] += 1
        done["blocked"] += int(blk < k_dim)
    _replace_nodes(model, {n["name"] for n in nodes if n["op_type"] == "Gather"}, b.nodes)
    onnx.save(model, str(dst))
    return {**done, "block_size": block_size, "gptq": bool(batches),
            "seconds": round(time.perf_counter() - t0, 2)}


def _attention_after_projection(b: _Builder, node, qkv: str, hidden: int) -> None:
    """Replace fused ``Attention`` (projection + attention) by ORT's ``MultiHeadAttention``
    (attention only) fed with the already projected, packed Q/K/V ``qkv``; the bias and the
    mask (sequence lengths, right padding) are passed on unchanged."""
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    split = b.const(np.array([hidden, hidden, hidden], np.int64), "qkv_split")
    q, k, v = b.name("q"), b.name("k"), b.name("v")
    b.nodes.append(onnx.helper.make_node("Split", [qkv, split], [q, k, v], axis=-1,
                                         name=b.name("qkv_split_op")))
    mask = node.input[3] if len(node.input) > 3 else ""
    b.nodes.append(onnx.helper.make_node(  # replaces ``node``, which per_token_int8 drops
        "MultiHeadAttention", [q, k, v, node.input[2], mask], [node.output[0]],
        domain="com.microsoft",
        num_heads=attrs["num_heads"], name=b.name("mha")))
