"""Home page: what the app does, the state of each stage in the workspace, the next step.

The stage pages live in pages/ (Streamlit's multipage layout); pages/common draws the menu.
"""

import os

import streamlit as st

from core import jobs, paths, state
from core.labels import DEFAULT_LABELS
from core.run import RunFolder
from core.train import TrainConfig
from pages.common import demo_home, guard, job_panel, page

DEFAULT_RUN_JOB = "train:default"


def maybe_build_default_run() -> None:
    """`make run` sets STUDIO_AUTOBUILD=1: train the default run once, in the background.

    Never over a trained run (however it was trained: page, job or CLI) and never twice."""
    if os.environ.get("STUDIO_AUTOBUILD") != "1":
        return
    if RunFolder.default().is_trained() or jobs.find(DEFAULT_RUN_JOB):
        return
    jobs.start(DEFAULT_RUN_JOB, TrainConfig())


demo = guard("home")
page("Korean emotion classifier" + ("" if demo else " studio"))
if demo:  # a public demo: what visitors can do; no jobs, no workspace state, no paths
    demo_home()
    st.stop()
st.write("Build a Korean emotion classifier end to end: generate labeled data with an LLM, "
         "validate JSONL datasets, fine-tune an encoder with its lower layers frozen, export "
         "ONNX + INT8, benchmark runtimes, and ship a bundle that runs in any browser.")
maybe_build_default_run()
if jobs.find(DEFAULT_RUN_JOB):
    st.subheader("Default model")
    job_panel(DEFAULT_RUN_JOB, chart_fields=("loss",))

stages = state.pipeline()
st.subheader("Pipeline")
for stage in stages:
    mark = ":white_check_mark:" if stage.done else ":white_large_square:"
    st.markdown(f"{mark} **{stage.name}** — {stage.detail}")
step = state.next_step(stages)
if step is not None:
    st.info(f"Next step: **{step.name}** ({step.detail}).")
    if (paths.REPO_ROOT / step.page).exists():
        st.page_link(step.page, label=f"Go to {step.name}")
with st.expander("Labels"):
    st.table([{"label": lab.name, "한국어": lab.ko, "English": lab.en} for lab in DEFAULT_LABELS])
st.caption(f"Workspace: {paths.workspace()}")
