"""Web bundle: build a static browser demo from a run, see its size, download it, try it live."""

import pandas as pd
import plotly.express as px
import streamlit as st

from core import jobs, web_export
from pages.common import job_panel, page, pick_run, show_error

page("Web bundle")
st.caption("A static page that classifies Korean text in the browser with onnxruntime-web (INT8, "
           "WebAssembly): the model, tokenizer and runtime files in one folder, no server and no "
           "CDN. Host it anywhere static files go (GitHub Pages, a Hugging Face static Space).")

missing = web_export.missing_vendor_files()
if missing:
    st.warning("The browser packages are not installed: run `make setup` (or "
               f"`cd web_export && npm ci`). Missing: {missing[0]}")

run_dir = pick_run()
bundle_dir = run_dir / "bundle"
zip_path = bundle_dir.with_name(bundle_dir.name + ".zip")
c1, c2 = st.columns([1, 3])
examples = c1.number_input("Example sentences", 0, 50, 8, help="short sentences from the seed set")
title = c2.text_input("Page title", web_export.WebExportConfig.title)
if not (run_dir / web_export.INT8_PATH).is_file():
    st.caption("This run has no INT8 model yet: the build exports it first.")

key = f"webexport:{run_dir.name}"
if st.button("Build bundle", type="primary", disabled=bool(missing)):
    try:
        # Build the config here too, so a bad value shows at once instead of in the job.
        web_export.WebExportConfig(model=str(run_dir), examples=int(examples), title=title)
        jobs.start(key, ["web-export", "--model", str(run_dir), "--out", str(bundle_dir),
                         "--zip", "--examples", str(int(examples)), "--title", title])
    except Exception as exc:  # shown as a message, never a traceback
        show_error(exc)
job_panel(key)

report = web_export.load_report(bundle_dir)
if report is None:
    st.info("No bundle for this run yet: press **Build bundle**.")
    st.stop()

st.subheader("Size")
groups = {k: v / 1e6 for k, v in report["breakdown_bytes"].items()}
total_mb, model_mb = report["total_bytes"] / 1e6, groups.get("model", 0.0)
m1, m2, m3 = st.columns(3)
m1.metric("Bundle", f"{total_mb:.1f} MB", help="every file, uncompressed")
m2.metric("Model (INT8 ONNX)", f"{model_mb:.1f} MB")
if zip_path.is_file():
    m3.metric("Zip", f"{zip_path.stat().st_size / 1e6:.1f} MB")
defaults = web_export.WebExportConfig(model=str(run_dir))
if total_mb <= defaults.max_total_mb and model_mb <= defaults.max_model_mb:
    st.success(f"Within the targets: model ≤ {defaults.max_model_mb:.0f} MB, "
               f"bundle ≤ {defaults.max_total_mb:.0f} MB.")
else:
    st.warning(f"Over the targets (model ≤ {defaults.max_model_mb:.0f} MB, "
               f"bundle ≤ {defaults.max_total_mb:.0f} MB).")
frame = pd.DataFrame({"part": list(groups), "MB": [round(v, 2) for v in groups.values()]})
left, right = st.columns([2, 3])
left.dataframe(frame, hide_index=True)
right.plotly_chart(px.bar(frame, x="MB", y="part", orientation="h", height=240),
                   width="stretch")
with st.expander("Every file"):
    st.dataframe(pd.DataFrame([{"file": k, "KB": round(v / 1e3, 1)}
                               for k, v in report["files"].items()]), hide_index=True)

if zip_path.is_file():
    # A callable: the zip is read only when the button is pressed, not on every rerun; and
    # on_click="ignore" keeps a download from rerunning the page (a known Streamlit pain).
    st.download_button("Download bundle (zip)", data=zip_path.read_bytes,
                       file_name=f"{run_dir.name}-web-bundle.zip", mime="application/zip",
                       type="primary", on_click="ignore")
else:
    st.info("This bundle was built without a zip: build it here to get one.")
st.caption(f"Folder: `{bundle_dir}`. Preview it anywhere with `python {bundle_dir}/serve.py`.")


@st.cache_resource(show_spinner=False)
def preview_url(folder: str) -> str:
    """One loopback server per bundle folder for the app's lifetime (it serves the folder's
    current files, so a rebuild shows at once)."""
    _server, url = web_export.serve_bundle(folder)
    return url


st.subheader("Live preview")
url = preview_url(str(bundle_dir))
st.caption("Inside this frame the page runs on one thread (a frame is cross-origin isolated only "
           "when the app around it is). Open it in its own tab to use several threads. The "
           "preview server listens on 127.0.0.1, so it works in a browser on this machine.")
st.link_button("Open in a new tab", url)
st.iframe(url, height=900)
