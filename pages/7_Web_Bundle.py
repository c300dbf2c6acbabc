"""Web bundle: build a static browser demo from a run, see its size, download it, try it live."""

import pandas as pd
import plotly.express as px
import streamlit as st

from core import gates, model_card, web_export
from pages.common import guard, job_panel, page, pick_run, refuse, start_job

demo = guard("web-bundle")  # demo mode: the prebuilt bundle, download only
page("Web bundle")
st.caption("A static page that classifies Korean text in the browser with onnxruntime-web (INT8, "
           "WebAssembly): the model, tokenizer and runtime files in one folder, no server and no "
           "CDN. Host it anywhere static files go (GitHub Pages, a Hugging Face static Space).")

missing = web_export.missing_vendor_files()
if missing and not demo:
    st.warning("The browser packages are not installed: run `make setup` (or "
               f"`cd web_export && npm ci`). Missing: {missing[0]}")

run = pick_run()
if demo:
    refuse("Building a bundle")
else:
    defaults = web_export.WebExportConfig(model=str(run.root))
    c1, c2 = st.columns([1, 3])
    examples = c1.number_input("Example sentences", 0, 50, defaults.examples,
                               help="short sentences from the seed set")
    title = c2.text_input("Page title", defaults.title)
    if not run.onnx("int8").is_file():
        st.caption("This run has no INT8 model yet: the build exports it first.")

    key = f"webexport:{run.name}"
    if st.button("Build bundle", type="primary", disabled=bool(missing)):
        start_job(key, lambda: web_export.WebExportConfig(model=str(run.root), zip=True,
                                                          examples=int(examples), title=title))
    job_panel(key)

report = run.bundle_report()
if report is None:
    st.info("No browser bundle has been published for this demo yet." if demo else
            "No bundle for this run yet: press **Build bundle**.")
    st.stop()

st.subheader("Size")
groups = {k: v / 1e6 for k, v in report["breakdown_bytes"].items()}
total_mb, model_mb = report["total_bytes"] / 1e6, groups.get("model", 0.0)
m1, m2, m3 = st.columns(3)
m1.metric("Bundle", f"{total_mb:.1f} MB", help="every file, uncompressed")
m2.metric("Model (INT8 ONNX)", f"{model_mb:.1f} MB")
if run.bundle_zip.is_file():
    m3.metric("Zip", f"{run.bundle_zip.stat().st_size / 1e6:.1f} MB")
verdicts = report.get("gates") or []
sizes = [v for v in verdicts if v["gate"] == "size"]
if sizes and gates.passed(sizes):
    st.success("Within the targets: " + "; ".join(v["message"] for v in sizes))
elif sizes:
    st.warning("Over the targets: " + "; ".join(gates.failures(sizes)))
accuracy = [v for v in verdicts if v["gate"] != "size"]
if accuracy:
    (st.success if gates.passed(accuracy) else st.error)(
        "The shipped model file, checked against ONNX FP32: "
        + "; ".join(v["message"] for v in accuracy))
frame = pd.DataFrame({"part": list(groups), "MB": [round(v, 2) for v in groups.values()]})
left, right = st.columns([2, 3])
left.dataframe(frame, hide_index=True)
right.plotly_chart(px.bar(frame, x="MB", y="part", orientation="h", height=240),
                   width="stretch")
with st.expander("Every file"):
    st.dataframe(pd.DataFrame([{"file": k, "KB": round(v / 1e3, 1)}
                               for k, v in report["files"].items()]), hide_index=True)
with st.expander("Model card (the bundle's README.md)"):
    for kind, value in model_card.page_blocks(run.bundle_dir, "This bundle's README.md is not a "
                                              "model card (built before model cards, or from a "
                                              "folder without metrics.json): build it again."):
        getattr(st, kind)(value)

if run.bundle_zip.is_file():
    # A callable: the zip is read only when the button is pressed, not on every rerun; and
    # on_click="ignore" keeps a download from rerunning the page (a known Streamlit pain).
    st.download_button("Download bundle (zip)", data=run.bundle_zip.read_bytes,
                       file_name=f"{run.name}-web-bundle.zip", mime="application/zip",
                       type="primary", on_click="ignore")
elif demo:
    st.info("The bundle zip has not been published for this demo yet.")
else:
    st.info("This bundle was built without a zip: build it here to get one.")
if demo:  # no server paths, no preview server: the download is all a visitor gets
    st.stop()
st.caption(f"Folder: `{run.bundle_dir}`. Preview it anywhere with "
           f"`python {run.bundle_dir}/serve.py`.")


@st.cache_resource(show_spinner=False)
def preview_url(folder: str) -> str:
    """One loopback server per bundle folder for the app's lifetime (it serves the folder's
    current files, so a rebuild shows at once)."""
    _server, url = web_export.serve_bundle(folder)
    return url


st.subheader("Live preview")
url = preview_url(str(run.bundle_dir))
st.caption("Inside this frame the page runs on one thread (a frame is cross-origin isolated only "
           "when the app around it is). Open it in its own tab to use several threads. The "
           "preview server listens on 127.0.0.1, so it works in a browser on this machine.")
st.link_button("Open in a new tab", url)
st.iframe(url, height=900)
