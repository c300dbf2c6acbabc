"""INT8 for ONNX models: ONNX Runtime dynamic quantization and 8-bit weight-only quantization.

Dynamic quantization (the reference workflow's ``quantize_dynamic(..., QInt8)``) also quantizes
each MatMul's *activations* to uint8 with one scale per tensor, at run time. On the fine-tuned
e5-small-ko that costs 12 points of label agreement: the FFN down-projection inputs carry outlier
channels, and no single layer can be left in FP32 to fix it (measured per layer; excluding all 12
FFN-out MatMuls reached only 97.6% agreement). Weight-only INT8 keeps activations in float and
stores weights as 8-bit blocks of 64 with their own scales (``MatMulNBits``), which agrees with
FP32 on >99% of sentences at about the same size. See onnxruntime's quantization docs
(onnxruntime.ai/docs/performance/model-optimizations/quantization.html) for both methods.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def dynamic_int8(src: Path, dst: Path, per_channel: bool = False,
                 reduce_range: bool = False) -> None:
    """Dynamic INT8 (QInt8 weights, uint8 activations at run time).

    quant_pre_process runs first: quantize_dynamic fails on fused graphs without it ("Unable to
    find data type for weight_name"); it runs in a temporary directory because a failed run leaves
    large temp files in the current directory (both in the shared stack notes)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(src), str(prepped), skip_optimization=True)
        quantize_dynamic(str(prepped), str(dst), per_channel=per_channel,
                         reduce_range=reduce_range, weight_type=QuantType.QInt8)


def weight_only_int8(src: Path, dst: Path, block_size: int = 64) -> None:
    """8-bit weights for every MatMul (MatMulNBits) and the embedding table (Gather).

    ``src`` should be the unfused graph: fused Attention nodes keep their weights in FP32.
    ``accuracy_level=4`` lets the CPU kernel compute in int8 with per-block activation scales
    (fine-grained, unlike dynamic quantization's single scale per tensor)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with tempfile.TemporaryDirectory() as tmp:
        gathered = Path(tmp) / "gather_int8.onnx"
        quantize_dynamic(str(src), str(gathered), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Gather"])  # weight-only for embedding lookups
        quantizer = MatMulNBitsQuantizer(onnx.load(str(gathered)), bits=8, block_size=block_size,
                                         is_symmetric=True, accuracy_level=4)
        quantizer.process()
        onnx.save(quantizer.model.model, str(dst))


def for_browser(src: Path, dst: Path) -> int:
    """Copy ``src`` to ``dst`` with every MatMulNBits node set to ``accuracy_level=0``.

    onnxruntime-web's wasm kernel computes MatMulNBits in float; level 0 makes ONNX Runtime in
    Python compute the bundle's file the same way, so browser and Python logits agree (with level
    4 the CPU kernel quantizes activations per block and labels differed on 0.3% of the seed set).
    Returns the number of nodes changed; other models are copied unchanged."""
    import shutil

    import onnx

    model = onnx.load(str(src))
    changed = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        for attr in node.attribute:
            if attr.name == "accuracy_level" and attr.i != 0:
                attr.i = 0
                changed += 1
    if changed:
        onnx.save(model, str(dst))
    else:
        shutil.copyfile(src, dst)
    return changed
