"""Export a trained run: ONNX FP32 -> optimized graph -> INT8, plus OpenVINO FP32/INT8, with gates.

Every artifact is checked by the export itself (core/gates.py) and recorded in
``export_report.json``: FP32 ONNX must match PyTorch within ``atol`` (else ``ParityError``); the
optimized graph, INT8 and OpenVINO are compared with FP32 on the run's validation split (label
agreement, accuracy, macro-F1). When the shipped INT8 fails its gates the export ends with
``GateError`` and keeps the previous export, unless ``allow_int8_drift``.

Artifacts are built in a staging folder and swapped in at the end (core.paths.swap_dir), under the
run's lock, so a crash or a cancel never leaves half an export where predict or the pages look.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core import gates, model_card, paths, qat
from core.quant.shipped import YARDSTICKS, int8_verdicts, run_yardstick
from core.bench.measure import cpu_info
from core.errors import ConfigError, GateError, ParityError, RunError
from core.progress import ProgressFn
from core.run import RunFolder

log = logging.getLogger(__name__)
INT8_METHODS = ("auto", "integer", "dynamic", "weight-only")
AUTO_ORDER = ("integer", "dynamic", "weight-only")  # "auto" ships the first that passes


@dataclass(frozen=True)
class ExportConfig:
    model: str  # run folder (with model/) or Hugging Face model folder
    out_dir: str | None = None  # where onnx/, openvino/ and the report go; None = the run folder
    opset: int = 17  # ONNX opset (the reference workflow uses 17)
    optimize: bool = True  # run ONNX Runtime's transformer optimizer (attention fusion)
    per_channel: bool = False  # plain dynamic INT8: one scale per output channel
    reduce_range: bool = False  # plain dynamic INT8: 7-bit weights, for CPUs without VNNI
    int8_method: str = "auto"  # model_quantized.onnx: "auto" (the first of integer, dynamic,
    # weight-only that passes the gates), or one of them; all three are built and measured
    block_size: int = 128  # weight-only INT8: input rows per scale (64: +0.7 MB)
    sensitivity_size: int = 64  # training sentences for the per-node INT8 sensitivity report
    openvino: bool = True  # also write OpenVINO IR FP32 and INT8 (int8 weights)
    calibration_size: int = 300  # training sentences to calibrate INT8 (ORT and OpenVINO)
    data: str | None = None  # labeled set for the gates; None = the run's own validation split
    atol: float = gates.PARITY_ATOL  # max |logit diff| allowed between ONNX FP32 and PyTorch
    max_length: int | None = None  # tokens; None = the run's own (as trained)
    allow_int8_drift: bool = False  # ship an INT8 that fails the agreement/F1 gates anyway

    def __post_init__(self):
        if not 14 <= self.opset <= 20:
            raise ConfigError(f"export: opset {self.opset} is not supported; use 14-20 (e.g. 17)")
        if self.calibration_size < 1 or self.sensitivity_size < 1:
            raise ConfigError("export: calibration_size and sensitivity_size must be >= 1 "
                              "(e.g. 300 and 64)")
        if not self.atol > 0:
            raise ConfigError("export: atol must be > 0, e.g. 1e-4")
        if self.int8_method not in INT8_METHODS:
            raise ConfigError(f"export: int8_method {self.int8_method!r} is not one of "
                              f"{', '.join(INT8_METHODS)}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ConfigError("export: block_size must be a power of two >= 16, e.g. 128")
        if self.max_length is not None and not 8 <= self.max_length <= 512:
            raise ConfigError("export: max_length must be 8-512 tokens (or left out)")


@dataclass
class Artifact:
    name: str  # e.g. "onnx_int8_dynamic"
    path: str  # where it lives after the export (the staging folder is swapped in at the end)
    size_mb: float
    seconds: float  # time to produce it
    metrics: dict = field(default_factory=dict)  # accuracy, macro_f1, agreement, max_abs_diff...
    gates: list[dict] = field(default_factory=list)  # core.gates verdicts
    warnings: list[str] = field(default_factory=list)  # the failed verdicts, in words


@dataclass
class ExportResult:
    out_dir: str
    report_path: str
    artifacts: list[Artifact]
    fused_ops: dict  # fused operator counts of the optimized graph
    eval_size: int  # validation sentences the gates used
    max_length: int  # tokens every artifact was checked at (the bundle uses the same)
    warnings: list[str]
    int8: dict  # which INT8 method became onnx/model_quantized.onnx, why, and its verdicts
    sensitivity: dict  # per-node INT8 damage (core.quant_recipes.sensitivity_report), worst first
    cpu: dict  # the CPU the gates ran on (model, flags): integer kernels differ by ISA


class _Context:
    """What the steps share: the run, the staging folder, the evaluation set, the references."""

    def __init__(self, config: ExportConfig, emit: ProgressFn):
        from core.runtimes import load

        self.config, self.emit = config, emit
        self.run = RunFolder.of(config.model)
        self.model_dir = self.run.model_dir
        self.out = Path(config.out_dir) if config.out_dir else self.run.root
        self.max_length = config.max_length or self.run.max_length
        self.torch_rt = load(self.model_dir, max_length=self.max_length)
        self.texts, self.gold, self.calib = _eval_records(config, self.run, self.torch_rt.labels)
        model_config = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        self.on_grid = qat.is_int8_aware(model_config)  # trained INT8-aware: keep its grids
        self.yardstick = run_yardstick(self.run, config.data)
        self.stage: Path | None = None
        self.artifacts: list[Artifact] = []
        self.ref = self.fp32_logits = self.sensitivity = self.last_logits = None
        from core import quant_recipes as qr

        # calibration feeds for every INT8 build (ORT and OpenVINO)
        self.batches = qr.encode_batches(self.model_dir, self.calib, max_length=self.max_length)
        self.step, self.total = 0, 6 if config.openvino else 5

    def progress(self, message: str) -> None:
        self.step += 1
        self.emit({"done": self.step, "total": self.total, "message": message})

    def staged(self, relative: str) -> Path:
        path = self.stage / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def final(self, staged: Path) -> str:
        """Where a staged file will be once swapped in."""
        return str(self.out / staged.relative_to(self.stage))

    def load(self, path: Path, **options):
        from core.runtimes import load

        return load(path, max_length=self.max_length, **options)

    def gate(self, name: str, path: Path, seconds: float, runtime, ref) -> Artifact:
        """Score ``runtime`` on the evaluation set into a new Artifact; its logits stay in
        ``last_logits`` for the verdicts that follow."""
        self.last_logits = logits = runtime.logits(self.texts)
        art = Artifact(name, self.final(path) if self.stage in path.parents else str(path),
                       _mb(path), round(seconds, 2), _scores(self.gold, logits, ref))
        self.artifacts.append(art)
        return art


def _eval_records(config: ExportConfig, run: RunFolder, labels: list[str]):
    """(texts, gold label ids, calibration texts): the run's validation split unless told;
    calibration sentences come from the run's training split (from ``data`` for a bare model)."""
    from core import data

    try:
        _, split = run.saved_split()
        val, train = split.val, split.train
    except RunError:
        if not config.data:
            raise
        val = train = data.load_dataset(config.data)  # a bare model folder: no split of its own
    if config.data:
        val = data.load_dataset(config.data)
    val = [r for r in val if r.label in labels]
    if not val:
        raise ConfigError(f"export: no labeled sentences with the model's labels {labels}")
    calib = [r.text for r in train][: config.calibration_size]
    return [r.text for r in val], np.array([labels.index(r.label) for r in val]), calib


def _scores(gold: np.ndarray, logits: np.ndarray, ref: np.ndarray | None) -> dict:
    from core.predict import logit_scores

    return {k: v if k == "max_abs_diff" else round(v, 2)
            for k, v in logit_scores(gold, logits, ref).items()}


def _mb(path: Path) -> float:
    size = path.stat().st_size
    if path.suffix == ".xml":
        size += path.with_suffix(".bin").stat().st_size
    return round(size / 1e6, 2)


def _judge(art: Artifact, fp32: Artifact, logits: np.ndarray, yardstick: dict | None) -> None:
    """ΔF1, size ratio and the reduced-precision verdicts of ``art`` against ``yardstick``
    (:func:`run_yardstick`; None: ONNX FP32)."""
    art.metrics["size_ratio"] = round(art.size_mb / fp32.size_mb, 3)
    verdicts = int8_verdicts(art.metrics, logits.argmax(-1), fp32.metrics["macro_f1"],
                             yardstick, art.name)
    art.gates = [v.as_dict() for v in verdicts]
    art.warnings = gates.failures(verdicts)


def _step_reference(ctx: _Context) -> None:
    ctx.progress("PyTorch reference logits")
    ctx.ref = ctx.torch_rt.logits(ctx.texts)
    art = ctx.gate("pytorch_fp32", ctx.model_dir / "model.safetensors", 0.0, ctx.torch_rt, None)
    art.size_mb = round(ctx.torch_rt.size_bytes() / 1e6, 2)


def _step_fp32(ctx: _Context) -> Artifact:
    from core.onnx_export import export_onnx

    ctx.progress(f"ONNX export (opset {ctx.config.opset})")
    t0 = time.perf_counter()
    path = ctx.staged("onnx/model.onnx")
    export_onnx(ctx.model_dir, path, ctx.config.opset, ctx.max_length)
    fp32 = ctx.gate("onnx_fp32", path, time.perf_counter() - t0, ctx.load(path), ctx.ref)
    verdict = gates.parity(fp32.metrics["max_abs_diff"], ctx.config.atol)
    fp32.gates = [verdict.as_dict()]
    if not verdict.passed:
        raise ParityError(fp32.metrics["max_abs_diff"], ctx.config.atol)
    ctx.fp32_logits = ctx.load(path).logits(ctx.texts)
    return fp32


def _step_optimize(ctx: _Context, fp32_path: Path) -> tuple[Path, dict]:
    from core.onnx_export import optimize

    ctx.progress("graph optimization")
    if not ctx.config.optimize:
        return fp32_path, {}
    t0 = time.perf_counter()
    path = ctx.staged("onnx/model_optimized.onnx")
    fused = optimize(fp32_path, path, ctx.model_dir)
    ctx.gate("onnx_fp32_optimized", path, time.perf_counter() - t0, ctx.load(path),
             ctx.fp32_logits)
    return path, fused


def _step_int8(ctx: _Context, fused: Path, unfused: Path, fp32: Artifact) -> dict:
    """The per-node sensitivity report, then every INT8 method, measured; the one chosen is
    copied to onnx/model_quantized.onnx, the file everything downstream uses byte for byte."""
    from core import quant_recipes as qr
    from core import quantize

    ctx.progress(f"INT8: sensitivity report and {len(AUTO_ORDER)} methods")
    cfg, arts = ctx.config, {}
    batches = ctx.batches
    sens_texts = ctx.calib[:cfg.sensitivity_size]
    ctx.sensitivity = qr.sensitivity_report(
        unfused, qr.encode_batches(ctx.model_dir, sens_texts, max_length=ctx.max_length))
    makers = {
        "integer": ("onnx_int8_integer", "onnx/model_int8_integer.onnx",
                    lambda dst: quantize.integer_int8(fused, dst, batches, ctx.on_grid)),
        "dynamic": ("onnx_int8_dynamic", "onnx/model_int8_dynamic.onnx",
                    lambda dst: quantize.dynamic_int8(fused, dst, cfg.per_channel,
                                                      cfg.reduce_range)),
        "weight-only": ("onnx_int8_weightonly", "onnx/model_int8_weightonly.onnx",
                        lambda dst: quantize.weight_only_int8(fused, dst, batches, cfg.block_size))}
    for method, (name, rel, make) in makers.items():
        t0 = time.perf_counter()
        path = ctx.staged(rel)
        make(path)
        arts[method] = ctx.gate(name, path, time.perf_counter() - t0,
                                ctx.load(path, precision="int8"), ctx.fp32_logits)
        _judge(arts[method], fp32, ctx.last_logits, ctx.yardstick)
    agree = "agreement_with_run" if ctx.yardstick is not None else "agreement"
    whom = "the run's own evaluated labels" if ctx.yardstick is not None else "FP32"
    method = cfg.int8_method
    if method == "auto":  # the fastest method that is accurate enough
        ok = [m for m in AUTO_ORDER if not arts[m].warnings]
        method = ok[0] if ok else max(arts, key=lambda m: arts[m].metrics[agree])
    chosen = arts[method]
    shutil.copyfile(ctx.staged(makers[method][1]), ctx.staged("onnx/model_quantized.onnx"))
    others = "; ".join(f"{a.name}: {a.metrics[agree]}% (ΔF1 "
                       f"{a.metrics['macro_f1_delta']:+.2f})" for m, a in arts.items()
                       if m != method)
    reason = (f"{method} INT8 agrees with {whom} on {chosen.metrics[agree]}% of validation "
              f"sentences (ΔF1 {chosen.metrics['macro_f1_delta']:+.2f}); {others}")
    return {"method": method, "file": "onnx/model_quantized.onnx", "reason": reason,
            "artifact": chosen.name, "gates": chosen.gates, "passed": not chosen.warnings,
            "not_chosen": [a.name for m, a in arts.items() if m != method],
            # trained INT8-aware: the integer file keeps the model's own on-grid weights
            "int8_aware_model": ctx.on_grid,
            "yardstick": YARDSTICKS[ctx.yardstick is not None]}


def _step_openvino(ctx: _Context, fp32_path: Path, fp32: Artifact) -> None:
    from core.onnx_export import openvino_ir

    ctx.progress("OpenVINO IR FP32 + INT8 weights")
    t0 = time.perf_counter()
    ov_fp32, ov_int8 = openvino_ir(fp32_path, ctx.staged("openvino/model.xml").parent,
                                   ctx.batches)
    seconds = time.perf_counter() - t0
    for name, path in (("openvino_fp32", ov_fp32), ("openvino_int8", ov_int8)):
        art = ctx.gate(name, path, seconds, ctx.load(path), ctx.fp32_logits)
        # converted from the FP32 ONNX graph (not from the run's INT8 model): judged against it
        _judge(art, fp32, ctx.last_logits, None)


def _copy_model_metadata(model_dir: Path, out: Path) -> None:
    """config.json and tokenizer files beside onnx/ make an export folder self-contained
    (the transformers.js layout), so runtimes find the labels and tokenizer there."""
    for f in model_dir.iterdir():
        if f.is_file() and f.suffix not in (".safetensors", ".bin", ".pt"):
            shutil.copy2(f, out / f.name)


def _finish(ctx: _Context, fused: dict, int8: dict) -> ExportResult:
    """Swap the staged onnx/ and openvino/ in, then write the report (last: it describes them)."""
    ctx.progress("writing export_report.json")
    ctx.out.mkdir(parents=True, exist_ok=True)
    if ctx.out.resolve() != ctx.run.root.resolve():
        _copy_model_metadata(ctx.model_dir, ctx.out)
    for folder in ("onnx", "openvino"):
        if (ctx.stage / folder).is_dir():
            paths.swap_dir(ctx.stage / folder, ctx.out / folder)
    # The INT8 method not shipped keeps its warnings in its own row; the rest are the export's.
    warnings = [w for art in ctx.artifacts if art.name not in int8["not_chosen"]
                for w in art.warnings]
    for w in warnings:
        log.warning(w)
    report_path = ctx.out / "export_report.json"
    result = ExportResult(str(ctx.out), str(report_path), ctx.artifacts, fused, len(ctx.texts),
                          ctx.max_length, warnings, int8, ctx.sensitivity, cpu_info())
    report = {**asdict(result), "config": asdict(ctx.config), "created": time.time()}
    paths.atomic_write_text(report_path, json.dumps(report, indent=2, ensure_ascii=False))
    model_card.refresh_run_card(ctx.run, ctx.out)  # its INT8 section reads the new report
    return result


def run(config: ExportConfig, on_progress: ProgressFn | None = None) -> ExportResult:
    ctx = _Context(config, on_progress or (lambda event: None))
    with ctx.run.lock("export"):
        for dest in ("onnx", "openvino", "export"):
            paths.clean_leftovers(ctx.out / dest)
        ctx.stage = paths.staging_dir(ctx.out / "export")
        _copy_model_metadata(ctx.model_dir, ctx.stage)  # runtimes find labels + tokenizer there
        try:
            _step_reference(ctx)
            fp32 = _step_fp32(ctx)
            fused_path, fused = _step_optimize(ctx, ctx.stage / "onnx" / "model.onnx")
            int8 = _step_int8(ctx, fused_path, ctx.stage / "onnx" / "model.onnx", fp32)
            if config.openvino:
                _step_openvino(ctx, ctx.stage / "onnx" / "model.onnx", fp32)
            if not int8["passed"] and not config.allow_int8_drift:
                raise GateError(
                    "export: no INT8 model passes the gates, so the previous export is kept: "
                    + "; ".join(gates.failures(int8["gates"])) + f" ({int8['reason']}). "
                    "Pass --allow-int8-drift to ship it anyway.")
            return _finish(ctx, fused, int8)
        finally:
            shutil.rmtree(ctx.stage, ignore_errors=True)
