"""PyTorch predictions from a trained run: texts -> labels and probabilities.

Kept deliberately small (tokenize -> logits -> softmax) so the ONNX Runtime, OpenVINO and browser
runtimes can mirror it step by step: truncate to the tokenizer's ``model_max_length`` (training
writes its max_length there), feed only the inputs the tokenizer produces, softmax over
``config.id2label`` order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.errors import DatasetError, ModelError

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    label: str  # the most probable label
    probs: dict[str, float]  # every label's probability, in id2label order


@dataclass
class Classifier:
    model: object  # a transformers *ForSequenceClassification in eval mode
    tokenizer: object
    labels: list[str]  # id order
    max_length: int
    path: Path  # the model folder it was loaded from


def model_dir(path: str | Path) -> Path:
    """The HF model folder of a run folder (``run/model``) or of a model folder given directly."""
    path = Path(path)
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file():
            return candidate
    raise ModelError(f"{path} is not a run folder or model folder (no config.json in it or in "
                     f"{path / 'model'}); train one first with `python -m core train`")


def load(path: str | Path) -> Classifier:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models.registry import quiet_transformers

    folder = model_dir(path)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the model in {folder}: {exc}") from exc
    id2label = model.config.id2label
    labels = [id2label[i] for i in range(len(id2label))]
    max_length = int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))
    return Classifier(model, tokenizer, labels, max_length, folder)


def encode(tokenizer, texts: list[str], max_length: int) -> dict:
    """Token ids as numpy arrays, padded to the longest text: the inputs every runtime takes."""
    return dict(tokenizer(list(texts), truncation=True, max_length=max_length, padding=True,
                          return_tensors="np"))


def softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def logits(clf: Classifier, texts: list[str], batch_size: int = 32):
    """Raw logits [len(texts), num_labels] as float32 numpy."""
    import numpy as np
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = encode(clf.tokenizer, texts[start: start + batch_size], clf.max_length)
            feed = {k: torch.from_numpy(v) for k, v in enc.items()}
            out.append(clf.model(**feed).logits.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(clf.labels)), np.float32)


def predict(model: Classifier | str | Path, texts: list[str],
            batch_size: int = 32) -> list[Prediction]:
    """Label and per-label probabilities for each text (``model`` = Classifier or run folder)."""
    clf = model if isinstance(model, Classifier) else load(model)
    probs = softmax(logits(clf, list(texts), batch_size))
    return [Prediction(clf.labels[int(row.argmax())],
                       {label: float(p) for label, p in zip(clf.labels, row)}) for row in probs]


def classification_metrics(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.metrics import precision_recall_fscore_support

    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                              "support": int(s[i])} for i, label in enumerate(labels)},
        "labels": list(labels),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),  # rows = true
        "count": len(y_true),
    }


def predict_jsonl(model: Classifier | str | Path, input_path: str | Path, output_path: str | Path,
                  batch_size: int = 32, predict_fn: Callable | None = None) -> int:
    """Each output line is the input line's object plus ``pred`` and ``probs``; returns the count.

    ``predict_fn(texts, batch_size)`` replaces the PyTorch model (e.g. an ONNX runtime's predict).
    """
    from core import paths

    rows = []
    with open(input_path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"not JSON ({exc.msg})", line=number, path=str(input_path))
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise DatasetError('needs an object with a "text" string', line=number,
                                   path=str(input_path))
            rows.append(obj)
    texts = [r["text"] for r in rows]
    preds = predict_fn(texts, batch_size) if predict_fn else predict(model, texts, batch_size)
    lines = [json.dumps({**row, "pred": p.label, "probs": p.probs}, ensure_ascii=False) + "\n"
             for row, p in zip(rows, preds)]
    paths.atomic_write_text(output_path, "".join(lines))
    return len(rows)
