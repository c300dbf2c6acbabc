"""Rendering helpers shared by the pages (kept out of core/, which never imports streamlit).

A package rather than ``pages/common.py`` so Streamlit does not list it as a page.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import demo, jobs, paths
from core.errors import StudioError
from core.progress import eta_seconds, format_eta
from core.run import RunFolder, list_runs


# (file, label) in pipeline order; files that do not exist yet are left out of the menu.
MENU = [("streamlit_app.py", "Home"), ("pages/2_Generate.py", "Generate"),
        ("pages/1_Dataset.py", "Dataset"), ("pages/3_Train.py", "Train"),
        ("pages/4_Demo.py", "Demo"), ("pages/5_Export.py", "Export"),
        ("pages/6_Benchmark.py", "Benchmark"), ("pages/7_Web_Bundle.py", "Web bundle")]
# Each page's kind, as core.demo names them (demo mode opens only core.demo.OPEN_PAGES).
PAGE_KINDS = {"streamlit_app.py": "home", "pages/2_Generate.py": "generate",
              "pages/1_Dataset.py": "dataset", "pages/3_Train.py": "train",
              "pages/4_Demo.py": "demo", "pages/5_Export.py": "export",
              "pages/6_Benchmark.py": "benchmark", "pages/7_Web_Bundle.py": "web-bundle"}
TITLES = {"generate": "Generate", "train": "Train", "export": "Export", "dataset": "Dataset",
          "demo": "Demo", "benchmark": "Benchmark", "web-bundle": "Web bundle"}


def menu() -> list[tuple[str, str]]:
    """(file, label) of the sidebar menu: every stage, or in demo mode only the open pages
    (Home, Demo, Upload check, Benchmark, Web bundle)."""
    entries = [(path, label) for path, label in MENU if (paths.REPO_ROOT / path).exists()]
    if not demo.is_demo():
        return entries
    open_files = {PAGE_KINDS[path]: path for path, _ in entries
                  if PAGE_KINDS.get(path) in demo.OPEN_PAGES}
    return [(open_files[kind], label) for kind, label in demo.OPEN_PAGES.items()
            if kind in open_files]


def guard(kind: str) -> bool:
    """Call at the top of every page: returns whether the app runs as a public demo. In demo
    mode a page that is not open to visitors (generate, train, export, anything unknown) says so
    and stops here, before any widget is drawn, whoever links to it."""
    if not demo.is_demo():
        return False
    try:  # uncaught errors show no type, message or traceback to visitors
        st.set_option("client.showErrorDetails", "none")
    except Exception:  # an option Streamlit no longer lets a script set: the CLI flag sets it
        pass
    if not demo.page_allowed(kind):
        page(TITLES.get(kind, "Not available"))
        st.info(f"{TITLES.get(kind, 'This page')} {demo.REFUSAL}. Open the Demo page to "
                "classify text or your own JSONL file.")
        st.stop()
    return True


def refuse(what: str) -> None:
    """In a page open to visitors, the note that replaces a control they may not use."""
    st.info(f"{what} {demo.REFUSAL}.")


def page(title: str) -> None:
    """Start a page: config, the sidebar menu, the title."""
    try:
        st.set_page_config(page_title=f"{title} · Korean emotion studio", page_icon="💬",
                           layout="wide")
    except st.errors.StreamlitAPIException:
        pass  # already set by this run
    with st.sidebar:
        try:
            for path, label in menu():
                st.page_link(path, label=label)
        except st.errors.StreamlitAPIException:
            pass  # a page run on its own (AppTest.from_file) has no multipage app around it
        st.divider()
    st.title(title)


def plain(text: str) -> str:
    """``text`` for st.markdown with every Markdown character escaped: shown as typed, never as
    a link, image, heading or HTML."""
    return "".join("\\" + c if c in _MARKDOWN else c for c in str(text)).replace("\n", " ")


_MARKDOWN = set("\\`*_{}[]()<>#+-.!|~$:=&")


def demo_home() -> None:
    """The home page of the public demo: what the model is and what a visitor can do."""
    from core.labels import DEFAULT_LABELS

    st.write("A Korean emotion classifier: a multilingual-e5-small encoder fine-tuned on a "
             "hand-written Korean set, exported to ONNX and quantized to INT8. Everything here "
             "runs on this server's CPU; nothing you type or upload is stored.")
    run = RunFolder.default()
    try:
        test = (run.metrics().get("test") or {}) if run.is_trained() else {}
    except StudioError:
        test = {}
    if test.get("macro_f1") is not None:
        c1, c2, c3 = st.columns(3)
        c1.metric("Test macro-F1", f"{test['macro_f1']:.3f}")
        c2.metric("Test accuracy", f"{test.get('accuracy', 0):.3f}")
        c3.metric("Labels", len(run.labels()))
    if not run.onnx("int8").is_file():
        st.info("The demo model is not published yet: come back a little later.")
    pages = [("pages/4_Demo.py", "Demo: classify a sentence"),
             ("pages/1_Dataset.py", "Upload check: validate a JSONL file"),
             ("pages/6_Benchmark.py", "Benchmark: how fast each runtime is"),
             ("pages/7_Web_Bundle.py", "Web bundle: download the page that runs in a browser")]
    for path, label in pages:
        try:
            st.page_link(path, label=label)
        except st.errors.StreamlitAPIException:  # run on its own (AppTest), no multipage app
            st.markdown(f"- {label}")
    with st.expander("Labels"):
        st.table([{"label": lab.name, "한국어": lab.ko, "English": lab.en}
                  for lab in DEFAULT_LABELS])


def upload_ok(file) -> bool:
    """Whether an uploaded file is within core.demo's size and line limits; when it is not, say
    so (by name) and leave it out."""
    try:
        demo.check_upload(file.getvalue())
        return True
    except demo.DemoLimit as exc:
        st.error(f"**{plain(file.name)}**: {exc}")
        return False


def pick_run(missing: str = "No trained run yet: train one on the Train page first."
             ) -> RunFolder:
    """A run chosen in a selectbox; when there is none, say what to do and stop the page. In
    demo mode the default run, the only one visitors see."""
    if demo.is_demo():
        run = RunFolder.default()
        if not run.is_trained():
            st.info("The demo model is not published yet: come back a little later.")
            st.stop()
        return run
    runs = list_runs()
    if not runs:
        st.info(missing)
        st.stop()
    return st.selectbox("Run", runs, format_func=lambda r: r.name)


def start_job(key: str, make_config, env: dict[str, str] | None = None) -> None:
    """Build a stage's config (``make_config()``) and start it as a background job; a bad value
    or a failure to start is shown as a message, never raised into the page. Demo mode starts
    nothing."""
    if demo.is_demo():
        refuse("Starting jobs")
        return
    try:
        jobs.start(key, make_config(), env=env)
    except Exception as exc:  # shown as a message, never a traceback
        show_error(exc)


def show_error(exc: Exception) -> None:
    """Typed errors are shown as their message; anything else also names its type. In demo
    mode without server paths."""
    if demo.is_demo():
        st.error(demo.public_error(exc))
    elif isinstance(exc, StudioError):
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
        left = format_eta(eta_seconds(status.events)) if status.state == "running" else ""
        st.progress(frac, text=f"{p.get('message', '')} ({p.get('done')}/{p['total']}"
                               f"{', ' + left if left else ''})")
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
        if status.output:  # shown as printed: a traceback is not Markdown
            st.code(status.output, language=None)
    return status


def job_panel(key: str, chart_fields: tuple[str, ...] = ()) -> jobs.JobStatus | None:
    """Show the newest job with ``key``; refreshes itself every second while it runs.

    Returns the status seen at this run of the page (None when there was never such a job). When
    the job finishes, the whole page reruns once so it can show the results. Demo mode shows
    no jobs (None).
    """
    if demo.is_demo():
        return None
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


def report_counts(report, valid_label: str = "Valid") -> None:
    """The four counts of a validation report (core.data.Report) as metrics in one row."""
    cols = st.columns(4)
    cols[0].metric(valid_label, len(report.records))
    cols[1].metric("Invalid" if valid_label == "Valid" else "Invalid lines", len(report.invalid))
    cols[2].metric("Duplicates", len(report.duplicates))
    cols[3].metric("Blank lines", report.blank_lines)
