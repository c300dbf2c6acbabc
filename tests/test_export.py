"""ONNX export, optimization, INT8 and OpenVINO on tiny real models, with the gates."""

import json

import numpy as np
import onnx
import pytest

from core import export, onnx_export, runtimes
from core.errors import ParityError

TEXTS = ["오늘 진짜 행복하다 ㅎㅎ", "시험 결과 나오기 전이라 잠이 안 와",
         "팀장님이 또 내 기획안을 무시했어 😡 진짜 어이없네", "회의는 3시로 옮겼습니다"]


@pytest.fixture(scope="module")
def e5_export(tiny_e5_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("e5_export")
    result = export.run(export.ExportConfig(model=str(tiny_e5_run), out_dir=str(out), allow_int8_drift=True,
                                            calibration_size=40))
    return out, result


def onnx_inputs(path):
    return [i.name for i in onnx.load(str(path)).graph.input]


def test_artifacts_report_and_gates(e5_export):
    out, result = e5_export
    names = [a.name for a in result.artifacts]
    assert names == ["pytorch_fp32", "onnx_fp32", "onnx_fp32_optimized", "onnx_int8_integer",
                     "onnx_int8_dynamic", "onnx_int8_weightonly", "openvino_fp32", "openvino_int8"]
    for f in ["onnx/model.onnx", "onnx/model_optimized.onnx", "onnx/model_quantized.onnx",
              "onnx/model_int8_integer.onnx", "onnx/model_int8_dynamic.onnx",
              "onnx/model_int8_weightonly.onnx", "openvino/model.xml", "openvino/model_int8.xml",
              "export_report.json"]:
        assert (out / f).is_file(), f
    assert not list(out.glob("onnx/*.data")), "weights must be inside the .onnx file"
    report = json.loads((out / "export_report.json").read_text())
    art = {a["name"]: a for a in report["artifacts"]}
    assert art["onnx_fp32"]["metrics"]["max_abs_diff"] <= 1e-4
    for name in ("onnx_int8_integer", "onnx_int8_dynamic", "onnx_int8_weightonly"):
        assert art[name]["metrics"]["size_ratio"] <= 0.30
        assert art[name]["metrics"]["agreement"] >= 90
    chosen = report["int8"]["method"]
    shipped = (out / "onnx" / "model_quantized.onnx").read_bytes()
    assert shipped == (out / "onnx" / f"model_int8_{chosen.replace('-', '')}.onnx").read_bytes()
    assert "agrees with FP32" in report["int8"]["reason"]
    assert report["int8"]["int8_aware_model"] is False  # trained plainly: SmoothQuant applies
    assert art["openvino_fp32"]["metrics"]["max_abs_diff"] <= 1e-3
    assert report["eval_size"] > 0 and report["config"]["opset"] == 17
    assert report["fused_ops"].get("Attention", 0) == 2  # both layers of the tiny model fused
    assert set(report["cpu"]) == {"model", "flags"} and isinstance(report["cpu"]["flags"], list)


def test_sensitivity_report_lists_every_quantizable_node(e5_export):
    from core import quant_recipes as qr

    out, _ = e5_export
    report = json.loads((out / "export_report.json").read_text())["sensitivity"]
    want = {n["name"] for n in qr.quantizable_nodes(out / "onnx" / "model.onnx")}
    rows = report["nodes"]
    assert {r["name"] for r in rows} == want and len(rows) == len(want)
    damage = [r["mean_abs_dlogit"] for r in rows]
    assert damage == sorted(damage, reverse=True) and damage[0] > 0
    assert report["sentences"] > 0


def test_xlmr_graph_has_no_token_type_ids_and_dynamic_axes(e5_export):
    out, _ = e5_export
    model = onnx.load(str(out / "onnx" / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert model.opset_import[0].version == 17
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("pad_to", [None, 40])
def test_fp32_parity_dynamic_shapes(tiny_e5_run, e5_export, batch, pad_to):
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, _ = e5_export
    model_dir = tiny_e5_run / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    padding = "max_length" if pad_to else True
    enc = tok(TEXTS[:batch], padding=padding, max_length=pad_to or 64, truncation=True,
              return_tensors="np")
    feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    sess = ort.InferenceSession(str(out / "onnx" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], feed)[0]
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    assert got.shape == (batch, len(model.config.id2label))
    assert np.abs(got - want).max() <= 1e-4


def test_int8_graphs_use_integer_ops(e5_export):
    out, _ = e5_export
    ops = lambda p: [n.op_type for n in onnx.load(str(p)).graph.node]  # noqa: E731
    fp32 = ops(out / "onnx" / "model_optimized.onnx")
    dyn = ops(out / "onnx" / "model_int8_dynamic.onnx")
    assert "DynamicQuantizeLinear" in dyn or "DynamicQuantizeMatMul" in dyn
    assert any(op in dyn for op in ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention"))
    assert dyn.count("MatMul") < fp32.count("MatMul")
    integer = ops(out / "onnx" / "model_int8_integer.onnx")  # per-token scales, own ops
    assert integer.count("MatMulInteger") == 4 * 2 and "Attention" not in integer
    assert integer.count("MatMul") + integer.count("Gemm") == 2  # the classifier head only
    weight_only = ops(out / "onnx" / "model_int8_weightonly.onnx")
    assert weight_only.count("Attention") == 2 and "DynamicQuantizeLinear" not in weight_only
    assert not {"MatMulNBits", "MatMulInteger"} & set(weight_only)  # int8 weights, float compute


def test_openvino_int8_keeps_its_weights_int8(e5_export):
    """The OpenVINO INT8 IR stores the encoder's weights as int8 (kept by OpenVINO, not
    expanded to FP32 at conversion) and carries its activation group size."""
    import openvino as ov

    out, _ = e5_export
    model = ov.Core().read_model(str(out / "openvino" / "model_int8.xml"))
    consts = [op for op in model.get_ops() if op.get_type_name() == "Constant"]
    int8 = [op for op in consts if op.get_element_type() == ov.Type.i8]
    assert len(int8) >= 2 * 6  # per layer: Q, K, V, attention output, FFN up, FFN down
    group = model.get_rt_info(["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"])
    assert int(group.astype(str)) == onnx_export.OV_DYNAMIC_QUANT_GROUP  # travels with the IR
    fp32_bin = (out / "openvino" / "model.bin").stat().st_size
    assert (out / "openvino" / "model_int8.bin").stat().st_size < 0.6 * fp32_bin


@pytest.mark.parametrize("method", ["integer", "dynamic", "weight-only"])
def test_int8_method_can_be_forced(tiny_e5_run, tmp_path, method):
    result = export.run(export.ExportConfig(model=str(tiny_e5_run), out_dir=str(tmp_path), allow_int8_drift=True,
                                            openvino=False, int8_method=method))
    assert result.int8["method"] == method
    name = {"integer": "model_int8_integer.onnx", "dynamic": "model_int8_dynamic.onnx",
            "weight-only": "model_int8_weightonly.onnx"}
    assert (tmp_path / "onnx" / "model_quantized.onnx").read_bytes() == \
        (tmp_path / "onnx" / name[method]).read_bytes()


def test_runtimes_agree_on_labels(tiny_e5_run, e5_export):
    out, _ = e5_export
    ref = runtimes.load(tiny_e5_run).logits(TEXTS)
    for path, atol in [(out / "onnx" / "model_optimized.onnx", 1e-4),
                       (out / "openvino" / "model.xml", 1e-3),
                       (out / "onnx" / "model_int8_integer.onnx", 0.1),
                       (out / "onnx" / "model_int8_dynamic.onnx", 0.1),
                       (out / "onnx" / "model_int8_weightonly.onnx", 0.1),
                       (out / "openvino" / "model_int8.xml", 0.1)]:
        rt = runtimes.load(path)
        got = rt.logits(TEXTS)
        assert np.abs(got - ref).max() <= atol, path
        assert rt.labels == runtimes.load(tiny_e5_run).labels


def test_bert_export_keeps_token_type_ids(tiny_bert_run, tmp_path):
    result = export.run(export.ExportConfig(model=str(tiny_bert_run), out_dir=str(tmp_path), allow_int8_drift=True,
                                            openvino=False))
    assert onnx_inputs(tmp_path / "onnx" / "model.onnx") == ["input_ids", "attention_mask",
                                                             "token_type_ids"]
    art = {a.name: a for a in result.artifacts}
    assert art["onnx_fp32"].metrics["max_abs_diff"] <= 1e-4
    assert (tmp_path / "onnx" / "model_quantized.onnx").is_file()


def test_parity_gate_raises_typed_error(tiny_e5_run, tmp_path, monkeypatch):
    original = onnx_export.export_onnx

    def broken_export(model_dir, out, opset, max_length):
        names = original(model_dir, out, opset, max_length)
        model = onnx.load(str(out))
        for init in model.graph.initializer:  # nudge the classifier's output bias
            if "out_proj.bias" in init.name or init.name.endswith("classifier.bias"):
                arr = onnx.numpy_helper.to_array(init) + 0.01
                init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
                break
        else:
            raise AssertionError("no classifier bias in the graph")
        onnx.save(model, str(out))
        return names

    monkeypatch.setattr(onnx_export, "export_onnx", broken_export)
    with pytest.raises(ParityError) as err:
        export.run(export.ExportConfig(model=str(tiny_e5_run), out_dir=str(tmp_path),
                                       openvino=False))
    assert err.value.max_abs_diff > 1e-4 and "exceeds" in str(err.value)
