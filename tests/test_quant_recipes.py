"""core.quant_recipes on the 2-layer e5 cut: the sensitivity report covers every quantizable node
and its simulation is the real dynamic INT8 arithmetic; SmoothQuant and the outlier split
(bench/int8_research.py) keep the FP32 function; the recommended recipe's graph computes with
integer matmuls (no timing here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from core import quant_recipes as qr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import int8_research  # noqa: E402  (bench/: the research recipes, outlier_split among them)

TEXTS = ["오늘 정말 기분이 좋아", "시험에 합격해서 너무 기뻐요", "친구가 약속을 또 어겼어",
         "내일 발표가 걱정돼서 잠이 안 와", "회의는 세 시에 시작합니다", "택배가 아직 안 왔어요",
         "강아지가 보고 싶어서 눈물이 났다", "갑자기 이름을 불러서 깜짝 놀랐어", "ㅋㅋㅋ 진짜 웃기다",
         "왜 나만 빼고 다 갔어?", "좋은 하루 보내세요 😊", "그 말 때문에 마음이 아팠어"]


@pytest.fixture(scope="module")
def tiny_graphs(tiny_e5_dir, tmp_path_factory, one_torch_thread):
    """(model dir, unfused FP32 ONNX, fused FP32 ONNX, feeds) for the tiny encoder with a
    (random) 7-label head."""
    from core.onnx_export import export_onnx, optimize

    out = tmp_path_factory.mktemp("qr")
    model_dir = out / "model"
    model_dir.mkdir()
    for f in tiny_e5_dir.iterdir():
        if f.is_file():
            (model_dir / f.name).write_bytes(f.read_bytes())
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = {str(i): name for i, name in enumerate("abcdefg")}
    config["label2id"] = {name: i for i, name in enumerate("abcdefg")}
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    unfused, fused = out / "model.onnx", out / "model_optimized.onnx"
    export_onnx(model_dir, unfused, 17, 64)
    optimize(unfused, fused, model_dir)
    return model_dir, unfused, fused, qr.encode_batches(model_dir, TEXTS, batch_size=5)


def test_quantizable_nodes_roles(tiny_graphs):
    _, unfused, fused, _ = tiny_graphs
    nodes = qr.quantizable_nodes(unfused)
    roles = [n["role"] for n in nodes]
    # 2 layers x (q, k, v, attn_out, ffn_up, ffn_down), 2 head Gemms, 3 embedding tables
    assert sorted(roles) == sorted(["q", "k", "v", "attn_out", "ffn_up", "ffn_down"] * 2 +
                                   ["head"] * 2 + ["embedding"] * 3)
    assert {n["layer"] for n in nodes if n["role"] == "ffn_down"} == {0, 1}
    fused_roles = [n["role"] for n in qr.quantizable_nodes(fused)]
    assert fused_roles.count("qkv") == 2 and "q" not in fused_roles
    assert {n["layer"] for n in qr.quantizable_nodes(fused) if n["role"] == "qkv"} == {0, 1}


def test_sensitivity_report_lists_every_node_sorted(tiny_graphs):
    _, unfused, _, batches = tiny_graphs
    report = qr.sensitivity_report(unfused, batches, with_all=True)
    names = {n["name"] for n in qr.quantizable_nodes(unfused)}
    assert {r["name"] for r in report["nodes"]} == names
    damage = [r["mean_abs_dlogit"] for r in report["nodes"]]
    assert damage == sorted(damage, reverse=True)
    assert report["sentences"] == len(TEXTS)
    for row in report["nodes"]:
        assert row["max_abs_dlogit"] >= row["mean_abs_dlogit"] >= 0
        assert 0 <= row["flips"] <= len(TEXTS)
    assert report["seconds"] > 0 and "all_quantized" in report


def test_simulation_is_dynamic_int8_arithmetic(tiny_graphs, tmp_path):
    """Gate off = the FP32 graph; gate on for one MatMul = quantize_dynamic of that node alone,
    one sentence a call (the batch-1 deployment)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _, unfused, _, batches = tiny_graphs
    sim = qr.Simulator(unfused, batches)
    ref = qr.run_logits(unfused, batches)
    assert np.abs(sim.reference - ref).max() < 1e-5
    node = next(n["name"] for n in sim.nodes if n["role"] == "ffn_down")
    prepped = qr._prepped(unfused, str(tmp_path))
    one = tmp_path / "one.onnx"
    quantize_dynamic(prepped, str(one), weight_type=QuantType.QInt8, nodes_to_quantize=[node])
    real = np.concatenate([qr.run_logits(one, [f]) for f in qr.single_feeds(batches)])
    assert np.abs(sim.logits([node]) - real).max() < 1e-4


def test_smooth_quant_and_outlier_split_keep_the_function(tiny_graphs, tmp_path):
    _, unfused, fused, batches = tiny_graphs
    ref = qr.run_logits(unfused, batches)
    for src in (unfused, fused):
        dst = tmp_path / f"smooth_{src.stem}.onnx"
        info = qr.smooth_quant(src, dst, batches, alpha=0.5)
        assert info["groups"] and any(g["folded"] for g in info["groups"])  # attn-out into V
        assert np.abs(qr.run_logits(dst, batches) - ref).max() < 1e-4
    split = tmp_path / "split.onnx"
    info = int8_research.outlier_split(unfused, split, batches, channels=4)
    assert len(info["keep_fp32"]) == 2  # one side MatMul per FFN-down
    assert np.abs(qr.run_logits(split, batches) - ref).max() < 1e-4


def test_default_recipe_computes_with_integer_matmuls_per_token(tiny_graphs, tmp_path):
    _, unfused, fused, batches = tiny_graphs
    dst = tmp_path / "int8.onnx"
    info = qr.per_token_int8(fused, dst, batches, **qr.DEFAULT_PER_TOKEN)
    assert info["attention"] == 2 and info["matmul"] == 2 * 3 and info["gather"] >= 1
    ops = qr.op_counts(dst, ops=None)
    # per layer: Q/K/V projection, attention output, FFN up, FFN down; no float projection left
    assert ops["MatMulInteger"] == 2 * 4 and ops["MultiHeadAttention"] == 2
    # only the classifier head (dense + out_proj, 0.6 MB) stays float
    assert "Attention" not in ops and ops.get("float_weight_matmul", 0) == 2
    weights = [i for i in __import__("onnx").load(str(dst)).graph.initializer
               if i.name.startswith("qr_w_q")]
    assert weights and all(np.abs(__import__("onnx").numpy_helper.to_array(w)).max() <= qr.W7
                           for w in weights)  # 7-bit: no int16 saturation on AVX2 kernels
    ref = qr.run_logits(unfused, batches)
    got = qr.run_logits(dst, batches)
    assert got.shape == ref.shape and np.abs(got - ref).max() < 0.5
    assert dst.stat().st_size < 0.5 * fused.stat().st_size


def test_per_token_labels_do_not_depend_on_the_batch(tiny_graphs, tmp_path):
    """One scale per token: a sentence's logits are the same alone and in any padded batch
    (per-tensor dynamic INT8 lets the batch's largest activation set everyone's scale)."""
    _, _, fused, batches = tiny_graphs
    dst = tmp_path / "int8.onnx"
    qr.per_token_int8(fused, dst, batches, **qr.DEFAULT_PER_TOKEN)
    batched = qr.run_logits(dst, batches)
    alone = qr.run_logits(dst, qr.single_feeds(batches))
    assert np.abs(batched - alone).max() < 1e-4


def test_mixed_precision_keeps_nodes_as_nbits(tiny_graphs, tmp_path):
    _, unfused, _, _ = tiny_graphs
    keep = [n["name"] for n in qr.quantizable_nodes(unfused) if n["role"] == "ffn_down"]
    dst = tmp_path / "mixed.onnx"
    qr.dynamic(unfused, dst, exclude=keep, keep_as="nbits")
    ops = qr.op_counts(dst)
    assert ops.get("MatMulNBits") == len(keep)
    assert ops.get("MatMulInteger", 0) > 0 and ops.get("float_weight_matmul", 0) == 0


def test_folded_int8_stores_int8_blocks_and_runs_the_fp32_graph(tiny_graphs, tmp_path):
    """The weight-only file holds int8 blocks (one scale per 32 input rows of a column, within
    half a step of the FP32 weight); ONNX Runtime folds their decoding when it loads the file, so
    the graph it runs is the fused FP32 graph; GPTQ lowers the output error against rounding to
    nearest; with the int8 embeddings the file is under half the FP32 size."""
    import onnx
    from onnx import numpy_helper

    _, _, fused, batches = tiny_graphs
    rtn, gptq = tmp_path / "rtn.onnx", tmp_path / "gptq.onnx"
    info = qr.folded_int8(fused, rtn, None, block_size=32, embeddings=False)
    assert info["weights"] == 2 * 4 and info["blocked"] == info["weights"]  # QKV, out, up, down
    stored = qr.op_counts(rtn, ops=None)
    assert stored.get("float_weight_matmul") == 2  # the classifier head only, in the file
    assert "MatMulNBits" not in stored and "MatMulInteger" not in stored
    assert qr.runtime_op_counts(rtn, ops=None) == qr.runtime_op_counts(fused, ops=None)

    model = onnx.load(str(rtn))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    originals = {n["name"]: numpy_helper.to_array(i) for n in qr.quantizable_nodes(fused)
                 for i in onnx.load(str(fused)).graph.initializer if i.name == n["weight"]}
    checked = 0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Attention") or node.input[1] in inits:
            continue
        # Transpose <- Reshape <- Mul(Cast(q), scale): q [N, K/32, 32], scale [N, K/32, 1]
        mul = producer[producer[producer[node.input[1]].input[0]].input[0]]
        scale = inits[mul.input[1]]
        q = inits[producer[mul.input[0]].input[0]]
        w = originals[node.name]
        k, n = w.shape
        assert q.dtype == np.int8 and q.shape == (n, k // 32, 32) and scale.shape == (n, k // 32, 1)
        blocks = w.T.reshape(n, k // 32, 32)  # 32 input rows of one output column
        np.testing.assert_allclose(scale, np.abs(blocks).max(axis=2, keepdims=True) / 127,
                                   rtol=1e-6)
        assert (np.abs(blocks - q * scale) <= scale / 2 + 1e-7).all()
        checked += 1
    assert checked == info["weights"]

    qr.folded_int8(fused, gptq, batches, block_size=32)
    ref = qr.run_logits(fused, batches)
    err_rtn = np.abs(qr.run_logits(rtn, batches) - ref).mean()
    err_gptq = np.abs(qr.run_logits(gptq, batches) - ref).mean()
    assert err_rtn < 0.05 and err_gptq < err_rtn
    assert gptq.stat().st_size < 0.5 * fused.stat().st_size
