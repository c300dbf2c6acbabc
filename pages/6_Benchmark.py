"""Benchmark: pick runtimes and settings, run in the background, read charts and the table,
download the report, compare two saved benchmarks."""

import json

import pandas as pd
import streamlit as st

from core.bench import report as bench_report
from core.bench.benchmark import RUNTIMES, BenchConfig, load_results, skip_reason
from core.demo import scrub_obj
from core.run import list_runs
from pages.common import guard, job_panel, page, pick_run, refuse, show_error, start_job

demo = guard("benchmark")  # demo mode: the saved report only, read-only
page("Benchmark")
st.caption("Every runtime runs in its own process, warmed up, in interleaved rounds; medians of "
           "all samples; speed-ups and memory ratios are against PyTorch FP32 measured in the "
           "same run. Rows that cannot run on this machine are listed with the reason.")

run = pick_run("No trained run yet: train one on the Train page, export it on the "
                   "Export page, then benchmark it here.")
key = f"bench:{run.name}"


def row_name(k: str) -> str:
    return f"{RUNTIMES[k].runtime} {RUNTIMES[k].precision.upper()} ({k})"


if demo:
    refuse("Running a benchmark")
else:
    defaults = BenchConfig(str(run.root))
    reasons = {k: skip_reason(spec, run, defaults) for k, spec in RUNTIMES.items()}
    with st.expander("New benchmark", expanded=not run.bench_reports()):
        chosen = st.multiselect("Runtimes", list(RUNTIMES), format_func=row_name,
                                default=[k for k, why in reasons.items() if why is None])
        unavailable = {k: why for k, why in reasons.items() if why and k in chosen}
        if unavailable:
            st.caption("Will be listed as skipped: " + "; ".join(
                f"**{k}**: {why}" for k, why in unavailable.items()))
        c1, c2, c3, c4 = st.columns(4)
        quick = c1.checkbox("Quick (about a minute)", value=True)
        rounds = c2.number_input("Rounds (0 = default)", 0, 20, 0)
        threads = c3.number_input("Threads (0 = all cores)", 0, 256, 0)
        serving = c4.checkbox("HTTP serving rows", value=defaults.serving)
        clients = st.slider("Concurrent HTTP clients", 1, 16, defaults.serving_clients,
                            disabled=not serving)
        if st.button("Run benchmark", type="primary", disabled=not chosen):
            start_job(key, lambda: BenchConfig(
                str(run.root), runtimes=tuple(chosen), quick=quick, rounds=rounds or None,
                threads=threads or None, serving=serving, serving_clients=clients))
    job_panel(key)

saved = run.bench_reports()
if not saved:
    st.info("No benchmark has been published for this demo yet." if demo else
            "No saved benchmark for this run yet: start one above "
            f"(or `python -m core bench --model {run.root} --quick`).")
    st.stop()
folder = st.selectbox("Saved benchmark", saved, format_func=lambda p: p.name)
try:
    results = load_results(folder)
    if demo:  # what a visitor reads holds no server paths
        results = scrub_obj(results)
except (OSError, ValueError) as exc:
    show_error(exc)
    st.stop()

t = results["targets"]
m1, m2, m3 = st.columns(3)
m1.metric("Best CPU runtime, accuracy kept (batch 1, typical)", t["best_cpu"] or "–")
m2.metric("Speed-up vs PyTorch FP32", f"{t['best_cpu_speedup']:.1f}x" if t["best_cpu_speedup"]
          else "–", help=f"target ≥ {t['speedup_target']}x with labels agreeing ≥ "
          f"{t.get('agreement_target', '–')}% and macro-F1 within {t.get('f1_drop_target', 1)} "
          "point of PyTorch")
m3.metric("Lowest INT8 peak memory vs PyTorch", f"{t['int8_mem_ratio']:.2f}x"
          if t["int8_mem_ratio"] else "–", help=f"target ≤ {t['mem_target']}x")
if t.get("excluded_faster"):
    st.caption("Faster but left out of the headline for losing accuracy: "
               + ", ".join(t["excluded_faster"]))
mach = results["machine"]
st.caption(f"{mach['cpu']} · {mach['logical_cores']} cores, {mach['threads']} threads · flags: "
           f"{', '.join(mach['cpu_flags']) or '–'} · load avg {mach['load_avg']} · "
           f"`{results.get('command', '')}`")

st.subheader("Summary")
st.dataframe(pd.DataFrame(bench_report.summary_table(results)), hide_index=True)
figs = bench_report.figures(results)
tabs = st.tabs(["Latency", "Throughput", "Memory", "Size", "Speed vs accuracy"])
for tab, name in zip(tabs, ["latency", "throughput", "memory", "size", "tradeoff"]):
    tab.plotly_chart(figs[name], width="stretch")
with st.expander("Every row"):
    st.dataframe(pd.DataFrame(results["results"]), hide_index=True)
if results["skipped"]:
    st.subheader("Skipped rows")
    st.dataframe(pd.DataFrame(results["skipped"]), hide_index=True)

d1, d2, d3 = st.columns(3)
d1.download_button("Report (Markdown)", bench_report.markdown(results), file_name="report.md",
                   mime="text/markdown")
d2.download_button("results.json", json.dumps(results, indent=1, ensure_ascii=False),
                   file_name="results.json", mime="application/json")
d3.download_button("results.csv", bench_report.to_csv(results), file_name="results.csv",
                   mime="text/csv")

others = [] if demo else [p for r in list_runs() for p in r.bench_reports() if p != folder]
if others:
    st.subheader("Compare with another saved benchmark")
    other = st.selectbox("Benchmark B", others, format_func=lambda p: f"{p.parent.parent.name} / "
                         f"{p.name}")
    try:
        diff = bench_report.compare(results, load_results(other))
    except (OSError, ValueError) as exc:
        show_error(exc)
        st.stop()
    st.caption(f"A = {run.name} / {folder.name}, B = {other.parent.parent.name} / "
               f"{other.name}; a positive p50 change means B is slower.")
    st.dataframe(pd.DataFrame(diff), hide_index=True)
