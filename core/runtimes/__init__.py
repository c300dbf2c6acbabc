"""One small interface over every inference runtime: load a model file, get logits for texts.

``load(path)`` picks the adapter from what ``path`` is: a run or Hugging Face model folder ->
PyTorch; ``*.onnx`` -> ONNX Runtime; ``*.xml`` -> OpenVINO. Each adapter tokenizes with the run's
own tokenizer and feeds only the inputs its model takes, so they are interchangeable in the export
gates, ``predict``, the Demo page and the benchmark.
"""

from __future__ import annotations

from pathlib import Path

from core.runtimes.base import Prediction, Runtime, softmax

__all__ = ["Prediction", "Runtime", "load", "softmax"]


def load(path: str | Path, **options) -> Runtime:
    """A runtime for ``path``; ``options`` go to the adapter (e.g. threads, providers, hint)."""
    path = Path(path)
    if path.suffix == ".onnx":
        from core.runtimes.ort import OrtRuntime

        return OrtRuntime(path, **options)
    if path.suffix == ".xml":
        from core.runtimes.openvino import OpenVinoRuntime

        return OpenVinoRuntime(path, **options)
    from core.runtimes.torch import TorchRuntime

    return TorchRuntime(path, **options)
