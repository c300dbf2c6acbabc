"""The integer grids of the shipped INT8 graph, written once.

The ONNX builders (``core.quant_recipes``), the INT8-aware training (``core.qat``, the same
arithmetic in PyTorch) and the tests all take these constants and reference quantizers, so the
model that training evaluates and the file the export writes cannot drift apart.

* weights: symmetric, one scale per output channel, ``W7`` levels each side. 7 bits keep every
  u8 x s8 pair sum inside int16, so AVX2's VPMADDUBSW never saturates (VNNI/AMX kernels are
  exact with 8 bits too), and every weight is a valid int7 for wasm relaxed-SIMD dot products;
* activations: symmetric int8, one scale per token (row) = max(row max |x| / 127, ``EPS``),
  rounded half to even (ONNX ``Round`` and ``torch.round`` both do);
* embedding tables: symmetric int8, one scale per row.
"""

from __future__ import annotations

import numpy as np

W7 = 63  # weight levels each side of 0: [-63, 63]
ACT_QMAX = 127  # per-token activation levels each side of 0
EMB_QMAX = 127  # embedding-row levels each side of 0
EPS = 1e-12  # floor of a token's scale (an all-zero row)


def scales(amax: np.ndarray, qmax: int) -> np.ndarray:
    """Symmetric scale per group from its largest magnitude; an all-zero group gets 1."""
    return np.where(amax > 0, amax / qmax, 1.0)


def codes(x: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    """Round-to-nearest integer codes of ``x`` on the grid ``scale`` (broadcast), as int8."""
    return np.clip(np.round(x / scale), -qmax, qmax).astype(np.int8)


def rows(table: np.ndarray, qmax: int = EMB_QMAX) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes [R, K], float32 scales [R, 1]): one scale per row of ``table``."""
    scale = scales(np.abs(table).max(axis=1, keepdims=True), qmax).astype(np.float32)
    return codes(table, scale, qmax), scale


def token_scale(x: np.ndarray) -> np.ndarray:
    """Per-token activation scale [..., 1] of ``x`` [..., K] (the graph's ReduceMax/Mul/Max)."""
    amax = np.abs(x).max(axis=-1, keepdims=True).astype(np.float32)
    return np.maximum(amax * np.float32(1 / ACT_QMAX), np.float32(EPS))
