"""The shipped integer INT8 file of a run: how training builds it to score itself, and what the
export, the web export and the benchmark judge every INT8 file against (the yardstick).

An INT8-aware run (core/qat.py) *is* its INT8 computation, so its files are judged against the
labels and macro-F1 its own evaluation recorded (``metrics.json`` -> ``predictions``), which the
run computed with the integer file itself (:func:`integer_file_logits`). A plain run's files are
judged against the FP32 model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core import gates, qat
from core.errors import RunError


def integer_file_logits(model_dir: Path, work: Path, max_length: int,
                        texts: dict[str, list[str]], calibration: list[str] | None = None
                        ) -> dict[str, np.ndarray]:
    """Build the integer INT8 file the export builds (FP32 ONNX at the default opset, ORT's
    fusion, the per-token integer recipe: on the model's own grid for an INT8-aware model, or,
    given ``calibration`` sentences, SmoothQuant + GPTQ for a plain one) in the new folder
    ``work`` (inside the run, beside ``model_dir``'s folder) and return its logits on each list of
    ``texts``, computed as the export computes them. Training scores its INT8 model this way:
    the PyTorch simulation and ONNX Runtime round a few activations differently, and 12 quantized
    layers amplify that to ~1.5% of labels (docs/int8.md), so only the file itself can say what
    the file will predict."""
    from core import quantize
    from core.export import ExportConfig
    from core.onnx_export import export_onnx, optimize
    from core.runtimes import load

    work.mkdir(parents=True)
    unfused, fused, int8 = work / "model.onnx", work / "model_optimized.onnx", work / "int8.onnx"
    export_onnx(model_dir, unfused, ExportConfig.__dataclass_fields__["opset"].default,
                max_length)  # the export's default opset: the same graph the export builds
    optimize(unfused, fused, model_dir)
    if calibration is None:
        quantize.integer_int8(fused, int8, [], on_grid=True)
    else:
        from core import quant_recipes as qr

        batches = qr.encode_batches(model_dir, calibration, max_length=max_length)
        quantize.integer_int8(fused, int8, batches, on_grid=False)
    runtime = load(int8, max_length=max_length, precision="int8")
    return {part: runtime.logits(lines) for part, lines in texts.items()}


def run_yardstick(run: RunFolder, data: str | None, part: str = "val") -> dict | None:
    """What an INT8 file is judged against. For an INT8-aware run (core/qat.py) scored on its own
    ``part`` split ("val" or "test"): the labels and macro-F1 (points) its training evaluated,
    since the INT8 computation *is* that model. Otherwise (a plain run, another labeled set, or
    an INT8-aware run trained before runs recorded their labels) None: FP32 is the yardstick."""
    config = json.loads((run.model_dir / "config.json").read_text(encoding="utf-8"))
    if data or not qat.is_int8_aware(config):
        return None
    m = run.metrics()
    labels = (m.get("predictions") or {}).get(part)
    if labels is None or not m.get(part):
        return None
    return {"labels": np.asarray(labels), "macro_f1": m[part]["macro_f1"] * 100}


YARDSTICKS = {True: "the run's own evaluated labels and macro-F1 (an INT8-aware run: its INT8 "
                    "computation is the model that was validated)",
              False: "the FP32 model (post-training quantization of a plain run)"}


def int8_verdicts(scores: dict, pred: np.ndarray, fp32_f1: float, yardstick: dict | None,
                  name: str) -> list:
    """Sets ``scores["macro_f1_delta"]`` (and ``agreement_with_run``, % of labels equal to the
    run's own) against the yardstick (:func:`run_yardstick`; None = FP32, whose macro-F1 is
    ``fp32_f1``) and returns the INT8 verdicts (core.gates.quantized)."""
    if yardstick is None:
        scores["macro_f1_delta"] = round(scores["macro_f1"] - fp32_f1, 2)
        return gates.quantized(scores, name)
    if len(yardstick["labels"]) != len(pred):
        raise RunError(f"the run recorded {len(yardstick['labels'])} validation labels but its "
                       f"split has {len(pred)} sentences: retrain the run")
    scores["agreement_with_run"] = round(float((pred == yardstick["labels"]).mean()) * 100, 2)
    scores["macro_f1_delta"] = round(scores["macro_f1"] - yardstick["macro_f1"], 2)
    return gates.quantized(scores, name, against_run=True)


