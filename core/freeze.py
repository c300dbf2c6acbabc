"""Freezing the lower layers of an encoder, and running them once (frozen-prefix caching).

Freezing below K keeps the embeddings and encoder layers 0..K-1 fixed; they run in eval mode, so
their output for an example never changes: core/train.py computes it once and caches it, and later
epochs only run the upper layers.
"""

from __future__ import annotations

from core.errors import ConfigError


class FrozenPrefix:
    """Embeddings + encoder layers below ``k``, moved out of the model and run in eval mode.

    The model keeps a pass-through in place of its embeddings and only layers k..N-1, and is called
    with ``inputs_embeds`` = the prefix's output; every head (BERT pooler, RoBERTa head) works
    unchanged. The prefix is a shallow copy of the base model (no weights duplicated) whose
    encoder holds layers 0..k-1. Works for BERT-style encoders (``embeddings`` + ``encoder.layer``).
    """

    def __init__(self, model, k: int):
        import copy

        from torch import nn

        self.model, self.k, self.module = model, int(k), None
        base = model.base_model
        layers = getattr(getattr(base, "encoder", None), "layer", None)
        bert_like = hasattr(base, "embeddings") and isinstance(layers, nn.ModuleList)
        self.num_layers = (len(layers) if bert_like
                           else int(getattr(model.config, "num_hidden_layers", 0)))
        if self.k > self.num_layers:
            raise ConfigError(f"train: freeze_below {self.k} is more than the model's "
                              f"{self.num_layers} layers; choose 0..{self.num_layers}")
        if self.k and not bert_like:
            raise ConfigError(f"train: freezing needs a BERT-style encoder (embeddings + "
                              f"encoder.layer); {type(model).__name__} is not: use freeze_below 0")
        self.total = sum(p.numel() for p in model.parameters())
        if self.k:
            self._saved = (base.embeddings, layers, getattr(base, "embeddings_project", None))
            frozen = [base.embeddings, *layers[: self.k]]
            frozen += [m for m in self._saved[2:] if m is not None]
            for module in frozen:
                module.requires_grad_(False)
            prefix = copy.copy(base)  # new module dict, shared submodules (no weight copies)
            prefix._modules = dict(base._modules)
            prefix.encoder = copy.copy(base.encoder)
            prefix.encoder._modules = dict(base.encoder._modules)
            prefix.encoder.layer = nn.ModuleList(layers[: self.k])
            if getattr(prefix, "pooler", None) is not None:
                prefix.pooler = None  # its output is unused here
            self.module = prefix.eval()
            base.embeddings = _passthrough()
            if self._saved[2] is not None:  # ELECTRA projects embeddings; the prefix did it
                base.embeddings_project = nn.Identity()
            base.encoder.layer = nn.ModuleList(layers[self.k:])
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def __call__(self, batch: dict):
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return self.module(**{k: batch[k] for k in keys if k in batch}).last_hidden_state

    def restore(self) -> None:
        """Put the frozen modules back so the saved model is the whole, ordinary HF model."""
        if self.module is None:
            return
        base = self.model.base_model
        base.embeddings, base.encoder.layer = self._saved[0], self._saved[1]
        if self._saved[2] is not None:
            base.embeddings_project = self._saved[2]
        self.module = None


def _passthrough():
    from torch import nn

    class PrefixOutput(nn.Module):
        """Stands in for the embeddings: the hidden states arrive as ``inputs_embeds``."""

        def forward(self, inputs_embeds=None, **_):
            return inputs_embeds

    return PrefixOutput()
