"""Export: ONNX FP32, optimized graph, INT8 and OpenVINO, with parity and accuracy gates."""

import pandas as pd
import plotly.express as px
import streamlit as st

from core import gates
from core.export import ExportConfig
from pages.common import guard, job_panel, page, pick_run, start_job

guard("export")  # demo mode: refused here
page("Export")
st.caption("ONNX opset 17 with dynamic batch and sequence axes, ONNX Runtime's transformer "
           "optimizer, three INT8 methods (integer matmuls with per-token scales, plain dynamic, "
           "weight-only) and OpenVINO INT8 (int8 weights). The export checks "
           f"itself: FP32 must match PyTorch within {gates.PARITY_ATOL:g}; INT8 must agree with "
           f"FP32 on ≥ {gates.MIN_AGREEMENT:g}% of validation labels and lose at most "
           f"{gates.MAX_F1_DROP:g} macro-F1 point.")

run = pick_run()
defaults = ExportConfig(model=str(run.root))
c1, c2, c3, c4 = st.columns(4)
per_channel = c1.checkbox("Per-channel (plain dynamic INT8)", defaults.per_channel)
reduce_range = c2.checkbox("Reduced range (plain dynamic INT8)", defaults.reduce_range)
openvino = c3.checkbox("OpenVINO IR + INT8", value=defaults.openvino)
calib = c4.number_input("Calibration sentences", 1, 5000, defaults.calibration_size)
allow_drift = st.checkbox("Ship INT8 even if it fails the gates", defaults.allow_int8_drift)

key = f"export:{run.name}"
if st.button("Export", type="primary"):
    start_job(key, lambda: ExportConfig(model=str(run.root), per_channel=per_channel,
                                        reduce_range=reduce_range, openvino=openvino,
                                        calibration_size=int(calib),
                                        allow_int8_drift=allow_drift))
job_panel(key)

report = run.export_report()
if report is None:
    st.info("This run has not been exported yet.")
    st.stop()
st.subheader("Artifacts")
rows = []
for a in report["artifacts"]:
    m = a["metrics"]
    rows.append({"artifact": a["name"], "size MB": a["size_mb"],
                 "ratio to FP32": m.get("size_ratio"), "accuracy %": m["accuracy"],
                 "macro-F1 %": m["macro_f1"], "ΔF1 vs yardstick": m.get("macro_f1_delta"),
                 "agreement with FP32 %": m.get("agreement"),
                 "= run's labels %": m.get("agreement_with_run"),
                 "max |Δlogit|": m.get("max_abs_diff"),
                 "seconds": a["seconds"], "notes": "; ".join(a.get("warnings", []))})
st.dataframe(pd.DataFrame(rows), hide_index=True)
st.caption(f"Gates ran on {report['eval_size']} validation sentences. "
           f"Fused operators: {report.get('fused_ops') or 'none'}")
if report.get("int8"):
    st.info(f"**onnx/model_quantized.onnx** (used by the browser bundle and the Demo) is the "
            f"**{report['int8']['method']}** INT8: {report['int8']['reason']}. The INT8 files "
            f"were judged against {report['int8'].get('yardstick') or 'the FP32 model'}.")
    if report["int8"]["method"] == "weight-only":
        st.error("The shipped weight-only INT8 is INT8 on disk only: ONNX Runtime decodes its "
                 "weights to float when it loads the file, so it runs at FP32 speed and holds "
                 "more memory than the FP32 file (docs/int8.md). Train with INT8-aware epochs "
                 "for an integer INT8 file that passes its gates.")
for warning in report.get("warnings", []):
    st.error(warning)
shipped = report.get("int8") or {}
if shipped.get("gates"):
    if shipped.get("passed"):
        st.success("The shipped INT8 passes its gates: " + "; ".join(
            v["message"] for v in shipped["gates"]))
    else:
        st.error("The shipped INT8 FAILS its gates (shipped with --allow-int8-drift): "
                 + "; ".join(gates.failures(shipped["gates"])))

cpu = report.get("cpu") or {}
if cpu:
    st.caption(f"Gates measured on {cpu.get('model', '?')} (flags: "
               f"{', '.join(cpu.get('flags', [])) or 'none of avx2/avx512/vnni/amx'}): integer "
               "kernels differ between CPUs, so INT8 speed and labels are recorded per machine.")
sens = report.get("sensitivity") or {}
if sens.get("nodes"):
    st.subheader("INT8 sensitivity per node")
    st.caption(f"Each quantizable node quantized alone ({sens['method']}) on "
               f"{sens['sentences']} training sentences: how far the logits move. The worst "
               "nodes are the ones to keep in higher precision or to smooth.")
    top = pd.DataFrame(sens["nodes"][:30])
    top["node"] = [f"L{'' if pd.isna(layer) else int(layer)} {role} · {name[-28:]}"
                   for layer, role, name in zip(top["layer"], top["role"], top["name"])]
    fig = px.bar(top, x="mean_abs_dlogit", y="node", color="role", orientation="h",
                 hover_data=["name", "op_type", "flips", "flip_pct", "max_abs_dlogit"],
                 labels={"mean_abs_dlogit": "mean |Δlogit| when quantized alone"})
    fig.update_layout(yaxis={"autorange": "reversed"}, height=24 * len(top) + 120)
    st.plotly_chart(fig, width="stretch")

files = {a["name"]: a["path"] for a in report["artifacts"] if a["name"] != "pytorch_fp32"}
pick = st.selectbox("Download", list(files))
path = files[pick]
# A callable: the file is read only when the button is pressed, not on every rerun.
st.download_button(f"Download {pick}", data=lambda: open(path, "rb").read(),
                   file_name=path.split("/")[-1], mime="application/octet-stream",
                   on_click="ignore")
