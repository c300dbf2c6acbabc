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


# OpenVINO multiplies int8 weights by quantizing the activations at run time, one scale per
# group of this many input channels (its default is 32). Measured on the default run (validation,
# vs ONNX FP32, x OpenVINO FP32; bench/results/int8_openvino_amx_folded.md, AMX Xeon): 0 (off)
# 99.69% 1.02x; 16: 99.85% 1.29x; 32: 99.23% 1.50x; 64: 99.54% 1.64x. 16 is the finest group,
# the most accurate, and still faster than FP32.
OV_DYNAMIC_QUANT_GROUP = 16


def set_dynamic_quant_group(model, group: int) -> None:
    """Store OpenVINO's DYNAMIC_QUANTIZATION_GROUP_SIZE in the model's rt_info, which
    compile_model applies unless the caller passes its own value."""
    model.set_rt_info(str(group), ["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"])


def openvino_ir(onnx_path: Path, out_dir: Path, batches) -> tuple[Path, Path]:
    """OpenVINO IR FP32 and INT8 in ``out_dir``, from the unfused FP32 graph ``onnx_path``.

    INT8 = int8 weights in blocks of 128 input rows per output column, GPTQ-rounded on
    ``batches`` (core.quant_recipes.folded_int8), in the layout OpenVINO keeps compressed; it
    then quantizes the activations per group of :data:`OV_DYNAMIC_QUANT_GROUP` channels at run
    time (stored in the IR). NNCF's static INT8 (model_type TRANSFORMER, SmoothQuant 0.8) agreed
    86.7-97.4% on the default run, NNCF weight compression (round to nearest) 98.3%
    (bench/results/int8_openvino_amx*.md)."""
    import openvino as ov

    from core import quant_recipes as qr

    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "model.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(fp32), compress_to_fp16=False)
    int8 = out_dir / "model_int8.xml"
    folded = out_dir / "int8_weights.onnx"
    qr.folded_int8(onnx_path, folded, batches, block_size=128)
    model = ov.convert_model(str(folded))
    set_dynamic_quant_group(model, OV_DYNAMIC_QUANT_GROUP)
    ov.save_model(model, str(int8), compress_to_fp16=False)
    folded.unlink()
    return fp32, int8
