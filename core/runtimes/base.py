"""The runtime interface and what every adapter shares: tokenizer, labels, batching, softmax."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.run import RunFolder, find_model_dir, tokenizer_max_length

# Families whose models take no token_type_ids (feeding them fails: "Invalid Feed Input Name").
NO_TOKEN_TYPES = {"roberta", "xlm-roberta", "camembert", "distilbert", "deberta-v2", "mpnet"}


@dataclass
class Prediction:
    label: str  # the most probable label
    probs: dict[str, float]  # every label's probability, in id2label order


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def model_inputs(model_dir: Path, tokenizer) -> list[str]:
    """The inputs the model really takes, in export order."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in tokenizer.model_input_names and \
            config.get("model_type") not in NO_TOKEN_TYPES:
        names.append("token_type_ids")
    return names


class Runtime:
    """Subclasses set ``name``/``precision`` and implement ``forward`` (and maybe ``inputs``)."""

    name = "base"
    precision = "fp32"

    def __init__(self, path: str | Path, max_length: int | None = None):
        from transformers import AutoTokenizer

        self.path = Path(path)
        self.model_dir = find_model_dir(self.path)
        self.labels = RunFolder(self.model_dir).labels()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.max_length = int(max_length or tokenizer_max_length(self.model_dir))
        self.input_names = model_inputs(self.model_dir, self.tokenizer)

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """int64 arrays padded to the longest text, only the inputs this model takes."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                             padding=True, return_tensors="np")
        return {name: np.asarray(enc[name], dtype=np.int64) for name in self.input_names}

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        texts = list(texts)
        out = [self.forward(self.encode(texts[i:i + batch_size]))
               for i in range(0, len(texts), batch_size)]
        return np.concatenate(out).astype(np.float32) if out else \
            np.zeros((0, len(self.labels)), np.float32)

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Prediction]:
        probs = softmax(self.logits(texts, batch_size))
        return [Prediction(self.labels[int(row.argmax())],
                           {lab: float(p) for lab, p in zip(self.labels, row)}) for row in probs]

    def size_bytes(self) -> int:
        """Bytes of the model file(s) this runtime loaded."""
        return self.path.stat().st_size
