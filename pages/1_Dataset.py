"""Dataset: upload JSONL files, validate line by line, inspect, clean, save, split, download."""

import pandas as pd
import plotly.express as px
import streamlit as st

from core import data
from core import demo as demo_limits
from core.labels import DEFAULT_LABEL_NAMES, parse_labels
from pages.common import guard, page, refuse, report_counts, show_error, upload_ok

demo = guard("dataset")  # demo mode: the seed set and bounded uploads, nothing saved
page("Upload check" if demo else "Dataset")
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
    saved = {k: v for k, v in data.list_datasets().items() if not demo or k == "seed"}
    name = st.selectbox("Dataset", list(saved), help="'seed' is the shipped hand-written set")
    reports = [data.validate_bytes(saved[name].read_bytes(), name, **options) if demo
               else data.validate_file(saved[name], **options)]  # demo: a name, not a path
else:
    files = st.file_uploader("JSONL files", type=["jsonl", "json", "txt", "csv"],
                             accept_multiple_files=True)
    if not files:
        st.info("Upload one or more .jsonl files to validate them.")
        st.stop()
    if demo:  # bounded: a few files, each within core.demo's size and line limits
        files = [f for f in files[:demo_limits.MAX_UPLOAD_FILES] if upload_ok(f)]
    reports = [data.validate_bytes(f.getvalue(), f.name, **options) for f in files]

st.subheader("Validation report")
for report in reports:
    if report.fatal:
        st.error(f"**{report.source}**: {report.fatal}")
        continue
    report_counts(report)
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

if demo:
    name = "checked"
    refuse("Saving to the workspace")
else:
    name = st.text_input("Save as dataset named", "my-dataset")
    if st.button("Save to workspace", type="primary"):
        try:
            path = data.save_dataset(name, records, split={
                "val_frac": val_frac, "test_frac": test_frac, "seed": int(seed)})
            st.success(f"Saved {len(records)} records as dataset {path.stem!r} with this split: "
                       "training on it uses the same train/validation/test sentences.")
        except Exception as exc:  # shown as a message, never a traceback
            show_error(exc)
d1, d2 = st.columns(2)
d1.download_button("Download cleaned JSONL", data.to_jsonl(records), f"{name}.jsonl",
                   "application/jsonl")
d2.download_button("Download train/val/test (zip)", data.splits_zip(split, name),
                   f"{name}-splits.zip", "application/zip")

st.subheader("Audit: likely label errors and leakage")
st.caption("Out-of-fold probabilities from a logistic regression on frozen e5-small-ko embeddings, "
           "ranked by cleanlab: rows whose label the held-out model doubts most, with its "
           "suggestion. Then near-duplicates (embedding cosine or character-3-gram Jaccard) that "
           "fall in different splits of the split above. About a minute on the seed set; the "
           "embeddings are cached, so a second audit of the same texts takes seconds.")
if demo:
    refuse("Running the audit")
    st.stop()
from core import audit  # noqa: E402  (only this section needs it)

audit_split = {"val_frac": val_frac, "test_frac": test_frac, "seed": int(seed)}
audit_key = audit.records_key(records, audit_split)
a1, a2 = st.columns(2)
audit_folds = a1.number_input("Folds (stratified k-fold)", 2, 20, audit.AuditConfig.folds)
audit_top = a2.number_input("Flagged rows to list (0 = all)", 0, 5000, audit.AuditConfig.top)
if st.button("Run the audit"):
    bar = st.progress(0.0, text="starting…")

    def _audit_progress(event: dict) -> None:
        total = event.get("total") or 1
        bar.progress(min(float(event.get("done", 0)) / total, 1.0), text=event.get("message", ""))

    try:
        with st.spinner("Auditing…"):
            config = audit.AuditConfig(folds=int(audit_folds), top=int(audit_top))
            st.session_state["audit_result"] = (audit_key, audit.audit_records(
                records, config, split=audit_split, on_progress=_audit_progress,
                source=reports[0].source if len(reports) == 1 else "uploaded files"))
    except Exception as exc:  # shown as a message, never a traceback
        show_error(exc)
    bar.empty()

found = st.session_state.get("audit_result")
if found is None:
    st.info("Run the audit to list likely label errors and leaking near-duplicates.")
    st.stop()
if found[0] != audit_key:
    st.warning("The records or the split changed since the last audit: run it again.")
    st.stop()
result = found[1]
m1, m2, m3, m4 = st.columns(4)
m1.metric("Audited", result.count)
m2.metric("Out-of-fold accuracy", f"{result.oof_accuracy:.3f}")
m3.metric("Flagged as likely mislabeled", result.flagged)
m4.metric("Near-duplicates across splits", len(result.leaks))
st.caption(f"{result.seconds:.0f} s (embeddings {result.embed_seconds:.0f} s"
           f"{', from the cache' if result.cached else ''}). The model is wrong too: read each "
           "row before relabelling it.")
review = pd.DataFrame([{"action": "keep", "new label": i.suggested, "line": i.line,
                        "label": i.label, "suggested": i.suggested,
                        "confidence": i.confidence, "quality": i.quality, "text": i.text}
                       for i in result.issues])
if result.issues:
    edited = st.data_editor(
        review, hide_index=True, key=f"audit-review-{audit_key}",
        disabled=["line", "label", "suggested", "confidence", "quality", "text"],
        column_config={
            "action": st.column_config.SelectboxColumn("action", options=list(audit.ACTIONS),
                                                       required=True),
            "new label": st.column_config.SelectboxColumn("new label", options=result.labels,
                                                          required=True),
            "confidence": st.column_config.NumberColumn(help="the model's probability of its "
                                                             "suggestion", format="%.2f"),
            "quality": st.column_config.NumberColumn(help="the model's probability of the "
                                                          "given label", format="%.3f")})
else:
    edited = review
    st.success("No row is flagged as likely mislabeled.")
if result.leaks:
    st.dataframe(pd.DataFrame([{"line A": p.line_a, "split A": p.split_a, "text A": p.text_a,
                                "label A": p.label_a, "line B": p.line_b, "split B": p.split_b,
                                "text B": p.text_b, "label B": p.label_b, "cosine": p.cosine,
                                "jaccard": p.jaccard} for p in result.leaks]), hide_index=True)
drop_leaks = st.checkbox("Also drop row B of each near-duplicate pair when saving",
                         value=False, disabled=not result.leaks)
decisions = {issue.index: (row["action"], row["new label"])
             for issue, (_, row) in zip(result.issues, edited.iterrows())}
if drop_leaks:
    decisions.update({p.b: ("drop", None) for p in result.leaks})
reviewed_name = st.text_input("Save the reviewed dataset as", f"{name}-reviewed")
if st.button("Save reviewed dataset"):
    try:
        reviewed, counts = audit.apply_actions(records, decisions)
        path = data.save_dataset(reviewed_name, reviewed, split=audit_split)
        st.success(f"Saved {len(reviewed)} records as dataset {path.stem!r} "
                   f"({counts['relabelled']} relabelled, {counts['dropped']} dropped).")
    except Exception as exc:  # shown as a message, never a traceback
        show_error(exc)
