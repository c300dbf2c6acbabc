"""Predictions with any runtime (run folder, .onnx or OpenVINO .xml), and the evaluation metrics.

All model loading and tokenization lives in core/runtimes, so PyTorch, ONNX Runtime, OpenVINO and
the browser follow the same steps: truncate to the tokenizer's ``model_max_length`` (training writes
its max_length there), feed only the inputs the model takes, softmax in ``config.id2label`` order.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import DatasetError
from core.runtimes import Prediction, Runtime, load

__all__ = ["Prediction", "classification_metrics", "logit_scores", "predict", "predict_jsonl"]


def _runtime(model: Runtime | str | Path) -> Runtime:
    return model if isinstance(model, Runtime) else load(model)


def predict(model: Runtime | str | Path, texts: list[str], batch_size: int = 32) -> list[Prediction]:
    """Label and per-label probabilities for each text (``model``: a runtime or a model path)."""
    return _runtime(model).predict(list(texts), batch_size)


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


def logit_scores(gold, logits, ref=None) -> dict:
    """Accuracy and macro-F1 in points (0-100) of ``logits`` against gold label ids, plus label
    agreement (points) and max |logit difference| against reference logits ``ref``."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    pred = logits.argmax(-1)
    out = {"accuracy": float(accuracy_score(gold, pred)) * 100,
           "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)) * 100}
    if ref is not None and ref.shape == logits.shape:
        out["agreement"] = float((pred == ref.argmax(-1)).mean()) * 100
        out["max_abs_diff"] = float(np.abs(logits - ref).max())
    return out


def _read_rows(input_path: str | Path) -> list[dict]:
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
    return rows


def predict_jsonl(model: Runtime | str | Path, input_path: str | Path, output_path: str | Path,
                  batch_size: int = 32) -> int:
    """Each output line is the input line's object plus ``pred`` and ``probs``; returns the count."""
    from core import paths

    rows = _read_rows(input_path)
    preds = predict(model, [r["text"] for r in rows], batch_size)
    lines = [json.dumps({**row, "pred": p.label, "probs": p.probs}, ensure_ascii=False) + "\n"
             for row, p in zip(rows, preds)]
    paths.atomic_write_text(output_path, "".join(lines))
    return len(rows)
