"""The generate stage: ``estimate`` (dry run) and ``run`` (live requests or the Batch API).

Live mode keeps ``concurrency`` workers busy. Before each request a worker *reserves* the examples
it asks for (per label), so concurrent requests never ask for more than the quotas still need; when
a reply comes back short (duplicates, invalid rows, a failure) the reservation is released and the
next request asks for the difference. Accepted rows are appended at once, so the file only ever
holds valid, unique rows within quota.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import Counter

from core.errors import MissingAPIKey, StudioError
from core.generate.client import CallContext, Redactor, RequestFailed, make_client, request_examples
from core.generate.config import GenerateConfig, planned_requests
from core.generate.cost import Estimate, estimate_run
from core.generate.plan import plan_requests, split_counts
from core.generate.prompts import RequestSpec, axes_for
from core.generate.state import GenerateResult, RunState, observed_rates, prepare
from core.generate.store import read_manifest, writer_lock
from core.progress import ProgressFn

log = logging.getLogger(__name__)
API_KEY_ENV = "OPENAI_API_KEY"


def estimate(config: GenerateConfig) -> Estimate:
    """Dry run: requests, tokens, cost and time for what the output still needs. Sends nothing,
    writes nothing, needs no key."""
    _, existing, _ = prepare(config, repair=False)
    quotas = config.quota_map()
    remaining = {k: max(0, q - existing.counts.get(k, 0)) for k, q in quotas.items()}
    manifest = read_manifest(config.out) if config.resume else {}
    start = max(int(manifest.get("next_index", 0)), existing.max_index + 1)
    specs = plan_requests(remaining, config.per_request, start, "dry", config.axes, config.seed)
    have = sum(min(existing.counts.get(k, 0), q) for k, q in quotas.items())
    return estimate_run(specs, config.labels, config, have, remaining,
                        observed_rates(config.out) if config.resume else None)


def run(config: GenerateConfig, on_progress: ProgressFn | None = None, *,
        api_key: str | None = None) -> GenerateResult:
    """Generate until every quota is filled (or the retry/request caps stop it).

    The key comes from ``api_key`` or $OPENAI_API_KEY; it is never written anywhere and is removed
    from every error message we record.
    """
    key = api_key or os.environ.get(API_KEY_ENV)
    if not key:
        raise MissingAPIKey()
    with writer_lock(config.out):
        try:
            return asyncio.run(_run(config, on_progress, key))
        except asyncio.CancelledError:  # SIGTERM (see _sigterm_cancels): the CLI's exit 130
            raise KeyboardInterrupt from None


@contextlib.contextmanager
def _sigterm_cancels(task: asyncio.Task):
    """While the loop runs, SIGTERM (what jobs.cancel sends) cancels the main task, as asyncio.run
    does for Ctrl-C, so cleanup such as cancelling an open batch runs at an await. A
    KeyboardInterrupt raised by a plain signal handler can land anywhere, even inside the loop
    (https://docs.python.org/3/library/asyncio-runner.html#handling-keyboard-interruption)."""
    previous = signal.getsignal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (ValueError, RuntimeError):  # not the main thread: signals are not ours to route
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


async def _run(config: GenerateConfig, on_progress: ProgressFn | None, key: str) -> GenerateResult:
    with _sigterm_cancels(asyncio.current_task()):
        return await _run_stage(config, on_progress, key)


async def _run_stage(config: GenerateConfig, on_progress: ProgressFn | None,
                     key: str) -> GenerateResult:
    redact = Redactor(key)
    client = make_client(key, config.base_url, config.request_timeout_s)
    state = RunState(config, on_progress, redact)  # raises before anything is written
    status, error = "interrupted", None
    try:
        state.progress("starting")
        if state.complete():
            message = "the output already holds every quota; nothing to do"
        elif config.batch_api:
            from core.generate.batch import run_batches

            message = await run_batches(state, client)
        else:
            message = await _run_live(state, client)
        status = "done" if state.complete() else "incomplete"
        state.progress(message)
        return state.result(message)
    except StudioError as exc:
        status, error = "failed", redact(exc)
        raise
    finally:
        state.save_manifest(status, force=True, error=error)
        state.close()
        await client.close()


class _Scheduler:
    """Hands out requests sized to what the quotas still need, net of in-flight reservations."""

    def __init__(self, state: RunState, cap: int):
        self.state, self.cap = state, cap
        self.reserved: Counter = Counter()
        self.cond = asyncio.Condition()
        self.stop_reason: str | None = None

    async def next(self) -> RequestSpec | None:
        s = self.state
        async with self.cond:
            while True:
                if self.stop_reason:
                    return None
                need = {k: r - self.reserved[k] for k, r in s.remaining().items()}
                need = {k: v for k, v in need.items() if v > 0}
                if need and s.requests < self.cap:
                    counts = split_counts(need, s.config.per_request)
                    self.reserved.update(counts)
                    idx = s.next_index
                    s.next_index += 1
                    s.requests += 1
                    s.in_flight += 1
                    return RequestSpec(idx, f"{s.run_id}-{idx:05d}", counts,
                                       axes_for(idx, s.config.axes, s.config.seed))
                if s.in_flight == 0:
                    if need:
                        self.stop_reason = f"stopped at the request cap ({self.cap} requests)"
                    return None
                await self.cond.wait()

    async def release(self, spec: RequestSpec) -> None:
        async with self.cond:
            self.reserved.subtract(spec.counts)
            self.state.in_flight -= 1
            self.cond.notify_all()

    async def stop(self, reason: str) -> None:
        async with self.cond:
            self.stop_reason = self.stop_reason or reason
            self.cond.notify_all()


async def _worker(sched: _Scheduler, client, ctx: CallContext) -> None:
    s = sched.state
    while (spec := await sched.next()) is not None:
        try:
            reply = await request_examples(client, spec, ctx)
            kept = s.accept(spec, reply.items, reply.response_id)
            s.requests_ok += 1
            s.consecutive_failures = 0
            if reply.truncated:
                s.errors["truncated"] += 1
            s.progress(f"{spec.request_id}: kept {kept}/{spec.size}")
        except RequestFailed as exc:
            s.record_failure(spec, exc.kind, exc.message)
            s.progress(f"{spec.request_id} failed: {exc.kind}")
            if s.consecutive_failures >= s.config.max_consecutive_failures:
                await sched.stop(f"gave up after {s.consecutive_failures} requests in a row failed "
                                 f"every retry (last: {exc.kind})")
        finally:
            await sched.release(spec)
        s.save_manifest("running")


async def _run_live(state: RunState, client) -> str:
    cfg = state.config
    planned = planned_requests(sum(state.remaining().values()), cfg.per_request)
    sched = _Scheduler(state, cfg.request_cap(planned))
    ctx = CallContext(cfg, state.redact, mode="json_object" if cfg.structured == "json_object"
                      else "json_schema", errors=state.errors,
                      on_usage=lambda p, c: state.usage.add(p, c, state.price),
                      on_error=lambda kind: state.progress(f"retrying after {kind}"))
    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(cfg.concurrency, max(planned, 1))):
                tg.create_task(_worker(sched, client, ctx))
    except ExceptionGroup as group:  # the first failure (e.g. a bad key) stopped every worker
        raise group.exceptions[0] from None
    return _summary(state, sched.stop_reason)


def _summary(state: RunState, stop_reason: str | None) -> str:
    done = sum(min(state.have[k], q) for k, q in state.quotas.items())
    parts = [f"{done}/{state.config.n} rows ({state.added} added) in {state.requests} requests"]
    if state.failed:
        kinds = Counter(f["kind"] for f in state.failed)
        parts.append("failed requests: " + ", ".join(f"{k} x{v}" for k, v in kinds.items()))
    if stop_reason and not state.complete():
        parts.append(stop_reason + "; run again with --resume to continue")
    return "; ".join(parts)
