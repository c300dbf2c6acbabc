"""What exists in the workspace, stage by stage, for the home page and `python -m core status`."""

from __future__ import annotations

from dataclasses import dataclass

from core import data
from core.run import list_runs


@dataclass(frozen=True)
class StageState:
    name: str
    done: bool
    detail: str
    page: str  # the page that does this stage


def pipeline() -> list[StageState]:
    datasets = data.list_datasets()
    runs = list_runs()
    exports = sum(r.onnx("int8").is_file() for r in runs)
    benches = sum(len(r.bench_reports()) for r in runs)
    bundles = sum(r.bundle_report() is not None for r in runs)
    return [
        StageState("Generate", len(datasets) > 1,
                   f"{len(datasets) - 1} saved or generated datasets besides the seed set",
                   "pages/2_Generate.py"),
        StageState("Dataset", True, f"{len(datasets)} datasets (seed set shipped)",
                   "pages/1_Dataset.py"),
        StageState("Train", bool(runs), f"{len(runs)} trained runs", "pages/3_Train.py"),
        StageState("Export", exports > 0, f"{exports} runs exported to ONNX INT8",
                   "pages/5_Export.py"),
        StageState("Benchmark", benches > 0, f"{benches} benchmark reports", "pages/6_Benchmark.py"),
        StageState("Web bundle", bundles > 0, f"{bundles} browser bundles", "pages/7_Web_Bundle.py"),
    ]


def next_step(stages: list[StageState]) -> StageState | None:
    """The first stage after Dataset that has not been done yet."""
    return next((s for s in stages[2:] if not s.done), None)
