"""Token accounting, an editable price table, and the dry-run estimate.

Prices are USD per 1M tokens (input, output), as listed on https://openai.com/api/pricing when this
was written. They change: put a JSON file ``{"model": {"input": x, "output": y}}`` at
``<workspace>/prices.json`` (or pass ``prices_path``) to override or add models. The Batch API costs
half (https://platform.openai.com/docs/guides/batch).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from core import paths
from core.errors import ConfigError
from core.generate.prompts import LENGTH_CHARS, RequestSpec, build_messages, response_format

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4.1": {"input": 2.00, "output": 8.00},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
    "gpt-4.1-nano": {"input": 0.10, "output": 0.40},
    "gpt-4o": {"input": 2.50, "output": 10.00},
    "gpt-4o-mini": {"input": 0.15, "output": 0.60},
    "gpt-5": {"input": 1.25, "output": 10.00},
    "gpt-5-mini": {"input": 0.25, "output": 2.00},
    "gpt-5-nano": {"input": 0.05, "output": 0.40},
}
BATCH_DISCOUNT = 0.5
# Assumed generation speed for the time estimate (gpt-4.1-mini streams roughly 60-100 tokens/s).
ASSUMED_OUTPUT_TOKENS_PER_S = 80.0
ASSUMED_REQUEST_OVERHEAD_S = 1.0
JSON_TOKENS_PER_EXAMPLE = 12  # {"text": "...", "label": "기쁨"}, around each text


def load_prices(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """Built-in prices, overridden by ``path`` or ``<workspace>/prices.json`` when present."""
    prices = {k: dict(v) for k, v in DEFAULT_PRICES.items()}
    candidate = Path(path) if path else paths.workspace() / "prices.json"
    if path and not candidate.exists():
        raise ConfigError(f"price table {candidate} does not exist; create it or leave it out")
    if candidate.exists():
        try:
            extra = json.loads(candidate.read_text(encoding="utf-8"))
            for model, entry in extra.items():
                prices[model] = {"input": float(entry["input"]), "output": float(entry["output"])}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{candidate}: expected {{model: {{input: USD/1M, output: USD/1M}}}} "
                              f"({exc})") from exc
    return prices


def price_for(model: str, prices: dict) -> dict[str, float] | None:
    """Exact model name, else the longest known prefix (dated snapshots like gpt-4.1-mini-2025-04-14)."""
    if model in prices:
        return prices[model]
    matches = [k for k in prices if model.startswith(k + "-")]
    return prices[max(matches, key=len)] if matches else None


def cost_usd(prompt_tokens: int, completion_tokens: int, price: dict | None,
             batch: bool = False) -> float | None:
    if price is None:
        return None
    usd = (prompt_tokens * price["input"] + completion_tokens * price["output"]) / 1e6
    return usd * (BATCH_DISCOUNT if batch else 1.0)


def estimate_tokens(text: str) -> int:
    """Rough token count without a tokenizer: ~4 ASCII chars a token, ~0.7 tokens a Hangul syllable
    (o200k-style vocabularies merge common Korean syllables). Errs high on purpose."""
    ascii_chars = sum(1 for c in text if ord(c) < 128)
    return math.ceil(ascii_chars / 4 + (len(text) - ascii_chars) * 0.7)


@dataclass
class Usage:
    """Tokens and cost so far (cost is None when the model has no price)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0

    def add(self, prompt: int, completion: int, price: dict | None, batch: bool = False) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        c = cost_usd(prompt, completion, price, batch)
        self.cost_usd = None if c is None or self.cost_usd is None else self.cost_usd + c


@dataclass
class Estimate:
    """What a run will send and cost, before anything is sent."""

    model: str
    target: int  # rows wanted in the file
    have: int  # valid rows already in the file (resume)
    remaining: dict[str, int]  # label -> rows still to generate
    requests: int  # requests if every example is kept
    per_request: int
    concurrency: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # live API
    batch_cost_usd: float | None  # Batch API (50% off)
    time_s: float  # live mode wall time at the given concurrency
    batch_api: bool
    notes: list[str] = field(default_factory=list)


def _example_tokens(axes: dict[str, str]) -> int:
    length = axes.get("length", "")
    chars = next((v for k, v in LENGTH_CHARS.items() if length.startswith(k)), 45)
    return math.ceil(chars * 0.7) + JSON_TOKENS_PER_EXAMPLE


def estimate_run(specs: list[RequestSpec], labels: tuple[str, ...], config, have: int,
                 remaining: dict[str, int], observed: dict | None = None) -> Estimate:
    """Estimate from the exact request plan. ``observed`` (tokens per example from an earlier part
    of the same run, read from the manifest) replaces the heuristic when present."""
    prices = load_prices(config.prices_path)
    price = price_for(config.model, prices)
    mode = "json_object" if config.structured == "json_object" else "json_schema"
    prompt = completion = 0
    for spec in specs:
        msgs = build_messages(spec, labels)
        text = "".join(m["content"] for m in msgs) + json.dumps(response_format(labels, mode))
        prompt += estimate_tokens(text) + 4 * len(msgs)
        completion += spec.size * _example_tokens(spec.axes) + 5
    notes = []
    if observed and observed.get("examples"):
        n_ex = sum(s.size for s in specs)
        completion = math.ceil(observed["completion_tokens"] / observed["examples"] * n_ex)
        notes.append("completion tokens from this run's measured tokens per example")
    else:
        notes.append("tokens estimated from text length (no tokenizer); actual usage is reported live")
    if price is None:
        notes.append(f"no price for {config.model!r}: add it to prices.json to see costs")
    notes.append("rows rejected by validation or dedup add top-up requests beyond this plan")
    per_req_s = ASSUMED_REQUEST_OVERHEAD_S + (completion / max(len(specs), 1)) / ASSUMED_OUTPUT_TOKENS_PER_S
    waves = math.ceil(len(specs) / config.concurrency)
    return Estimate(
        model=config.model, target=config.n, have=have, remaining=remaining, requests=len(specs),
        per_request=config.per_request, concurrency=config.concurrency, prompt_tokens=prompt,
        completion_tokens=completion, cost_usd=cost_usd(prompt, completion, price),
        batch_cost_usd=cost_usd(prompt, completion, price, batch=True),
        time_s=round(waves * per_req_s, 1), batch_api=config.batch_api, notes=notes)
