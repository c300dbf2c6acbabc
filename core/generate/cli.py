"""``python -m core generate``: parse flags into a GenerateConfig and make one library call.

The API key is never a flag (it would land in shell history, ``ps`` output and job.json): it comes
from $OPENAI_API_KEY, which the Generate page passes to the job's environment only.
"""

from __future__ import annotations

import json


def register(subparsers) -> None:
    from core.generate.config import GenerateConfig as D  # defaults shown in --help

    p = subparsers.add_parser(
        "generate", help="generate a labeled Korean dataset with an LLM (key from $OPENAI_API_KEY)",
        description="Generate labeled Korean examples with any OpenAI-compatible chat API. "
                    "Rows are appended to --out as they arrive; --resume continues to the target.")
    p.add_argument("--n", type=int, help=f"target rows (default {D.n}, or the quotas' sum)")
    p.add_argument("--per-request", type=int, help=f"examples per request (default {D.per_request})")
    p.add_argument("--concurrency", type=int, help=f"requests in flight (default {D.concurrency})")
    p.add_argument("--model", help=f"model name (default {D.model})")
    p.add_argument("--base-url",
                   help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (default OpenAI)")
    p.add_argument("--labels", nargs="+",
                   help="label set, space- or comma-separated (default the 7 emotion labels)")
    p.add_argument("--quotas", help="per-label rows, e.g. 기쁨=800,중립=400 (default balanced)")
    p.add_argument("--out", required=True, help="output JSONL (appended to)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue an existing --out to the target")
    p.add_argument("--dry-run", action="store_true",
                   help="estimate requests, tokens, cost and time; send nothing")
    p.add_argument("--batch-api", action="store_true", default=None,
                   help="use the Batch API (50%% cheaper, <= 24 h)")
    p.add_argument("--structured", choices=("auto", "json_schema", "json_object"),
                   help=f"structured output mode (default {D.structured}: json_schema, falling "
                        "back to json_object)")
    p.add_argument("--temperature", type=float, help=f"sampling temperature (default "
                                                     f"{D.temperature})")
    p.add_argument("--seed", type=int, help=f"seeds the diversity-axis rotation (default {D.seed})")
    p.add_argument("--timeout", type=float,
                   help=f"seconds per request attempt (default {D.request_timeout_s:g})")
    p.add_argument("--max-retries", type=int, help=f"retries per request (default {D.max_retries})")
    p.add_argument("--max-requests", type=int,
                   help="cap on requests: this session's when live; with --batch-api, the "
                        "whole run's, earlier sessions included")
    p.add_argument("--min-chars", type=int, help=f"shortest text kept (default {D.min_chars})")
    p.add_argument("--max-chars", type=int, help=f"longest text kept (default {D.max_chars})")
    p.add_argument("--near-dup", type=float,
                   help="character 3-gram Jaccard at or above which a text is a near-duplicate "
                        f"(default {D.near_dup_threshold})")
    p.add_argument("--axes-json",
                   help='diversity axes as JSON, e.g. \'{"domain": ["직장", "가족"], "register": ["반말"]}\'')
    p.add_argument("--prices", help="JSON price table {model: {input, output}} per 1M")
    p.add_argument("--poll-interval", type=float,
                   help=f"Batch API poll seconds (default {D.poll_interval_s:g})")
    p.add_argument("--backoff", type=float,
                   help=f"first retry backoff in seconds (default {D.backoff_base_s:g})")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(handler=handle)


def parse_quotas(spec: str | None) -> dict[str, int] | None:
    from core.errors import ConfigError

    if not spec:
        return None
    quotas = {}
    for part in spec.split(","):
        name, sep, count = part.partition("=")
        if not sep or not count.strip().isdigit():
            raise ConfigError(f"bad quota {part!r}: write label=count, e.g. 기쁨=800,중립=400")
        quotas[name.strip()] = int(count)
    return quotas


_FIELDS = {"out": "out", "n": "n", "per_request": "per_request", "concurrency": "concurrency",
           "model": "model", "base_url": "base_url", "resume": "resume",
           "batch_api": "batch_api", "structured": "structured", "temperature": "temperature",
           "seed": "seed", "timeout": "request_timeout_s", "max_retries": "max_retries",
           "max_requests": "max_requests", "min_chars": "min_chars", "max_chars": "max_chars",
           "near_dup": "near_dup_threshold", "prices": "prices_path",
           "poll_interval": "poll_interval_s", "backoff": "backoff_base_s"}


def config_from_args(args):
    from core.cli import overrides
    from core.errors import ConfigError
    from core.generate import GenerateConfig

    kwargs = overrides(args, _FIELDS)
    quotas = parse_quotas(args.quotas)
    if quotas:
        kwargs["quotas"] = quotas
        kwargs.setdefault("n", sum(quotas.values()))
    if args.labels:
        kwargs["labels"] = tuple(x for item in args.labels for x in item.split(",") if x.strip())
    elif quotas:
        kwargs["labels"] = tuple(quotas)
    if args.axes_json:
        try:
            axes = json.loads(args.axes_json)
        except ValueError:
            axes = None
        if not isinstance(axes, dict):
            raise ConfigError('--axes-json must be a JSON object {"axis": ["value", ...]}')
        kwargs["axes"] = axes
    return GenerateConfig(**kwargs)


def handle(args) -> tuple[int, object]:
    from core.generate import estimate

    config = config_from_args(args)
    if args.dry_run:
        est = estimate(config)
        _print(args.json, est, _describe_estimate(est))
        return 0, est
    return run_generate(config, as_json=args.json)


def run_generate(config, as_json: bool = False) -> tuple[int, object]:
    """Generate with a progress bar and a summary (the CLI and the Generate page's jobs)."""
    import signal

    from core.generate import run
    from core.progress import CliProgress

    def _on_term(signum, frame):
        # jobs.cancel sends SIGTERM: unwind normally so the manifest records "interrupted".
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)
    progress = CliProgress("generate")
    try:
        result = run(config, progress)
    finally:
        progress.close()
    lines = [result.message, "per label: " + ", ".join(f"{k} {v}/{result.quotas[k]}"
                                                        for k, v in result.per_label.items()),
             f"tokens: {result.prompt_tokens:,} in / {result.completion_tokens:,} out, cost: "
             + ("unknown" if result.cost_usd is None else f"${result.cost_usd:,.4f}")]
    if result.errors or result.rejected:
        lines.append(f"errors: {result.errors or 'none'}; rejected: {result.rejected or 'none'}")
    _print(as_json, result, lines)
    return (0 if result.complete else 1), result


def _print(as_json: bool, obj, lines: list[str]) -> None:
    import sys

    from core.progress import _jsonable

    text = json.dumps(_jsonable(obj), ensure_ascii=False) if as_json else "\n".join(lines)
    sys.stdout.write(text + "\n")


def _describe_estimate(est) -> list[str]:
    usd = lambda v: "unknown" if v is None else f"~${v:,.2f}"  # noqa: E731
    return [f"plan: {est.requests} requests of <= {est.per_request} examples for "
            f"{sum(est.remaining.values())} rows ({est.have} of {est.target} already there), "
            f"model {est.model}",
            f"tokens: ~{est.prompt_tokens:,} in / ~{est.completion_tokens:,} out",
            f"cost: {usd(est.cost_usd)} live, {usd(est.batch_cost_usd)} with --batch-api",
            f"time: ~{est.time_s / 60:.1f} min at concurrency {est.concurrency} "
            "(Batch API: within 24 h)",
            *(f"note: {n}" for n in est.notes)]
