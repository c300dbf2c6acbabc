"""The INT8 the export ships. ``grids`` holds its arithmetic (the one copy that the ONNX builders
in ``core.quant_recipes``, the INT8-aware training in ``core.qat`` and the tests import)."""
