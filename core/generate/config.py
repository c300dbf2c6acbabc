"""The generate stage's configuration. It never holds the API key (so it can be logged and saved)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

from core.errors import ConfigError
from core.generate.prompts import DEFAULT_AXES
from core.labels import DEFAULT_LABEL_NAMES, normalize_label, parse_labels

DEFAULT_MODEL = "gpt-4.1-mini"
STRUCTURED_MODES = ("auto", "json_schema", "json_object")


@dataclass(frozen=True)
class GenerateConfig:
    out: Path  # output JSONL; accepted rows are appended, one per line
    n: int = 5000  # target total rows in the file (after validation and dedup)
    per_request: int = 50  # examples asked for in one request
    concurrency: int = 8  # requests in flight at once (live mode)
    model: str = DEFAULT_MODEL  # any chat model of the server
    base_url: str | None = None  # OpenAI-compatible server (vLLM, Ollama, Azure...); None: OpenAI
    labels: tuple[str, ...] = DEFAULT_LABEL_NAMES  # the label set (schema enum)
    quotas: Mapping[str, int] | None = None  # label -> rows; None: balanced over labels (sums to n)
    resume: bool = False  # continue an existing output file to the target
    batch_api: bool = False  # use the Batch API (50% cheaper, finishes within 24 h)
    axes: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_AXES  # diversity axes rotated per request
    structured: str = "auto"  # json_schema | json_object | auto (schema, fall back if refused)
    temperature: float | None = 1.0  # sampling temperature; None: the server default
    min_chars: int = 4  # shortest text kept
    max_chars: int = 300  # longest text kept
    min_hangul_ratio: float = 0.5  # share of letters that must be Hangul ("is Korean")
    near_dup_threshold: float = 0.8  # char-3-gram Jaccard at or above which a text is a near-dup
    request_timeout_s: float = 120.0  # per attempt; 50 examples take ~20-40 s on gpt-4.1-mini
    max_retries: int = 5  # retries of one request (429, 5xx, timeout, malformed reply)
    backoff_base_s: float = 1.0  # first backoff; doubles each retry, with full jitter
    backoff_max_s: float = 30.0  # longest backoff (Retry-After from the server wins)
    # cap on requests: live, this session's (None: 2x the plan + 10); Batch API, the whole run's,
    # earlier sessions included (None: batch_max_rounds alone limits it)
    max_requests: int | None = None
    max_consecutive_failures: int = 5  # give up after this many requests fail all retries in a row
    prices_path: Path | None = None  # JSON price table overriding the built-in one
    poll_interval_s: float = 30.0  # Batch API: seconds between status checks
    batch_max_rounds: int = 3  # Batch API: extra batches to top up rows lost to dedup/validation
    batch_timeout_s: float = 26 * 3600.0  # Batch API: give up waiting after this long
    seed: int = 0  # seeds the axis rotation
    _quota_items: tuple[tuple[str, int], ...] = field(default=(), init=False, repr=False)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("out", Path(self.out))
        set_("labels", parse_labels(self.labels))
        set_("axes", _check_axes(self.axes))
        for name in ("n", "per_request", "concurrency", "min_chars", "max_chars"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.per_request > 500:
            raise ConfigError("per_request above 500 makes replies too long to finish; use <= 100")
        if self.min_chars > self.max_chars:
            raise ConfigError(f"min_chars {self.min_chars} exceeds max_chars {self.max_chars}")
        if self.structured not in STRUCTURED_MODES:
            raise ConfigError(f"structured must be one of {STRUCTURED_MODES}, got {self.structured!r}")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ConfigError("near_dup_threshold must be in (0, 1]; 0.8 is a good start")
        if not 0.0 <= self.min_hangul_ratio <= 1.0:
            raise ConfigError("min_hangul_ratio must be in [0, 1]")
        if self.request_timeout_s <= 0 or self.max_retries < 0 or self.poll_interval_s <= 0:
            raise ConfigError("request_timeout_s and poll_interval_s must be > 0, max_retries >= 0")
        if not self.model.strip():
            raise ConfigError("model is empty; give a model name, e.g. gpt-4.1-mini")
        if self.base_url and urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigError(f"base_url must start with http:// or https://, got {safe_url(self.base_url)!r}")
        set_("_quota_items", self._balance())
        set_("quotas", None if self.quotas is None else dict(self._quota_items))

    def _balance(self) -> tuple[tuple[str, int], ...]:
        if self.quotas is None:
            base, extra = divmod(self.n, len(self.labels))
            return tuple((lab, base + (i < extra)) for i, lab in enumerate(self.labels))
        quotas = {normalize_label(k): int(v) for k, v in dict(self.quotas).items()}
        unknown = sorted(set(quotas) - set(self.labels))
        if unknown:
            raise ConfigError(f"quotas name labels not in the label set: {unknown}; add them to labels")
        if any(v < 0 for v in quotas.values()):
            raise ConfigError("quotas must be >= 0")
        if sum(quotas.values()) != self.n:
            raise ConfigError(f"quotas sum to {sum(quotas.values())} but n is {self.n}; make them match")
        return tuple((lab, quotas.get(lab, 0)) for lab in self.labels)

    def quota_map(self) -> dict[str, int]:
        """label -> target rows (balanced when no quotas were given)."""
        return dict(self._quota_items)

    def request_cap(self, planned: int) -> int:
        return self.max_requests if self.max_requests is not None else 2 * planned + 10

    def describe(self) -> dict:
        """The config as plain data for the manifest (base_url without credentials)."""
        return {"out": str(self.out), "n": self.n, "per_request": self.per_request,
                "concurrency": self.concurrency, "model": self.model,
                "base_url": safe_url(self.base_url), "labels": list(self.labels),
                "quotas": self.quota_map(), "batch_api": self.batch_api,
                "structured": self.structured, "axes": {k: list(v) for k, v in self.axes}}


def planned_requests(remaining: int, per_request: int) -> int:
    """Requests needed when every example is kept: the scheduler asks min(per_request, left)."""
    return math.ceil(remaining / per_request) if remaining > 0 else 0


def safe_url(url: str | None) -> str | None:
    """A URL without user:password@ (some proxies embed credentials there)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def _check_axes(axes) -> tuple[tuple[str, tuple[str, ...]], ...]:
    items = axes.items() if isinstance(axes, Mapping) else axes
    out = []
    for name, values in items or ():
        vals = tuple(str(v).strip() for v in values if str(v).strip())
        if vals:
            out.append((str(name), vals))
    return tuple(out)
