"""INT8-aware training (core/qat.py) on the 2-layer e5 cut: the saved weights are the INT8 file's
own, and the INT8 graph computes what training scored: it stays closer to the model as trained
than a plainly trained model's INT8 file stays to its FP32 model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import qat
from core import quant_recipes as qr
from core.quant import shipped

from test_quant_recipes import TEXTS  # the same 12 sentences


def test_grids_are_idempotent_and_the_rounding_passes_gradients():
    import torch

    torch.manual_seed(0)
    w = torch.randn(16, 40) * torch.linspace(0.1, 3, 16)[:, None]
    q = qat.quantized_rows(w, qr.W7)
    assert torch.equal(qat.quantized_rows(q, qr.W7), q)  # on the grid: unchanged
    steps = q / (w.abs().amax(1, keepdim=True) / qr.W7)
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= qr.W7 + 1e-4
    x = (torch.randn(2, 5, 40) * 4).requires_grad_()
    y = qat.fake_quant_tokens(x)
    assert (y - x).abs().max() <= x.abs().amax(-1, keepdim=True).max() / 127 / 2 + 1e-6
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through


def test_distill_loss_blends_the_teacher_and_the_labels():
    """alpha 0 is plain cross-entropy; alpha 1 is the temperature-scaled KL, which is 0 when the
    student already matches the teacher and pulls the student towards the teacher's logits."""
    import torch
    from torch.nn import functional

    torch.manual_seed(0)
    student = torch.randn(8, 7, requires_grad=True)
    teacher, labels = torch.randn(8, 7), torch.randint(0, 7, (8,))
    ce = functional.cross_entropy(student, labels)
    assert torch.allclose(qat.distill_loss(student, teacher, labels, 2.0, 0.0), ce)
    assert float(qat.distill_loss(teacher, teacher, labels, 2.0, 1.0)) == pytest.approx(0, abs=1e-6)
    kl = qat.distill_loss(student, teacher, labels, 2.0, 1.0)
    p, q = torch.softmax(teacher / 2, -1), torch.log_softmax(student / 2, -1)
    want = float((p * (p.log() - q)).sum(-1).mean().detach() * 4)
    assert float(kl.detach()) == pytest.approx(want, rel=1e-5)
    kl.backward()  # a small step along -grad moves the student's distribution to the teacher's
    moved = (student - 0.5 * student.grad).detach()
    assert float(qat.distill_loss(moved, teacher, labels, 2.0, 1.0)) < float(kl.detach())
    half = qat.distill_loss(student, teacher, labels, 2.0, 0.5)
    assert float(half.detach()) == pytest.approx(0.5 * float(kl.detach()) + 0.5 * float(ce.detach()),
                                                 rel=1e-5)


def _train(base, data, out, aware: bool):
    from core.train import TrainConfig, run

    run(TrainConfig(data=str(data), base=str(base), out_dir=str(out), epochs=2, freeze_below=1,
                    batch_size=16, max_length=48, learning_rate=5e-4, patience=0, num_threads=1,
                    int8_epochs=int(aware), int8_lr=1e-4))
    return out / "model"


def _int8(model_dir, tmp):
    """(FP32 logits, INT8 logits, INT8 path, feeds) as the export builds them."""
    from core import quantize
    from core.onnx_export import export_onnx, optimize

    unfused, fused, int8 = tmp / "model.onnx", tmp / "fused.onnx", tmp / "int8.onnx"
    export_onnx(model_dir, unfused, 17, 48)
    optimize(unfused, fused, model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    batches = qr.encode_batches(model_dir, TEXTS, batch_size=4, max_length=48)
    quantize.integer_int8(fused, int8, batches, qat.is_int8_aware(config))
    return qr.run_logits(unfused, batches), qr.run_logits(int8, batches), int8, batches


@pytest.fixture(scope="module")
def two_runs(tiny_e5_dir, seven_label_dataset, tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("qat")
    return {aware: _train(tiny_e5_dir, seven_label_dataset, root / f"aware{aware}", aware)
            for aware in (False, True)}


def test_saved_weights_are_the_int8_files_own(two_runs):
    """The recipe's quantizer (round-to-nearest and GPTQ alike) gives every encoder weight of an
    INT8-aware run back unchanged, and no embedding row either: no weight rounding error left."""
    from transformers import AutoModelForSequenceClassification

    rng = np.random.default_rng(0)
    for aware, model_dir in two_runs.items():
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        errors = []
        for m in qat.encoder_linears(model.base_model.encoder.layer):
            w = m.weight.detach().numpy().T.astype(np.float64)  # [K, N] as in the ONNX MatMul
            q, scale = qr._quantize_columns(w, None, qr.W7)
            a = rng.normal(size=(w.shape[0], 3 * w.shape[0]))
            g, _ = qr._quantize_columns(w, a @ a.T / a.shape[1], qr.W7)
            errors += [np.abs(q * scale - w).max(), np.abs(g * scale - w).max()]
        table = model.base_model.embeddings.word_embeddings.weight.detach().numpy()
        amax = np.abs(table).max(axis=1, keepdims=True)
        step = np.where(amax > 0, amax / 127, 1.0)
        errors.append(np.abs(np.round(table / step) * step - table).max())
        if aware:
            assert max(errors) < 1e-6, errors
        else:
            assert min(errors[:-1]) > 1e-4  # a plain run's weights are off the grid


def _as_trained(model_dir, aware: bool, batches) -> np.ndarray:
    """Logits of the model as its training computed (and scored) it: plain FP32 PyTorch, or with
    the INT8-aware simulation switched back on."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    if aware:
        qat.Int8Aware(model, freeze_below=0)  # the weights are on the grid: baking keeps them
    with torch.no_grad():
        return np.concatenate([model(**{k: torch.from_numpy(v) for k, v in feeds.items()
                                        if k in ("input_ids", "attention_mask")}).logits.numpy()
                               for feeds in batches])


def test_int8_file_follows_the_model_as_trained(two_runs, tmp_path):
    """An INT8-aware run's INT8 file computes what its training scored (validation and test
    are the INT8 model's) and stays closer to it than a plain run's INT8 file to its FP32 model
    (measured on this tiny model: 0.0005 vs 0.0017 max |Δlogit|)."""
    gaps = {}
    for aware, model_dir in two_runs.items():
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        assert qat.is_int8_aware(config) is aware
        (tmp_path / str(aware)).mkdir()
        _, int8, _, batches = _int8(model_dir, tmp_path / str(aware))
        trained = _as_trained(model_dir, aware, batches)
        assert trained.shape == int8.shape
        gaps[aware] = float(np.abs(int8 - trained).max())
    assert gaps[True] < 0.5 * gaps[False] and gaps[True] < 1e-3, gaps


def test_int8_aware_refuses_a_model_it_cannot_follow():
    from torch import nn

    from core.errors import ConfigError

    class NotAnEncoder(nn.Module):
        base_model = nn.Linear(2, 2)

    with pytest.raises(ConfigError, match="INT8-aware phase needs a BERT-style encoder"):
        qat.Int8Aware(NotAnEncoder(), 0)


def test_export_judges_an_int8_aware_run_by_its_own_evaluated_labels(two_runs, tmp_path):
    """The INT8 files of an INT8-aware run are checked against the labels and macro-F1 its own
    training evaluated (what was validated is what runs); a plain run's against FP32; a file
    whose labels differ from the run's fails the reproduction gate."""
    from core import export, gates
    from core.run import RunFolder

    reports = {}
    for aware, model_dir in two_runs.items():
        result = export.run(export.ExportConfig(
            model=str(model_dir.parent), out_dir=str(tmp_path / str(aware)), openvino=False,
            calibration_size=40, allow_int8_drift=True))
        reports[aware] = result
        assert result.int8["yardstick"] == shipped.YARDSTICKS[aware]
    integer = next(a for a in reports[True].artifacts if a.name == "onnx_int8_integer")
    assert [g["gate"] for g in integer.gates] == ["reproduces_run", "f1_drop"]
    # the run scored its INT8 model with the integer file itself: the export's file reproduces
    # every label (the PyTorch simulation's scores are kept beside them)
    assert integer.metrics["agreement_with_run"] == 100.0, integer.metrics
    assert gates.MIN_REPRODUCED < 100
    metrics = json.loads((two_runs[True].parent / "metrics.json").read_text(encoding="utf-8"))
    simulated = metrics["int8_phase"]["simulated"]
    assert set(simulated) == {"val", "test"} and 0 <= simulated["val"]["agreement_with_file"] <= 1
    assert len(metrics["predictions"]["val"]) == metrics["split_sizes"]["val"]
    assert "the run's own evaluated labels" in reports[True].int8["reason"]
    plain = next(a for a in reports[False].artifacts if a.name == "onnx_int8_integer")
    assert [g["gate"] for g in plain.gates] == ["agreement", "f1_drop"]
    assert "agreement_with_run" not in plain.metrics

    yardstick = shipped.run_yardstick(RunFolder(two_runs[True].parent), None)
    assert shipped.run_yardstick(RunFolder(two_runs[False].parent), None) is None
    doctored = (yardstick["labels"] + 1) % 7  # every label moved to the next class
    scores = {"macro_f1": yardstick["macro_f1"]}
    verdicts = shipped.int8_verdicts(scores, doctored, 0.0, yardstick, "doctored file")
    assert scores["agreement_with_run"] == 0 and not verdicts[0].passed
    assert verdicts[1].passed  # same macro-F1: only the reproduction gate catches it


def test_bundle_of_an_int8_aware_run_ships_its_integer_file(two_runs, tmp_path):
    """The web export gates the file it ships by the same yardstick: an INT8-aware run's
    integer file, reproducing the run's own labels."""
    from core import web_export

    run = two_runs[True].parent
    result = web_export.run(web_export.WebExportConfig(model=str(run), out_dir=str(tmp_path / "b"),
                                                       examples=0))
    report = json.loads((tmp_path / "b" / "bundle_report.json").read_text(encoding="utf-8"))
    assert report["scores"]["yardstick"] == shipped.YARDSTICKS[True]
    assert report["scores"]["agreement_with_run"] == 100.0
    assert [g["gate"] for g in report["gates"]][:2] == ["reproduces_run", "f1_drop"]
    assert json.loads((run / "export_report.json").read_text(encoding="utf-8"))["int8"][
        "method"] == "integer" and result is not None


def test_benchmark_judges_an_int8_aware_run_by_its_own_labels(two_runs, tmp_path):
    """The benchmark's accuracy check follows the export: for an INT8-aware run the rows are
    compared with the labels the run evaluated (here on a subset of its test split), and the
    shipped integer file reproduces them."""
    from core import export
    from core.bench import benchmark

    run = two_runs[True].parent
    if not (run / "onnx" / "model_quantized.onnx").is_file():
        export.run(export.ExportConfig(model=str(run), openvino=False, calibration_size=40))
    result = benchmark.run(benchmark.BenchConfig(str(run), runtimes=("pytorch", "ort-int8"),
                                                 quick=True, eval_size=16, serving=False,
                                                 out_dir=str(tmp_path / "bench"), png=False))
    results = json.loads((tmp_path / "bench" / "results.json").read_text(encoding="utf-8"))
    rows = {rt["key"]: rt for rt in results["runtimes"]}
    assert rows["ort-int8"]["agreement_with_run"] == 100.0
    assert rows["ort-int8"]["f1_delta_vs_run"] == pytest.approx(0.0, abs=1e-9)
    assert "agreement_with_run" not in rows["pytorch"]  # the baseline: the FP32 twin
    assert result.targets["yardstick"] == "run"
    assert results["eval"]["yardstick"] == shipped.YARDSTICKS[True]
