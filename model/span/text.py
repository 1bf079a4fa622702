"""Words with their character offsets, and the normalised forms the question-match features compare.

English is split into words, numbers and single punctuation marks; Chinese (any CJK character) into single
characters, so a Chinese passage is read character by character while Latin runs inside it stay words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|\d+(?:[.,:]\d+)*|[^\W{_CJK}]+|[^\w\s]")
_SUFFIXES = ("ingly", "edly", "ings", "ing", "ied", "ies", "ed", "es", "ly", "s")


@dataclass(frozen=True)
class Words:
    """The words of a text: `words[i]` is `text[spans[i][0]:spans[i][1]]`."""

    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.words)

    def window(self, start: int, end: int) -> Words:
        return Words(self.words[start:end], self.spans[start:end])


def split_words(text: str) -> Words:
    words, spans = [], []
    for match in _TOKEN.finditer(text):
        words.append(match.group())
        spans.append(match.span())
    return Words(tuple(words), tuple(spans))


def lower(word: str) -> str:
    return word.lower()


def stem(word: str) -> str:
    """A light suffix-stripping stem ("playing", "played", "plays" -> "play"); CJK and short words unchanged."""
    word = word.lower()
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stemmed = word[: -len(suffix)]
            return stemmed + "y" if suffix in ("ied", "ies") else stemmed
    return word


def token_span(spans: tuple[tuple[int, int], ...], char_start: int, char_end: int) -> tuple[int, int] | None:
    """The first and last word (inclusive) that a character span [char_start, char_end) overlaps; None when
    it overlaps no word."""
    first = last = None
    for index, (start, end) in enumerate(spans):
        if end <= char_start:
            continue
        if start >= char_end:
            break
        if first is None:
            first = index
        last = index
    if first is None or last is None:
        return None
    return first, last
