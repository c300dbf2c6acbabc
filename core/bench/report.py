"""Benchmark outputs, all drawn from results.json: CSV, a Markdown report, plotly charts, a PNG.

The PNG is rendered by loading the chart's HTML (plotly.js inline, so no network) in headless
Chromium through Playwright: kaleido is not installed here, and Chromium already is for the browser
row. Without Chromium the PNG is skipped and ``results["png"]`` says why.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

from core import paths

CSV_FIELDS = ["key", "runtime", "precision", "device", "kind", "case", "batch_size", "seq_len",
              "p50_ms", "p95_ms", "p99_ms", "mean_ms", "iters", "throughput",
              "speedup_vs_pytorch", "peak_rss_mb", "mem_ratio_vs_pytorch", "size_mb", "load_s",
              "accuracy", "macro_f1", "agreement", "max_logit_diff", "encode_ms", "round_spread",
              "threads", "clients", "errors"]
CASES = ("short", "typical", "long")


def label(row: dict) -> str:
    return f"{row['runtime']} {str(row['precision']).upper()}"


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def to_csv(results: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results["results"])
    return buf.getvalue()


def rows_of(results: dict, kind: str, case: str | None = None, batch: int | None = None):
    return [r for r in results["results"] if r["kind"] == kind
            and (case is None or r["case"] == case) and (batch is None or r["batch_size"] == batch)]


def summary_table(results: dict) -> list[dict]:
    """One line per runtime: batch-1 typical latency, the largest batch's throughput, memory,
    size and quality, with ratios against PyTorch FP32."""
    sizes = sorted({r["batch_size"] for r in rows_of(results, "throughput")})
    big = {r["key"]: r for r in rows_of(results, "throughput", batch=sizes[-1] if sizes else 0)}
    http = {r["key"]: r for r in rows_of(results, "serving")}
    table = []
    for row in rows_of(results, "latency", "typical"):
        rt = next(x for x in results["runtimes"] if x["key"] == row["key"])
        table.append({
            "runtime": label(row), "tokens": row["seq_len"], "p50 ms": row["p50_ms"],
            "p95 ms": row["p95_ms"], "p99 ms": row["p99_ms"],
            "speed-up": row["speedup_vs_pytorch"],
            f"texts/s b{sizes[-1] if sizes else '-'}": big.get(row["key"], {}).get("throughput"),
            "HTTP req/s": http.get(row["key"], {}).get("throughput"),
            "RSS loaded MB": rt.get("loaded_rss_mb"), "peak RSS MB": rt.get("peak_rss_mb"),
            "RSS vs PyTorch": rt.get("mem_ratio_vs_pytorch"),
            "size MB": rt.get("size_mb"), "macro-F1": rt.get("macro_f1"),
            "ΔF1": rt.get("f1_delta_vs_pytorch"), "agree %": rt.get("agreement"),
            **({"= run's labels %": rt.get("agreement_with_run")}
               if results["eval"].get("yardstick", "").startswith("the run") else {}),
            "max Δlogit": rt.get("max_logit_diff"), "load s": rt.get("load_s")})
    return table


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return "_(none)_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_fmt(r[c], 4 if "logit" in c else 2).replace("|", "/") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _md_machine(results: dict) -> str:
    m = results["machine"]
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return (f"- CPU: {m['cpu']} ({m['logical_cores']} logical cores, {m['threads']} threads "
            f"used), flags: {', '.join(m['cpu_flags']) or 'none of interest'}\n"
            + (f"- GPU: {'; '.join(m['gpus'])}\n" if m.get("gpus") else "")
            + f"- Memory: {m['memory_gb']} GB; load average before/after: "
            f"{m.get('load_avg_before')} / {m['load_avg']}; worker environment: "
            f"{m.get('env', {})}\n- Python {m['python']}; {pkgs}\n")


def _md_targets(t: dict) -> str:
    def mark(ok):
        return "n/a" if ok is None else ("met" if ok else "NOT met")
    excluded = t.get("excluded_faster") or []
    note = (f" Faster but left out for losing accuracy: {', '.join(excluded)}." if excluded
            else "")
    if t.get("yardstick") == "run":  # an INT8-aware run: its model is the INT8 computation
        kept = (f"labels equal to the run's own evaluated ones >= {t.get('reproduced_target')}%, "
                f"macro-F1 within {t.get('f1_drop_target', 1)} point of the run's")
        agree = f"{_fmt(t.get('best_cpu_agreement_with_run'))}% equal to the run's labels"
    else:
        kept = (f"agreement >= {t.get('agreement_target', 99)}%, macro-F1 within "
                f"{t.get('f1_drop_target', 1)} point")
        agree = f"agreement {_fmt(t.get('best_cpu_agreement'))}%"
    return (f"- Best CPU runtime at batch 1, typical sentence, accuracy kept ({kept}): "
            f"**{t['best_cpu']}**, {_fmt(t['best_cpu_speedup'])}x PyTorch FP32 (target "
            f">= {t['speedup_target']}x; {agree}, "
            f"ΔF1 vs PyTorch {_fmt(t['best_cpu_f1_delta'])}): **{mark(t['speedup_met'])}**."
            f"{note}\n"
            f"- Lowest INT8 peak memory: **{t['int8_lowest_mem']}**, "
            f"{_fmt(t['int8_mem_ratio'])}x PyTorch's (target <= {t['mem_target']}): "
            f"**{mark(t['mem_met'])}**\n")


def markdown(results: dict) -> str:
    plan, ev = results["plan"], results["eval"]
    cases = ", ".join(f"{n} {c['tokens']} tokens" for n, c in results["cases"].items())
    parts = [f"# Benchmark: {results['model']}\n",
             f"Command: `{results.get('command', 'python -m core bench')}`  \n"
             f"{plan['rounds']} interleaved rounds, {plan['warmup']} warm-up calls per block, "
             f"{plan['iters']} timed batch-1 calls per sentence per round; medians of all "
             f"samples; each runtime in its own process. Ratios are against PyTorch FP32 "
             f"measured in the same run. Accuracy on {ev['size']} sentences "
             f"({ev['dataset']}, {ev['split']} split). Sentences: {cases}. Round spread = "
             f"(max - min) / median of the per-round medians: large values mean the machine "
             f"was busy.\n",
             "## Machine\n", _md_machine(results),
             "## Targets\n", _md_targets(results["targets"]),
             "## Summary (batch 1, typical sentence)\n", _md_table(summary_table(results))]
    for kind, title in (("latency", "Latency, batch 1"), ("throughput", "Throughput"),
                        ("serving", "HTTP serving (ASGI, concurrent clients on 127.0.0.1)")):
        rows = [{"runtime": label(r), "case": r["case"], "batch": r["batch_size"],
                 "tokens": r["seq_len"], "p50 ms": r["p50_ms"], "p95 ms": r["p95_ms"],
                 "p99 ms": r["p99_ms"], "per s": r["throughput"],
                 "speed-up": r["speedup_vs_pytorch"], "round spread": r.get("round_spread")}
                for r in rows_of(results, kind)]
        if rows:
            parts += [f"## {title}\n", _md_table(rows)]
    skipped = [{"row": s["key"], "runtime": f"{s['runtime']} {s['precision'].upper()}",
                "reason": s["reason"]} for s in results["skipped"]]
    parts += ["## Skipped rows\n", _md_table(skipped)]
    if results.get("png_note"):
        parts.append(f"\n_{results['png_note']}_\n")
    return "\n".join(parts)


def figures(results: dict) -> dict:
    """Plotly figures: latency (p50 bars, whiskers to p95), throughput, memory, size, and
    speed-up vs macro-F1."""
    import plotly.graph_objects as go

    figs = {}
    lat = go.Figure()
    for case in CASES:
        rows = rows_of(results, "latency", case)
        if rows:
            lat.add_bar(name=f"{case} ({rows[0]['seq_len']} tok)", x=[label(r) for r in rows],
                        y=[r["p50_ms"] for r in rows],
                        error_y=dict(type="data", symmetric=False, arrayminus=[0] * len(rows),
                                     array=[r["p95_ms"] - r["p50_ms"] for r in rows]))
    # Log axis: runtimes span two orders of magnitude, and a linear axis hides the fast ones.
    lat.update_layout(title="Latency at batch 1: p50 (bar) to p95 (whisker), log scale",
                      yaxis_title="ms", yaxis_type="log", barmode="group")
    figs["latency"] = lat
    thr = go.Figure()
    for bs in sorted({r["batch_size"] for r in rows_of(results, "throughput")}):
        rows = rows_of(results, "throughput", batch=bs)
        thr.add_bar(name=f"batch {bs}", x=[label(r) for r in rows],
                    y=[r["throughput"] for r in rows])
    rows = rows_of(results, "serving")
    if rows:
        thr.add_bar(name=f"HTTP, {rows[0].get('clients')} clients", x=[label(r) for r in rows],
                    y=[r["throughput"] for r in rows])
    thr.update_layout(title="Throughput, log scale", yaxis_title="texts per second",
                      yaxis_type="log", barmode="group")
    figs["throughput"] = thr
    rts = results["runtimes"]
    mem = [rt for rt in rts if rt.get("peak_rss_mb")]
    figs["memory"] = go.Figure(go.Bar(x=[label(rt) for rt in mem],
                                      y=[rt["peak_rss_mb"] for rt in mem]))
    figs["memory"].update_layout(title="Peak memory (RSS of the runtime's own process)",
                                 yaxis_title="MB")
    figs["size"] = go.Figure(go.Bar(x=[label(rt) for rt in rts], y=[rt["size_mb"] for rt in rts]))
    figs["size"].update_layout(title="Model file size", yaxis_title="MB")
    figs["tradeoff"] = _tradeoff(results)
    return figs


def _tradeoff(results: dict):
    import plotly.graph_objects as go

    rows = [r for r in rows_of(results, "latency", "typical") if r.get("macro_f1") is not None]
    fig = go.Figure()
    for r in rows:  # one trace per runtime: a legend instead of labels that overlap
        fig.add_scatter(x=[r["speedup_vs_pytorch"]], y=[r["macro_f1"]], name=label(r),
                        mode="markers", marker=dict(size=12))
    fig.update_layout(title="Speed vs accuracy (batch 1, typical sentence)",
                      xaxis_title="speed-up vs PyTorch FP32 (x)", yaxis_title="macro-F1")
    return fig


def save_png(fig, path: Path, width: int = 1100, height: int = 520) -> str | None:
    """Render ``fig`` to ``path`` in headless Chromium; returns None, or why it could not."""
    from core.bench.browser import CHROMIUM_ARGS, chromium_path

    chromium = chromium_path()
    if chromium is None:
        return "PNG skipped: no Chromium on this machine (kaleido is not installed either)"
    try:
        from playwright.sync_api import sync_playwright

        html = fig.to_html(include_plotlyjs=True, full_html=True,
                           default_width=width, default_height=height)
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
            page_file = Path(tmp) / "chart.html"
            page_file.write_text(html, encoding="utf-8")
            browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                         args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": width + 40, "height": height + 40})
            page.goto(page_file.as_uri())
            page.wait_for_selector(".main-svg", timeout=30_000)
            page.locator(".plotly-graph-div").first.screenshot(path=str(path))
            browser.close()
        return None
    except Exception as exc:  # a chart image is optional: say why and carry on
        return f"PNG skipped: {type(exc).__name__}: {exc}"


def write_all(results: dict, out: str | Path, png: bool = True) -> dict:
    """results.json, results.csv, report.md, charts.html (and latency.png); returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figs = figures(results)
    files = {"json": out / "results.json", "csv": out / "results.csv",
             "markdown": out / "report.md", "html": out / "charts.html"}
    if png:
        note = save_png(figs["latency"], out / "latency.png")
        if note is None:
            files["png"] = out / "latency.png"
        results["png_note"] = note
    html = [fig.to_html(include_plotlyjs=(i == 0), full_html=False)
            for i, fig in enumerate(figs.values())]
    paths.atomic_write_text(files["html"], "<html><head><meta charset='utf-8'></head><body>"
                            + "\n".join(html) + "</body></html>")
    paths.atomic_write_text(files["csv"], to_csv(results))
    paths.atomic_write_text(files["markdown"], markdown(results))
    paths.atomic_write_text(files["json"], json.dumps(results, indent=1, ensure_ascii=False))
    return files


def compare(a: dict, b: dict) -> list[dict]:
    """Rows measured in both runs: p50 and throughput side by side, and the change in percent."""
    def key(r):
        return (r["key"], r["kind"], r["case"], r["batch_size"])
    theirs = {key(r): r for r in b["results"]}
    out = []
    for r in a["results"]:
        o = theirs.get(key(r))
        if o is None:
            continue
        change = (o["p50_ms"] / r["p50_ms"] - 1) * 100 if r["p50_ms"] and o["p50_ms"] else None
        out.append({"runtime": label(r), "kind": r["kind"], "case": r["case"],
                    "batch": r["batch_size"], "p50 ms A": r["p50_ms"], "p50 ms B": o["p50_ms"],
                    "p50 change %": change, "per s A": r["throughput"],
                    "per s B": o["throughput"], "speed-up A": r["speedup_vs_pytorch"],
                    "speed-up B": o["speedup_vs_pytorch"]})
    return out
