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


def integer_int8(src: Path, dst: Path, batches, on_grid: bool = False) -> dict:
    """The export's first choice: integer matrix multiplies with one activation scale per token
    (``quant_recipes.per_token_int8``: SmoothQuant 0.5 on the Q/K/V and FFN-up inputs, 7-bit
    per-channel GPTQ weights, per-row int8 embeddings; measured against the alternatives in
    bench/results/int8_recipes.md). A sentence's labels do not depend on what else is in its
    batch, and no integer product saturates on AVX2 kernels. ``src``: the fused graph;
    ``batches``: calibration feeds (quant_recipes.encode_batches). ``on_grid``: the model was
    trained INT8-aware (core/qat.py), its weights already on the recipe's grids: no SmoothQuant,
    which would rescale them off it, so the file computes with the model's own weights. Returns
    what was done."""
    from core import quant_recipes as qr

    recipe = {**qr.DEFAULT_PER_TOKEN, **({"smooth_alpha": None} if on_grid else {})}
    return qr.per_token_int8(src, dst, batches, **recipe)


def weight_only_int8(src: Path, dst: Path, block_size: int = 64) -> None:
    """8-bit weights for every MatMul (MatMulNBits) and the embedding table (Gather).

    ``src`` should be the unfused graph: fused Attention nodes keep their weights in FP32.
    ``accuracy_level=0``: the kernel dequantizes and computes in float, as onnxruntime-web's
    wasm kernel does, so Python and the browser get the same labels from the same file (level 4
    quantizes activations per block with ISA-dependent kernels: labels differed on 0.3% of the
    seed set between Python and the browser, and the agreement moved with the CPU)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with tempfile.TemporaryDirectory() as tmp:
        gathered = Path(tmp) / "gather_int8.onnx"
        quantize_dynamic(str(src), str(gathered), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Gather"])  # weight-only for embedding lookups
        quantizer = MatMulNBitsQuantizer(onnx.load(str(gathered)), bits=8, block_size=block_size,
                                         is_symmetric=True, accuracy_level=0)
        quantizer.process()
        onnx.save(quantizer.model.model, str(dst))
