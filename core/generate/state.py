"""The state of one generate run, shared by the live and the Batch API paths.

It owns the acceptance rule (validate -> quota -> dedup -> append), the counters the live report
shows, and the manifest. Counters in the manifest are cumulative over resumes; the result reports
this run's share.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from core.generate.config import GenerateConfig
from core.generate.cost import Usage, load_prices, price_for
from core.generate.dedup import Deduper, Rules, check_example
from core.generate.prompts import RequestSpec
from core.generate.store import Existing, RowWriter, load_existing, manifest_path, read_manifest, write_manifest
from core.progress import ProgressFn
from core.safe_json import storable

log = logging.getLogger(__name__)
MANIFEST_EVERY_S = 0.5  # rewrite the manifest at most this often (the output file is the truth)


@dataclass
class GenerateResult:
    out: str  # the output JSONL
    manifest: str  # its manifest
    complete: bool  # every quota is filled
    target: int
    rows: int  # rows of the label set in the file now (capped at the quotas)
    added: int  # rows this run appended
    per_label: dict[str, int]
    quotas: dict[str, int]
    requests: int  # requests this run sent (each may take several attempts)
    requests_failed: int  # requests that failed every retry
    prompt_tokens: int  # this run
    completion_tokens: int
    cost_usd: float | None  # this run; None when the model has no price
    elapsed_s: float
    rows_per_s: float
    errors: dict[str, int]  # failed attempts by kind (rate_limit, timeout, malformed_json...)
    rejected: dict[str, int]  # examples dropped by reason (duplicate, wrong_label, over_quota...)
    failed_requests: list[dict]  # [{request_id, kind, message}] (key redacted)
    mode: str  # "live" or "batch"
    batch_ids: list[str]  # every batch of the run, earlier sessions included
    message: str  # one-line summary


def prepare(config: GenerateConfig, repair: bool) -> tuple[Deduper, Existing, dict]:
    """Read what the output already holds; refuse to append to it without ``resume``."""
    deduper = Deduper(threshold=config.near_dup_threshold)
    if config.out.exists() and config.out.stat().st_size > 0 and not config.resume:
        raise ConfigError(f"{config.out} already exists; pass --resume to continue it to the "
                          "target, or choose another --out")
    existing = load_existing(config.out, config.labels, deduper, repair=repair)
    manifest = read_manifest(config.out) if config.resume else {}
    return deduper, existing, manifest


class RunState:
    def __init__(self, config: GenerateConfig, on_progress: ProgressFn | None, redact):
        self.config, self.on_progress, self.redact = config, on_progress, redact
        self.deduper, existing, self.prev = prepare(config, repair=True)
        self.quotas = config.quota_map()
        self.have = Counter({k: existing.counts.get(k, 0) for k in self.quotas})
        self.rules = Rules(config.labels, config.min_chars, config.max_chars, config.min_hangul_ratio)
        self.price = price_for(config.model, load_prices(config.prices_path))
        self.usage = Usage(cost_usd=0.0 if self.price else None)
        self.errors: Counter = Counter()
        self.rejected: Counter = Counter()
        self.failed: list[dict] = []
        self.added = self.requests = self.requests_ok = self.in_flight = self.consecutive_failures = 0
        self.examples_returned = 0
        self.run_id = self.prev.get("run_id") or "g" + secrets.token_hex(3)
        self.next_index = max(int(self.prev.get("next_index", 0)), existing.max_index + 1)
        self.batch: dict = dict(self.prev.get("batch") or {})
        self.t0, self._last_manifest = time.monotonic(), 0.0
        self.writer = RowWriter(config.out)
        if existing.torn_bytes:
            self.rejected["torn_line_cut"] += 1

    # --- acceptance -------------------------------------------------------------------------
    def remaining(self) -> dict[str, int]:
        return {k: max(0, q - self.have[k]) for k, q in self.quotas.items()}

    def complete(self) -> bool:
        return not any(self.remaining().values())

    def accept(self, spec: RequestSpec, items: list, response_id: str | None) -> int:
        """Validate, enforce quotas, dedup, append. Returns rows kept."""
        rows = []
        self.examples_returned += len(items)
        if not storable(response_id):  # a server id with a lone surrogate must not break the file
            response_id = None
        for item in items:
            rec, reason = check_example(item, self.rules)
            if rec is None:
                self.rejected[reason] += 1
                continue
            if self.have[rec["label"]] >= self.quotas[rec["label"]]:
                self.rejected["over_quota"] += 1  # checked before dedup: it is not indexed
                continue
            dup = self.deduper.add(rec["text"])
            if dup is not None:
                self.rejected[dup] += 1
                continue
            self.have[rec["label"]] += 1
            rows.append({**rec, "request_id": spec.request_id, "response_id": response_id,
                         "model": self.config.model, "axes": spec.axes})
        self.writer.append(rows)
        self.added += len(rows)
        return len(rows)

    def record_failure(self, spec: RequestSpec, kind: str, message: str) -> None:
        self.failed.append({"request_id": spec.request_id, "kind": kind,
                            "message": self.redact(message)})
        self.consecutive_failures += 1

    # --- reporting --------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def snapshot(self, message: str = "", **extra) -> dict:
        done = sum(min(self.have[k], q) for k, q in self.quotas.items())
        elapsed = self.elapsed()
        return {
            "done": done, "total": self.config.n, "message": message or f"{done}/{self.config.n} rows",
            "per_label": dict(self.have), "quotas": self.quotas, "added": self.added,
            "rows_per_s": round(self.added / elapsed, 2) if elapsed > 0 else 0.0,
            "requests": self.requests, "requests_ok": self.requests_ok,
            "requests_failed": len(self.failed), "in_flight": self.in_flight,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cost_usd": None if self.usage.cost_usd is None else round(self.usage.cost_usd, 6),
            "errors": dict(self.errors), "rejected": dict(self.rejected),
            "elapsed_s": round(elapsed, 2), "mode": "batch" if self.config.batch_api else "live",
            **extra,
        }

    def progress(self, message: str = "", **extra) -> None:
        if self.on_progress is not None:
            self.on_progress(self.snapshot(message, **extra))

    def save_manifest(self, status: str, force: bool = False, error: str | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_manifest < MANIFEST_EVERY_S:
            return
        self._last_manifest = now
        prev = self.prev
        pcost, cost = prev.get("cost_usd", 0.0), self.usage.cost_usd
        data = {
            "version": 1, "run_id": self.run_id, "status": status, "error": error,
            "config": self.config.describe(), "target": self.config.n, "counts": dict(self.have),
            "next_index": self.next_index,
            "requests": int(prev.get("requests", 0)) + self.requests,
            "requests_failed": int(prev.get("requests_failed", 0)) + len(self.failed),
            "examples_returned": int(prev.get("examples_returned", 0)) + self.examples_returned,
            "rows_added": int(prev.get("rows_added", 0)) + self.added,
            "prompt_tokens": int(prev.get("prompt_tokens", 0)) + self.usage.prompt_tokens,
            "completion_tokens": int(prev.get("completion_tokens", 0)) + self.usage.completion_tokens,
            "cost_usd": None if cost is None or pcost is None else pcost + cost,
            "errors": dict(Counter(prev.get("errors", {})) + self.errors),
            "rejected": dict(Counter(prev.get("rejected", {})) + self.rejected),
            "failed_requests": (prev.get("failed_requests", []) + self.failed)[-200:],
            "batch": self.batch, "sessions": int(prev.get("sessions", 0)) + 1,
            "elapsed_s": float(prev.get("elapsed_s", 0.0)) + self.elapsed(),
        }
        write_manifest(self.config.out, data)

    def result(self, message: str) -> GenerateResult:
        snap = self.snapshot()
        return GenerateResult(
            out=str(self.config.out), manifest=str(manifest_path(self.config.out)),
            complete=self.complete(), target=self.config.n, rows=snap["done"], added=self.added,
            per_label=dict(self.have), quotas=self.quotas, requests=self.requests,
            requests_failed=len(self.failed), prompt_tokens=self.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens, cost_usd=snap["cost_usd"],
            elapsed_s=round(self.elapsed(), 3), rows_per_s=snap["rows_per_s"],
            errors=dict(self.errors), rejected=dict(self.rejected), failed_requests=self.failed,
            mode=snap["mode"], batch_ids=list(self.batch.get("submitted", [])),
            message=message)

    def close(self) -> None:
        self.writer.close()


def observed_rates(out: Path) -> dict | None:
    """Tokens per example measured by an earlier part of this run (for a resumed dry run)."""
    m = read_manifest(out)
    if m.get("examples_returned") and m.get("completion_tokens"):
        return {"examples": m["examples_returned"], "completion_tokens": m["completion_tokens"]}
    return None
