"""ONNX Runtime adapter (FP32, optimized FP32 and INT8 files; CPU, CUDA or TensorRT providers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.runtimes.base import Runtime


class OrtRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, path: str | Path, max_length: int | None = None, threads: int | None = None,
                 providers: list | None = None, precision: str | None = None):
        import onnxruntime as ort

        super().__init__(path, max_length)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=providers or ["CPUExecutionProvider"])
        # Feed exactly the graph's inputs: an exported XLM-R graph has no token_type_ids.
        self.input_names = [i.name for i in self.session.get_inputs()]
        int8 = "quantized" in self.path.name or "int8" in self.path.name
        self.precision = precision or ("int8" if int8 else "fp32")

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], batch)[0]
