"""Base models: the bundled offline Korean encoder (``e5-small-ko``), hub ids and local folders.

Importing this package is cheap: torch and transformers are imported inside the functions that use
them, so ``python -m core --help`` and the pages stay fast.
"""

from core.models.registry import (
    BUNDLED_DEFAULT,
    BUNDLED_MODELS,
    SUGGESTED_HUB_MODELS,
    ensure_bundled,
    load_for_classification,
    num_layers,
    resolve_base,
)

__all__ = [
    "BUNDLED_DEFAULT",
    "BUNDLED_MODELS",
    "SUGGESTED_HUB_MODELS",
    "ensure_bundled",
    "load_for_classification",
    "num_layers",
    "resolve_base",
]
