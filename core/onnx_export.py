"""The three graph builders the export runs: ONNX FP32, ORT's transformer optimizer, OpenVINO IR.

core/export.py sequences them, measures every result and decides what ships (core/gates.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.runtimes.base import model_inputs


def export_onnx(model_dir: Path, out: Path, opset: int, max_length: int) -> list[str]:
    """Legacy TorchScript exporter with eager attention: the graph ORT's optimizer can fuse.

    (SDPA attention or the dynamo exporter leave Attention unfused; see shared stack notes.)
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager").eval()
    names = model_inputs(model_dir, tokenizer)
    enc = tokenizer(["예시 문장입니다", "두 번째로 조금 더 긴 예시 문장"], padding=True,
                    truncation=True, max_length=max_length, return_tensors="pt")
    args = tuple(enc[n] for n in names)

    class Wrapper(torch.nn.Module):  # positional inputs in a fixed order, logits only
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs))).logits

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(Wrapper(model), args, str(out), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    return names


def optimize(src: Path, dst: Path, model_dir: Path) -> dict:
    """ORT's transformer optimizer (Attention, SkipLayerNorm, BiasGelu fusion); fused op counts."""
    from onnxruntime.transformers import optimizer

    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    optimized = optimizer.optimize_model(str(src), model_type="bert",
                                         num_heads=cfg.get("num_attention_heads", 0),
                                         hidden_size=cfg.get("hidden_size", 0))
    optimized.save_model_to_file(str(dst))
    return {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}


def openvino_ir(onnx_path: Path, out_dir: Path, batches) -> tuple[Path, Path]:
    """OpenVINO IR FP32 and INT8 in ``out_dir``, from the unfused FP32 graph ``onnx_path``.

    INT8 = int8 weights, float activations: one GPTQ-rounded scale per output column (calibrated
    on ``batches``, core.quant_recipes.folded_int8), decoded by Convert -> Multiply, the form
    OpenVINO keeps as compressed weights and multiplies without expanding them. Measured on the
    default run (bench/results/int8_openvino_amx*.md, AMX Xeon): 99.07% agreement, 1.57x OpenVINO
    FP32; NNCF's full INT8 (activations too, model_type TRANSFORMER, SmoothQuant 0.8) was 86.7%
    there and 97.4% in the export, NNCF weight compression (round to nearest) 98.3%."""
    import openvino as ov

    from core import quant_recipes as qr

    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "model.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(fp32), compress_to_fp16=False)
    int8 = out_dir / "model_int8.xml"
    folded = out_dir / "int8_weights.onnx"
    qr.folded_int8(onnx_path, folded, batches, block_size=0)
    ov.save_model(ov.convert_model(str(folded)), str(int8), compress_to_fp16=False)
    folded.unlink()
    return fp32, int8
