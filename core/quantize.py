"""INT8 for ONNX models: per-token integer, ONNX Runtime dynamic and 8-bit weight-only quantization.

Dynamic quantization (the reference workflow's ``quantize_dynamic(..., QInt8)``) also quantizes
each MatMul's *activations* to uint8 with one scale per tensor, at run time. On the fine-tuned
e5-small-ko that costs 12 points of label agreement: the FFN down-projection inputs carry outlier
channels, and no single layer can be left in FP32 to fix it (measured per layer; excluding all 12
FFN-out MatMuls reached only 97.6% agreement). Weight-only INT8 keeps activations in float and
stores weights as 8-bit blocks with their own scales, decoded once when the file is loaded,
which agrees with FP32 on >99% of sentences at about the same size. See onnxruntime's
quantization docs (onnxruntime.ai/docs/performance/model-optimizations/quantization.html).
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
    which would rescale them off it, and no GPTQ, which gives on-grid weights back unchanged
    (tests/test_qat.py), so the file computes with the model's own weights and ``batches`` is not
    needed. Returns what was done."""
    from core import quant_recipes as qr

    recipe = {**qr.DEFAULT_PER_TOKEN, **({"smooth_alpha": None, "gptq": False} if on_grid else {})}
    return qr.per_token_int8(src, dst, batches, **recipe)


def weight_only_int8(src: Path, dst: Path, batches, block_size: int = 128) -> dict:
    """8-bit weights, float activations (``quant_recipes.folded_int8``): every MatMul/Attention
    weight of the fused graph ``src`` as int8 blocks of ``block_size`` input rows per output
    column, GPTQ-rounded on the calibration feeds ``batches``, decoded by constant ops that the
    runtime folds when it loads the file (so it runs the optimized FP32 graph: FP32 speed, FP32
    memory or more, INT8 file size); per-row int8 embeddings. Python and the browser compute
    the same float graph. Block 128 instead of 64: 34.9 vs 35.6 MB, 99.69% vs 100% agreement on the
    default run (bench/results/int8_recipes_amx.md). Returns what was done."""
    from core import quant_recipes as qr

    return qr.folded_int8(src, dst, batches, block_size=block_size)
