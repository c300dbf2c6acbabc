"""Dataset: upload JSONL files, validate line by line, inspect, clean, save, split, download."""

import pandas as pd
import plotly.express as px
import streamlit as st

from core import data
from core.labels import DEFAULT_LABEL_NAMES, parse_labels
from pages.common import page, show_error

page("Dataset")
st.caption('JSON Lines, one object per line: {"text": ..., "label": ...}; other keys are kept.')

with st.sidebar:
    st.subheader("Validation settings")
    text_key = st.text_input("Text key", "text", help="e.g. sentence")
    label_key = st.text_input("Label key", "label", help="e.g. emotion")
    any_label = st.checkbox("Accept any label", value=False)
    label_spec = st.text_input("Label set", ",".join(DEFAULT_LABEL_NAMES), disabled=any_label)
    max_chars = st.number_input("Max characters per text", 1, 100_000, data.MAX_CHARS)

try:
    labels = None if any_label else parse_labels(label_spec)
except ValueError as exc:
    show_error(exc)
    st.stop()
options = dict(labels=labels, max_chars=int(max_chars), text_key=text_key, label_key=label_key)

source = st.radio("Source", ["Saved dataset", "Upload JSONL files"], horizontal=True)
if source == "Saved dataset":
    saved = data.list_datasets()
    name = st.selectbox("Dataset", list(saved), help="'seed' is the shipped hand-written set")
    reports = [data.validate_file(saved[name], **options)]
else:
    files = st.file_uploader("JSONL files", type=["jsonl", "json", "txt", "csv"],
                             accept_multiple_files=True)
    if not files:
        st.info("Upload one or more .jsonl files to validate them.")
        st.stop()
    reports = [data.validate_bytes(f.getvalue(), f.name, **options) for f in files]

st.subheader("Validation report")
for report in reports:
    if report.fatal:
        st.error(f"**{report.source}**: {report.fatal}")
        continue
    cols = st.columns(4)
    cols[0].metric("Valid", len(report.records))
    cols[1].metric("Invalid", len(report.invalid))
    cols[2].metric("Duplicates", len(report.duplicates))
    cols[3].metric("Blank lines", report.blank_lines)
    if report.invalid:
        st.warning(f"**{report.source}**: {len(report.invalid)} invalid lines (kept out).")
        st.dataframe(pd.DataFrame([p.__dict__ for p in report.invalid]), hide_index=True)
    else:
        st.success(f"**{report.source}**: every line is valid.")
    if report.duplicates:
        with st.expander(f"{len(report.duplicates)} duplicates in {report.source}"):
            st.dataframe(pd.DataFrame([d.__dict__ for d in report.duplicates]), hide_index=True)

records = [r for rep in reports for r in rep.records]
if not records:
    st.info("No valid records to show.")
    st.stop()
if st.checkbox("Drop duplicates (exact and normalized, across all files)", value=True):
    records = data.dedupe(records)

st.subheader(f"{len(records)} records")
frame = pd.DataFrame([{"label": r.label, "text": r.text, "chars": len(r.text), "line": r.line}
                      for r in records])
left, right = st.columns(2)
counts = frame["label"].value_counts().rename_axis("label").reset_index(name="count")
left.plotly_chart(px.bar(counts, x="label", y="count", title="Records per label"), width="stretch")
right.plotly_chart(px.histogram(frame, x="chars", nbins=40, title="Text length (characters)"),
                   width="stretch")

query = st.text_input("Search text")
shown = st.multiselect("Labels", sorted(frame["label"].unique()))
view = frame
if query:
    view = view[view["text"].str.contains(query, regex=False)]
if shown:
    view = view[view["label"].isin(shown)]
st.dataframe(view, hide_index=True, height=320)

st.subheader("Save and download")
c1, c2, c3 = st.columns(3)
val_frac = c1.slider("Validation fraction", 0.0, 0.4, data.VAL_FRAC, 0.05)
test_frac = c2.slider("Test fraction", 0.0, 0.4, data.TEST_FRAC, 0.05)
seed = c3.number_input("Split seed", 0, 2**31 - 1, data.SPLIT_SEED)
try:
    split = data.split_records(records, val_frac, test_frac, int(seed))
except ValueError as exc:
    show_error(exc)
    st.stop()
st.caption("Split sizes: " + ", ".join(f"{k} {v}" for k, v in split.sizes().items()))

name = st.text_input("Save as dataset named", "my-dataset")
if st.button("Save to workspace", type="primary"):
    try:
        path = data.save_dataset(name, records, split={"val_frac": val_frac,
                                                       "test_frac": test_frac, "seed": int(seed)})
        st.success(f"Saved {len(records)} records as dataset {path.stem!r} with this split: "
                   "training on it uses the same train/validation/test sentences.")
    except Exception as exc:  # shown as a message, never a traceback
        show_error(exc)
d1, d2 = st.columns(2)
d1.download_button("Download cleaned JSONL", data.to_jsonl(records), f"{name}.jsonl",
                   "application/jsonl")
d2.download_button("Download train/val/test (zip)", data.splits_zip(split, name),
                   f"{name}-splits.zip", "application/zip")
