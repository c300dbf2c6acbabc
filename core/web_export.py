"""Build a browser bundle from a trained run: INT8 ONNX + tokenizer + a static page (onnxruntime-web).

The bundle follows the transformers.js layout (``config.json``, ``tokenizer.json``,
``tokenizer_config.json``, ``onnx/model_quantized.onnx``) plus the page from
``web_export/template/`` and exactly the onnxruntime-web / @huggingface/tokenizers files the page
loads (copied from ``web_export/node_modules``, so the page needs no CDN). ``model_facts.json`` tells
the page the labels, max length, model size and example sentences; ``bundle_report.json`` keeps the
size breakdown. Any static host serves it; ``serve.py`` inside previews it on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import gates, model_card, paths
from core.errors import ConfigError, GateError, WebExportError
from core.progress import ProgressFn
from core.run import RunFolder

log = logging.getLogger(__name__)

WEB_DIR = paths.REPO_ROOT / "web_export"
TEMPLATE_DIR = WEB_DIR / "template"
NODE_MODULES = WEB_DIR / "node_modules"
TEMPLATE_FILES = ("index.html", "app.js", "style.css", "sw.js", "serve.py", "README.md")
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
INT8_PATH = "onnx/model_quantized.onnx"
# (file in node_modules, place in the bundle): the wasm-only ORT build and its threaded SIMD module
# are all a page with executionProviders ["wasm"] loads (shared stack notes, Browser section).
VENDOR_FILES = (
    ("onnxruntime-web/dist/ort.wasm.min.mjs", "vendor/ort/ort.wasm.min.mjs"),
    ("onnxruntime-web/dist/ort-wasm-simd-threaded.mjs", "vendor/ort/ort-wasm-simd-threaded.mjs"),
    ("onnxruntime-web/dist/ort-wasm-simd-threaded.wasm", "vendor/ort/ort-wasm-simd-threaded.wasm"),
    ("@huggingface/tokenizers/dist/tokenizers.min.mjs", "vendor/tokenizers/tokenizers.min.mjs"),
    ("@huggingface/tokenizers/LICENSE", "vendor/tokenizers/LICENSE"),
)
VENDOR_PACKAGES = ("onnxruntime-web", "@huggingface/tokenizers")
FACTS, REPORT = "model_facts.json", "bundle_report.json"
# Size groups shown in the breakdown, matched by path prefix in this order.
GROUPS = (("model", ("onnx/",)), ("onnxruntime-web", ("vendor/ort/",)),
          ("tokenizer", ("tokenizer.json", "tokenizer_config.json", "vendor/tokenizers/")),
          ("page", ("index.html", "app.js", "style.css", "sw.js")))


@dataclass(frozen=True)
class WebExportConfig:
    model: str  # run folder (model/ inside) or a Hugging Face model folder
    out_dir: str | None = None  # bundle folder; None = <run>/bundle (replaced if it is a bundle)
    zip: bool = False  # also write <out_dir>.zip (files under one top folder)
    examples: int = 8  # example sentences from the seed set shown on the page (0 = none)
    max_length: int | None = None  # tokens; None = the run's own (where predict truncates)
    title: str = "한국어 감정 분류"  # page heading
    export_data: str | None = None  # labeled set for the INT8 export's gates if it must run first
    node_modules: str | None = None  # where npm put the packages; None = web_export/node_modules
    max_model_mb: float = gates.MAX_MODEL_MB  # a larger INT8 model is reported as a warning
    max_total_mb: float = gates.MAX_BUNDLE_MB  # a larger bundle is reported as a warning
    allow_int8_drift: bool = False  # ship a model file that fails the agreement/F1 gates anyway

    def __post_init__(self):
        if not str(self.model).strip():
            raise ConfigError("web-export: give a run folder, e.g. --model workspace/runs/default")
        if not 0 <= self.examples <= 50:
            raise ConfigError("web-export: examples must be 0-50 (e.g. 8)")
        if self.max_length is not None and not 8 <= self.max_length <= 512:
            raise ConfigError("web-export: max_length must be 8-512 tokens, or None for the "
                              "tokenizer's own limit")
        if not (self.max_model_mb > 0 and self.max_total_mb > 0):
            raise ConfigError("web-export: size limits must be > 0 MB (e.g. 35 and 60)")


@dataclass
class WebExportResult:
    out_dir: str
    zip_path: str | None
    model_mb: float  # onnx/model_quantized.onnx
    total_mb: float  # every file in the bundle
    zip_mb: float | None
    breakdown_mb: dict[str, float]  # group -> MB (model, onnxruntime-web, tokenizer, page, other)
    files: dict[str, int]  # relative path -> bytes
    labels: list[str]
    max_length: int
    exported_int8: bool  # True when the INT8 model was exported first by this call
    seconds: float
    gates: list[dict] = field(default_factory=list)  # verdicts on the shipped file (core.gates)
    warnings: list[str] = field(default_factory=list)


def _mb(n_bytes: int) -> float:
    return round(n_bytes / 1e6, 2)


def missing_vendor_files(node_modules: str | Path | None = None) -> list[str]:
    """The npm files a bundle needs that are not installed (empty when `npm ci` has run)."""
    root = Path(node_modules) if node_modules else NODE_MODULES
    return [src for src, _ in VENDOR_FILES if not (root / src).is_file()]


def _vendor_root(config: WebExportConfig) -> Path:
    root = Path(config.node_modules) if config.node_modules else NODE_MODULES
    missing = missing_vendor_files(root)
    if missing:
        raise WebExportError(f"onnxruntime-web / @huggingface/tokenizers are not installed in "
                             f"{root} (missing {missing[0]}); run `cd web_export && npm ci` "
                             "(or `make setup`)")
    return root


def _ensure_int8(config: WebExportConfig, run: RunFolder, emit: ProgressFn) -> bool:
    """Export INT8 through core.export when the run has none yet; True when it ran."""
    if run.onnx("int8").is_file():
        return False
    from core import export

    log.info("%s has no %s: exporting it first", run.root, INT8_PATH)
    sub = export.ExportConfig(model=str(run.root), openvino=False, data=config.export_data,
                              max_length=config.max_length,
                              allow_int8_drift=config.allow_int8_drift)
    export.run(sub, lambda e: emit({**e, "message": f"INT8 export: {e.get('message', '')}"}))
    return True


def _gate_shipped(config: WebExportConfig, run: RunFolder, shipped: Path, max_length: int
                  ) -> tuple[list[dict], dict]:
    """The file the bundle ships, run by ONNX Runtime on the run's validation split (or
    ``export_data``) against the export's yardstick (core.quant.shipped.run_yardstick: the
    run's own evaluated labels for an INT8-aware run, else ONNX FP32): label agreement and
    macro-F1 drop."""
    from core import data
    from core.predict import logit_scores
    from core.quant.shipped import YARDSTICKS, int8_verdicts, run_yardstick
    from core.runtimes import load

    labels = run.labels()
    records = data.load_dataset(config.export_data) if config.export_data \
        else run.saved_split()[1].val
    records = [r for r in records if r.label in labels]
    texts = [r.text for r in records]
    gold = np.array([labels.index(r.label) for r in records])
    fp32 = load(run.onnx("fp32"), max_length=max_length).logits(texts)
    got = load(shipped, max_length=max_length).logits(texts)
    scores = logit_scores(gold, got, fp32)
    yardstick = run_yardstick(run, config.export_data)
    verdicts = int8_verdicts(scores, got.argmax(-1), logit_scores(gold, fp32)["macro_f1"],
                             yardstick, "bundle model")
    scores["eval_size"] = len(texts)
    scores["yardstick"] = YARDSTICKS[yardstick is not None]
    return [v.as_dict() for v in verdicts], scores


def _check_graph(onnx_path: Path) -> list[str]:
    """Input names; refuses a graph with external weights (the page fetches one file)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise WebExportError(f"{onnx_path} keeps its weights in a separate .data file; re-export "
                             "with `python -m core export` (single-file INT8) first")
    names = [i.name for i in model.graph.input]
    unknown = set(names) - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown:
        raise WebExportError(f"{onnx_path} takes inputs the page cannot build: {sorted(unknown)}")
    return names


def _end_special_tokens(model_dir: Path) -> int:
    """How many special tokens the tokenizer appends after the text.

    The Python side truncates the text to max_length minus the special tokens, then adds them; the
    page reproduces that by keeping the last ``end_special_tokens`` ids (core.runtimes.base).
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    bare = tok.encode("가나다 abc", add_special_tokens=False).ids
    full = tok.encode("가나다 abc").ids
    start = next((i for i in range(len(full) - len(bare) + 1)
                  if full[i:i + len(bare)] == bare), 0)
    return len(full) - start - len(bare)


def _examples(labels: list[str], n: int) -> list[dict]:
    """Up to ``n`` short seed sentences, cycling through the model's labels in order."""
    if n == 0:
        return []
    from core import data

    records = [r for r in data.load_dataset(paths.SEED_PATH) if 6 <= len(r.text) <= 40]
    by_label = {lab: [r for r in records if r.label == lab] for lab in labels}
    picked: list[dict] = []
    for i in range(n):
        for lab in labels:
            if len(picked) < n and i < len(by_label[lab]):
                picked.append({"text": by_label[lab][i].text, "label": lab})
    if not picked:  # a custom label set the seed does not use: plain sentences
        picked = [{"text": r.text, "label": r.label} for r in records[:n]]
    return picked


def _vendor_notice(root: Path) -> str:
    lines = ["# Third-party files in vendor/", ""]
    for name in VENDOR_PACKAGES:
        pkg = json.loads((root / name / "package.json").read_text(encoding="utf-8"))
        repo = pkg.get("repository")
        url = pkg.get("homepage") or (repo.get("url") if isinstance(repo, dict) else repo) or ""
        lines.append(f"- `{name}` {pkg['version']}, license {pkg.get('license', '?')}: {url}")
    return "\n".join(lines) + "\n"


def _fill(tmp: Path, model_dir: Path, onnx_path: Path, vendor: Path) -> None:
    (tmp / "onnx").mkdir(parents=True)
    shutil.copyfile(onnx_path, tmp / INT8_PATH)  # byte for byte: one INT8 file everywhere
    for name in MODEL_FILES:
        shutil.copyfile(model_dir / name, tmp / name)
    for name in TEMPLATE_FILES:
        shutil.copyfile(TEMPLATE_DIR / name, tmp / name)
    for src, dst in VENDOR_FILES:
        (tmp / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vendor / src, tmp / dst)
    (tmp / "vendor" / "NOTICE.md").write_text(_vendor_notice(vendor), encoding="utf-8")


def file_sizes(folder: str | Path) -> dict[str, int]:
    """Relative POSIX path -> bytes for every file under ``folder``, sorted by path."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file()}


def breakdown(files: dict[str, int]) -> dict[str, int]:
    """Bytes per group (model, onnxruntime-web, tokenizer, page, other)."""
    out = {name: 0 for name, _ in GROUPS} | {"other": 0}
    for rel, size in files.items():
        group = next((name for name, prefixes in GROUPS if rel.startswith(prefixes)), "other")
        out[group] += size
    return out


def _zip(folder: Path, zip_path: Path) -> None:
    tmp = zip_path.with_name(f".{zip_path.name}.tmp-{secrets.token_hex(3)}")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for rel in file_sizes(folder):
            zf.write(folder / rel, f"{folder.name}/{rel}")
    os.replace(tmp, zip_path)


def _check_target(out: Path) -> None:
    """Only an earlier bundle (or an empty folder) may be replaced."""
    if out.exists() and (out.is_file() or (any(out.iterdir()) and not (out / FACTS).is_file())):
        raise ConfigError(f"web-export: {out} exists and is not a bundle; choose another "
                          "--out (an earlier bundle there would be replaced)")


def _size_gates(config: WebExportConfig, model_bytes: int, total_bytes: int) -> list[dict]:
    return [gates.size(_mb(model_bytes), config.max_model_mb, "bundle model").as_dict(),
            gates.size(_mb(total_bytes), config.max_total_mb, "whole bundle").as_dict()]


def _align_max_length(folder: Path, max_length: int) -> None:
    """Make tokenizer_config.json's model_max_length the page's limit: transformers.js and
    AutoTokenizer truncate at it, so all three cut a long text at the same token."""
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("model_max_length") != max_length:
        cfg["model_max_length"] = max_length
        paths.atomic_write_text(path, json.dumps(cfg, ensure_ascii=False, indent=2) + "\n")


def _build(config: WebExportConfig, run: RunFolder, tmp: Path, vendor: Path, emit) -> dict:
    """Fill the staging folder ``tmp``: files, facts, gates on the shipped model, the report."""
    onnx_path = run.onnx("int8")
    inputs = _check_graph(onnx_path)
    emit({"done": 1, "total": 5, "message": "tokenizer facts and examples"})
    labels, max_length = run.labels(), config.max_length or run.max_length
    facts = {"title": config.title, "labels": labels, "max_length": max_length,
             "end_special_tokens": _end_special_tokens(run.model_dir), "inputs": inputs,
             "model_mb": _mb(onnx_path.stat().st_size), "model_file": INT8_PATH,
             "examples": _examples(labels, config.examples), "source_run": run.name,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    emit({"done": 2, "total": 5, "message": "copying model, tokenizer, page, runtime"})
    _fill(tmp, run.model_dir, onnx_path, vendor)
    _align_max_length(tmp, max_length)
    paths.atomic_write_text(tmp / FACTS, json.dumps(facts, ensure_ascii=False, indent=2))
    emit({"done": 3, "total": 5, "message": "checking the shipped model against its yardstick"})
    verdicts, scores = _gate_shipped(config, run, tmp / INT8_PATH, max_length)
    template = (TEMPLATE_DIR / "README.md").read_text(encoding="utf-8")
    # README.md becomes the model card (a bare model folder, with no metrics.json, keeps the
    # template's). The card quotes the sizes and is one of the files: sizes, card, sizes with the
    # card, card again (the same length unless a rounded figure moved), then the final sizes.
    for card_pass in range(3):
        files = file_sizes(tmp)
        report = {"files": files, "breakdown_bytes": breakdown(files),
                  "total_bytes": sum(files.values()), "labels": labels, "max_length": max_length,
                  "source_run": run.name, "created": facts["created"],
                  "gates": verdicts + _size_gates(config, files[INT8_PATH], sum(files.values())),
                  "scores": scores}
        if card_pass < 2 and run.is_trained():
            model_card.write_bundle_card(run, tmp, template, report)
    paths.atomic_write_text(tmp / REPORT, json.dumps(report, ensure_ascii=False, indent=2))
    return report


def run(config: WebExportConfig, on_progress: ProgressFn | None = None) -> WebExportResult:
    emit = on_progress or (lambda event: None)
    t0 = time.perf_counter()
    vendor = _vendor_root(config)
    run_folder = RunFolder.of(config.model)
    out = (Path(config.out_dir) if config.out_dir else run_folder.bundle_dir).resolve()
    _check_target(out)
    with run_folder.lock("web-export"):
        paths.clean_leftovers(out)
        emit({"done": 0, "total": 5, "message": "INT8 model"})
        exported = _ensure_int8(config, run_folder, emit)
        tmp = paths.staging_dir(out)
        try:
            report = _build(config, run_folder, tmp, vendor, emit)
            accuracy = [v for v in report["gates"] if v["gate"] != "size"]
            if not gates.passed(accuracy) and not config.allow_int8_drift:
                raise GateError("web-export: the bundle's model fails its gates, so the previous "
                                "bundle is kept: " + "; ".join(gates.failures(accuracy))
                                + ". Pass --allow-int8-drift to ship it anyway.")
            emit({"done": 4, "total": 5, "message": f"writing {out}"})
            paths.swap_dir(tmp, out)
            model_card.refresh_run_card(run_folder, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        zip_path = out.with_name(out.name + ".zip") if config.zip else None
        if zip_path:
            _zip(out, zip_path)
    files = report["files"]
    result = WebExportResult(
        str(out), str(zip_path) if zip_path else None, _mb(files[INT8_PATH]),
        _mb(report["total_bytes"]), _mb(zip_path.stat().st_size) if zip_path else None,
        {k: _mb(v) for k, v in report["breakdown_bytes"].items()}, files, report["labels"],
        report["max_length"], exported, round(time.perf_counter() - t0, 2), report["gates"],
        gates.failures(report["gates"]))
    for w in result.warnings:
        log.warning(w)
    emit({"done": 5, "total": 5, "message": "done", "total_mb": result.total_mb})
    return result


def serve_bundle(directory: str | Path, port: int = 0, isolation: bool = True):
    """Serve a bundle on 127.0.0.1 in a daemon thread with the bundle's own serve.py logic.

    Returns (server, url); ``server.shutdown()`` stops it. Used by the page's live preview, the
    tests and bench/browser_latency.py, so they all exercise the server users run.
    """
    spec = importlib.util.spec_from_file_location("bundle_serve", TEMPLATE_DIR / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.serve_in_thread(str(directory), port, isolation)
