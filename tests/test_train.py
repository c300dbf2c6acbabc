"""Training with frozen lower layers, the frozen-prefix cache, metrics, predict and the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.errors import ConfigError, DatasetError, ModelError
from core.train import TrainConfig, classification_metrics, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(base, data, out, **kw) -> TrainConfig:
    defaults = dict(data=str(data), base=str(base), out_dir=str(out), freeze_below=1, epochs=6,
                    learning_rate=1e-3, batch_size=8, max_length=48, patience=0, val_frac=0.2,
                    test_frac=0.1, log_every=2, int8_epochs=0)  # the FP32 loop (test_qat: phase)
    return TrainConfig(**{**defaults, **kw})


def _weights(folder) -> dict:
    return load_file(str(Path(folder) / "model.safetensors"))


@pytest.fixture(scope="module")
def e5_run(tiny_e5_dir, small_dataset, tmp_path_factory):
    """One cached training run of the tiny e5 cut, shared by several tests."""
    events: list[dict] = []
    out = tmp_path_factory.mktemp("run_e5")
    config = _config(tiny_e5_dir, small_dataset, out, epochs=8, learning_rate=2e-3)
    result = run(config, on_progress=events.append)
    return result, events, out


def test_config_validation_says_how_to_fix():
    with pytest.raises(ConfigError, match="freeze_below must be >= 0"):
        TrainConfig(freeze_below=-1)
    with pytest.raises(ConfigError, match="val_frac"):
        TrainConfig(val_frac=0)
    with pytest.raises(ConfigError, match="max_length"):
        TrainConfig(max_length=4)
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        TrainConfig(learning_rate=0)


def test_default_run_dir_is_in_workspace(studio_workspace):
    assert TrainConfig().run_dir() == studio_workspace / "runs" / "default"


def test_classification_metrics_by_hand():
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0,
                                   "f1": pytest.approx(0.8), "support": 2}
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_tiny_e5_learns_and_saves_a_run(e5_run, small_dataset):
    from core import data, predict

    result, _, out = e5_run
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]
    model_dir = Path(result.model_dir)
    assert model_dir == out / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "기쁨", "1": "슬픔", "2": "중립"}
    assert (model_dir / "tokenizer.json").is_file()
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok_config["model_max_length"] == 48 and "local_files_only" not in tok_config
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == result.best_epoch
    assert metrics["val"]["macro_f1"] == max(h["val_macro_f1"] for h in result.history)
    assert set(metrics["test"]["per_class"]) == {"기쁨", "슬픔", "중립"}
    assert len(metrics["val"]["confusion_matrix"]) == 3 and metrics["config"]["freeze_below"] == 1
    # training accuracy far above chance (1/3), measured by the saved model itself
    split = data.split_records(data.load_dataset(small_dataset), 0.2, 0.1, 13)
    preds = predict.predict(out, [r.text for r in split.train])
    accuracy = sum(p.label == r.label for p, r in zip(preds, split.train)) / len(split.train)
    assert accuracy > 0.7
    assert all(abs(sum(p.probs.values()) - 1) < 1e-5 for p in preds)


def test_frozen_weights_stay_bit_identical(e5_run, tiny_e5_dir):
    result, _, _ = e5_run
    before, after = _weights(tiny_e5_dir), _weights(result.model_dir)
    frozen = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0."))]
    assert len(frozen) > 10
    for key in frozen:
        assert torch.equal(before[key], after["roberta." + key]), key
    trained = "encoder.layer.1.output.dense.weight"
    assert not torch.equal(before[trained], after["roberta." + trained])
    assert result.trainable_params < result.total_params


def test_progress_events(e5_run):
    _, events, _ = e5_run
    setup = next(e for e in events if e.get("kind") == "setup")
    assert setup["num_layers"] == 2 and setup["freeze_below"] == 1
    assert 0 < setup["trainable_params"] < setup["total_params"]
    steps = [e for e in events if e.get("kind") == "step"]
    assert steps and all({"loss", "lr", "examples_per_s", "done", "total"} <= set(e) for e in steps)
    assert steps[-1]["done"] == steps[-1]["total"]
    epochs = [e for e in events if e.get("kind") == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 9))
    assert all("val_macro_f1" in e and "seconds" in e for e in epochs)


def test_cache_gives_the_same_training_and_seed_repeats(tiny_e5_dir, small_dataset, tmp_path):
    runs = {}
    for name, cache in (("cached", True), ("again", True), ("uncached", False)):
        runs[name] = run(_config(tiny_e5_dir, small_dataset, tmp_path / name, epochs=3,
                                 cache_frozen=cache))
    w = {name: _weights(r.model_dir) for name, r in runs.items()}
    for key in w["cached"]:  # same seed, same data, CPU: the same result, bit for bit
        assert torch.equal(w["cached"][key], w["again"][key]), key
        assert torch.allclose(w["cached"][key], w["uncached"][key], atol=1e-5), key
    loss = {name: [h["train_loss"] for h in r.history] for name, r in runs.items()}
    assert loss["cached"] == pytest.approx(loss["uncached"], rel=1e-5)


def test_tiny_bert_with_token_type_ids_trains(tiny_bert_dir, small_dataset, tmp_path):
    from core import predict
    from core.runtimes import load

    result = run(_config(tiny_bert_dir, small_dataset, tmp_path, epochs=6, freeze_below=1))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    rt = load(tmp_path)
    assert "token_type_ids" in rt.encode(["안녕"])
    assert rt.max_length == 48 and rt.labels == ["기쁨", "슬픔", "중립"]
    assert predict.predict(rt, ["오늘 정말 행복해"])[0].label in rt.labels


def test_freeze_below_more_than_layers(tiny_e5_dir, small_dataset, tmp_path):
    with pytest.raises(ConfigError, match="choose 0..2"):
        run(_config(tiny_e5_dir, small_dataset, tmp_path, freeze_below=3, epochs=1))


def test_freeze_all_layers_and_early_stopping(tiny_e5_dir, small_dataset, tmp_path):
    torch.set_num_threads(2)
    try:
        result = run(_config(tiny_e5_dir, small_dataset, tmp_path, freeze_below=2, epochs=6,
                             learning_rate=1e-9, patience=1, num_threads=1))
        assert torch.get_num_threads() == 2  # num_threads applies only during the run
    finally:
        torch.set_num_threads(1)
    assert result.stopped_early and result.epochs_run < 6 and result.best_epoch == 1
    assert result.trainable_params < 200_000  # only the classifier head


def _cli(argv: list[str]):
    from core.train_cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args, args.handler(args)


def test_train_cli_flags_map_to_config():
    from core.train_cli import register, train_config_from_args

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--freeze-below", "2", "--epochs", "3", "--lr", "0.001",
                              "--no-cache", "--labels", "기쁨,슬픔", "--out", "/tmp/x"])
    config = train_config_from_args(args)
    assert (config.freeze_below, config.epochs, config.learning_rate) == (2, 3, 0.001)
    assert config.cache_frozen is False and config.labels == ("기쁨", "슬픔")
    assert config.out_dir == "/tmp/x" and config.base == "e5-small-ko"
    default = train_config_from_args(parser.parse_args(["train"]))
    assert default == TrainConfig()


def test_predict_cli_jsonl_and_text(e5_run, tmp_path, capsys):
    _, _, run_dir = e5_run
    src = tmp_path / "in.jsonl"
    rows = [{"text": "시험에 붙어서 너무 기뻐", "id": 1}, {"text": "회의는 3시예요", "id": 2}]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    out = tmp_path / "out.jsonl"
    _, (code, result) = _cli(["predict", "--model", str(run_dir), "--input", str(src),
                              "--output", str(out)])
    assert code == 0 and result["count"] == 2
    lines = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    for row, line in zip(rows, lines):
        assert {k: line[k] for k in row} == row
        assert line["pred"] in {"기쁨", "슬픔", "중립"} and set(line["probs"]) == {"기쁨", "슬픔", "중립"}
        assert line["pred"] == max(line["probs"], key=line["probs"].get)
    capsys.readouterr()
    _, (code, result) = _cli(["predict", "--model", str(run_dir / "model"), "--text", "슬퍼"])
    printed = json.loads(capsys.readouterr().out.strip())
    assert code == 0 and printed == result["predictions"][0] and printed["text"] == "슬퍼"


def test_predict_cli_errors(e5_run, tmp_path):
    _, _, run_dir = e5_run
    with pytest.raises(ConfigError, match="--output"):
        _cli(["predict", "--model", str(run_dir), "--input", "x.jsonl"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "좋아"}\n{"label": "x"}\n', "utf-8")
    with pytest.raises(DatasetError, match="line 2"):
        _cli(["predict", "--model", str(run_dir), "--input", str(bad), "--output",
              str(tmp_path / "o.jsonl")])
    with pytest.raises(ModelError, match="no model folder"):
        _cli(["predict", "--model", str(tmp_path), "--text", "좋아"])


def test_predict_cli_same_labels_from_run_onnx_and_openvino(tiny_e5_run, tmp_path):
    from core import export

    export.run(export.ExportConfig(model=str(tiny_e5_run), out_dir=str(tmp_path), allow_int8_drift=True,
                                   calibration_size=20, optimize=False))
    texts = ["회의는 3시로 바뀌었어요", "헐 대박 합격했어!!", "왜 나만 빼고 다 만나"]
    argv = [arg for t in texts for arg in ("--text", t)]
    preds = {}
    for model in (tiny_e5_run, tmp_path / "onnx" / "model.onnx",
                  tmp_path / "openvino" / "model.xml"):
        _, (code, result) = _cli(["predict", "--model", str(model), *argv])
        assert code == 0
        preds[model] = [(r["pred"], round(max(r["probs"].values()), 3))
                        for r in result["predictions"]]
    assert len(set(map(tuple, preds.values()))) == 1, preds


def test_lever_options_are_checked():
    with pytest.raises(ConfigError, match="label_smoothing must be in"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(ConfigError, match="layer_decay must be in"):
        TrainConfig(layer_decay=0)
    with pytest.raises(ConfigError, match="reinit_top must be >= 0"):
        TrainConfig(reinit_top=-1)


def test_layer_decay_gives_each_layer_its_rate(tiny_e5_dir):
    from core.freeze import FrozenPrefix
    from core.models.registry import load_for_classification
    from core.train import Trainer

    model, _, _ = load_for_classification(str(tiny_e5_dir), ["a", "b"])
    FrozenPrefix(model, 0)  # every layer trains: embeddings, 2 layers, head
    trainer = Trainer.__new__(Trainer)
    trainer.model, trainer.config = model, TrainConfig(learning_rate=1e-3, layer_decay=0.5)
    trainer.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rate = {id(p): g["lr"] for g in trainer._param_groups() for p in g["params"]}
    assert sum(len(g["params"]) for g in trainer._param_groups()) == len(trainer.named)
    base = model.base_model
    top, below = base.encoder.layer[1], base.encoder.layer[0]
    for module, want in ((model.classifier, 1e-3), (top, 5e-4), (below, 2.5e-4),
                         (base.embeddings, 1.25e-4)):
        assert [rate[id(p)] for p in module.parameters()] == pytest.approx(
            [want] * len(list(module.parameters())))


def test_init_seed_keeps_the_split_and_reinit_and_smoothing_change_training(
        tiny_e5_dir, small_dataset, tmp_path):
    kw = dict(epochs=2)
    plain = run(_config(tiny_e5_dir, small_dataset, tmp_path / "plain", **kw))
    other = run(_config(tiny_e5_dir, small_dataset, tmp_path / "other", init_seed=99, **kw))
    assert other.split_sizes == plain.split_sizes
    assert other.val["count"] == plain.val["count"]
    assert [h["train_loss"] for h in other.history] != [h["train_loss"] for h in plain.history]
    still = dict(epochs=1, learning_rate=1e-9)  # weights stay (to float precision) as loaded
    start = run(_config(tiny_e5_dir, small_dataset, tmp_path / "start", **still))
    smooth = run(_config(tiny_e5_dir, small_dataset, tmp_path / "smooth", label_smoothing=0.2,
                         **still))
    # the training loss is smoothed, the validation loss stays plain cross-entropy
    assert smooth.history[0]["train_loss"] != pytest.approx(start.history[0]["train_loss"])
    assert smooth.history[0]["val_loss"] == pytest.approx(start.history[0]["val_loss"])
    reinit = run(_config(tiny_e5_dir, small_dataset, tmp_path / "reinit", reinit_top=1, **still))
    w_re, w_start = _weights(reinit.model_dir), _weights(start.model_dir)
    top = [k for k in w_start if ".layer.1." in k and k.endswith("dense.weight")]
    low = [k for k in w_start if ".layer.0." in k]
    assert top and all(not torch.allclose(w_re[k], w_start[k]) for k in top)
    assert all(torch.equal(w_re[k], w_start[k]) for k in low)  # frozen layer 0 untouched
    with pytest.raises(ConfigError, match="reinit_top 2 is more than the 1 trainable"):
        run(_config(tiny_e5_dir, small_dataset, tmp_path / "bad", reinit_top=2))
