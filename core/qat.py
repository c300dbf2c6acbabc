"""INT8-aware training: the encoder computes as the export's integer INT8 graph will.

The export's integer recipe (``quant_recipes.per_token_int8``) quantizes every encoder Linear's
input per token and its weight per output channel, and the embedding tables per row, on the grids
of :mod:`core.quant.grids`. By default a training run ends with an INT8-aware phase
(``TrainConfig.int8_epochs``; the common quantization-aware-training practice: start from the
trained FP32 weights, fine-tune briefly at a small learning rate, distil from the FP32 model):

* the frozen prefix's weights (embeddings included) are *baked* onto those grids, so the saved
  model holds exactly the weights the INT8 file holds (re-quantizing an on-grid weight gives it
  back: no weight rounding error is left for the export), and its Linears quantize their inputs
  per token, so the cached prefix outputs are the quantized prefix's;
* the trained layers see fake-quantized weights and inputs (straight-through estimator: the
  rounding is skipped in the backward pass), learn from the labels and from the FP32 model's
  logits (:func:`distill_loss`), and are baked onto the grid at the end.

The run's validation and test scores are then the INT8 computation's, and the saved config.json
records :data:`MARKER`, so the export keeps the grid (no SmoothQuant rescaling, which would move
the weights off it) and checks its integer file against the run's own evaluated labels.
"""

from __future__ import annotations

import types

from core.errors import ConfigError
from core.quant.grids import ACT_QMAX, EMB_QMAX, EPS, W7

MARKER = "studio_int8_aware"  # model config key: weights on the integer recipe's grids


def fake_quant_tokens(x):
    """``x`` [..., K] rounded to int8 with one symmetric scale per row, as the INT8 graph does
    (:func:`core.quant.grids.token_scale`); gradients pass straight through."""
    import torch

    inv = torch.tensor(1.0 / ACT_QMAX, dtype=x.dtype, device=x.device)
    scale = torch.clamp(x.detach().abs().amax(-1, keepdim=True) * inv, min=EPS)
    return x + (torch.round(x.detach() / scale) * scale - x.detach())


def quantized_rows(w, qmax: int):
    """``w`` [rows, K] on a symmetric grid with one scale per row (rows = a Linear's output
    channels, or an embedding table's entries): the values the INT8 file will compute with."""
    import torch

    amax = w.detach().abs().amax(1, keepdim=True)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return torch.clamp(torch.round(w.detach() / scale), -qmax, qmax) * scale


def distill_loss(logits, teacher, labels, temperature: float, alpha: float):
    """``alpha`` x KL(teacher || student) at ``temperature`` (scaled by T^2 so its gradients keep
    their size as T changes; Hinton et al., arXiv 1503.02531) + (1 - ``alpha``) x cross-entropy
    on the labels. ``teacher``: the FP32 model's logits for the same examples."""
    from torch.nn import functional

    t = float(temperature)
    kl = functional.kl_div(functional.log_softmax(logits / t, -1),
                           functional.log_softmax(teacher / t, -1), log_target=True,
                           reduction="batchmean") * t * t
    return alpha * kl + (1 - alpha) * functional.cross_entropy(logits, labels)


def _forward(self, x):  # bound to an nn.Linear: fake-quantized input and weight
    from torch.nn import functional

    w = self.weight  # a frozen (baked) weight is on the grid already
    wq = w + (quantized_rows(w, W7) - w.detach()) if w.requires_grad else w
    return functional.linear(fake_quant_tokens(x), wq, self.bias)


def encoder_linears(layers) -> list:
    """Every nn.Linear inside these encoder layers (Q/K/V, attention output, FFN up and down):
    the MatMuls the integer recipe quantizes. The classifier head stays FP32, as there."""
    from torch import nn

    return [m for layer in layers for m in layer.modules() if isinstance(m, nn.Linear)]


def embedding_tables(model) -> list:
    from torch import nn

    return [m for m in model.base_model.embeddings.modules() if isinstance(m, nn.Embedding)]


def bake(linears, tables=()) -> None:
    """Put weights onto the INT8 grids in place (Linear per output channel 7-bit, embedding
    tables per row int8)."""
    import torch

    with torch.no_grad():
        for m in linears:
            m.weight.copy_(quantized_rows(m.weight, W7))
        for t in tables:
            t.weight.copy_(quantized_rows(t.weight, EMB_QMAX))


class Int8Aware:
    """Switches a whole classification model (before core.freeze.FrozenPrefix splits it) to
    INT8-aware computation: the embeddings and layers below ``freeze_below`` are baked now, every
    encoder Linear fake-quantizes. :meth:`finish` (after training) bakes the trained weights,
    restores the plain forwards and marks the model's config."""

    def __init__(self, model, freeze_below: int):
        layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
        if layers is None or not hasattr(model.base_model, "embeddings"):
            raise ConfigError(f"train: the INT8-aware phase needs a BERT-style encoder "
                              f"(embeddings + encoder.layer); {type(model).__name__} is not: "
                              "train with int8_epochs 0 (--int8-epochs 0)")
        self.model, layers = model, list(layers)
        self.linears, self.tables = encoder_linears(layers), embedding_tables(model)
        bake(encoder_linears(layers[:freeze_below]), self.tables if freeze_below else ())
        for m in self.linears:
            m.forward = types.MethodType(_forward, m)

    def finish(self) -> None:
        bake(self.linears, self.tables)  # the frozen ones are on the grid already: unchanged
        for m in self.linears:
            del m.forward  # back to nn.Linear.forward
        setattr(self.model.config, MARKER, True)


def int8_phase(fp32, outcome: dict, config, emit):
    """The INT8-aware phase on the trained FP32 model (``fp32``: core.train.Trainer after its
    fit, ``outcome`` what the fit returned, ``config`` the run's TrainConfig): its logits on the
    training split become the teacher, the model switches to the INT8 computation (prefix baked,
    a new prefix cache, fake-quantized trained layers) and trains ``int8_epochs`` at ``int8_lr``.
    Epoch 0 (the INT8 computation on the FP32 weights, i.e. post-training quantization) is a
    candidate, so the phase never ends worse on validation. Returns (trainer, outcome)."""
    import time
    from dataclasses import replace

    from core.freeze import FrozenPrefix

    t0 = time.perf_counter()
    teacher = fp32.logits("train")
    model = fp32.acc.unwrap_model(fp32.model)
    fp32.prefix.restore()
    int8 = Int8Aware(model, config.freeze_below)
    prefix = FrozenPrefix(model, config.freeze_below)
    phase_config = replace(config, epochs=config.int8_epochs, learning_rate=config.int8_lr,
                           label_smoothing=0.0, patience=0)
    trainer = type(fp32)(fp32.acc, model, prefix, fp32.loaders, phase_config, fp32.labels, emit,
                         teacher=teacher, phase="int8", steps_around=(fp32.step, 0))
    trainer.examples_seen = fp32.examples_seen
    # the INT8 computation on the FP32 weights (post-training quantization, round to nearest):
    # its test score here, its validation score is the phase's epoch 0
    ptq = ({"test_macro_f1": trainer.evaluate("test")[0]["macro_f1"]}
           if len(fp32.loaders["test"]) else {})
    phase = trainer.fit(from_start=True)
    ptq["val_macro_f1"] = phase["history"][0]["val_macro_f1"]
    int8.finish()  # the best epoch's weights onto the INT8 grids; plain forwards again
    history = outcome["history"] + phase["history"]
    summary = {"fp32": {k: outcome[k] for k in ("val", "test", "best_epoch")},
               "ptq": ptq,
               "best_epoch": phase["best_epoch"], "epochs": config.int8_epochs,
               "seconds": round(time.perf_counter() - t0, 2)}
    return trainer, {**phase, "best_epoch": outcome["best_epoch"], "history": history,
                     "epochs_run": outcome["epochs_run"],  # FP32 epochs; the phase's below
                     "stopped_early": outcome["stopped_early"],
                     "epoch_seconds": outcome["epoch_seconds"] + phase["epoch_seconds"],
                     "int8_phase": summary}


def score_int8_file(outcome: dict, staging, split, labels: list[str], max_length: int,
                    emit) -> None:
    """An INT8-aware run reports and records what its exported integer file computes: validation
    and test are scored by that file (core.quant.shipped.integer_file_logits) in place of the
    PyTorch simulation, whose scores stay in ``int8_phase["simulated"]`` with the share of
    labels the two agree on. ``staging``: the new run folder, its model/ saved."""
    import shutil

    import numpy as np

    from core.predict import classification_metrics
    from core.quant import shipped

    emit({"message": "scoring the integer INT8 file on validation and test"})
    parts = {part: getattr(split, part) for part in ("val", "test") if getattr(split, part)}
    work = staging / ".int8-file"
    try:
        texts = {p: [r.text for r in rows] for p, rows in parts.items()}
        logits = shipped.integer_file_logits(staging / "model", work, max_length, texts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ids = {label: i for i, label in enumerate(labels)}
    simulated = outcome["int8_phase"]["simulated"] = {}
    for part, rows in parts.items():
        gold = np.array([ids[r.label] for r in rows])
        z = logits[part] - logits[part].max(-1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))
        preds = logits[part].argmax(-1).tolist()
        metrics = classification_metrics(gold.tolist(), preds, labels)
        metrics["loss"] = float(-log_probs[np.arange(len(gold)), gold].mean())
        simulated[part] = {"macro_f1": outcome[part]["macro_f1"], "agreement_with_file": float(
            np.mean(np.array(preds) == np.array(outcome["predictions"][part])))}
        outcome[part], outcome["predictions"][part] = metrics, preds


def is_int8_aware(model_config: dict) -> bool:
    return bool(model_config.get(MARKER))
