"""OpenVINO adapter for IR files (``*.xml`` + ``*.bin``), FP32 or INT8.

On CPUs with bf16 support OpenVINO runs an FP32 model in bf16 unless told otherwise; ``hint="f32"``
(the default) asks for real FP32 and ``hint=None`` keeps the device default, reported as its own
row. See the INFERENCE_PRECISION_HINT property in OpenVINO's CPU device documentation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.runtimes.base import Runtime


class OpenVinoRuntime(Runtime):
    name = "openvino"

    def __init__(self, path: str | Path, max_length: int | None = None, threads: int | None = None,
                 hint: str | None = "f32", precision: str | None = None):
        import openvino as ov

        super().__init__(path, max_length)
        core = ov.Core()
        config = {}
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        model = core.read_model(str(self.path))
        self.compiled = core.compile_model(model, "CPU", config)
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        base = precision or ("int8" if "int8" in self.path.name else "fp32")
        if not hint and base != "int8":  # report what the device chose, e.g. bf16
            actual = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            base = {"bf16": "bf16", "f16": "fp16", "f32": "fp32"}.get(
                getattr(actual, "to_string", lambda: str(actual))(), base)
        self.precision = base
        self._request = self.compiled.create_infer_request()

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        result = self._request.infer(batch)
        return np.asarray(result[self.compiled.output("logits")])

    def size_bytes(self) -> int:
        return self.path.stat().st_size + self.path.with_suffix(".bin").stat().st_size
