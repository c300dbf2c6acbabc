"""The run folder (core/run.py), its lock, the gates (core/gates.py), and builds that keep the last
good result when they fail."""

from __future__ import annotations

import dataclasses
import fcntl
import shutil

import onnx
import pytest

from core import data, export, gates, paths, quantize
from core.errors import GateError, RunBusy, RunError
from core.run import RunFolder
from core.train import TrainConfig


def _copy_run(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("onnx", "openvino", "bundle*"))
    return RunFolder(dst)


def test_run_folder_reads_its_own_files(tiny_e5_run, tmp_path):
    run = RunFolder.of(tiny_e5_run / "model")
    assert run.root == tiny_e5_run and run.model_dir == tiny_e5_run / "model"
    assert run.is_trained() and run.labels() == run.metrics()["labels"]
    cfg = run.train_config()
    assert isinstance(cfg, TrainConfig) and cfg.freeze_below == 1 and run.max_length == 48
    name, split = run.saved_split()
    assert split.sizes() == run.metrics()["split_sizes"] and name == cfg.data
    assert run.artifact("onnx:int8") == tiny_e5_run / "onnx" / "model_quantized.onnx"
    assert RunFolder.of(run.artifact("onnx:int8")).root == tiny_e5_run  # a file inside the run


def test_a_damaged_run_says_what_is_missing_and_how_to_rebuild(tiny_e5_run, tmp_path):
    run = _copy_run(tiny_e5_run, tmp_path / "broken")
    run.metrics_path.unlink()
    assert not run.is_trained()
    with pytest.raises(RunError, match="metrics.json.*python -m core train --out"):
        run.saved_split()
    with pytest.raises(RunError, match="metrics.json"):  # no silent fallback to the seed set
        export.run(export.ExportConfig(model=str(run.root), openvino=False))
    shutil.rmtree(run.model_dir)
    with pytest.raises(RunError, match="model"):
        run.metrics()


def test_another_job_holding_the_lock_makes_the_export_wait_its_turn(tiny_e5_run, tmp_path):
    run = _copy_run(tiny_e5_run, tmp_path / "busy")
    lock_file = run.root.parent / ".locks" / "busy.lock"
    lock_file.parent.mkdir(parents=True)
    with open(lock_file, "w") as held:  # another process's lock (a separate open file)
        held.write("web-export (pid 1)")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RunBusy, match="busy.*web-export"):
            export.run(export.ExportConfig(model=str(run.root), openvino=False))
    with run.lock("bench"), run.lock("bench"):  # free again; nests within one process
        pass


def test_training_uses_the_split_saved_with_the_dataset(studio_workspace, tiny_e5_dir,
                                                        seven_label_dataset, one_torch_thread):
    from core.train import run as train

    records = data.load_dataset(seven_label_dataset)
    saved = {"val_frac": 0.3, "test_frac": 0.2, "seed": 5}
    path = data.save_dataset("with-split", records, split=saved)
    result = train(TrainConfig(data="with-split", base=str(tiny_e5_dir), epochs=1,
                               freeze_below=2, out_dir=str(studio_workspace / "runs" / "s"),
                               num_threads=1))
    expected = data.split_records(records, **saved)
    assert result.split_sizes == expected.sizes() != data.split_records(records).sizes()
    run = RunFolder.of(result.run_dir)
    assert run.metrics()["split"]["source"] == "saved with the dataset"
    assert [r.text for r in run.saved_split()[1].test] == [r.text for r in expected.test]
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"text": "새 줄", "label": "기쁨"}\n')
    assert data.saved_split_params("with-split") is None  # the file changed: split is stale


def test_failed_training_keeps_the_previous_run(tiny_e5_run, tmp_path, monkeypatch):
    from core import train

    run = _copy_run(tiny_e5_run, tmp_path / "runs" / "keep")
    before = (run.model_dir / "model.safetensors").read_bytes()

    def boom(self):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(train.Trainer, "fit", boom)
    with pytest.raises(RuntimeError, match="mid-training"):
        train.run(dataclasses.replace(run.train_config(), out_dir=str(run.root)))
    assert (run.model_dir / "model.safetensors").read_bytes() == before and run.is_trained()
    assert [p.name for p in run.root.parent.iterdir() if p.name != ".locks"] == ["keep"]


def _doctored_int8(src, dst, *args, **kwargs):
    """An "INT8" file that negates the logits: its labels are FP32's least likely ones."""
    model = onnx.load(str(src))
    for node in model.graph.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    model.graph.node.append(onnx.helper.make_node("Neg", ["logits_raw"], ["logits"]))
    onnx.save(model, str(dst))


def test_int8_gate_fails_the_export_and_keeps_the_previous_one(tiny_e5_run, tmp_path,
                                                               monkeypatch):
    run = _copy_run(tiny_e5_run, tmp_path / "gated")
    first = export.run(export.ExportConfig(model=str(run.root), openvino=False,
                                           allow_int8_drift=True))
    shipped = run.onnx("int8").read_bytes()
    report = run.export_report()
    for method in ("integer_int8", "dynamic_int8", "weight_only_int8"):
        monkeypatch.setattr(quantize, method, _doctored_int8)
    with pytest.raises(GateError, match="previous export is kept.*agreeing with FP32"):
        export.run(export.ExportConfig(model=str(run.root), openvino=False))
    assert run.onnx("int8").read_bytes() == shipped and run.export_report() == report
    assert not list(run.root.glob(".*tmp-*")), "staging folders are cleaned up"
    drifted = export.run(export.ExportConfig(model=str(run.root), openvino=False,
                                             allow_int8_drift=True))
    assert drifted.int8["passed"] is False and first.max_length == run.max_length
    assert not gates.passed(run.export_report()["int8"]["gates"])


def test_interrupted_swap_is_undone_on_the_next_build(tmp_path):
    dest = tmp_path / "onnx"
    old = tmp_path / ".onnx.old-abc123"
    old.mkdir()
    (old / "model.onnx").write_text("previous", encoding="utf-8")
    (tmp_path / ".onnx.tmp-def456").mkdir()  # a half-built replacement
    done = paths.clean_leftovers(dest)
    assert (dest / "model.onnx").read_text(encoding="utf-8") == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"] and len(done) == 2


def test_bench_targets_ignore_runtimes_that_lose_labels():
    rows = [{"key": k, "kind": "latency", "case": "typical", "device": "cpu",
             "speedup_vs_pytorch": s} for k, s in (("pytorch", 1.0), ("fast", 9.0), ("ok", 6.0))]
    runtimes = [{"key": "pytorch"}, {"key": "fast", "agreement": 96.8, "f1_delta_vs_pytorch": 0.1},
                {"key": "ok", "agreement": 99.6, "f1_delta_vs_pytorch": -0.2}]
    t = gates.bench_targets(rows, runtimes)
    assert t["best_cpu"] == "ok" and t["excluded_faster"] == ["fast"] and t["speedup_met"]


def test_status_command_prints_the_pipeline(studio_workspace, capsys):
    from core.cli import main

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Train" in out and "next: Train" in out
