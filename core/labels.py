"""The label set. Labels are data: a dataset may bring its own list; these are the defaults."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from core.errors import ConfigError


@dataclass(frozen=True)
class Label:
    name: str
    ko: str  # one-line definition in Korean
    en: str  # one-line definition in English


# AI Hub 감성대화 six emotions plus neutral.
DEFAULT_LABELS: tuple[Label, ...] = (
    Label("기쁨", "좋은 일로 즐겁고 흐뭇하거나 뿌듯하고 고마운 마음",
          "Joy: happiness, pride, gratitude or excitement about something good."),
    Label("슬픔", "상실·외로움·실망·그리움처럼 누구 탓이 아닌 아픔과 서글픔",
          "Sadness: loss, loneliness, disappointment or longing, with no one to blame."),
    Label("분노", "부당함이나 남의 행동 때문에 치미는 짜증과 화 (비꼬는 말 포함)",
          "Anger: irritation or indignation at unfairness or someone's behaviour, sarcasm included."),
    Label("불안", "아직 일어나지 않은 일이 잘못될까 걱정되고 초조한 마음",
          "Anxiety: worry or fear about something uncertain that may happen."),
    Label("상처", "누군가의 말이나 행동으로 무시·배신·소외당해 마음이 다친 느낌",
          "Hurt: feeling wounded, betrayed, excluded or belittled by someone."),
    Label("당황", "예상치 못한 일에 놀라거나 민망하고 어쩔 줄 모르는 순간",
          "Embarrassment: being caught off guard, flustered or awkward right now."),
    Label("중립", "감정이 드러나지 않는 사실·정보·일정·질문 (감정 주제라도 담담한 말)",
          "Neutral: facts, information, plans or questions with no clear emotion."),
)
DEFAULT_LABEL_NAMES: tuple[str, ...] = tuple(label.name for label in DEFAULT_LABELS)
_BY_NAME = {label.name: label for label in DEFAULT_LABELS}


def normalize_label(value: str) -> str:
    """Labels compare after NFC (an NFD-typed 기쁨 is still 기쁨) and outer whitespace removal."""
    return unicodedata.normalize("NFC", value).strip()


def parse_labels(spec: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"a,b,c"`` or a list -> a tuple of distinct labels; None -> the defaults."""
    if spec is None:
        return DEFAULT_LABEL_NAMES
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    labels: list[str] = []
    for item in items:
        name = normalize_label(str(item))
        if name and name not in labels:
            labels.append(name)
    if len(labels) < 2:
        raise ConfigError(f"a label set needs at least two labels, got {labels!r}; "
                          "give them comma-separated, e.g. --labels 기쁨,슬픔,중립")
    return tuple(labels)


def describe(name: str) -> Label | None:
    """The definition of a default label, or None for a custom one."""
    return _BY_NAME.get(normalize_label(name))
