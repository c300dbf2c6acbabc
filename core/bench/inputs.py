"""What the benchmark feeds the runtimes: the labeled set and real sentences of chosen lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import ConfigError


def eval_set(run, data: str | None, limit: int | None):
    """(texts, gold label ids, labels, source, picked): the labeled sentences accuracy is measured
    on; ``picked``: their indices in the split (None: all of it, in order).

    ``data`` given: that whole file. Otherwise the run's own test split (``RunFolder.saved_split``;
    a run without metrics.json is refused there); validation split if the test split is empty.
    ``limit`` keeps an evenly spaced subset, so every label (the split is grouped by label) stays
    represented.
    """
    from core import data as datasets

    labels = run.labels()
    if data:
        name, split_name, records = data, "all", datasets.load_dataset(data)
    else:
        name, split = run.saved_split()
        split_name, records = ("test", split.test) if split.test else ("val", split.val)
    records = [r for r in records if r.label in labels]
    if not records:
        raise ConfigError(f"bench: no labeled sentences with the model's labels ({labels}) in "
                          f"{name or 'the seed set'}; pass --data with a labeled JSONL file")
    picked = None
    if limit and len(records) > limit:
        picked = np.unique(np.linspace(0, len(records) - 1, limit).round().astype(int))
        records = [records[i] for i in picked]
    source = {"dataset": str(name or "seed"), "split": split_name}
    gold = np.array([labels.index(r.label) for r in records])
    return [r.text for r in records], gold, labels, source, picked


def token_lengths(model_dir: Path, texts: list[str]) -> list[int]:
    """Tokens per text as the runtimes see them (special tokens included, truncated)."""
    from core.runtimes.base import Runtime

    tok = Runtime(model_dir)
    ids = tok.tokenizer(list(texts), truncation=True, max_length=tok.max_length)["input_ids"]
    return [len(x) for x in ids]


def pick_cases(model_dir: Path, texts: list[str]) -> tuple[dict, list[int]]:
    """Short (10th percentile of token length), typical (median) and long (the longest) real
    sentences, with their token lengths; also every text's length."""
    lengths = token_lengths(model_dir, texts)
    order = np.argsort(lengths, kind="stable")
    picks = {"short": order[int(0.1 * (len(order) - 1))], "typical": order[(len(order) - 1) // 2],
             "long": order[-1]}
    cases = {name: {"text": texts[i], "tokens": int(lengths[i])} for name, i in picks.items()}
    return cases, lengths


def pick_batches(texts: list[str], lengths: list[int], sizes) -> dict[int, list[str]]:
    """For each batch size, the real sentences closest to the median length (repeated when the
    set is smaller than the batch), so throughput is measured at a typical padded length."""
    median = float(np.median(lengths))
    order = sorted(range(len(texts)), key=lambda i: (abs(lengths[i] - median), i))
    return {bs: [texts[order[j % len(order)]] for j in range(bs)] for bs in sizes}
