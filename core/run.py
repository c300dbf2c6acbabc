"""A run folder: the one owner of a trained run's layout, its files, its split and its lock.

```
RUN/
  model/                   Hugging Face folder: config.json (id2label), weights, tokenizer files
  metrics.json             TrainResult + "config" (the TrainConfig) + "split" (how data was split)
  onnx/model.onnx          FP32, opset 17, dynamic axes          (python -m core export)
  onnx/model_optimized.onnx, model_int8_*.onnx, model_quantized.onnx (the shipped INT8)
  openvino/model.xml, model_int8.xml
  export_report.json       every artifact's size and gate verdicts
  bundle/ (+ bundle.zip)   the browser bundle with bundle_report.json  (python -m core web-export)
  bench/<timestamp>/       results.json, report.md, charts         (python -m core bench)
```
``RUN/../.locks/RUN.lock`` is held by train, export, web-export and bench while they work on it.

Nothing else derives these paths or re-reads these files. A damaged run (no model, no
metrics.json) raises ``RunError`` saying what is missing and the command that rebuilds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core import paths
from core.errors import RunBusy, RunError

MAX_TOKENS = 512  # the longest sequence any of our encoders takes (position table)
_held: dict[str, int] = {}  # run folders this process has locked -> depth (locks nest in-process)
_held_guard = threading.Lock()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def tokenizer_max_length(model_dir: str | Path) -> int:
    """How many tokens the model's texts are truncated to: the tokenizer's ``model_max_length``
    (training writes its max_length there), capped at ``MAX_TOKENS``."""
    cfg = _read_json(Path(model_dir) / "tokenizer_config.json") or {}
    try:
        limit = int(cfg.get("model_max_length") or MAX_TOKENS)
    except (TypeError, ValueError, OverflowError):
        limit = MAX_TOKENS
    return min(limit, MAX_TOKENS)


def find_model_dir(path: str | Path) -> Path:
    """The Hugging Face folder (config.json + tokenizer) belonging to ``path``: a run folder, a
    model folder, a bundle or export folder, or a model file inside one of them."""
    path = Path(path)
    start = path if path.is_dir() else path.parent
    for folder in (start, start / "model", start.parent, start.parent / "model"):
        if (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file():
            return folder
    raise RunError(f"no model folder (config.json + tokenizer) found for {path}; give a run "
                   "folder trained with `python -m core train` or a file exported from one")


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @classmethod
    def of(cls, path: str | Path) -> RunFolder:
        """The run holding ``path`` (the run folder, its model/, or a file exported from it)."""
        model_dir = find_model_dir(path)
        return cls(model_dir.parent if model_dir.name == "model" else model_dir)

    @classmethod
    def default(cls) -> RunFolder:
        return cls(paths.runs_dir() / "default")

    @property
    def name(self) -> str:
        return self.root.name

    # --- the trained model -------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        """RUN/model; a bare Hugging Face folder (or an export folder) is its own model folder."""
        nested = self.root / "model"
        return self.root if not nested.is_dir() and (self.root / "config.json").is_file() \
            else nested

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    def is_trained(self) -> bool:
        """A complete run: a model folder with config and tokenizer, and metrics.json."""
        return (self.model_dir / "config.json").is_file() and \
            (self.model_dir / "tokenizer_config.json").is_file() and self.metrics_path.is_file()

    def _rebuild_hint(self) -> str:
        out = "" if self.root == RunFolder.default().root else f" --out {self.root}"
        return f"retrain it with `python -m core train{out}` (or on the Train page)"

    def metrics(self) -> dict:
        """metrics.json; raises RunError when the run was never trained to the end."""
        if not (self.model_dir / "config.json").is_file():
            raise RunError(f"{self.root} has no trained model (model/config.json is missing): "
                           + self._rebuild_hint())
        found = _read_json(self.metrics_path)
        if found is None:
            raise RunError(f"{self.root} has no readable metrics.json (training did not finish "
                           f"or the file is damaged): " + self._rebuild_hint())
        return found

    def train_config(self):
        """The TrainConfig this run was trained with (from metrics.json)."""
        from core.train import TrainConfig

        saved = dict(self.metrics().get("config") or {})
        if saved.get("labels") is not None:
            saved["labels"] = tuple(saved["labels"])
        known = TrainConfig.__dataclass_fields__
        return TrainConfig(**{k: v for k, v in saved.items() if k in known})

    def labels(self) -> list[str]:
        """Label names in id order, from the model's config.json ``id2label``."""
        config = _read_json(self.model_dir / "config.json") or {}
        id2label = config.get("id2label") or {}
        return [id2label[str(i)] for i in range(len(id2label))]

    @property
    def max_length(self) -> int:
        """Tokens per text, as the run was trained (and every runtime truncates)."""
        return tokenizer_max_length(self.model_dir)

    def saved_split(self):
        """(dataset, Split): the exact data and split the run was trained and evaluated on."""
        from core import data

        m = self.metrics()
        how = m.get("split") or m.get("config") or {}
        if "val_frac" not in how:
            raise RunError(f"{self.metrics_path} does not record its split: "
                           + self._rebuild_hint())
        name = how.get("data")
        try:
            records = data.load_dataset(name)
        except Exception as exc:
            raise RunError(f"the dataset {name or 'seed'} this run was trained on cannot be "
                           f"loaded ({exc}); restore it or retrain the run") from exc
        return name, data.split_records(records, how["val_frac"], how["test_frac"], how["seed"])

    # --- artifacts -----------------------------------------------------------------------------
    @property
    def onnx_dir(self) -> Path:
        return self.root / "onnx"

    def onnx(self, kind: str = "int8") -> Path:
        """fp32 | optimized | int8 (the shipped INT8) | int8-integer | int8-dynamic |
        int8-weightonly."""
        files = {"fp32": "model.onnx", "optimized": "model_optimized.onnx",
                 "int8": "model_quantized.onnx", "int8-integer": "model_int8_integer.onnx",
                 "int8-dynamic": "model_int8_dynamic.onnx",
                 "int8-weightonly": "model_int8_weightonly.onnx"}
        return self.onnx_dir / files[kind]

    @property
    def openvino_dir(self) -> Path:
        return self.root / "openvino"

    def openvino(self, kind: str = "int8") -> Path:
        return self.openvino_dir / ("model_int8.xml" if kind == "int8" else "model.xml")

    @property
    def export_report_path(self) -> Path:
        return self.root / "export_report.json"

    def export_report(self) -> dict | None:
        return _read_json(self.export_report_path)

    @property
    def bundle_dir(self) -> Path:
        return self.root / "bundle"

    @property
    def bundle_zip(self) -> Path:
        return self.root / "bundle.zip"

    def bundle_report(self, bundle_dir: str | Path | None = None) -> dict | None:
        from core.web_export import REPORT

        return _read_json(Path(bundle_dir or self.bundle_dir) / REPORT)

    @property
    def bench_dir(self) -> Path:
        return self.root / "bench"

    def bench_reports(self) -> list[Path]:
        """Saved benchmark folders, newest first."""
        return sorted((p.parent for p in self.bench_dir.glob("*/results.json")), reverse=True)

    def runnable(self) -> dict[str, Path]:
        """The runnable models of this run that exist, by display name (the Demo's choices)."""
        candidates = {"PyTorch FP32": self.root, "ONNX FP32": self.onnx("fp32"),
                      "ONNX INT8": self.onnx("int8"), "OpenVINO INT8": self.openvino("int8")}
        return {k: v for k, v in candidates.items()
                if (v.exists() if k != "PyTorch FP32" else self.is_trained())}

    def artifact(self, kind: str) -> Path:
        """An artifact by kind: "model", "onnx:<fp32|optimized|int8|int8-dynamic|...>" or
        "openvino:<fp32|int8>" (how the benchmark's rows name what they load)."""
        if kind == "model":
            return self.model_dir
        family, _, variant = kind.partition(":")
        return self.onnx(variant) if family == "onnx" else self.openvino(variant)

    # --- the lock ------------------------------------------------------------------------------
    @contextmanager
    def lock(self, what: str):
        """Hold the run's lock while ``what`` (train/export/web-export/bench) works on it.

        Fails at once with RunBusy when another process holds it; nests within one process (a web
        export that runs the export first takes it twice)."""
        key = str(self.root.resolve())
        with _held_guard:
            depth = _held.get(key, 0)
            _held[key] = depth + 1
        if depth:
            try:
                yield self
            finally:
                with _held_guard:
                    _held[key] -= 1
            return
        # Beside the run, not inside it: training swaps the whole run folder.
        lock_path = self.root.parent / ".locks" / f"{self.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock_path, "a+")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another job"
                raise RunBusy(f"run {self.name} is busy ({holder}); wait for that job to finish "
                              f"or cancel it, then start {what} again") from None
            f.seek(0)
            f.truncate()
            f.write(f"{what} (pid {os.getpid()})")
            f.flush()
            yield self
        finally:
            with _held_guard:
                _held.pop(key, None)
            f.close()  # closing the file releases the flock


def list_runs() -> list[RunFolder]:
    """Trained runs in the workspace, newest first."""
    found = [RunFolder(p) for p in paths.runs_dir().iterdir()
             if p.is_dir() and not p.name.startswith(".")]  # not staging or lock folders
    found = [r for r in found if r.is_trained()]
    return sorted(found, key=lambda r: r.metrics_path.stat().st_mtime, reverse=True)
