"""The reader's word table: which words have a row, which rows train, and hashed character n-grams.

Row 0 is padding and row 1 the unknown word. Rows [0, tuned_count) are trained; rows from tuned_count on are
pretrained vectors that stay fixed (DrQA: fine-tune only the most frequent question words). Words are looked
up lower-cased, as GloVe 6B is uncased; Chinese characters are their own keys.
"""

from __future__ import annotations

import functools
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PAD, UNK = "<pad>", "<unk>"
MAX_NGRAMS = 12  # character n-grams kept per word (the first ones: prefixes carry most)


@dataclass(frozen=True)
class Vocab:
    words: tuple[str, ...]
    tuned_count: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return index.get(word.lower(), 1)

    def ids(self, words: Iterable[str]) -> list[int]:
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return [index.get(w.lower(), 1) for w in words]


def build_vocab(
    question_words: Counter[str],
    passage_words: Counter[str],
    pretrained: Mapping[str, int] | None,
    *,
    tune_top: int = 1000,
    min_count: int = 3,
    extra_pretrained: Iterable[str] = (),
) -> Vocab:
    """Trained rows: the `tune_top` commonest question words, then training words without a pretrained vector
    seen `min_count` times or more. Fixed rows: every other training word with a pretrained vector, then
    `extra_pretrained` (the commonest GloVe words, so serving covers words training never saw).

    `pretrained` maps a word to its row in the pretrained table (None: no pretrained vectors; every kept
    word trains). Counts are of lower-cased words."""
    counts = question_words + passage_words
    has_vector = (lambda w: w in pretrained) if pretrained is not None else (lambda w: False)
    tuned = [w for w, _ in question_words.most_common() if has_vector(w)][:tune_top]
    chosen = set(tuned)
    tuned += [w for w, c in counts.most_common() if c >= min_count and not has_vector(w) and w not in chosen]
    chosen = set(tuned)
    fixed = [w for w, _ in counts.most_common() if has_vector(w) and w not in chosen]
    chosen.update(fixed)
    fixed += [w for w in extra_pretrained if has_vector(w) and w not in chosen]
    words = (PAD, UNK, *[w for w in tuned if w not in (PAD, UNK)])
    return Vocab(words=(*words, *[w for w in fixed if w not in (PAD, UNK)]), tuned_count=len(words))


@functools.lru_cache(maxsize=262_144)
def char_ngrams(word: str, buckets: int, sizes: tuple[int, ...] = (3, 4)) -> tuple[int, ...]:
    """Hashed character n-grams of "<word>" in [1, buckets) (0 is padding), at most MAX_NGRAMS of them.
    crc32, not hash(): the ids must not change between processes. Cached: a word's n-grams never change."""
    marked = f"<{word.lower()}>"
    grams = [marked[i : i + n] for n in sizes for i in range(max(1, len(marked) - n + 1))]
    return tuple(1 + zlib.crc32(g.encode("utf-8")) % (buckets - 1) for g in grams[:MAX_NGRAMS])
