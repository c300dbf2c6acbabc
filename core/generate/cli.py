"""``python -m core generate``: parse flags into a GenerateConfig and make one library call.

The API key is never a flag (it would land in shell history, ``ps`` output and job.json): it comes
from $OPENAI_API_KEY, which the Generate page passes to the job's environment only.
"""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="generate a labeled Korean dataset with an LLM (key from $OPENAI_API_KEY)",
        description="Generate labeled Korean examples with any OpenAI-compatible chat API. "
                    "Rows are appended to --out as they arrive; --resume continues to the target.")
    p.add_argument("--n", type=int, default=None, help="target rows (default 5000, or the quotas' sum)")
    p.add_argument("--per-request", type=int, default=50, help="examples per request (default 50)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--model", default=None, help="model name (default gpt-4.1-mini)")
    p.add_argument("--base-url", default=None,
                   help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (default OpenAI)")
    p.add_argument("--labels", nargs="+", default=None,
                   help="label set, space- or comma-separated (default the 7 emotion labels)")
    p.add_argument("--quotas", default=None, help="per-label rows, e.g. 기쁨=800,중립=400 (default balanced)")
    p.add_argument("--out", required=True, help="output JSONL (appended to)")
    p.add_argument("--resume", action="store_true", help="continue an existing --out to the target")
    p.add_argument("--dry-run", action="store_true",
                   help="estimate requests, tokens, cost and time; send nothing")
    p.add_argument("--batch-api", action="store_true", help="use the Batch API (50%% cheaper, <= 24 h)")
    p.add_argument("--structured", choices=("auto", "json_schema", "json_object"), default="auto",
                   help="structured output mode (auto: json_schema, fall back to json_object)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request attempt")
    p.add_argument("--max-retries", type=int, default=5, help="retries per request")
    p.add_argument("--max-requests", type=int, default=None, help="cap on requests this run")
    p.add_argument("--min-chars", type=int, default=4)
    p.add_argument("--max-chars", type=int, default=300)
    p.add_argument("--near-dup", type=float, default=0.8,
                   help="character 3-gram Jaccard at or above which a text is a near-duplicate")
    p.add_argument("--axes-json", default=None,
                   help='diversity axes as JSON, e.g. \'{"domain": ["직장", "가족"], "register": ["반말"]}\'')
    p.add_argument("--prices", default=None, help="JSON price table {model: {input, output}} per 1M")
    p.add_argument("--poll-interval", type=float, default=30.0, help="Batch API poll seconds")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry backoff in seconds")
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


def config_from_args(args):
    from core.errors import ConfigError
    from core.generate import DEFAULT_AXES, DEFAULT_MODEL, GenerateConfig
    from core.labels import DEFAULT_LABEL_NAMES

    quotas = parse_quotas(args.quotas)
    labels = ([x for item in args.labels for x in item.split(",") if x.strip()]
              if args.labels else (list(quotas) if quotas else list(DEFAULT_LABEL_NAMES)))
    n = args.n if args.n is not None else (sum(quotas.values()) if quotas else 5000)
    axes = DEFAULT_AXES
    if args.axes_json:
        try:
            axes = json.loads(args.axes_json)
        except ValueError:
            axes = None
        if not isinstance(axes, dict):
            raise ConfigError('--axes-json must be a JSON object {"axis": ["value", ...]}')
    return GenerateConfig(
        out=args.out, n=n, per_request=args.per_request, concurrency=args.concurrency,
        model=args.model or DEFAULT_MODEL, base_url=args.base_url, labels=tuple(labels),
        quotas=quotas, resume=args.resume, batch_api=args.batch_api, axes=axes,
        structured=args.structured, temperature=args.temperature, min_chars=args.min_chars,
        max_chars=args.max_chars, near_dup_threshold=args.near_dup, request_timeout_s=args.timeout,
        max_retries=args.max_retries, backoff_base_s=args.backoff, max_requests=args.max_requests,
        prices_path=args.prices, poll_interval_s=args.poll_interval)


def handle(args) -> tuple[int, object]:
    import signal

    from core.generate import estimate, run
    from core.progress import CliProgress

    config = config_from_args(args)
    if args.dry_run:
        est = estimate(config)
        _print(args, est, _describe_estimate(est))
        return 0, est

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
    _print(args, result, lines)
    return (0 if result.complete else 1), result


def _print(args, obj, lines: list[str]) -> None:
    import sys

    from core.progress import _jsonable

    text = json.dumps(_jsonable(obj), ensure_ascii=False) if args.json else "\n".join(lines)
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


def config_to_argv(config) -> list[str]:
    """The ``generate`` command line for a config (what the Generate page runs as a job).
    ``config_from_args`` of its parse gives the same config back; the key is never part of it."""
    argv = ["generate", "--n", str(config.n), "--per-request", str(config.per_request),
            "--concurrency", str(config.concurrency), "--model", config.model,
            "--labels", ",".join(config.labels), "--out", str(config.out),
            "--structured", config.structured, "--timeout", str(config.request_timeout_s),
            "--max-retries", str(config.max_retries), "--min-chars", str(config.min_chars),
            "--max-chars", str(config.max_chars), "--near-dup", str(config.near_dup_threshold),
            "--poll-interval", str(config.poll_interval_s), "--backoff", str(config.backoff_base_s),
            "--axes-json", json.dumps({k: list(v) for k, v in config.axes}, ensure_ascii=False)]
    if config.temperature is not None:
        argv += ["--temperature", str(config.temperature)]
    if config.base_url:
        argv += ["--base-url", config.base_url]
    if config.quotas is not None:
        argv += ["--quotas", ",".join(f"{k}={v}" for k, v in config.quota_map().items())]
    if config.max_requests is not None:
        argv += ["--max-requests", str(config.max_requests)]
    if config.prices_path:
        argv += ["--prices", str(config.prices_path)]
    argv += ["--resume"] * config.resume + ["--batch-api"] * config.batch_api
    return argv
