"""Generate: labeled Korean examples from an LLM, as a background job (stop and resume any time).

The API key is typed into a password field (or read from $OPENAI_API_KEY / Streamlit secrets). It is
handed to the job's environment only: never put in the command line, job.json, logs or files.
"""

import os

import pandas as pd
import streamlit as st

from core import jobs, paths
from core.generate import API_KEY_ENV, DEFAULT_AXES, DEFAULT_MODEL, GenerateConfig, estimate
from core.generate.cli import parse_quotas
from core.generate.store import tail_rows
from core.labels import DEFAULT_LABEL_NAMES
from pages.common import guard, job_panel, page, show_error


def secret_key() -> str | None:
    try:
        return st.secrets.get(API_KEY_ENV)
    except Exception:  # no secrets.toml: Streamlit raises instead of returning nothing
        return None


guard("generate")  # demo mode: refused here, before any key is read
page("Generate")
st.caption("Asks an OpenAI-compatible chat API for labeled Korean examples; every row is validated, "
           "deduplicated and appended at once, so a stopped run resumes where it left off.")

st.subheader("Provider")
p1, p2, p3 = st.columns(3)
base_url = p1.text_input("Base URL", "", help="Empty: OpenAI. Any OpenAI-compatible server works, "
                         "e.g. http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)")
model = p2.text_input("Model", DEFAULT_MODEL)
typed_key = p3.text_input("API key", type="password", help="Used for this job only; never stored.")
api_key = typed_key or os.environ.get(API_KEY_ENV) or secret_key()
if not typed_key and api_key:
    p3.caption(f"Using the key from ${API_KEY_ENV} or Streamlit secrets.")

st.subheader("Dataset")
d1, d2, d3, d4 = st.columns(4)
name = d1.text_input("Dataset name", "generated", help="Saved as workspace/datasets/<name>.jsonl")
n_rows = d2.number_input("Rows", 1, 1_000_000, 5000, step=100)
per_request = d3.number_input("Examples per request", 1, 200, 50)
concurrency = d4.number_input("Concurrent requests", 1, 64, 8)
label_spec = st.text_input("Labels", ",".join(DEFAULT_LABEL_NAMES))
balanced = st.checkbox("Balanced quotas", value=True)
quota_spec = None if balanced else st.text_input(
    "Quotas", help="label=rows, comma-separated; they must add up to Rows, e.g. 기쁨=3000,중립=2000")
with st.expander("Diversity axes (rotated across requests)"):
    axes = {axis: st.multiselect(axis, list(values), default=list(values), key=f"axis-{axis}")
            for axis, values in DEFAULT_AXES}
batch_api = st.checkbox("Use the Batch API (50% cheaper; results within 24 h)")

try:
    out = paths.datasets_dir() / f"{paths.check_name(name, 'dataset name')}.jsonl"
    existing = out.exists() and out.stat().st_size > 0
    config = GenerateConfig(out=out, n=int(n_rows), per_request=int(per_request),
                            concurrency=int(concurrency), model=model.strip(),
                            base_url=base_url.strip() or None, labels=label_spec,
                            quotas=parse_quotas(quota_spec), resume=existing, batch_api=batch_api,
                            axes=axes)
    est = estimate(config)
except Exception as exc:  # a bad setting is shown as a message, never a traceback
    show_error(exc)
    st.stop()

st.subheader("Estimate (dry run: nothing is sent)")
e1, e2, e3, e4 = st.columns(4)
e1.metric("Requests", est.requests, help="top-ups for rejected rows come on top")
e2.metric("Tokens", f"{(est.prompt_tokens + est.completion_tokens) / 1e3:,.0f}k",
          help=f"{est.prompt_tokens:,} in / {est.completion_tokens:,} out (estimated)")
cost = est.batch_cost_usd if batch_api else est.cost_usd
e3.metric("Cost (USD)", "unknown" if cost is None else f"${cost:,.2f}",
          help="from the price table; add models in workspace/prices.json")
e4.metric("Time", "≤ 24 h (Batch API)" if batch_api else f"~{est.time_s / 60:.1f} min")
if existing and est.requests == 0:
    st.info(f"{out.name} already holds all {est.target} rows: raise Rows to extend it, "
            "or pick another dataset name.")
elif existing:
    st.info(f"{out.name} already holds {est.have} of {est.target} rows: Resume continues it.")
for note in est.notes:
    st.caption(note)

job_key = f"generate:{out.stem}"
job = jobs.find(job_key)
running = job is not None and not job.status().finished
if not api_key:
    st.info(f"Type an API key (or set ${API_KEY_ENV}) to start.")
label = "Resume" if existing else "Start"
if st.button(label, type="primary", disabled=not api_key or running or est.requests == 0):
    try:
        jobs.start(job_key, config, env={API_KEY_ENV: api_key})
        st.rerun()
    except Exception as exc:
        show_error(exc)

status = job_panel(job_key)


@st.fragment(run_every=1.0 if running else None)
def live_details() -> None:
    current = jobs.find(job_key)
    if current is None:
        return
    s = current.status()
    p = s.progress or {}
    if p:
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Rows", f"{p.get('done', 0)} / {p.get('total', '?')}")
        m2.metric("Rows / s", p.get("rows_per_s", 0))
        m3.metric("Tokens", f"{p.get('prompt_tokens', 0) + p.get('completion_tokens', 0):,}")
        c = p.get("cost_usd")
        m4.metric("Cost so far (USD)", "unknown" if c is None else f"${c:,.4f}")
        quotas = p.get("quotas") or {}
        per_label = pd.DataFrame({"rows": p.get("per_label", {}), "quota": quotas})
        left, right = st.columns(2)
        left.dataframe(per_label, width="stretch")
        problems = [{"kind": k, "count": v, "what": "failed attempts"}
                    for k, v in (p.get("errors") or {}).items()]
        problems += [{"kind": k, "count": v, "what": "rejected examples"}
                     for k, v in (p.get("rejected") or {}).items()]
        if problems:
            right.dataframe(pd.DataFrame(problems), hide_index=True, width="stretch")
        else:
            right.caption("No errors so far.")
    result = s.result or next((e.get("result") for e in reversed(s.events) if e.get("result")), None)
    if result:
        (st.success if result.get("complete") else st.warning)(result.get("message", ""))
        for failed in result.get("failed_requests", [])[:5]:
            st.caption(f"failed {failed['request_id']}: {failed['kind']} — {failed['message']}")
    rows = tail_rows(out, 10)
    if rows:
        st.caption("Newest rows")
        st.dataframe(pd.DataFrame([{"label": r.get("label"), "text": r.get("text")} for r in rows]),
                     hide_index=True, width="stretch")
    if result and result.get("complete"):
        try:
            st.page_link("pages/1_Dataset.py", label=f"Open '{out.stem}' in the Dataset page")
        except st.errors.StreamlitAPIException:  # page run on its own, outside the multipage app
            st.caption(f"Select '{out.stem}' in the Dataset page to inspect and split it.")


live_details()
