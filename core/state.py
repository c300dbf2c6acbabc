"""What exists in the workspace, stage by stage, for the home page and `python -m core status`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core import data, paths


@dataclass(frozen=True)
class StageState:
    name: str
    done: bool
    detail: str
    page: str  # the page that does this stage


def runs() -> list[Path]:
    """Trained run folders (``RUN/model/config.json`` + metrics.json), newest first."""
    found = [p for p in paths.runs_dir().iterdir() if (p / "model" / "config.json").is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _count(pattern: str) -> int:
    return sum(1 for _ in paths.runs_dir().glob(pattern))


def pipeline() -> list[StageState]:
    datasets = data.list_datasets()
    n_runs = len(runs())
    exports = _count("*/onnx/model_quantized.onnx")
    benches = _count("*/bench/*/results.json") + _count("*/bench/results.json")
    bundles = _count("*/bundle/index.html")
    return [
        StageState("Generate", len(datasets) > 1,
                   f"{len(datasets) - 1} saved or generated datasets besides the seed set",
                   "pages/2_Generate.py"),
        StageState("Dataset", True, f"{len(datasets)} datasets (seed set shipped)",
                   "pages/1_Dataset.py"),
        StageState("Train", n_runs > 0, f"{n_runs} trained runs", "pages/3_Train.py"),
        StageState("Export", exports > 0, f"{exports} runs exported to ONNX INT8",
                   "pages/5_Export.py"),
        StageState("Benchmark", benches > 0, f"{benches} benchmark reports", "pages/6_Benchmark.py"),
        StageState("Web bundle", bundles > 0, f"{bundles} browser bundles", "pages/7_Web_Bundle.py"),
    ]


def next_step(stages: list[StageState]) -> StageState | None:
    """The first stage after Dataset that has not been done yet."""
    return next((s for s in stages[2:] if not s.done), None)
