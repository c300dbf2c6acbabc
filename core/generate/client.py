"""One chat request with retries, error kinds, and key redaction.

The SDK can retry by itself (2 retries, honoring Retry-After), but we turn that off
(``max_retries=0``) and retry here because the pipeline must (a) count every failure by kind for the
live report, (b) retry replies the SDK considers fine but that hold malformed JSON, and (c) pause all
workers together when one gets a 429, instead of each hammering the server on its own.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from core.errors import APIRequestError
from core.generate.prompts import MalformedReply, RequestSpec, build_messages, parse_examples, response_format

log = logging.getLogger(__name__)
MAX_RETRY_AFTER_S = 300.0  # never sleep longer than this on one Retry-After
RETRIABLE = {"rate_limit", "server_error", "timeout", "connection", "malformed_json", "bad_response"}


class RequestFailed(Exception):
    """One request failed every retry; the pipeline records it and carries on."""

    def __init__(self, kind: str, message: str):
        self.kind, self.message = kind, message
        super().__init__(f"{kind}: {message}")


class Redactor:
    """Removes the API key (and anything shaped like a bearer secret) from text we write or log."""

    _PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+)")

    def __init__(self, secret: str | None):
        self.secret = secret or None

    def __call__(self, text: object) -> str:
        s = str(text)
        if self.secret:
            s = s.replace(self.secret, "[redacted]")
        return self._PATTERN.sub("[redacted]", s)


def make_client(api_key: str, base_url: str | None, timeout_s: float):
    """AsyncOpenAI for any OpenAI-compatible server. Imported here so ``--help`` stays fast."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(api_key=api_key, base_url=base_url or None, timeout=timeout_s, max_retries=0)


@dataclass
class Reply:
    items: list  # raw items from the reply (validated later)
    truncated: bool  # the reply was cut off; complete items before the cut were kept
    prompt_tokens: int
    completion_tokens: int
    response_id: str | None
    attempts: int


@dataclass
class CallContext:
    """State shared by all in-flight requests of one run."""

    config: object  # GenerateConfig
    redact: Redactor
    mode: str = "json_schema"  # current structured-output mode (auto falls back to json_object)
    errors: Counter = field(default_factory=Counter)  # failure kind -> count (every attempt)
    pause_until: float = 0.0  # monotonic time before which nobody sends (shared 429 cool-down)
    rng: random.Random = field(default_factory=random.Random)
    on_error: object = None  # callback(kind) after each failed attempt (for live progress)
    on_usage: object = None  # callback(prompt_tokens, completion_tokens) for every billed reply


async def request_examples(client, spec: RequestSpec, ctx: CallContext) -> Reply:
    """Send one request; retry retriable failures with backoff. Raises RequestFailed when the
    retries run out and APIRequestError for failures no retry can fix."""
    cfg = ctx.config
    messages = build_messages(spec, cfg.labels)
    attempt = 0
    while True:
        wait = ctx.pause_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        mode = ctx.mode  # the mode this attempt uses (another request may switch it meanwhile)
        try:
            kwargs = {"temperature": cfg.temperature} if cfg.temperature is not None else {}
            resp = await client.chat.completions.create(
                model=cfg.model, messages=messages, timeout=cfg.request_timeout_s,
                response_format=response_format(cfg.labels, mode), **kwargs)
            return _to_reply(resp, ctx, attempt + 1)
        except Exception as exc:  # noqa: BLE001 - classified below; unknown errors are re-raised
            kind, retry_after, message = classify(exc)
            if kind is None:
                raise
            message = ctx.redact(message)
            if kind == "schema_unsupported" and cfg.structured == "auto" and mode == "json_schema":
                if ctx.mode == "json_schema":  # count and log the switch once
                    log.warning("server refused json_schema output; using json_object (%s)", message)
                    ctx.mode = "json_object"
                    ctx.errors[kind] += 1
                continue
            ctx.errors[kind] += 1
            if ctx.on_error:
                ctx.on_error(kind)
            if kind not in RETRIABLE:
                raise APIRequestError(f"request {spec.request_id} failed ({kind}): {message}") from None
            attempt += 1
            if attempt > cfg.max_retries:
                raise RequestFailed(kind, message) from None
            delay = _delay(attempt, retry_after, ctx)
            if kind == "rate_limit":  # everyone waits: sending more now only earns more 429s
                ctx.pause_until = max(ctx.pause_until, time.monotonic() + delay)
            log.info("request %s: %s, retry %d/%d in %.2fs", spec.request_id, kind, attempt,
                     cfg.max_retries, delay)
            await asyncio.sleep(delay)


def _to_reply(resp, ctx: CallContext, attempts: int) -> Reply:
    usage = getattr(resp, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    if ctx.on_usage:  # billed even if the content turns out unusable
        ctx.on_usage(prompt, completion)
    if not getattr(resp, "choices", None):
        raise MalformedReply("reply has no choices")
    choice = resp.choices[0]
    if getattr(choice.message, "refusal", None):
        raise MalformedReply(f"model refused: {choice.message.refusal[:80]}")
    items, truncated = parse_examples(choice.message.content)
    truncated = truncated or choice.finish_reason == "length"
    return Reply(items, truncated, prompt, completion, getattr(resp, "id", None), attempts)


def _delay(attempt: int, retry_after: float | None, ctx: CallContext) -> float:
    if retry_after is not None:
        # Honor the server, plus a little jitter so paused workers do not all return at once.
        return min(retry_after, MAX_RETRY_AFTER_S) * (1.0 + 0.1 * ctx.rng.random())
    cap = min(ctx.config.backoff_max_s, ctx.config.backoff_base_s * 2 ** (attempt - 1))
    # "Full jitter" (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
    return ctx.rng.uniform(0.5 * cap, cap)


def classify(exc: BaseException) -> tuple[str | None, float | None, str]:
    """``(kind, retry_after_s, message)``; kind None means "not an API failure: re-raise"."""
    import openai

    if isinstance(exc, MalformedReply):
        return "malformed_json", None, str(exc)
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", None, "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "connection", None, f"cannot reach the server ({type(exc.__cause__ or exc).__name__})"
    if isinstance(exc, openai.APIResponseValidationError):
        return "bad_response", None, "the server's reply does not look like a chat completion"
    if isinstance(exc, openai.APIStatusError):
        status, msg = exc.status_code, _status_message(exc)
        if status == 429:
            if "insufficient_quota" in msg or "quota" in str(getattr(exc, "code", "") or ""):
                return "quota_exceeded", None, f"429 {msg} (add credit to the account)"
            return "rate_limit", retry_after_seconds(exc.response.headers), f"429 {msg}"
        if status in (400, 422) and re.search(r"response_format|json_schema|schema", msg, re.I):
            return "schema_unsupported", None, f"{status} {msg}"
        if status in (401, 403):
            return "auth", None, f"{status} {msg} (check the API key and base URL)"
        if status == 404:
            return "not_found", None, f"404 {msg} (check the model name and base URL)"
        if status in (408, 409) or status >= 500:
            return "server_error", None, f"{status} {msg}"
        return "bad_request", None, f"{status} {msg}"
    if isinstance(exc, ValueError):  # e.g. a 200 whose body is not JSON
        return "bad_response", None, f"unreadable reply: {type(exc).__name__}"
    return None, None, str(exc)


def _status_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(getattr(exc, "message", exc))[:300]


def retry_after_seconds(headers) -> float | None:
    """Seconds from ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date), else None.
    (https://www.rfc-editor.org/rfc/rfc9110#field.retry-after; OpenAI also sends retry-after-ms)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None
