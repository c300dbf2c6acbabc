"""Export a trained run: ONNX FP32 -> optimized graph -> INT8, plus OpenVINO FP32/INT8, with gates.

Every artifact is checked by the export itself and recorded in ``export_report.json``:
FP32 ONNX must match PyTorch within ``atol`` (else ``ParityError``); the optimized graph, INT8 and
OpenVINO INT8 are compared with FP32 on the validation split (label agreement, accuracy, macro-F1).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core import paths
from core.errors import ConfigError, ParityError
from core.progress import ProgressFn
from core.runtimes import find_model_dir
from core.runtimes.base import model_inputs, run_folder

log = logging.getLogger(__name__)
WARN_DROP = 1.0  # macro-F1 points: a larger drop than this is a warning shown in red
MIN_AGREEMENT = 99.0  # % of validation labels INT8 must share with FP32
INT8_METHODS = ("auto", "dynamic", "weight-only")


@dataclass(frozen=True)
class ExportConfig:
    model: str  # run folder (with model/) or Hugging Face model folder
    out_dir: str | None = None  # where onnx/, openvino/ and the report go; None = the run folder
    opset: int = 17  # ONNX opset (the reference workflow uses 17)
    optimize: bool = True  # run ONNX Runtime's transformer optimizer (attention fusion)
    per_channel: bool = False  # INT8: one scale per output channel instead of per tensor
    reduce_range: bool = False  # dynamic INT8: 7-bit weights, for CPUs without VNNI
    int8_method: str = "auto"  # model_quantized.onnx: "auto" (dynamic if it passes the gates,
    # else weight-only), "dynamic" or "weight-only"; both files are written and measured anyway
    block_size: int = 64  # weight-only INT8: weights per scale
    openvino: bool = True  # also write OpenVINO IR FP32 and NNCF INT8
    calibration_size: int = 300  # training sentences for OpenVINO INT8 calibration
    data: str | None = None  # labeled set for the gates; None = the run's own validation split
    atol: float = 1e-4  # max |logit diff| allowed between ONNX FP32 and PyTorch
    max_length: int | None = None  # tokens; None = the tokenizer's model_max_length

    def __post_init__(self):
        if not 14 <= self.opset <= 20:
            raise ConfigError(f"export: opset {self.opset} is not supported; use 14-20 (e.g. 17)")
        if self.calibration_size < 1:
            raise ConfigError("export: calibration_size must be >= 1 (e.g. 300)")
        if not self.atol > 0:
            raise ConfigError("export: atol must be > 0, e.g. 1e-4")
        if self.int8_method not in INT8_METHODS:
            raise ConfigError(f"export: int8_method {self.int8_method!r} is not one of "
                              f"{', '.join(INT8_METHODS)}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ConfigError("export: block_size must be a power of two >= 16, e.g. 64")


@dataclass
class Artifact:
    name: str  # e.g. "onnx_int8_dynamic"
    path: str
    size_mb: float
    seconds: float  # time to produce it
    metrics: dict = field(default_factory=dict)  # accuracy, macro_f1, agreement, max_abs_diff...
    warnings: list[str] = field(default_factory=list)


@dataclass
class ExportResult:
    out_dir: str
    report_path: str
    artifacts: list[Artifact]
    fused_ops: dict  # fused operator counts of the optimized graph
    eval_size: int  # validation sentences the gates used
    warnings: list[str]
    int8: dict  # which INT8 method became onnx/model_quantized.onnx, and why


def _eval_records(config: ExportConfig, run_dir: Path, labels: list[str]):
    """(texts, gold label ids, calibration texts): the run's validation split unless told;
    calibration sentences come from the run's training split."""
    from core import data
    from core.train import saved_split

    _, split = saved_split(run_dir)
    records = data.load_dataset(config.data) if config.data else split.val
    val = [r for r in records if r.label in labels]
    calib = [r.text for r in split.train][: config.calibration_size]
    return [r.text for r in val], np.array([labels.index(r.label) for r in val]), calib


def _scores(gold: np.ndarray, logits: np.ndarray, ref: np.ndarray | None) -> dict:
    from core.predict import logit_scores

    return {k: v if k == "max_abs_diff" else round(v, 2)
            for k, v in logit_scores(gold, logits, ref).items()}


def _export_onnx(model_dir: Path, out: Path, opset: int, max_length: int) -> list[str]:
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


def _optimize(src: Path, dst: Path, model_dir: Path) -> dict:
    from onnxruntime.transformers import optimizer

    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    optimized = optimizer.optimize_model(str(src), model_type="bert",
                                         num_heads=cfg.get("num_attention_heads", 0),
                                         hidden_size=cfg.get("hidden_size", 0))
    optimized.save_model_to_file(str(dst))
    return {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}


def _int8(config: ExportConfig, out: Path, fused: Path, unfused: Path, texts, gold, ref,
          fp32: Artifact) -> tuple[list[Artifact], dict]:
    """Both INT8 methods, measured; the chosen one is copied to onnx/model_quantized.onnx."""
    import shutil

    from core import quantize
    from core.runtimes import load

    arts = {}
    for method, name, file, make in [
        ("dynamic", "onnx_int8_dynamic", "model_int8_dynamic.onnx",
         lambda dst: quantize.dynamic_int8(fused, dst, config.per_channel, config.reduce_range)),
        ("weight-only", "onnx_int8_weightonly", "model_int8_weightonly.onnx",
         lambda dst: quantize.weight_only_int8(unfused, dst, config.block_size)),
    ]:
        t0 = time.perf_counter()
        path = out / "onnx" / file
        make(path)
        arts[method] = _gate(name, path, time.perf_counter() - t0,
                             load(path, max_length=config.max_length, precision="int8"),
                             texts, gold, ref)
        _check_drop(arts[method], fp32)
    method = config.int8_method
    if method == "auto":  # the faster dynamic graph when it is accurate enough
        ok = [m for m in ("dynamic", "weight-only") if not arts[m].warnings]
        method = ok[0] if ok else max(arts, key=lambda m: arts[m].metrics["agreement"])
    chosen = arts[method]
    shutil.copyfile(chosen.path, out / "onnx" / "model_quantized.onnx")
    other = arts["weight-only" if method == "dynamic" else "dynamic"]
    reason = (f"{method} INT8 agrees with FP32 on {chosen.metrics['agreement']}% of validation "
              f"sentences (ΔF1 {chosen.metrics['macro_f1_delta']:+.2f}); {other.name}: "
              f"{other.metrics['agreement']}% (ΔF1 {other.metrics['macro_f1_delta']:+.2f})")
    return list(arts.values()), {"method": method, "file": "onnx/model_quantized.onnx",
                                 "reason": reason, "not_chosen": other.path}


def _openvino(onnx_path: Path, out_dir: Path, calib: list[str], runtime) -> tuple[Path, Path]:
    import nncf
    import openvino as ov

    out_dir.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    fp32 = out_dir / "model.xml"
    ov.save_model(model, str(fp32), compress_to_fp16=False)
    samples = [runtime.encode([text]) for text in calib]
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                              model_type=nncf.ModelType.TRANSFORMER)
    int8 = out_dir / "model_int8.xml"
    ov.save_model(quantized, str(int8), compress_to_fp16=False)
    return fp32, int8


def _copy_model_metadata(model_dir: Path, out: Path) -> None:
    """config.json and tokenizer files beside onnx/ make an export folder self-contained
    (the transformers.js layout), so runtimes find the labels and tokenizer there."""
    import shutil

    for f in model_dir.iterdir():
        if f.is_file() and f.suffix not in (".safetensors", ".bin", ".pt"):
            shutil.copy2(f, out / f.name)


def _mb(path: Path) -> float:
    size = path.stat().st_size
    if path.suffix == ".xml":
        size += path.with_suffix(".bin").stat().st_size
    return round(size / 1e6, 2)


def _gate(name: str, path: Path, seconds: float, runtime, texts, gold, ref) -> Artifact:
    logits = runtime.logits(texts)
    art = Artifact(name, str(path), _mb(path), round(seconds, 2), _scores(gold, logits, ref))
    return art


def _check_drop(art: Artifact, base: Artifact) -> None:
    drop = base.metrics["macro_f1"] - art.metrics["macro_f1"]
    art.metrics["macro_f1_delta"] = round(-drop, 2)
    art.metrics["size_ratio"] = round(art.size_mb / base.size_mb, 3)
    if drop > WARN_DROP:
        art.warnings.append(f"{art.name}: macro-F1 drops {drop:.2f} points vs ONNX FP32 "
                            f"(more than {WARN_DROP})")
    if art.metrics.get("agreement", 100) < 99:
        art.warnings.append(f"{art.name}: agrees with FP32 on only {art.metrics['agreement']}% "
                            "of validation sentences (target 99%)")


def run(config: ExportConfig, on_progress: ProgressFn | None = None) -> ExportResult:
    from core.runtimes import load

    emit = on_progress or (lambda event: None)
    total = 6 if config.openvino else 5
    step = iter(range(1, total + 1))
    model_dir = find_model_dir(config.model)
    run_dir = run_folder(model_dir)
    out = Path(config.out_dir) if config.out_dir else run_dir
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    if out.resolve() != run_dir.resolve():
        _copy_model_metadata(model_dir, out)

    emit({"done": next(step), "total": total, "message": "PyTorch reference logits"})
    torch_rt = load(model_dir, max_length=config.max_length)
    texts, gold, calib = _eval_records(config, run_dir, torch_rt.labels)
    ref = torch_rt.logits(texts)
    artifacts = [_gate("pytorch_fp32", model_dir / "model.safetensors", 0.0, torch_rt, texts,
                       gold, None)]
    artifacts[0].size_mb = round(torch_rt.size_bytes() / 1e6, 2)

    emit({"done": next(step), "total": total, "message": "ONNX export (opset %d)" % config.opset})
    t0 = time.perf_counter()
    fp32_path = out / "onnx" / "model.onnx"
    _export_onnx(model_dir, fp32_path, config.opset, torch_rt.max_length)
    fp32 = _gate("onnx_fp32", fp32_path, time.perf_counter() - t0,
                 load(fp32_path, max_length=config.max_length), texts, gold, ref)
    if fp32.metrics["max_abs_diff"] > config.atol:
        raise ParityError(fp32.metrics["max_abs_diff"], config.atol)
    fp32_logits = load(fp32_path, max_length=config.max_length).logits(texts)
    artifacts.append(fp32)

    fused: dict = {}
    src = fp32_path
    emit({"done": next(step), "total": total, "message": "graph optimization"})
    if config.optimize:
        t0 = time.perf_counter()
        opt_path = out / "onnx" / "model_optimized.onnx"
        fused = _optimize(fp32_path, opt_path, model_dir)
        artifacts.append(_gate("onnx_fp32_optimized", opt_path, time.perf_counter() - t0,
                               load(opt_path, max_length=config.max_length), texts, gold,
                               fp32_logits))
        src = opt_path

    emit({"done": next(step), "total": total, "message": "INT8 quantization (2 methods)"})
    int8_arts, int8_choice = _int8(config, out, src, fp32_path, texts, gold, fp32_logits, fp32)
    artifacts += int8_arts

    if config.openvino:
        emit({"done": next(step), "total": total, "message": "OpenVINO IR + NNCF INT8"})
        t0 = time.perf_counter()
        ov_fp32, ov_int8 = _openvino(fp32_path, out / "openvino", calib, torch_rt)
        seconds = time.perf_counter() - t0
        artifacts.append(_gate("openvino_fp32", ov_fp32, seconds, load(ov_fp32), texts, gold,
                               fp32_logits))
        artifacts.append(_gate("openvino_int8", ov_int8, seconds, load(ov_int8), texts, gold,
                               fp32_logits))
    for art in artifacts[2:]:
        if "macro_f1_delta" not in art.metrics:
            _check_drop(art, fp32)
    # The INT8 method not shipped keeps its warnings in its own row; the rest are the export's.
    warnings = [w for art in artifacts if art.path != int8_choice["not_chosen"]
                for w in art.warnings]
    for w in warnings:
        log.warning(w)

    emit({"done": total, "total": total, "message": "writing export_report.json"})
    int8_choice.pop("not_chosen")
    result = ExportResult(str(out), str(out / "export_report.json"), artifacts, fused, len(texts),
                          warnings, int8_choice)
    report = {**asdict(result), "config": asdict(config), "created": time.time()}
    paths.atomic_write_text(out / "export_report.json", json.dumps(report, indent=2,
                                                                   ensure_ascii=False))
    return result


def load_report(out_dir: str | Path) -> dict | None:
    """The export_report.json of a run (or export folder), or None if it was never exported."""
    try:
        return json.loads((Path(out_dir) / "export_report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def model_files(run_dir: str | Path) -> dict[str, Path]:
    """The runnable artifacts of a run that exist, by display name (the Demo page's choices)."""
    run_dir = Path(run_dir)
    candidates = {"PyTorch FP32": run_dir,
                  "ONNX FP32": run_dir / "onnx" / "model.onnx",
                  "ONNX INT8": run_dir / "onnx" / "model_quantized.onnx",
                  "OpenVINO INT8": run_dir / "openvino" / "model_int8.xml"}
    return {k: v for k, v in candidates.items() if v.exists()}
