"""Batch API mode: write the requests as JSONL, upload, create a batch, poll, download, and feed
the replies through the same validation, quotas and dedup as live mode.

The Batch API costs half and finishes within 24 h (https://platform.openai.com/docs/guides/batch).
The pending batch id is kept in the manifest, so ``--resume`` after a kill keeps polling the same
batch instead of paying for a second one. Collecting a batch twice is harmless: dedup rejects rows
already in the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time

from core.generate.client import RETRIABLE, APIRequestError, classify
from core.generate.plan import plan_requests
from core.generate.prompts import MalformedReply, RequestSpec, build_messages, parse_examples, response_format
from core.generate.state import RunState
from core.generate.store import batch_input_path
from core.paths import atomic_write_text

log = logging.getLogger(__name__)
ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
CANCEL_TIMEOUT_S = 3.0  # jobs.Job.cancel sends SIGKILL 5 s after SIGTERM
AGAIN = "run again with --resume --batch-api"


async def run_batches(state: RunState, client) -> str:
    """Submit (or resume) batches until the quotas are full, or the rounds or the request cap run
    out. When the user stops the job, the open batch is cancelled: it would run (and bill) on."""
    try:
        return await _rounds(state, client)
    except (asyncio.CancelledError, KeyboardInterrupt):
        await _cancel_open(state, client)
        raise


async def _rounds(state: RunState, client) -> str:
    cfg = state.config
    submitted, keep_rate = 0, 1.0
    while not state.complete():
        pending = state.batch.get("pending")
        if pending is None:
            if submitted > cfg.batch_max_rounds:
                return _summary(state, f"stopped after {submitted} batches; {AGAIN} to top up")
            budget = None if cfg.max_requests is None else cfg.max_requests - _sent(state)
            if budget is not None and budget <= 0:
                return _summary(state, f"stopped at the request cap ({cfg.max_requests} requests "
                                       f"in this run); raise --max-requests and {AGAIN}")
            specs = _plan_round(state, keep_rate, first=submitted == 0)[:budget]
            pending = await _submit(state, client, specs)
            submitted += 1
        asked = sum(sum(v["counts"].values()) for v in pending["specs"].values())
        added_before = state.added
        batch = await _wait(state, client, pending["id"])
        if batch is None:
            return (f"batch {pending['id']} is still running after {cfg.batch_timeout_s:.0f} s; "
                    f"{AGAIN} to collect it")
        if batch.status != "completed" and not batch.output_file_id:
            return _ended_empty(state, batch)
        await _collect(state, client, batch, pending)
        keep_rate = min(1.0, max(0.25, (state.added - added_before) / max(asked, 1)))
        state.batch["pending"] = None
        state.batch.setdefault("collected", []).append(batch.id)
        state.save_manifest("running", force=True)
    return _summary(state)


def _sent(state: RunState) -> int:
    """Requests submitted by the whole run: earlier sessions (the manifest) and this one."""
    return int(state.prev.get("requests", 0)) + state.requests


def _summary(state: RunState, stop: str | None = None) -> str:
    done = sum(min(state.have[k], q) for k, q in state.quotas.items())
    ids = state.batch.get("submitted", [])
    text = (f"{done}/{state.config.n} rows ({state.added} added now) via {len(ids)} batch(es) "
            f"of {_sent(state)} requests in all")
    return f"{text}; {stop}" if stop else text


def _ended_empty(state: RunState, batch) -> str:
    """A batch that ended without output: record it with the API's own errors. A failed batch
    was rejected as a whole (e.g. an unknown model), so resending the same input cannot help."""
    errors = _batch_errors(batch, state.redact)
    state.batch["pending"] = None
    state.batch.setdefault("failed", []).append(
        {"id": batch.id, "status": batch.status, "errors": errors})
    state.errors[f"batch_{batch.status}"] += 1
    state.save_manifest("running", force=True)
    reasons = "; ".join(map(_describe, errors[:5]))
    if len(errors) > 5:
        reasons += f"; and {len(errors) - 5} more (all in the manifest)"
    if batch.status == "failed":
        raise APIRequestError(
            f"batch {batch.id} failed: {reasons or 'the API gave no reason'}. The API rejected the "
            "input, so running it unchanged would send the same requests again: fix the cause "
            f"(e.g. --model or --base-url) first, then {AGAIN}")
    return _summary(state, f"batch {batch.id} ended as {batch.status}"
                           + (f" ({reasons})" if reasons else "")
                           + f"; {AGAIN} to send its requests again")


def _batch_errors(batch, redact) -> list[dict]:
    """``batch.errors`` as plain dicts. The SDK gives an ``Errors`` object whose ``data`` holds
    ``BatchError``s; a server it does not parse may give the dict or the bare list."""
    errors = getattr(batch, "errors", None)
    if isinstance(errors, dict):
        errors = errors.get("data")
    elif not isinstance(errors, list):
        errors = getattr(errors, "data", None)
    out = []
    for e in errors or []:
        get = e.get if isinstance(e, dict) else lambda k, e=e: getattr(e, k, None)
        out.append({k: _clean(get(k), redact) for k in ("code", "line", "param", "message")})
    return out


def _describe(error: dict) -> str:
    where = f"line {error['line']}: " if error["line"] is not None else ""
    return where + str(error["message"]) + (f" ({error['code']})" if error["code"] else "")


def _clean(value, redact):
    """A server-given value fit for the manifest: no key, bounded, and encodable as UTF-8."""
    if value is None or isinstance(value, int):
        return value
    return redact(str(value)[:300]).encode("utf-8", "replace").decode("utf-8")


async def _cancel_open(state: RunState, client) -> None:
    pending = state.batch.get("pending")
    if not pending:
        return
    try:
        await client.batches.cancel(pending["id"], timeout=CANCEL_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - stopping anyway; the kept id lets --resume collect it
        log.warning("could not cancel batch %s: %s", pending["id"], state.redact(exc))
        return
    state.batch["pending"] = None
    state.batch.setdefault("cancelled", []).append(pending["id"])
    state.progress(f"batch {pending['id']} cancelled")


def _plan_round(state: RunState, keep_rate: float, first: bool) -> list[RequestSpec]:
    """The first batch asks for exactly what is missing. A top-up batch can take hours, so it
    asks for the shortfall divided by the share the last batch kept, spread over at least two
    requests so that one failed line cannot sink the round (quotas drop any surplus)."""
    cfg, remaining = state.config, state.remaining()
    ask, size = remaining, cfg.per_request
    if not first:
        ask = {k: math.ceil(v / keep_rate) for k, v in remaining.items()}
        size = max(1, min(cfg.per_request, math.ceil(sum(ask.values()) / 2)))
    return plan_requests(ask, size, state.next_index, state.run_id, cfg.axes, cfg.seed)


def _line(spec: RequestSpec, cfg) -> dict:
    body = {"model": cfg.model, "messages": build_messages(spec, cfg.labels),
            "response_format": response_format(
                cfg.labels, "json_object" if cfg.structured == "json_object" else "json_schema")}
    if cfg.temperature is not None:
        body["temperature"] = cfg.temperature
    return {"custom_id": spec.request_id, "method": "POST", "url": ENDPOINT, "body": body}


async def _submit(state: RunState, client, specs: list[RequestSpec]) -> dict:
    cfg = state.config
    path = batch_input_path(cfg.out)
    atomic_write_text(path, "".join(json.dumps(_line(s, cfg), ensure_ascii=False) + "\n" for s in specs))
    data = path.read_bytes()
    uploaded = await _retrying(state, lambda: client.files.create(file=(path.name, data), purpose="batch"))
    batch = await _retrying(state, lambda: client.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h",
        metadata={"run_id": state.run_id}))
    pending = {"id": batch.id, "input_file_id": uploaded.id, "submitted": time.time(),
               "specs": {s.request_id: {"index": s.index, "counts": s.counts, "axes": s.axes}
                         for s in specs}}
    state.batch["pending"] = pending
    state.next_index += len(specs)
    state.requests += len(specs)
    state.batch.setdefault("submitted", []).append(batch.id)
    state.save_manifest("running", force=True)
    state.progress(f"batch {batch.id} submitted: {len(specs)} requests", batch_status=batch.status)
    return pending


async def _wait(state: RunState, client, batch_id: str):
    """Poll until the batch ends; None when batch_timeout_s passes first."""
    cfg = state.config
    deadline = time.monotonic() + cfg.batch_timeout_s
    while True:
        batch = await _retrying(state, lambda: client.batches.retrieve(batch_id))
        counts = batch.request_counts
        done, total = (counts.completed + counts.failed, counts.total) if counts else (0, 0)
        state.progress(f"batch {batch_id}: {batch.status} ({done}/{total} requests)",
                       batch_status=batch.status, batch_done=done, batch_total=total)
        if batch.status in TERMINAL:
            return batch
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(cfg.poll_interval_s)


async def _collect(state: RunState, client, batch, pending: dict) -> None:
    specs = {rid: RequestSpec(v["index"], rid, v["counts"], v["axes"])
             for rid, v in pending["specs"].items()}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        content = await _retrying(state, lambda fid=file_id: client.files.content(fid))
        for line in content.text.splitlines():
            if line.strip():
                _take_line(state, line, specs)
    state.progress(f"batch {batch.id} collected")


def _take_line(state: RunState, line: str, specs: dict[str, RequestSpec]) -> None:
    try:
        rec = json.loads(line)
        spec = specs[rec["custom_id"]]
    except (ValueError, KeyError, TypeError, RecursionError):
        state.errors["bad_response"] += 1
        return
    resp = rec.get("response") or {}
    if rec.get("error") or resp.get("status_code") != 200:
        err = rec.get("error") or (resp.get("body") or {}).get("error") or {}
        msg = err.get("message", "") if isinstance(err, dict) else str(err)
        state.errors["batch_request_failed"] += 1
        state.record_failure(spec, "batch_request_failed", f"{resp.get('status_code')} {msg}")
        return
    body = resp.get("body") or {}
    usage = body.get("usage") or {}
    state.usage.add(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                    state.price, batch=True)
    try:
        choice = body["choices"][0]
        items, truncated = parse_examples(choice["message"].get("content"))
    except (MalformedReply, KeyError, IndexError, TypeError) as exc:
        state.errors["malformed_json"] += 1
        state.record_failure(spec, "malformed_json", str(exc)[:200])
        return
    if truncated or choice.get("finish_reason") == "length":
        state.errors["truncated"] += 1
    state.accept(spec, items, body.get("id"))
    state.requests_ok += 1
    state.consecutive_failures = 0


async def _retrying(state: RunState, call):
    """Files/batches calls with the same retry rules as chat requests (they hit 429s and 5xx too)."""
    cfg, attempt = state.config, 0
    while True:
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - classified; non-API errors are re-raised
            kind, retry_after, message = classify(exc)
            if kind is None:
                raise
            state.errors[kind] += 1
            attempt += 1
            if kind not in RETRIABLE or attempt > cfg.max_retries:
                raise APIRequestError(f"Batch API call failed ({kind}): {state.redact(message)}") from None
            delay = retry_after if retry_after is not None else min(
                cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1))
            await asyncio.sleep(delay)
