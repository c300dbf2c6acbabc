"""Rendering helpers shared by the pages (kept out of core/, which never imports streamlit).

A package rather than ``pages/common.py`` so Streamlit does not list it as a page.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import jobs, paths
from core.errors import StudioError
from core.run import RunFolder, list_runs


# (file, label) in pipeline order; files that do not exist yet are left out of the menu.
MENU = [("streamlit_app.py", "Home"), ("pages/2_Generate.py", "Generate"),
        ("pages/1_Dataset.py", "Dataset"), ("pages/3_Train.py", "Train"),
        ("pages/4_Demo.py", "Demo"), ("pages/5_Export.py", "Export"),
        ("pages/6_Benchmark.py", "Benchmark"), ("pages/7_Web_Bundle.py", "Web bundle")]


def page(title: str) -> None:
    """Start a page: config, the sidebar menu, the title."""
    try:
        st.set_page_config(page_title=f"{title} · Korean emotion studio", page_icon="💬",
                           layout="wide")
    except st.errors.StreamlitAPIException:
        pass  # already set by this run
    with st.sidebar:
        try:
            for path, label in MENU:
                if (paths.REPO_ROOT / path).exists():
                    st.page_link(path, label=label)
        except st.errors.StreamlitAPIException:
            pass  # a page run on its own (AppTest.from_file) has no multipage app around it
        st.divider()
    st.title(title)


def pick_run(missing: str = "No trained run yet: train one on the Train page first."
             ) -> RunFolder:
    """A run chosen in a selectbox; when there is none, say what to do and stop the page."""
    runs = list_runs()
    if not runs:
        st.info(missing)
        st.stop()
    return st.selectbox("Run", runs, format_func=lambda r: r.name)


def start_job(key: str, make_config, env: dict[str, str] | None = None) -> None:
    """Build a stage's config (``make_config()``) and start it as a background job; a bad value
    or a failure to start is shown as a message, never raised into the page."""
    try:
        jobs.start(key, make_config(), env=env)
    except Exception as exc:  # shown as a message, never a traceback
        show_error(exc)


def show_error(exc: Exception) -> None:
    """Typed errors are shown as their message; anything else also names its type."""
    if isinstance(exc, StudioError):
        st.error(str(exc))
    else:
        st.error(f"{type(exc).__name__}: {exc}")


def _loss_chart(events: list[dict], fields: tuple[str, ...]) -> None:
    points = [e for e in events if e.get("type") == "progress"]
    fig = go.Figure()
    for name in fields:
        xs = [e.get("step", e.get("done")) for e in points if isinstance(e.get(name), (int, float))]
        ys = [e[name] for e in points if isinstance(e.get(name), (int, float))]
        if ys:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name))
    if fig.data:
        fig.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="step")
        st.plotly_chart(fig, width="stretch")


def _render_status(job: jobs.Job, chart_fields: tuple[str, ...]) -> jobs.JobStatus:
    status = job.status()
    p = status.progress or {}
    if p.get("total"):
        frac = min(max(float(p.get("done", 0)) / float(p["total"]), 0.0), 1.0)
        st.progress(frac, text=f"{p.get('message', '')} ({p.get('done')}/{p['total']})")
    elif status.state == "running":
        st.progress(0.0, text="starting…")
    if chart_fields:
        _loss_chart(status.events, chart_fields)
    if status.state == "running":
        if st.button("Cancel", key=f"cancel-{job.id}"):
            job.cancel()
            st.rerun()
    elif status.state == "done":
        st.success(f"Finished ({job.key}).")
    elif status.state == "cancelled":
        st.warning("Cancelled.")
    else:
        st.error(f"Failed: {status.error}")
    return status


def job_panel(key: str, chart_fields: tuple[str, ...] = ()) -> jobs.JobStatus | None:
    """Show the newest job with ``key``; refreshes itself every second while it runs.

    Returns the status seen at this run of the page (None when there was never such a job). When
    the job finishes, the whole page reruns once so it can show the results.
    """
    job = jobs.find(key)
    if job is None:
        return None
    status = job.status()
    seen_key = f"_job_seen_{job.id}"

    @st.fragment(run_every=None if status.finished else 1.0)
    def panel():
        current = _render_status(job, chart_fields)
        if current.finished and not status.finished and not st.session_state.get(seen_key):
            st.session_state[seen_key] = True
            st.rerun(scope="app")

    panel()
    return status
