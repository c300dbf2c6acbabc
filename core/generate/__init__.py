"""LLM data generation: prompts, the concurrent pipeline, the Batch API path, costs.

Public API::

    from core.generate import GenerateConfig, estimate, run
    est = estimate(GenerateConfig(out="x.jsonl", n=5000))          # dry run, sends nothing
    res = run(GenerateConfig(out="x.jsonl", n=5000), on_progress)  # key from $OPENAI_API_KEY
"""

from core.generate.client import APIRequestError
from core.generate.config import DEFAULT_MODEL, GenerateConfig
from core.generate.cost import DEFAULT_PRICES, Estimate, load_prices
from core.generate.pipeline import API_KEY_ENV, estimate, run
from core.generate.prompts import DEFAULT_AXES
from core.generate.state import GenerateResult
from core.generate.store import manifest_path

__all__ = ["API_KEY_ENV", "APIRequestError", "DEFAULT_AXES", "DEFAULT_MODEL", "DEFAULT_PRICES",
           "Estimate", "GenerateConfig", "GenerateResult", "estimate", "load_prices",
           "manifest_path", "run"]
