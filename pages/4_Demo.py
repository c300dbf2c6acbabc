"""Demo: classify Korean text with a trained run, on one or several runtimes side by side."""

import time

import pandas as pd
import plotly.express as px
import streamlit as st

from core import runtimes
from pages.common import page, pick_run, show_error

EXAMPLES = ["드디어 합격 문자 왔다!!! 엄마한테 제일 먼저 전화함 ㅠㅠ",
            "단톡방에서 나만 빼고 약속 잡은 거 오늘 알았어",
            "내일 건강검진 결과 나오는데 자꾸 안 좋은 생각만 나",
            "발표하는데 슬라이드가 갑자기 다 날아가서 머리가 하얘졌어",
            "와~ 마감 하루 전에 기획 다 엎으시는 센스 최고세요 ^^",
            "다음 주 화요일 상담 예약 2시로 변경 부탁드립니다"]


@st.cache_resource(max_entries=8, show_spinner="Loading model…")
def load_runtime(path: str, mtime: float):  # mtime: a re-exported file is loaded afresh
    return runtimes.load(path)


page("Demo")
run = pick_run("No trained run yet: train one on the Train page (or run `make run`, "
                   "which builds the default model on first launch).")
available = run.runnable()
chosen = st.multiselect("Runtimes", list(available), default=list(available)[:1],
                        help="Export the run to get ONNX and OpenVINO choices.")
example = st.selectbox("Example", ["(type your own)"] + EXAMPLES)
text = st.text_area("Text", "" if example.startswith("(") else example, height=90)
if not text.strip() or not chosen:
    st.info("Type a sentence and pick at least one runtime.")
    st.stop()

results = {}
for name in chosen:
    path = available[name]
    try:
        rt = load_runtime(str(path), path.stat().st_mtime)
        rt.predict([text])  # warm-up: the first call includes one-time setup
        start = time.perf_counter()
        pred = rt.predict([text])[0]
        results[name] = (pred, (time.perf_counter() - start) * 1000)
    except Exception as exc:  # shown as a message, never a traceback
        show_error(exc)

cols = st.columns(max(len(results), 1))
for col, (name, (pred, ms)) in zip(cols, results.items()):
    col.metric(name, pred.label, f"{ms:.1f} ms", delta_color="off")
    frame = pd.DataFrame({"label": list(pred.probs), "probability": list(pred.probs.values())})
    col.plotly_chart(px.bar(frame, x="probability", y="label", orientation="h", range_x=[0, 1],
                            height=280), width="stretch", key=f"bars-{name}")
if len(results) > 1:
    labels = {name: pred.label for name, (pred, _) in results.items()}
    if len(set(labels.values())) == 1:
        st.success("All runtimes agree.")
    else:
        st.warning(f"Runtimes disagree: {labels}")
