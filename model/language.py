"""Language of a text, for choosing a model and for answering in the user's language: "zh" or "en"."""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str) -> str:
    """ "zh" when CJK characters make up at least a fifth of the letters (a Chinese sentence with an English
    name stays Chinese), else "en"."""
    cjk = len(_CJK.findall(text))
    latin_words = len(re.findall(r"[A-Za-z]+", text))
    if cjk == 0:
        return "en"
    return "zh" if cjk >= 0.2 * (cjk + latin_words) or not _LATIN.search(text) else "en"
