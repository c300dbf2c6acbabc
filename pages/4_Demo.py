"""Demo: classify Korean text with a trained run, on one or several runtimes side by side, and
classify an uploaded JSONL file (validation report, predictions, metrics when it has labels).

In demo mode (STUDIO_MODE=demo, a public host) only the default run's shipped INT8 model is used,
predictions are rate-limited per browser session, uploads are bounded by core.demo, and nothing a
visitor sends leaves their session: results live in st.session_state, never in the workspace.
"""

import time

import pandas as pd
import plotly.express as px
import streamlit as st

from core import demo as limits
from core import runtimes
from core.run import RunFolder
from pages.common import guard, page, pick_run, plain, report_counts, show_error, upload_ok

EXAMPLES = ["드디어 합격 문자 왔다!!! 엄마한테 제일 먼저 전화함 ㅠㅠ",
            "단톡방에서 나만 빼고 약속 잡은 거 오늘 알았어",
            "내일 건강검진 결과 나오는데 자꾸 안 좋은 생각만 나",
            "발표하는데 슬라이드가 갑자기 다 날아가서 머리가 하얘졌어",
            "와~ 마감 하루 전에 기획 다 엎으시는 센스 최고세요 ^^",
            "다음 주 화요일 상담 예약 2시로 변경 부탁드립니다"]


@st.cache_resource(max_entries=8, show_spinner="Loading model…")
def load_runtime(path: str, mtime: float):  # mtime: a re-exported file is loaded afresh
    runtime = runtimes.load(path)
    runtime.predict(["준비"])  # warm-up: the first call includes one-time setup
    return runtime


@st.cache_resource
def server_limiter() -> limits.RateLimiter:
    """One limiter over every session of this server (many tabs, one visitor)."""
    return limits.RateLimiter(limits.SERVER_RATE_LIMIT, limits.RATE_WINDOW_S)


def session_limiter(name: str, limit: int, window_s: float) -> limits.RateLimiter:
    key = f"_demo_limiter_{name}"
    if key not in st.session_state:
        st.session_state[key] = limits.RateLimiter(limit, window_s)
    return st.session_state[key]


def runtime_for(available: dict, name: str):
    path = available[name]
    return load_runtime(str(path), path.stat().st_mtime)


def allowed(name: str, limit: int, window_s: float, what: str) -> bool:
    """Demo mode: count one request against this session's and the server's limits."""
    mine = session_limiter(name, limit, window_s)
    if not mine.allow():
        st.warning(mine.message(what))
        return False
    if name == "text" and not server_limiter().allow():
        st.warning("The demo is busy right now: try again in a minute.")
        return False
    return True


def predict_text(text: str, available: dict, chosen: list[str], demo: bool) -> dict | None:
    """{runtime name: (prediction, ms, window)}; a rerun with the same text reuses the last
    answer (no second prediction, nothing counted against the rate limit)."""
    key = (text, tuple((n, str(available[n]), available[n].stat().st_mtime) for n in chosen))
    last = st.session_state.get("_demo_last_text")
    if last is not None and last[0] == key:
        return last[1]
    if demo and not allowed("text", limits.rate_limit(), limits.RATE_WINDOW_S, "predictions"):
        return None
    results = {}
    for name in chosen:
        try:
            rt = runtime_for(available, name)
            seen = limits.window(rt, text)
            start = time.perf_counter()
            pred = rt.predict([text])[0]
            results[name] = (pred, (time.perf_counter() - start) * 1000, seen)
        except Exception as exc:  # shown as a message, never a traceback
            show_error(exc)
    st.session_state["_demo_last_text"] = (key, results)
    return results


def classify_text(available: dict, chosen: list[str], demo: bool) -> None:
    example = st.selectbox("Example", ["(type your own)"] + EXAMPLES)
    text = st.text_area("Text", "" if example.startswith("(") else example, height=90,
                        max_chars=limits.MAX_TEXT_CHARS,
                        help="Press Ctrl+Enter (⌘+Enter) to classify.")
    text = limits.clip_text(text)
    if not text.strip() or not chosen:
        st.info("Type a sentence or pick an example." if demo else
                "Type a sentence and pick at least one runtime.")
        return
    results = predict_text(text, available, chosen, demo)
    if not results:
        return
    cols = st.columns(len(results))
    for col, (name, (pred, ms, _)) in zip(cols, results.items()):
        col.metric(name, pred.label, f"{ms:.1f} ms", delta_color="off",
                   help="the label with the highest probability; the time one prediction took")
        frame = pd.DataFrame({"label": list(pred.probs), "probability": list(pred.probs.values())})
        col.plotly_chart(px.bar(frame, x="probability", y="label", orientation="h",
                                range_x=[0, 1], height=280), width="stretch", key=f"bars-{name}")
    seen = next(iter(results.values()))[2]
    if seen.cut:
        st.warning(seen.note())
    # Shown as typed: every Markdown character escaped, so no link, image or HTML is drawn.
    st.caption("Read by the model: " + plain(text[:seen.kept_chars]))
    if len(results) > 1:
        labels = {name: pred.label for name, (pred, _, _) in results.items()}
        if len(set(labels.values())) == 1:
            st.success("All runtimes agree.")
        else:
            st.warning(f"Runtimes disagree: {labels}")


def classify_file(available: dict, chosen: list[str], demo: bool) -> None:
    st.caption(f'JSON Lines, one object per line with a "text" (and a "label" from the model\'s '
               f"label set to get accuracy, macro-F1 and a confusion matrix); at most "
               f"{limits.MAX_UPLOAD_MB} MB and {limits.MAX_UPLOAD_LINES:,} lines. Nothing you "
               "upload is stored.")
    file = st.file_uploader("JSONL file", type=["jsonl", "json", "txt"], key="demo-upload",
                            max_upload_size=limits.MAX_UPLOAD_MB if demo else None)
    if file is None:
        st.info("Upload a .jsonl file to classify every line.")
        return
    if not chosen:
        st.info("Pick a runtime above.")
        return
    if not upload_ok(file):
        return
    blob, name = file.getvalue(), chosen[0]
    key = (limits.digest(blob), name, str(available[name]))
    last = st.session_state.get("_demo_last_upload")
    if last is not None and last[0] == key:
        result = last[1]
    else:
        if demo and not allowed("upload", limits.BATCH_LIMIT, limits.BATCH_WINDOW_S,
                                "files classified"):
            return
        try:
            with st.spinner("Classifying…"):
                result = limits.classify_upload(runtime_for(available, name), blob, file.name)
        except Exception as exc:  # shown as a message, never a traceback
            show_error(exc)
            return
        st.session_state["_demo_last_upload"] = (key, result)
    show_upload(result, name)


def show_upload(result: limits.UploadResult, runtime_name: str) -> None:
    report = result.report
    if report.fatal:
        st.error(f"The file cannot be read as JSONL: {report.fatal}")
        return
    report_counts(report, "Valid lines")
    if report.invalid:
        st.warning(f"{len(report.invalid)} invalid lines, left out:")
        st.dataframe(pd.DataFrame([p.__dict__ for p in report.invalid]), hide_index=True)
    if not result.rows:
        st.info("No valid line to classify.")
        return
    for note in result.notes():
        st.info(note)
    st.caption(f"{len(result.rows):,} lines classified with {runtime_name} in "
               f"{result.seconds:.1f} s.")
    if result.metrics:
        m = result.metrics
        m1, m2 = st.columns(2)
        m1.metric("Accuracy", f"{m['accuracy']:.3f}")
        m2.metric("Macro-F1", f"{m['macro_f1']:.3f}")
        st.plotly_chart(px.imshow(m["confusion_matrix"], x=m["labels"], y=m["labels"],
                                  text_auto=True, labels={"x": "predicted", "y": "true"},
                                  title="Confusion matrix"), width="stretch")
    shown = ["line", "text", "label", "pred", "confidence"] if result.labeled else \
        ["line", "text", "pred", "confidence"]
    st.dataframe(pd.DataFrame([{k: r[k] for k in shown} for r in result.rows]),
                 hide_index=True, height=320)
    st.download_button("Download predictions (JSONL)", result.to_jsonl(), "predictions.jsonl",
                       "application/jsonl", on_click="ignore")


demo = guard("demo")
page("Demo")
if demo:
    model = RunFolder.default().onnx("int8")
    if not model.is_file():
        st.info("The demo model is not published yet: come back a little later.")
        st.stop()
    available = {"ONNX INT8": model}
    chosen = list(available)
    st.caption("The default model, quantized to INT8, on ONNX Runtime on this server's CPU. "
               f"Up to {limits.rate_limit()} predictions a minute.")
else:
    run = pick_run("No trained run yet: train one on the Train page (or run `make run`, "
                   "which builds the default model on first launch).")
    available = run.runnable()
    chosen = st.multiselect("Runtimes", list(available), default=list(available)[:1],
                            help="Export the run to get ONNX and OpenVINO choices. A file is "
                                 "classified with the first one.")

text_tab, file_tab = st.tabs(["Classify text", "Classify a JSONL file"])
with text_tab:
    classify_text(available, chosen, demo)
with file_tab:
    classify_file(available, chosen, demo)
