"""Export: ONNX FP32, optimized graph, INT8 and OpenVINO, with parity and accuracy gates."""

import pandas as pd
import streamlit as st

from core import export
from pages.common import job_panel, page, pick_run, start_job

page("Export")
st.caption("ONNX opset 17 with dynamic batch and sequence axes, ONNX Runtime's transformer "
           "optimizer, INT8 dynamic quantization and OpenVINO NNCF INT8. The export checks "
           "itself: FP32 must match PyTorch within 1e-4; INT8 is compared with FP32.")

run_dir = pick_run()
c1, c2, c3, c4 = st.columns(4)
per_channel = c1.checkbox("Per-channel (dynamic INT8)")
reduce_range = c2.checkbox("Reduced range (dynamic INT8)")
openvino = c3.checkbox("OpenVINO IR + INT8", value=True)
calib = c4.number_input("Calibration sentences", 1, 5000, 300)

key = f"export:{run_dir.name}"
if st.button("Export", type="primary"):
    argv = ["export", "--model", str(run_dir), "--calibration-size", str(calib)]
    argv += ["--per-channel"] * per_channel + ["--reduce-range"] * reduce_range
    argv += [] if openvino else ["--no-openvino"]
    start_job(key, argv)
job_panel(key)

report = export.load_report(run_dir)
if report is None:
    st.info("This run has not been exported yet.")
    st.stop()
st.subheader("Artifacts")
rows = []
for a in report["artifacts"]:
    m = a["metrics"]
    rows.append({"artifact": a["name"], "size MB": a["size_mb"],
                 "ratio to FP32": m.get("size_ratio"), "accuracy %": m["accuracy"],
                 "macro-F1 %": m["macro_f1"], "ΔF1 vs FP32": m.get("macro_f1_delta"),
                 "agreement %": m.get("agreement"), "max |Δlogit|": m.get("max_abs_diff"),
                 "seconds": a["seconds"], "notes": "; ".join(a.get("warnings", []))})
st.dataframe(pd.DataFrame(rows), hide_index=True)
st.caption(f"Gates ran on {report['eval_size']} validation sentences. "
           f"Fused operators: {report.get('fused_ops') or 'none'}")
if report.get("int8"):
    st.info(f"**onnx/model_quantized.onnx** (used by the browser bundle and the Demo) is the "
            f"**{report['int8']['method']}** INT8: {report['int8']['reason']}.")
for warning in report.get("warnings", []):
    st.error(warning)
if not report.get("warnings"):
    st.success("All gates passed: INT8 within 1 macro-F1 point of FP32, labels agree ≥ 99%.")

files = {a["name"]: a["path"] for a in report["artifacts"] if a["name"] != "pytorch_fp32"}
pick = st.selectbox("Download", list(files))
path = files[pick]
st.download_button(f"Download {pick}", open(path, "rb").read(), file_name=path.split("/")[-1],
                   mime="application/octet-stream")
