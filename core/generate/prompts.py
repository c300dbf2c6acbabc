"""Prompts, diversity axes, the structured-output schema and tolerant parsing of the reply.

Each request asks for explicit per-label counts and one combination of diversity axes (life domain,
register, medium, length, slang). Request ``i`` takes combination ``i`` of a seeded shuffle of all
combinations, so consecutive requests differ on every axis and a resumed run continues the rotation.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
from dataclasses import dataclass

from core.labels import describe

# (axis name, values). Values are Korean instructions inserted verbatim into the prompt.
DEFAULT_AXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("domain", ("직장·업무", "학교·시험", "가족", "연애·결혼", "친구 관계", "건강·병원", "돈·소비",
                "여행·휴가", "취미·운동", "날씨·출퇴근 같은 일상", "온라인 쇼핑·배달", "반려동물",
                "이사·집안일", "육아", "게임·인터넷 커뮤니티")),
    ("register", ("반말", "존댓말")),
    ("medium", ("메신저 채팅", "일기", "SNS 게시글", "업무 메시지", "댓글", "문자 메시지")),
    ("length", ("짧게: 한 문장, 10~25자", "보통: 1~2문장, 25~60자", "길게: 2~3문장, 60~120자")),
    ("slang", ("신조어·줄임말을 자연스럽게 조금 섞기", "표준어만 쓰기")),
)
# Typical text length (characters) per length value, used only by the cost estimate.
LENGTH_CHARS = {"짧게": 18, "보통": 42, "길게": 90}


@dataclass(frozen=True)
class RequestSpec:
    """One chat request: which examples to ask for, with which axes."""

    index: int  # position in the run (0-based, continues across resumes)
    request_id: str  # "<run id>-<index>", written into every row's metadata
    counts: dict[str, int]  # label -> examples asked for
    axes: dict[str, str]  # axis name -> value

    @property
    def size(self) -> int:
        return sum(self.counts.values())


def axes_for(index: int, axes: tuple[tuple[str, tuple[str, ...]], ...], seed: int = 0) -> dict[str, str]:
    """The axis combination of request ``index`` (cycles through every combination)."""
    if not axes:
        return {}
    combos = _combos(axes, seed)
    return dict(zip((name for name, _ in axes), combos[index % len(combos)]))


@functools.lru_cache(maxsize=8)
def _combos(axes: tuple[tuple[str, tuple[str, ...]], ...], seed: int) -> list[tuple[str, ...]]:
    combos = list(itertools.product(*(values for _, values in axes)))
    random.Random(seed).shuffle(combos)
    return combos


def _label_lines(labels: tuple[str, ...]) -> str:
    lines = []
    for name in labels:
        info = describe(name)
        lines.append(f"- {name}: {info.ko}" if info else f"- {name}")
    return "\n".join(lines)


def build_messages(spec: RequestSpec, labels: tuple[str, ...]) -> list[dict]:
    """System + user messages. The counts line is JSON so that any model (and the test server)
    can read exactly how many examples of each label are wanted."""
    system = (
        "당신은 한국어 감정 분류 데이터셋을 만드는 작가입니다. 실제 한국 사람이 쓴 것 같은 자연스러운 "
        "문장을 만들고, 각 문장에 아래 라벨 중 하나를 붙입니다.\n"
        f"라벨 정의:\n{_label_lines(labels)}\n"
        "규칙: 문장마다 상황·표현·어휘가 서로 달라야 합니다. 라벨 이름이나 감정 단어를 그대로 쓰지 말고 "
        "상황과 말투로 감정이 드러나게 하세요. 번호, 따옴표, 설명은 붙이지 마세요. "
        'JSON 하나만 출력하세요: {"examples": [{"text": "...", "label": "..."}]}'
    )
    axis_lines = "\n".join(f"- {name}: {value}" for name, value in spec.axes.items())
    user = (
        f"라벨별 개수 (총 {spec.size}개):\n"
        f"{json.dumps(spec.counts, ensure_ascii=False)}\n"
        f"이번 요청의 조건:\n{axis_lines}\n"
        "조건을 모두 지키되, 같은 조건 안에서도 서로 다른 인물·사건·표현을 쓰세요."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def response_format(labels: tuple[str, ...], mode: str) -> dict:
    """Structured outputs: a strict JSON schema with the label enum, or plain JSON mode."""
    if mode == "json_object":
        return {"type": "json_object"}
    item = {
        "type": "object",
        "properties": {"text": {"type": "string"}, "label": {"type": "string", "enum": list(labels)}},
        "required": ["text", "label"],
        "additionalProperties": False,
    }
    schema = {
        "type": "object",
        "properties": {"examples": {"type": "array", "items": item}},
        "required": ["examples"],
        "additionalProperties": False,
    }
    return {"type": "json_schema",
            "json_schema": {"name": "emotion_examples", "strict": True, "schema": schema}}


class MalformedReply(ValueError):
    """The reply holds no usable JSON."""


def parse_examples(content: str | None) -> tuple[list, bool]:
    """``(items, truncated)`` from a reply's content.

    A reply cut off mid-way (``finish_reason == "length"``) still holds complete items before the
    cut: those are salvaged one by one instead of throwing the whole reply away.
    Raises MalformedReply when nothing can be read.
    """
    if not content or not content.strip():
        raise MalformedReply("empty reply")
    text = content.strip()
    if text.startswith("```"):  # some servers wrap JSON mode output in a markdown fence
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except RecursionError:  # nested deeper than the parser can go: no usable rows
        raise MalformedReply("reply JSON is nested too deeply") from None
    except ValueError:  # JSONDecodeError, or an integer too long to convert
        items = _salvage(text)
        if items is None:
            raise MalformedReply(f"reply is not JSON: {content[:80]!r}") from None
        return items, True
    if isinstance(data, dict) and isinstance(data.get("examples"), list):
        return data["examples"], False
    if isinstance(data, list):  # json_object servers sometimes return the bare array
        return data, False
    raise MalformedReply("reply JSON has no 'examples' list")


def _salvage(text: str) -> list | None:
    """Complete items of a truncated ``{"examples": [ {...}, {...}, {"te`` document, or None."""
    key = text.find('"examples"')
    start = text.find("[", key if key >= 0 else 0)
    if start < 0:
        return None
    decoder, items, pos = json.JSONDecoder(), [], start + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        try:
            item, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            break  # the cut-off item (or one no parser can read)
        items.append(item)
    return items if items or key >= 0 else None
