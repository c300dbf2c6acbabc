"""Fine-tune an encoder for emotion classification with its lower layers frozen.

One loop on Hugging Face Accelerate, so the same code runs on CPU, one GPU or several GPUs:
``accelerate launch -m core train ...`` (e.g. ``accelerate launch --multi_gpu --num_processes 2
-m core train --base klue/bert-base``). Freezing below K keeps the embeddings and encoder layers
0..K-1 fixed; they run in eval mode, so their output for an example never changes and is computed
once and cached (frozen-prefix caching): later epochs only run the upper layers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import data, paths, qat
from core.data import SPLIT_SEED, TEST_FRAC, VAL_FRAC
from core.errors import ConfigError
from core.models.registry import BUNDLED_DEFAULT
from core.predict import classification_metrics  # noqa: F401  (re-exported: train's evaluation)
from core.freeze import FrozenPrefix
from core.progress import ProgressFn

log = logging.getLogger(__name__)

# Chosen by measurement on the seed set (1,828 rows; split 1278/275/275, seed 13), e5-small-ko,
# 8 epochs, batch 16, max_length 64, best epoch by validation macro-F1 (val / test macro-F1):
#   K=0 lr 1e-4: 0.740 / 0.738   K=4 lr 1e-4: 0.745 / 0.728   K=4 lr 2e-4: 0.721 / 0.738
#   K=7 lr 1e-4: 0.751 / 0.714   K=7 lr 2e-4: 0.751 / 0.717
# K=7 has the best validation score (differences are within noise for 275 sentences) and trains
# 9.0M of 36.5M parameters. Epoch time (1 torch thread, training pass only): K=0 68 s; K=7 33 s
# uncached, 23 s cached (epochs after the first); K=4 44 s uncached, 38 s cached.
DEFAULT_FREEZE_BELOW = 7


@dataclass(frozen=True)
class TrainConfig:
    data: str | None = None  # dataset file or saved dataset name; None = the shipped seed set
    base: str = BUNDLED_DEFAULT  # bundled name, Hugging Face hub id or local model folder
    out_dir: str | None = None  # run folder; None = workspace/runs/default
    freeze_below: int = DEFAULT_FREEZE_BELOW  # freeze embeddings + layers below K (0 = none)
    epochs: int = 5  # maximum epochs (early stopping may end sooner). 5 gives the validation
    # macro-F1 of 8 (0.806 over 2 seeds) in 264 s instead of 368-378 s on a 2-core AVX2 CPU
    # (bench/results/train_levers_avx2.md, train_speed_avx2.md); its INT8 file passes the gates
    # since the weight-only file is GPTQ-rounded (99.85% agreement; MatMulNBits gave 98.92%)
    learning_rate: float = 2e-4  # AdamW peak learning rate
    batch_size: int = 16  # training examples per step (all processes together)
    max_length: int = 64  # tokens per text, truncated; the seed texts are 1-58 characters
    warmup_ratio: float = 0.1  # share of steps with a linearly rising learning rate
    weight_decay: float = 0.01  # AdamW decay (not applied to biases and LayerNorm)
    max_grad_norm: float = 1.0  # gradient clipping
    seed: int = SPLIT_SEED  # split and initialisation: same seed, same data -> same result
    patience: int = 3  # stop after this many epochs without a better val macro-F1 (0 = never)
    cache_frozen: bool = True  # cache the frozen prefix's hidden states (same result, faster)
    val_frac: float = VAL_FRAC  # stratified validation share (early stopping, model choice)
    test_frac: float = TEST_FRAC  # stratified test share (reported once, for the best epoch)
    use_saved_split: bool = True  # a dataset saved with a split (Dataset page) keeps that split
    # (its fractions and seed replace val_frac/test_frac/seed's split role); False: split here
    labels: tuple[str, ...] | None = None  # label order; None = default order of labels present
    eval_batch_size: int = 64  # batch size for validation/test
    log_every: int = 10  # progress event every N steps
    num_threads: int = 0  # torch CPU threads; 0 = torch's default (one per core)
    # Recipe levers (bench/train_levers.py measures each against the default with several seeds):
    init_seed: int | None = None  # head initialisation and batch order; None = seed. Varying it
    # with the split fixed (seed) measures how much a result moves from run to run alone.
    label_smoothing: float = 0.0  # training loss only; validation/test loss is plain cross-entropy
    layer_decay: float = 1.0  # layer-wise lr decay: the head keeps learning_rate, the top encoder
    # layer gets lr x decay, each one below another x decay (1.0 = one rate for all)
    reinit_top: int = 0  # re-initialise the top N encoder layers before training (N <= layers - K)
    # INT8-aware phase (core/qat.py): after the FP32 epochs, the model computes as the export's
    # integer INT8 graph does and is fine-tuned that way, distilling from the FP32 model; its
    # validation/test scores are then the INT8 computation's, the model the INT8 file is
    int8_epochs: int = 1  # INT8-aware epochs after the FP32 ones (0 = a plain FP32 model that
    # the export quantizes after training). One epoch of pure distillation at 5e-5: its integer
    # file scored -0.21 / +0.01 macro-F1 points against the plain FP32 model on validation / test
    # (mean of 3 init seeds), the export's post-training per-token INT8 of the FP32 model
    # -0.52 / +0.06 (bench/results/int8_phase.md); it adds about a minute to training
    int8_lr: float = 5e-5  # peak learning rate of the INT8-aware phase
    distill_temperature: float = 2.0  # softmax temperature of the distillation term
    distill_alpha: float = 1.0  # weight of the distillation term (the rest: cross-entropy on
    # the labels); 1.0 beat 0.5 in bench/results/int8_phase.md

    def __post_init__(self):
        checks = [
            (self.freeze_below >= 0, "freeze_below must be >= 0 (0 trains every layer)"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (0 < self.learning_rate < 1, "learning_rate must be in (0, 1), e.g. 5e-5"),
            (self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be >= 1"),
            (8 <= self.max_length <= 512, "max_length must be between 8 and 512 tokens"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1), e.g. 0.1"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.max_grad_norm > 0, "max_grad_norm must be > 0, e.g. 1.0"),
            (self.patience >= 0, "patience must be >= 0 (0 disables early stopping)"),
            (0 < self.val_frac < 1, "val_frac must be in (0, 1): early stopping needs validation"),
            (0 <= self.test_frac < 1 and self.val_frac + self.test_frac < 1,
             "test_frac must be in [0, 1) and val_frac + test_frac < 1"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.num_threads >= 0, "num_threads must be >= 0 (0 = torch's default)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1), e.g. 0.1"),
            (0 < self.layer_decay <= 1, "layer_decay must be in (0, 1], e.g. 0.8 (1 = off)"),
            (self.reinit_top >= 0, "reinit_top must be >= 0 (0 = keep every pretrained layer)"),
            (self.int8_epochs >= 0, "int8_epochs must be >= 0 (0 = no INT8-aware phase)"),
            (0 < self.int8_lr < 1, "int8_lr must be in (0, 1), e.g. 5e-5"),
            (self.distill_temperature > 0, "distill_temperature must be > 0, e.g. 2"),
            (0 <= self.distill_alpha <= 1, "distill_alpha must be in [0, 1], e.g. 0.5"),
            (bool(str(self.base).strip()), f"base must name a model, e.g. {BUNDLED_DEFAULT}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"train: {message}")

    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else paths.runs_dir() / "default"

    def init_rng_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed


@dataclass
class TrainResult:
    run_dir: str  # the run folder (metrics.json lives here)
    model_dir: str  # the saved Hugging Face model folder (run_dir/model)
    labels: list[str]
    base: str
    freeze_below: int
    num_layers: int
    trainable_params: int
    total_params: int
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    val: dict  # metrics of the best epoch on the validation split
    test: dict | None  # metrics of the best epoch on the test split (None if test_frac = 0)
    train_seconds: float
    epoch_seconds: list[float] = field(default_factory=list)  # training pass only, no validation
    history: list[dict] = field(default_factory=list)  # per epoch: loss, val metrics, seconds
    split_sizes: dict = field(default_factory=dict)
    processes: int = 1  # training processes (Accelerate / torchrun), each computing a batch slice
    examples_seen: int = 0  # training examples the main process computed, summed over epochs
    # predicted label ids of the final model in split order ({"val": [...], "test": [...]}): the
    # export checks that its INT8 file reproduces them
    predictions: dict = field(default_factory=dict)
    # the INT8-aware phase (None without one): the FP32 model's scores before it ("fp32"), the
    # INT8 computation's on the FP32 weights ("ptq", its epoch 0), its epochs and seconds, and
    # the PyTorch simulation's scores ("simulated"; val and test above are the INT8 file's)
    int8_phase: dict | None = None


def _label_order(records, wanted: tuple[str, ...] | None) -> list[str]:
    from core.labels import DEFAULT_LABEL_NAMES

    present = {r.label for r in records}
    if wanted:
        unknown = sorted(present - set(wanted))
        if unknown:
            raise ConfigError(f"train: the dataset uses labels {unknown} that are not in --labels "
                              f"{list(wanted)}; add them or drop those records")
        return list(wanted)
    if len(present) < 2:
        raise ConfigError(f"train: the dataset has only the label(s) {sorted(present)}; "
                          "a classifier needs at least two")
    ordered = [name for name in DEFAULT_LABEL_NAMES if name in present]
    return ordered + sorted(present - set(DEFAULT_LABEL_NAMES))


def _encode(tokenizer, records, label_ids: dict[str, int], max_length: int) -> list[dict]:
    enc = tokenizer([r.text for r in records], truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    return [{"idx": i, "labels": label_ids[r.label], **{k: enc[k][i] for k in keys}}
            for i, r in enumerate(records)]


def _collate(pad_id: int):
    import torch

    def collate(examples: list[dict]) -> dict:
        width = max(len(e["input_ids"]) for e in examples)
        batch = {"idx": torch.tensor([e["idx"] for e in examples]),
                 "labels": torch.tensor([e["labels"] for e in examples])}
        for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
            if key in examples[0]:  # right padding: the cache keeps positions [:length]
                batch[key] = torch.tensor([e[key] + [fill] * (width - len(e[key]))
                                           for e in examples])
        return batch

    return collate


class LengthBatches:
    """Batches of texts of similar length, so little compute goes to padding (the seed texts are
    1-91 characters; random batches pad every text to the batch's longest).

    Training (``shuffle``): each epoch shuffles the indices, cuts them into pools of ``pool``
    batches, sorts each pool by length, batches it and shuffles the batches: still a random order
    of examples across epochs. Evaluation: sorted by length, fixed. Deterministic for a seed, and
    the same on every process (Accelerate then gives each process its slice of each batch)."""

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool, seed: int,
                 pool: int = 50):
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.seed, self.pool, self.epoch = seed, pool, 0

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        import random

        order = list(range(len(self.lengths)))
        if not self.shuffle:
            order.sort(key=lambda i: self.lengths[i])
            yield from (order[i:i + self.batch_size] for i in range(0, len(order),
                                                                       self.batch_size))
            return
        rng = random.Random(f"{self.seed}:{self.epoch}")
        self.epoch += 1
        rng.shuffle(order)
        span = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk),
                                                                     self.batch_size)]
        rng.shuffle(batches)
        yield from batches


def _loader(examples, batch_size: int, pad_id: int, shuffle: bool, seed: int):
    from torch.utils.data import DataLoader

    batches = LengthBatches([len(e["input_ids"]) for e in examples], batch_size, shuffle, seed)
    return DataLoader(examples, batch_sampler=batches, collate_fn=_collate(pad_id))


class Trainer:
    """The Accelerate loop: AdamW, linear warm-up/decay, clipping, early stopping, best epoch."""

    def __init__(self, accelerator, model, prefix: FrozenPrefix, loaders: dict,
                 config: TrainConfig, labels: list[str], emit: ProgressFn,
                 teacher: dict | None = None, phase: str = "train",
                 steps_around: tuple[int, int] = (0, 0)):
        self.acc, self.prefix, self.config, self.labels, self.emit = (
            accelerator, prefix, config, labels, emit)
        self.model, self.loaders, self.phase = model, loaders, phase
        # training example index -> the FP32 model's logits: the loss distils from them
        self.teacher = teacher
        self.steps_around = steps_around  # progress steps of the phases before and after this
        self.examples_seen = 0  # training examples this process computed (phases add up)
        # one cache per split: example index -> hidden states of its real tokens [len, hidden]
        self.cache = {part: {} for part in loaders} if config.cache_frozen else None

    def _hidden(self, batch: dict, part: str):
        """The frozen prefix's output for a batch: from the cache, or computed (and cached)."""
        import torch

        if self.prefix.module is None:
            return None
        cache = self.cache[part] if self.cache is not None else None
        idx = batch["idx"].tolist()
        if cache is not None and all(i in cache for i in idx):
            rows = [cache[i] for i in idx]
            out = rows[0].new_zeros(len(rows), batch["input_ids"].shape[1], rows[0].shape[-1])
            for j, row in enumerate(rows):  # padded positions stay 0: the attention mask hides them
                out[j, : row.shape[0]] = row
            return out
        with torch.no_grad():
            hidden = self.prefix(batch)
        if cache is not None:
            for j, (i, n) in enumerate(zip(idx, batch["attention_mask"].sum(1).tolist())):
                cache[i] = hidden[j, :n].clone()
        return hidden

    def _forward(self, batch: dict, part: str, model=None, smoothing: float = 0.0):
        """(logits, mean cross-entropy loss) for a batch; ``smoothing`` only while training."""
        from torch.nn import functional

        hidden = self._hidden(batch, part)
        if hidden is None:
            keys = ("input_ids", "attention_mask", "token_type_ids")
            inputs = {k: batch[k] for k in keys if k in batch}
        else:
            inputs = {"inputs_embeds": hidden, "attention_mask": batch["attention_mask"]}
        logits = (model or self.model)(**inputs).logits
        return logits, functional.cross_entropy(logits, batch["labels"],
                                                label_smoothing=smoothing)

    def _predict(self, part: str) -> tuple[dict, float, int]:
        """({example index: (gold, logits)}, loss sum, count) over a whole split, in eval mode."""
        import torch

        model = self.acc.unwrap_model(self.model)
        model.eval()
        out, loss_sum, count = {}, 0.0, 0
        with torch.no_grad():
            for batch in self.loaders[part]:
                batch = {k: v.to(self.acc.device) for k, v in batch.items()}
                logits, loss = self._forward(batch, part, model)
                for i, gold, row in zip(batch["idx"].tolist(), batch["labels"].tolist(),
                                        logits.cpu()):
                    out[i] = (gold, row)
                loss_sum += float(loss) * len(batch["labels"])
                count += len(batch["labels"])
        return out, loss_sum, count

    def logits(self, part: str) -> dict:
        """Example index -> logits of the model as it is now (e.g. the distillation teacher)."""
        return {i: row for i, (_, row) in self._predict(part)[0].items()}

    def evaluate(self, part: str) -> tuple[dict, list[int]]:
        """(metrics, predicted label ids in split order) on a whole split. Every process scores
        all of it with the unwrapped model (no collectives, no uneven gathers), so every process
        takes the same early-stopping step."""
        scored, loss_sum, count = self._predict(part)
        order = sorted(scored)
        golds = [scored[i][0] for i in order]
        preds = [int(scored[i][1].argmax()) for i in order]
        metrics = classification_metrics(golds, preds, self.labels)
        metrics["loss"] = loss_sum / max(count, 1)
        return metrics, preds

    def _param_groups(self) -> list[dict]:
        """AdamW groups: no weight decay on biases/LayerNorm; with ``layer_decay`` < 1 each
        encoder layer's rate shrinks with its depth below the top (the head keeps the full rate;
        embeddings, when trained, sit below layer 0)."""
        cfg = self.config
        base = self.model.base_model
        layers = list(base.encoder.layer)  # the trainable ones (the prefix holds the rest)
        depth = {}  # parameter id -> layers below the head
        for i, layer in enumerate(layers):
            for p in layer.parameters():
                depth[id(p)] = len(layers) - i
        for p in base.embeddings.parameters():
            depth[id(p)] = len(layers) + 1
        no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n  # noqa
        groups: dict[tuple, dict] = {}
        for n, p in self.named:
            scale = cfg.layer_decay ** depth.get(id(p), 0)
            wd = 0.0 if no_decay(n) else cfg.weight_decay
            groups.setdefault((scale, wd), {"params": [], "weight_decay": wd,
                                            "lr": cfg.learning_rate * scale})["params"].append(p)
        return list(groups.values())

    def _setup(self) -> None:
        """AdamW, accelerate.prepare, linear warm-up/decay."""
        import torch
        from transformers import get_linear_schedule_with_warmup

        cfg, acc = self.config, self.acc
        self.named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        # fused: one kernel over all tensors instead of a loop over them (same update up to
        # rounding; bench/train_profile.py times the step both ways)
        optimizer = torch.optim.AdamW(self._param_groups(), lr=cfg.learning_rate, fused=True)
        # The loaders stay ours: every process reads every global batch and computes its own
        # slice of it (_my_slice); evaluation runs whole on every process.
        self.model, self.optimizer = acc.prepare(self.model, optimizer)
        if self.prefix.module is not None:
            self.prefix.module.to(acc.device)
        steps = cfg.epochs * len(self.loaders["train"])
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(cfg.warmup_ratio * steps), steps)
        # progress counts every phase's steps, so one bar goes from 0 to the end of training
        self.step = self.steps_around[0]
        self.total = self.step + steps + self.steps_around[1]

    def _my_slice(self, batch: dict) -> tuple[dict, float]:
        """This process's rows of a global batch (rows rank, rank + n, ...) and the weight that
        turns its mean loss into its share of the global mean: DDP averages the gradients over
        the n processes, so the step equals one process training on the whole batch."""
        n, rank, full = self.acc.num_processes, self.acc.process_index, len(batch["labels"])
        rows = list(range(rank, full, n)) or [0]  # an empty slice still joins the all-reduce
        weight = (len(rows) * n / full) if rank < full else 0.0
        return {k: v[rows].to(self.acc.device) for k, v in batch.items()}, weight

    def _train_epoch(self, epoch: int) -> float:
        """One pass over the training data; returns the mean training loss (this process's)."""
        import torch

        cfg, params = self.config, [p for _, p in self.named]
        self.model.train()
        seen, loss_sum, window = 0, 0.0, (time.perf_counter(), 0)
        for full_batch in self.loaders["train"]:
            batch, weight = self._my_slice(full_batch)
            logits, loss = self._forward(batch, "train", smoothing=cfg.label_smoothing)
            if self.teacher is not None:
                teacher = torch.stack([self.teacher[i] for i in batch["idx"].tolist()])
                loss = qat.distill_loss(logits, teacher.to(logits.device), batch["labels"],
                                        cfg.distill_temperature, cfg.distill_alpha)
            self.acc.backward(loss * weight)
            self.acc.clip_grad_norm_(params, cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
            value = float(loss.detach())
            self.step, seen = self.step + 1, seen + (len(batch["labels"]) if weight else 0)
            loss_sum += value * len(batch["labels"])
            if self.step % cfg.log_every == 0 or self.step == self.total:
                now = time.perf_counter()
                self.emit({"kind": "step", "done": self.step, "total": self.total, "epoch": epoch,
                           "step": self.step, "loss": value, "lr": self.scheduler.get_last_lr()[0],
                           "examples_per_s": (seen - window[1]) / max(now - window[0], 1e-9),
                           "phase": self.phase,
                           "message": f"{self._label(epoch)} loss {value:.3f}"})
                window = (now, seen)
        self.examples_seen += seen
        return loss_sum / max(seen, 1)

    def _label(self, epoch: int) -> str:
        name = "INT8-aware epoch" if self.phase == "int8" else "epoch"
        return f"{name} {epoch}/{self.config.epochs}"

    def fit(self, from_start: bool = False) -> dict:
        """Train with early stopping on val macro-F1; ends with the best epoch's weights.
        ``from_start``: the weights before training are a candidate too (epoch 0), so a phase
        that does not help keeps them."""
        import torch

        cfg = self.config
        self._setup()
        history, best, best_state, bad, stopped = [], -1.0, None, 0, False
        for epoch in range(0 if from_start else 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            train_loss = self._train_epoch(epoch) if epoch else None
            seconds = time.perf_counter() - t0
            val = self.evaluate("val")[0]
            row = {"epoch": epoch, "phase": self.phase, "train_loss": train_loss,
                   "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                   "val_macro_f1": val["macro_f1"], "seconds": round(seconds, 3), "val": val}
            history.append(row)
            self.emit({"kind": "epoch", "done": self.step, "total": self.total,
                       **{k: v for k, v in row.items() if k != "val"},
                       "message": f"{self._label(epoch)}: val macro-F1 {val['macro_f1']:.3f}"})
            if val["macro_f1"] > best:
                best, bad = val["macro_f1"], 0
                best_state = {n: p.detach().clone() for n, p in self.named}
            else:
                bad += 1
                if cfg.patience and bad >= cfg.patience and epoch < cfg.epochs:
                    stopped = True
                    break
        with torch.no_grad():  # back to the best epoch's weights
            for n, p in self.named:
                p.copy_(best_state[n])
        best_row = max(history, key=lambda r: (r["val_macro_f1"], -r["epoch"]))
        val, val_preds = self.evaluate("val")  # = the best epoch's (eval mode is deterministic)
        test, test_preds = self.evaluate("test") if len(self.loaders["test"]) else (None, [])
        return {"best_epoch": best_row["epoch"],
                "epochs_run": sum(r["epoch"] > 0 for r in history),
                "stopped_early": stopped, "val": val, "test": test, "history": history,
                "epoch_seconds": [r["seconds"] for r in history if r["epoch"]],
                "predictions": {"val": val_preds, "test": test_preds}}

    def save(self, model_dir: Path, tokenizer) -> None:
        """Write the whole model (frozen prefix put back) into the new folder ``model_dir``."""
        from core.models.registry import quiet_transformers

        model = self.acc.unwrap_model(self.model)
        self.prefix.restore()
        with quiet_transformers():
            model.save_pretrained(model_dir)
        tokenizer.model_max_length = self.config.max_length  # predict/export truncate the same way
        tokenizer.save_pretrained(model_dir)
        _tidy_tokenizer_config(model_dir / "tokenizer_config.json")


def _reinit_top(model, prefix: FrozenPrefix, n: int) -> None:
    """Draw the top ``n`` encoder layers afresh (the model's own initialiser): their pretrained
    weights are tuned to the pretraining objective, not to this task."""
    if not n:
        return
    layers = model.base_model.encoder.layer  # without the frozen prefix's layers
    if n > len(layers):
        raise ConfigError(f"train: reinit_top {n} is more than the {len(layers)} trainable "
                          f"layers (freeze_below {prefix.k} of {prefix.num_layers}); lower it")
    for layer in layers[len(layers) - n:]:
        for module in layer.modules():
            for param in module.parameters(recurse=False):
                param._is_hf_initialized = False  # transformers skips loaded weights otherwise
            model._init_weights(module)


def _tidy_tokenizer_config(path: Path) -> None:
    """transformers 5 saves a tokenizers-backed tokenizer as class "TokenizersBackend" (unknown to
    transformers.js and older transformers) plus its load kwargs; name the portable class."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only"):
        cfg.pop(key, None)
    paths.atomic_write_text(path, json.dumps(cfg, ensure_ascii=False, indent=2))


def run(config: TrainConfig, on_progress: ProgressFn | None = None) -> TrainResult:
    """Train, keep the best epoch by validation macro-F1, save the model and metrics.json."""
    import torch

    before = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        return _run(config, on_progress or (lambda event: None))
    finally:
        torch.set_num_threads(before)  # a library call leaves the process as it found it


def split_params(config: TrainConfig) -> dict:
    """How the run splits its data: the dataset's saved split (Dataset page) when it has one and
    ``use_saved_split``, else the config's fractions and seed. Recorded in metrics.json."""
    saved = data.saved_split_params(config.data) if config.use_saved_split else None
    how = saved or {"val_frac": config.val_frac, "test_frac": config.test_frac,
                    "seed": config.seed}
    return {"data": config.data, **how, "source": "saved with the dataset" if saved else "config"}


DIST_INIT_ENV = "STUDIO_DIST_INIT"


def _join_processes() -> None:
    """Processes started without torchrun's TCP rendezvous (``STUDIO_DIST_INIT=file:///PATH``
    with RANK and WORLD_SIZE, e.g. by a test) meet through a shared file, no port: gloo on CPU.
    Accelerate then finds the process group already made and uses it."""
    import torch.distributed as dist

    init = os.environ.get(DIST_INIT_ENV)
    if init and not dist.is_initialized():
        dist.init_process_group("gloo", init_method=init, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))


def _is_main_process() -> bool:
    """Rank 0 (or a plain single process): the one that takes the lock and writes the run."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _run(config: TrainConfig, emit: ProgressFn) -> TrainResult:
    """Train into a staging folder beside the run and swap it in at the end (core.paths.swap_dir):
    a crash, kill or cancel at any moment leaves the previous run whole and usable."""
    from core.run import RunFolder

    run = RunFolder(config.run_dir())
    if not _is_main_process():
        return _train(config, emit, None)
    with run.lock("train"):
        for note in paths.clean_leftovers(run.root):
            log.info("%s: %s", run.root, note)
        staging = paths.staging_dir(run.root)
        try:
            result = _train(config, emit, staging)
            paths.swap_dir(staging, run.root)
        finally:
            if staging.exists():
                import shutil

                shutil.rmtree(staging, ignore_errors=True)
    return result


def fp32_trainer(config: TrainConfig, emit: ProgressFn):
    """Everything before the first epoch: data, split, model, frozen prefix, loaders. Returns
    (the Trainer of the FP32 epochs, not fitted yet, tokenizer, split, how it was split)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from core.models.registry import load_for_classification

    records = data.load_dataset(config.data)
    labels = _label_order(records, config.labels)
    how = split_params(config)
    split = data.split_records(records, how["val_frac"], how["test_frac"], how["seed"])
    if not split.val or not split.train:
        raise ConfigError(f"train: {len(records)} records give split {split.sizes()}; "
                          "the validation and training splits both need records (add data)")
    # cpu: without CUDA, a torchrun/accelerate launch of N processes trains over gloo on the CPU.
    # batch_size stays the global batch however many processes share it (Trainer._my_slice).
    _join_processes()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(config.init_rng_seed())  # before loading: the new head is randomly initialised
    model, tokenizer, _ = load_for_classification(config.base, labels, on_progress=emit)
    prefix = FrozenPrefix(model, config.freeze_below)
    _reinit_top(model, prefix, config.reinit_top)
    label_ids = {label: i for i, label in enumerate(labels)}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = {part: _encode(tokenizer, getattr(split, part), label_ids, config.max_length)
           for part in ("train", "val", "test")}
    loaders = {"train": _loader(enc["train"], config.batch_size, pad_id, True,
                                config.init_rng_seed()),
               "val": _loader(enc["val"], config.eval_batch_size, pad_id, False, config.seed),
               "test": _loader(enc["test"], config.eval_batch_size, pad_id, False, config.seed)}
    emit({"kind": "setup", "message": f"freeze below {prefix.k} of {prefix.num_layers} layers",
          "trainable_params": prefix.trainable, "total_params": prefix.total,
          "freeze_below": prefix.k, "num_layers": prefix.num_layers, "labels": labels,
          "split": split.sizes()})
    phase_steps = config.int8_epochs * len(loaders["train"])
    trainer = Trainer(accelerator, model, prefix, loaders, config, labels, emit,
                      steps_around=(0, phase_steps))
    return trainer, tokenizer, split, how


def _train(config: TrainConfig, emit: ProgressFn, staging: Path | None) -> TrainResult:
    from core import model_card
    from core.run import RunFolder

    started = time.perf_counter()
    trainer, tokenizer, split, how = fp32_trainer(config, emit)
    prefix = trainer.prefix
    outcome = trainer.fit()
    if config.int8_epochs:
        trainer, outcome = qat.int8_phase(trainer, outcome, config, emit)
    if staging is not None:  # the main process writes the new run folder
        trainer.save(staging / "model", tokenizer)
        if config.int8_epochs:
            qat.score_int8_file(outcome, staging, split, trainer.labels, config.max_length, emit)
    run_dir = config.run_dir()
    result = TrainResult(
        run_dir=str(run_dir), model_dir=str(run_dir / "model"), labels=trainer.labels,
        base=str(config.base), freeze_below=prefix.k, num_layers=prefix.num_layers,
        trainable_params=prefix.trainable, total_params=prefix.total,
        train_seconds=round(time.perf_counter() - started, 2), split_sizes=split.sizes(),
        processes=trainer.acc.num_processes, examples_seen=trainer.examples_seen, **outcome)
    if staging is not None:
        metrics = {**asdict(result), "config": asdict(config), "split": how}
        paths.atomic_write_text(staging / "metrics.json",
                                json.dumps(metrics, ensure_ascii=False, indent=2))
        model_card.write_run_card(RunFolder(staging))  # model/README.md, pushable to the Hub
    trainer.acc.wait_for_everyone()
    return result
