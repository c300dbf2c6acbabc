"""Train: fine-tune an encoder with its lower layers frozen, as a background job."""

import pandas as pd
import plotly.express as px
import streamlit as st

from core import data, model_card, paths
from core.errors import StudioError
from core.models.registry import BUNDLED_DEFAULT, BUNDLED_MODELS, SUGGESTED_HUB_MODELS
from core.run import list_runs
from core.train import TrainConfig
from pages.common import guard, job_panel, page, start_job

guard("train")  # demo mode: refused here
page("Train")
st.caption("Fine-tunes a BERT-family encoder; embeddings and encoder layers below K stay frozen "
           "(their outputs are cached after the first epoch, so training is fast on a CPU).")

datasets = data.list_datasets()
c1, c2 = st.columns(2)
dataset = c1.selectbox("Dataset", list(datasets))
choices = list(BUNDLED_MODELS) + list(SUGGESTED_HUB_MODELS) + ["other (hub id or local folder)"]
base = c2.selectbox("Base model", choices, help="Hub models need internet access.")
if base.startswith("other"):
    base = c2.text_input("Hub id or local model folder", "")
defaults = TrainConfig()
c3, c4, c5, c6 = st.columns(4)
freeze = c3.number_input("Freeze layers below K", 0, 48, defaults.freeze_below,
                         help="0 trains every layer; the reference workflow uses 7 of 12")
epochs = c4.number_input("Max epochs", 1, 100, defaults.epochs)
lr = c5.number_input("Learning rate", 1e-6, 1e-2, defaults.learning_rate, format="%.0e")
batch = c6.number_input("Batch size", 1, 512, defaults.batch_size)
c7, c8, c9 = st.columns(3)
max_length = c7.number_input("Max tokens", 8, 512, defaults.max_length)
seed = c8.number_input("Seed", 0, 2**31 - 1, defaults.seed)
name = c9.text_input("Run name", "default" if base == BUNDLED_DEFAULT else "run-1")
with st.expander("Advanced recipe (levers measured in bench/results/train_levers.md)"):
    a1, a2, a3 = st.columns(3)
    smoothing = a1.number_input("Label smoothing", 0.0, 0.5, defaults.label_smoothing, step=0.05,
                                help="of the training loss; validation loss stays plain")
    layer_decay = a2.number_input("Layer-wise lr decay", 0.1, 1.0, defaults.layer_decay, step=0.05,
                                  help="each trained layer below the head gets this factor more "
                                       "(1 = one learning rate for all)")
    reinit = a3.number_input("Re-initialise top layers", 0, 48, defaults.reinit_top,
                             help="draw the top N encoder layers afresh (N <= layers - K)")
    int8_epochs = st.number_input("INT8-aware epochs", 0, 10, defaults.int8_epochs,
                                  help="after the FP32 epochs, train as the integer INT8 file "
                                       "computes, distilling from the FP32 model: the shipped "
                                       "INT8 file is then the model that was validated "
                                       "(0 = a plain FP32 model, quantized after training)")

key = f"train:{name.strip()}"
if data.saved_split_params(datasets[dataset]):
    st.caption("This dataset was saved with its train/validation/test split on the Dataset page: "
               "training uses that split.")


def train_config() -> TrainConfig:
    run_name = paths.check_name(name, "run name")
    return TrainConfig(data=str(datasets[dataset]), base=base, freeze_below=int(freeze),
                       epochs=int(epochs), learning_rate=float(lr), batch_size=int(batch),
                       max_length=int(max_length), seed=int(seed),
                       label_smoothing=float(smoothing), layer_decay=float(layer_decay),
                       reinit_top=int(reinit), int8_epochs=int(int8_epochs),
                       out_dir=str(paths.runs_dir() / run_name))


if st.button("Start training", type="primary", disabled=not base or not name.strip()):
    start_job(key, train_config)

status = job_panel(key, chart_fields=("loss",))
if status is not None:
    val_points = [e for e in status.events if e.get("type") == "progress" and "val_macro_f1" in e]
    if val_points:
        frame = pd.DataFrame([{"epoch": e.get("epoch"), "val macro-F1": e["val_macro_f1"],
                               "phase": "INT8-aware" if e.get("phase") == "int8" else "FP32"}
                              for e in val_points])
        st.plotly_chart(px.line(frame, x="epoch", y="val macro-F1", color="phase", markers=True,
                                height=260),
                        width="stretch")

st.subheader("Trained runs")
rows, runs = [], {}
for run in list_runs():
    try:
        m = run.metrics()
    except StudioError:
        continue
    runs[run.name] = run, m
    test = m.get("test") or {}
    rows.append({"run": run.name, "base": m.get("base"), "K": m.get("freeze_below"),
                 "val macro-F1": (m.get("val") or {}).get("macro_f1"),
                 "test macro-F1": test.get("macro_f1"), "test accuracy": test.get("accuracy"),
                 "epochs": m.get("epochs_run"), "seconds": m.get("train_seconds")})
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    chosen, metrics = runs[st.selectbox("Details of run", list(runs))]
    phase = metrics.get("int8_phase") or {}
    if phase.get("fp32"):
        f1 = {part: (phase["fp32"].get(part) or {}).get("macro_f1") for part in ("val", "test")}
        st.caption(
            "INT8-aware run: validation / test macro-F1 above are the integer INT8 file's "
            f"(what ships); the FP32 model before the INT8-aware epoch scored "
            f"{f1['val'] or 0:.3f} / {f1['test'] or 0:.3f}.")
    split_name = "test" if metrics.get("test") else "validation"
    test = metrics.get("test") or metrics.get("val") or {}
    if test.get("confusion_matrix"):
        labels = metrics["labels"]
        st.plotly_chart(px.imshow(test["confusion_matrix"], x=labels, y=labels, text_auto=True,
                                  labels={"x": "predicted", "y": "true"},
                                  title=f"Confusion matrix ({split_name} split)"), width="stretch")
    if test.get("per_class"):
        st.dataframe(pd.DataFrame(test["per_class"]).T)
    with st.expander("Model card"):
        blocks = model_card.page_blocks(chosen.model_dir, f"Run {chosen.name} has no model card "
                                        "(model/README.md): runs trained before model cards "
                                        "have none; train it again to write one.")
        for kind, value in blocks:
            getattr(st, kind)(value)
        if blocks[0][0] != "info":
            st.download_button("Download README.md", file_name="README.md", mime="text/markdown",
                               data=(chosen.model_dir / model_card.CARD).read_bytes,
                               on_click="ignore")
else:
    st.info("No trained runs yet.")
