"""Validation and deduplication of generated examples.

Exact duplicates compare after NFKC + casefold + whitespace collapse. Near-duplicates compare by the
Jaccard similarity of character n-gram sets. Comparing every pair is O(n^2); instead an inverted
index (n-gram -> texts) finds candidates with the *prefix-filter* argument of set-similarity joins
(Chaudhuri et al., ICDE 2006; Bayardo et al., WWW 2007): if J(A, B) >= t then |A & B| >= t|A|, so any
``|A| - ceil(t|A|) + 1`` grams of A include one gram of B. We probe with the rarest grams of A (the
shortest posting lists), and compare exactly only the few texts found. The result is exact, not
approximate; common Korean endings ("했어", "어요") never need to be probed.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from dataclasses import dataclass, field

from core.labels import normalize_label
from core.safe_json import text_problem

_SPACE = re.compile(r"\s+")
# Characters that carry no content for near-duplicate purposes (spacing, punctuation, symbols).
_NOISE_CATEGORIES = ("Z", "P", "S", "C")


def normalize_text(text: str) -> str:
    """The exact-duplicate key: NFKC, casefold, whitespace runs collapsed to one space, stripped."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _content_chars(text: str) -> str:
    """Normalized text without spaces, punctuation and symbols: "행복해요!!" ~ "행복 해요"."""
    return "".join(c for c in normalize_text(text) if unicodedata.category(c)[0] not in _NOISE_CATEGORIES)


def is_hangul(ch: str) -> bool:
    o = ord(ch)
    # Hangul syllables, Jamo, compatibility Jamo, Jamo extended A/B.
    return (0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F
            or 0xA960 <= o <= 0xA97F or 0xD7B0 <= o <= 0xD7FF)


def hangul_ratio(text: str) -> float:
    """Share of Hangul among letters (spaces, digits, punctuation and emoji do not count)."""
    letters = [c for c in unicodedata.normalize("NFC", text) if unicodedata.category(c)[0] == "L"]
    if not letters:
        return 0.0
    return sum(is_hangul(c) for c in letters) / len(letters)


@dataclass(frozen=True)
class Rules:
    labels: tuple[str, ...]  # allowed labels
    min_chars: int = 4  # shortest text kept (after stripping)
    max_chars: int = 300  # longest text kept
    min_hangul_ratio: float = 0.5  # "is Korean": at least this share of letters are Hangul


def check_example(item: object, rules: Rules) -> tuple[dict | None, str | None]:
    """``({"text", "label"}, None)`` for a valid item, else ``(None, reason)``.

    Reasons are short kinds that the progress report counts: not_object, missing_text,
    wrong_label, bad_characters (a lone surrogate, a control character or nothing visible: the
    row could not be written as UTF-8 or would fail dataset validation), too_short, too_long,
    not_korean.
    """
    if not isinstance(item, dict):
        return None, "not_object"
    text, label = item.get("text"), item.get("label")
    if not isinstance(text, str) or not text.strip():
        return None, "missing_text"
    if not isinstance(label, str) or normalize_label(label) not in rules.labels:
        return None, "wrong_label"
    text = unicodedata.normalize("NFC", text).strip()
    if text_problem(text, '"text"'):
        return None, "bad_characters"
    if len(text) < rules.min_chars:
        return None, "too_short"
    if len(text) > rules.max_chars:
        return None, "too_long"
    if hangul_ratio(text) < rules.min_hangul_ratio:
        return None, "not_korean"
    return {"text": text, "label": normalize_label(label)}, None


def _gram_set(text: str, n: int) -> frozenset[int]:
    """Character n-grams of the content characters, as stable integer hashes (crc32)."""
    s = _content_chars(text)
    if len(s) <= n:
        return frozenset((zlib.crc32(s.encode("utf-8")),)) if s else frozenset()
    return frozenset(zlib.crc32(s[i:i + n].encode("utf-8")) for i in range(len(s) - n + 1))


@dataclass
class Deduper:
    """Everything kept so far; ``add`` rejects exact and near duplicates of it."""

    threshold: float = 0.8  # Jaccard of n-gram sets at or above which a text is a near-duplicate
    n: int = 3  # n-gram size in characters (3 suits Hangul: one syllable is one character)
    _exact: set[str] = field(default_factory=set)
    _sets: list[frozenset[int]] = field(default_factory=list)
    _index: dict[int, list[int]] = field(default_factory=dict)
    comparisons: int = 0  # exact Jaccard computations done (shows the filter works)

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {self.threshold}")

    def __len__(self) -> int:
        return len(self._exact)

    def _probe(self, grams: frozenset[int]) -> list[int]:
        """The rarest ``|A| - ceil(t|A|) + 1`` grams: every near-duplicate shares one of them."""
        size = max(len(grams) - math.ceil(self.threshold * len(grams)) + 1, 1)
        return sorted(grams, key=lambda g: len(self._index.get(g, ())))[:size]

    def find(self, text: str) -> str | None:
        """"duplicate", "near_duplicate" or None, without adding the text."""
        if normalize_text(text) in self._exact:
            return "duplicate"
        grams = _gram_set(text, self.n)
        if not grams:
            return None
        seen: set[int] = set()
        for g in self._probe(grams):
            for idx in self._index.get(g, ()):
                if idx in seen:
                    continue
                seen.add(idx)
                other = self._sets[idx]
                # Length filter: |A|/|B| < t makes Jaccard >= t impossible.
                if min(len(grams), len(other)) < self.threshold * max(len(grams), len(other)):
                    continue
                self.comparisons += 1
                inter = len(grams & other)
                if inter / (len(grams) + len(other) - inter) >= self.threshold:
                    return "near_duplicate"
        return None

    def add(self, text: str) -> str | None:
        """Keep ``text`` unless it duplicates something kept; returns the rejection reason or None."""
        reason = self.find(text)
        if reason is None:
            self._exact.add(normalize_text(text))
            grams = _gram_set(text, self.n)
            idx = len(self._sets)
            self._sets.append(grams)
            for g in grams:  # all grams are indexed; only queries are cut to the rare ones
                self._index.setdefault(g, []).append(idx)
        return reason


def jaccard(a: str, b: str, n: int = 3) -> float:
    """Exact n-gram Jaccard of two texts (tests and diagnostics use it as the reference)."""
    ga, gb = _gram_set(a, n), _gram_set(b, n)
    if not ga and not gb:
        return 1.0
    return len(ga & gb) / len(ga | gb)
