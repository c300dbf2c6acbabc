"""Entry point: navigation plus the home page (what exists in the workspace, what to do next)."""

import os
from pathlib import Path

import streamlit as st

from core import jobs, paths, state
from core.labels import DEFAULT_LABELS

PAGES = ["1_Dataset", "2_Generate", "3_Train", "4_Demo", "5_Export", "6_Benchmark",
         "7_Web_Bundle"]
DEFAULT_RUN_JOB = "train:default"


def maybe_build_default_run() -> None:
    """`make run` sets STUDIO_AUTOBUILD=1: train the default run once, in the background."""
    if os.environ.get("STUDIO_AUTOBUILD") != "1":
        return
    if (paths.runs_dir() / "default" / "config.json").exists() or jobs.find(DEFAULT_RUN_JOB):
        return
    if (paths.REPO_ROOT / "core" / "train.py").exists():
        jobs.start(DEFAULT_RUN_JOB, ["train"])


def home() -> None:
    from pages.common import job_panel

    st.title("Korean emotion classifier studio")
    st.write("Build a Korean emotion classifier end to end: generate labeled data with an LLM, "
             "validate JSONL datasets, fine-tune an encoder with its lower layers frozen, export "
             "ONNX + INT8, benchmark runtimes, and ship a bundle that runs in any browser.")
    maybe_build_default_run()
    if jobs.find(DEFAULT_RUN_JOB):
        st.subheader("Default model")
        job_panel(DEFAULT_RUN_JOB)

    stages = state.pipeline()
    st.subheader("Pipeline")
    for stage in stages:
        mark = "✅" if stage.done else "⬜"
        st.markdown(f"{mark} **{stage.name}** — {stage.detail}")
    step = state.next_step(stages)
    if step is not None:
        st.info(f"Next step: **{step.name}** ({step.detail}).")
        if Path(step.page).exists():
            st.page_link(step.page, label=f"Go to {step.name}")
    with st.expander("Labels"):
        st.table([{"label": lab.name, "한국어": lab.ko, "English": lab.en}
                  for lab in DEFAULT_LABELS])
    st.caption(f"Workspace: {paths.workspace()}")


def main() -> None:
    st.set_page_config(page_title="Korean emotion studio", page_icon="💬", layout="wide")
    pages = [st.Page(home, title="Home", icon="🏠", default=True)]
    for name in PAGES:
        path = Path("pages") / f"{name}.py"
        if (paths.REPO_ROOT / path).exists():
            pages.append(st.Page(str(paths.REPO_ROOT / path), title=name.split("_", 1)[1].replace("_", " ")))
    st.navigation(pages).run()


main()
