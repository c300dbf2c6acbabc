"""Builds never destroy the last good result: real train / export / web-export jobs (started by
core/jobs.py as `python -m core job DIR`) killed part way, by kill -9 and by the job's cancel.

Each stage builds into a staging folder and swaps it in at the end, so after a kill the previous
model, export and bundle are byte-identical, load and predict as before, RunFolder shows nothing
half-written, and the next run of the stage removes what the killed one left behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from core import jobs, paths, predict, web_export
from core.export import ExportConfig
from core.run import RunFolder, list_runs

TEXTS = ["오늘 정말 기분이 좋아", "친구가 약속을 또 어겼어", "내일 발표가 걱정돼서 잠이 안 와"]
# What each stage rebuilds: the file whose predictions must not change.
ARTIFACT = {"train": lambda run: run.root, "export": lambda run: run.onnx("int8"),
            "web-export": lambda run: run.bundle_dir / web_export.INT8_PATH}


def _fake_node_modules(root: Path) -> Path:
    """The npm files a bundle copies (their content does not matter to these tests)."""
    for src, _ in web_export.VENDOR_FILES:
        (root / src).parent.mkdir(parents=True, exist_ok=True)
        (root / src).write_bytes(b"// vendor file stand-in\n" * 64)
    for name in web_export.VENDOR_PACKAGES:
        (root / name / "package.json").write_text(
            json.dumps({"name": name, "version": "0.0.0", "license": "MIT"}), encoding="utf-8")
    return root


def _predictions(path) -> list[dict]:
    return [p.probs for p in predict.predict(path, TEXTS)]


@pytest.fixture(scope="module")
def good(tiny_e5_run, tmp_path_factory):
    """A run with every result built (model, ONNX export, browser bundle), its predictions, and
    a stand-in node_modules; each test copies the run into its own workspace."""
    top = tmp_path_factory.mktemp("good")
    root = top / "runs" / "tiny"
    shutil.copytree(tiny_e5_run, root, ignore=shutil.ignore_patterns(
        "onnx", "openvino", "bundle*", "export_report.json"))
    vendor = _fake_node_modules(top / "node_modules")
    with pytest.MonkeyPatch.context() as mp:
        from core import export, quantize

        mp.setenv(paths.WORKSPACE_ENV, str(top / "ws"))
        # The previous export only has to be complete: calibrated INT8 takes ~20 s on this tiny
        # model, so that one file is made the dynamic way here (the jobs below run unchanged).
        mp.setattr(quantize, "integer_int8",
                   lambda src, dst, batches, on_grid: quantize.dynamic_int8(src, dst, False, False))
        export.run(ExportConfig(model=str(root), openvino=False, allow_int8_drift=True,
                                calibration_size=8, sensitivity_size=4))
        web_export.run(web_export.WebExportConfig(model=str(root), node_modules=str(vendor),
                                                  allow_int8_drift=True))
    run = RunFolder(root)
    return root, vendor, {stage: _predictions(get(run)) for stage, get in ARTIFACT.items()}


@pytest.fixture
def run(good, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setenv(paths.WORKSPACE_ENV, str(ws))
    shutil.copytree(good[0], ws / "runs" / "tiny")
    yield RunFolder(ws / "runs" / "tiny")
    for job in jobs.list_jobs():  # a failed test leaves no job running
        job.cancel()


def _config(stage: str, run: RunFolder, vendor: Path):
    """A config for the stage that runs long enough to be caught part way."""
    if stage == "train":  # many epochs: killed during the first
        return dataclasses.replace(run.train_config(), out_dir=str(run.root), epochs=200,
                                   patience=0, log_every=1)
    if stage == "export":
        return ExportConfig(model=str(run.root), openvino=False, allow_int8_drift=True)
    # The whole seed set for the bundle's gate: checked while the staged bundle is filled.
    return web_export.WebExportConfig(model=str(run.root), node_modules=str(vendor),
                                      allow_int8_drift=True, export_data=str(paths.SEED_PATH))


def _part_way(stage: str, event: dict) -> bool:
    if stage == "train":  # training steps run; the staging folder beside the run is made
        return event.get("kind") == "step"
    if stage == "export":  # the ONNX export into the staging folder has begun
        return event.get("done", 0) >= 2
    return event.get("done", 0) >= 3  # the bundle's files are staged; its gate runs


def _leftovers(run: RunFolder) -> list[Path]:
    """Staging / moved-aside folders and temporary files: beside the run and inside it."""
    return sorted(run.root.parent.glob(f".{run.name}.*")) + sorted(run.root.glob(".*"))


def _start_part_way(stage: str, run: RunFolder, vendor: Path) -> jobs.Job:
    job = jobs.start(f"{stage}:{run.name}", _config(stage, run, vendor))
    deadline = time.time() + 120
    while time.time() < deadline:
        status = job.status()
        assert not status.finished, f"{stage} ended before it could be stopped: {status.error}"
        if any(e["type"] == "progress" and _part_way(stage, e) for e in status.events) \
                and _leftovers(run):
            return job
        time.sleep(0.05)
    raise AssertionError(f"{stage} never got part way: {job.output_tail()}")


def _snapshot(run: RunFolder) -> dict[str, str]:
    """sha256 of every file of the run (leftovers, whose names start with '.', aside)."""
    return {str(p.relative_to(run.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.root.rglob("*"))
            if p.is_file() and not p.relative_to(run.root).parts[0].startswith(".")}


def _visible(run: RunFolder) -> dict:
    """What predict, the Demo page and the benchmark see of the workspace."""
    return {"runs": [r.root for r in list_runs()], "runnable": run.runnable(),
            "trained": run.is_trained(), "export": run.export_report(),
            "bundle": run.bundle_report()}


def _wait_ended(job: jobs.Job) -> jobs.JobStatus:
    deadline = time.time() + 30
    while job.alive() and time.time() < deadline:
        time.sleep(0.05)
    return job.status()


@pytest.mark.parametrize("stage", ["train", "export", "web-export"])
def test_a_killed_or_cancelled_build_keeps_the_previous_result(stage, run, good):
    _, vendor, predictions = good
    files, visible = _snapshot(run), _visible(run)

    def unchanged():
        assert _snapshot(run) == files
        assert _visible(run) == visible
        got = _predictions(ARTIFACT[stage](run))
        for probs, want in zip(got, predictions[stage]):
            assert probs == pytest.approx(want, abs=1e-6)

    # kill -9 of the job's process group part way: its staging folder stays behind, unseen.
    job = _start_part_way(stage, run, vendor)
    os.killpg(job.info["pid"], signal.SIGKILL)
    status = _wait_ended(job)
    assert status.state == "failed" and "ended without a result" in status.error
    killed_left = _leftovers(run)
    assert killed_left, "kill -9 part way leaves the staging folder"
    unchanged()

    # The next run of the stage removes those leftovers first; the job's cancel (SIGTERM) then
    # unwinds it, and the stage removes its own staging folder on the way out.
    job = _start_part_way(stage, run, vendor)
    assert not any(p.exists() for p in killed_left), "the next run cleans up the leftovers"
    job.cancel()
    assert not job.alive() and job.status().state == "cancelled"
    assert [e["type"] for e in job.status().events].count("cancelled") == 1
    assert _leftovers(run) == []
    unchanged()
