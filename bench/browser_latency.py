"""Latency of the browser bundle's page in headless Chromium: p50 for a 32-token sentence.

Serves BUNDLE (a folder written by `python -m core web-export`, or a run folder holding bundle/)
on 127.0.0.1 with the cross-origin isolation headers, opens the real page once per thread count
(`?threads=N`) and times `window.classify(text)` (tokenize + session.run + softmax, as a user sees
it) after a warm-up. Thread counts are interleaved over several rounds (the machine is noisy;
shared stack notes); medians are reported. Also reports how long after navigation the page's
first prediction finished (target: within 3 s).

    .venv/bin/python bench/browser_latency.py workspace/runs/default [--threads 1 2] [--json out]

`--parity DATA.jsonl` also runs every text of a dataset through the page and through Python
ONNX Runtime (the same INT8 file, one text a call) and reports label agreement and max |Δlogit|.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import web_export  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WORDS = "오늘 회사에서 발표를 했는데 생각보다 반응이 좋아서 기분이 정말 좋았다 내일도 열심히 해야지".split()


def sentence_of(bundle: Path, n_tokens: int) -> str:
    """A natural Korean sentence that encodes to exactly n_tokens ids (specials included)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    words: list[str] = []
    for i in range(200):
        words.append(WORDS[i % len(WORDS)])
        n = len(tok.encode(" ".join(words)).ids)
        if n == n_tokens:
            return " ".join(words)
        if n > n_tokens:  # overshot by a multi-token word: pad with one-token words instead
            words.pop()
            while len(tok.encode(" ".join(words)).ids) < n_tokens:
                words.append("가")
            if len(tok.encode(" ".join(words)).ids) == n_tokens:
                return " ".join(words)
            break
    raise SystemExit(f"could not build a {n_tokens}-token sentence with this tokenizer")


def _wait_ready(page, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = page.evaluate("window.bundle && (window.bundle.firstPredictionMs || "
                              "window.bundle.error) || null")
        if state:
            return
        time.sleep(0.02)
    raise SystemExit("the page did not load in time")


def measure(browser, url: str, threads: int, text: str, warmup: int, iters: int) -> dict:
    context = browser.new_context(service_workers="block")
    page = context.new_page()
    page.goto(f"{url}?threads={threads}")
    _wait_ready(page)
    info = page.evaluate("({error: window.bundle.error, threads: window.bundle.threads, "
                         "isolated: crossOriginIsolated, first_ms: window.bundle.firstPredictionMs, "
                         "load_ms: window.bundle.loadMs})")
    if info["error"]:
        raise SystemExit(f"page error: {info['error']}")
    times = page.evaluate(
        """async ([text, warmup, iters]) => {
             for (let i = 0; i < warmup; i++) await window.classify(text);
             const out = [];
             for (let i = 0; i < iters; i++) out.push((await window.classify(text)).ms);
             return out;
           }""", [text, warmup, iters])
    context.close()
    return {**info, "times": times}


def parity(browser, url: str, bundle: Path, data: str) -> dict:
    """Browser vs Python ORT INT8 on every text of ``data`` (labels and logits)."""
    import numpy as np

    from core import data as datasets
    from core.runtimes import load

    texts = [r.text for r in datasets.load_dataset(data)]
    facts = json.loads((bundle / "model_facts.json").read_text(encoding="utf-8"))
    py = load(bundle / web_export.INT8_PATH, max_length=facts["max_length"]).logits(texts, 1)
    context = browser.new_context(service_workers="block")
    page = context.new_page()
    page.goto(url)
    _wait_ready(page)
    js = np.array(page.evaluate("async (ts) => { const o = []; for (const t of ts) "
                                "o.push(await window.bundle.logits(t)); return o; }", texts))
    context.close()
    diff = np.abs(js - py).max(axis=-1)
    return {"texts": len(texts), "label_agreement": float((js.argmax(-1) == py.argmax(-1)).mean()),
            "max_abs_diff": float(diff.max()), "over_1e-3": int((diff > 1e-3).sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", help="bundle folder, or a run folder with bundle/ inside")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=100, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--parity", help="JSONL dataset: compare browser and Python logits on it")
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "index.html").is_file():
        bundle = bundle / "bundle"
    if not (bundle / "index.html").is_file():
        raise SystemExit(f"{args.bundle}: no bundle; build one with `python -m core web-export`")
    text = sentence_of(bundle, args.tokens)
    from playwright.sync_api import sync_playwright

    server, url = web_export.serve_bundle(bundle)
    runs: dict[int, list[dict]] = {t: [] for t in args.threads}
    checked = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for _ in range(args.rounds):  # interleave thread counts
                for t in args.threads:
                    runs[t].append(measure(browser, url, t, text, args.warmup, args.iters))
            if args.parity:
                checked = parity(browser, url, bundle, args.parity)
            browser.close()
    finally:
        server.shutdown()
    facts = json.loads((bundle / "model_facts.json").read_text(encoding="utf-8"))
    report = {"bundle": str(bundle), "model_mb": facts["model_mb"],
              "bundle_mb": round(sum(web_export.file_sizes(bundle).values()) / 1e6, 2),
              "tokens": args.tokens, "text": text, "rows": []}
    for t, items in runs.items():
        times = sorted(x for item in items for x in item["times"])
        report["rows"].append({
            "threads_asked": t, "threads": items[0]["threads"], "isolated": items[0]["isolated"],
            "p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
            "first_prediction_ms": round(statistics.median(i["first_ms"] for i in items), 1),
            "n": len(times)})
    print(f"bundle {report['bundle']}: model {report['model_mb']} MB, "
          f"bundle {report['bundle_mb']} MB; {args.tokens}-token sentence")
    for row in report["rows"]:
        print(f"  threads={row['threads']} (isolated={row['isolated']}): p50 {row['p50_ms']} ms, "
              f"p95 {row['p95_ms']} ms, first prediction {row['first_prediction_ms']} ms after "
              f"navigation (n={row['n']})")
    if checked:
        report["parity"] = checked
        print(f"  parity on {checked['texts']} texts: labels agree {checked['label_agreement']:.2%}, "
              f"max |Δlogit| {checked['max_abs_diff']:.2e} ({checked['over_1e-3']} over 1e-3)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
