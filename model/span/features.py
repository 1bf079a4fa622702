"""Reader inputs: word ids, question-match features and character n-grams, padded into batches.

Per passage word (DrQA, Chen et al. 2017): exact match with a question word on the raw, the lower-cased and
the stemmed form, and the word's normalised term frequency in the passage window. The aligned question
embedding, the fourth DrQA feature, is computed inside the network (it is learned).

Chinese is read character by character, where the lower-cased and stemmed forms are the raw one. With
`bigram_match` those two slots say instead whether the character's bigram with the previous, and with the
next, character also occurs in the question: a character of a matching two-character word is then told from
one that merely recurs (CMRC's 的, 是, 年), with no word segmenter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .text import Words, lower, stem
from .vocab import MAX_NGRAMS, Vocab, char_ngrams

MATCH_FEATURES = 4  # exact raw, exact lower, exact stem, term frequency


@dataclass(frozen=True)
class ReaderInput:
    """One question over one passage window. `start`/`end` are gold word indices in the window (-1: none)."""

    question: Words
    passage: Words
    question_ids: list[int]
    passage_ids: list[int]
    match: list[tuple[float, float, float, float]]
    question_chars: list[tuple[int, ...]] | None
    passage_chars: list[tuple[int, ...]] | None
    start: int = -1
    end: int = -1


@dataclass
class ReaderBatch:
    question_ids: torch.Tensor  # (batch, q_len) long, 0 = padding
    question_mask: torch.Tensor  # (batch, q_len) bool, True on words
    passage_ids: torch.Tensor  # (batch, p_len)
    passage_mask: torch.Tensor  # (batch, p_len)
    match: torch.Tensor  # (batch, p_len, MATCH_FEATURES) float
    question_chars: torch.Tensor | None  # (batch, q_len, MAX_NGRAMS) long, 0 = padding
    passage_chars: torch.Tensor | None
    starts: torch.Tensor  # (batch,) long, -1 = unknown
    ends: torch.Tensor

    def to(self, device: torch.device | str) -> ReaderBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return ReaderBatch(**moved)


def match_features(
    question: Words, passage: Words, *, bigram_match: bool = False
) -> list[tuple[float, float, float, float]]:
    """(raw match, lower-case match, stem match, term frequency) per passage word; with `bigram_match` the
    middle two are bigram matches (`bigram_slots`)."""
    raw = set(question.words)
    passage_lower = [lower(w) for w in passage.words]
    counts = Counter(passage_lower)
    size = max(1, len(passage))
    middle = (bigram_slots if bigram_match else form_slots)(question, passage.words, passage_lower)
    return [
        (float(w in raw), *slots, counts[lw] / size)
        for w, lw, slots in zip(passage.words, passage_lower, middle)
    ]


def form_slots(question: Words, words: Sequence[str], lowered: Sequence[str]) -> list[tuple[float, float]]:
    """(lower-case match, stem match) with a question word."""
    question_lower = {lower(w) for w in question.words}
    question_stems = {stem(w) for w in question.words}
    return [(float(lw in question_lower), float(stem(w) in question_stems)) for w, lw in zip(words, lowered)]


def bigram_slots(question: Words, words: Sequence[str], lowered: Sequence[str]) -> list[tuple[float, float]]:
    """(the bigram with the previous word occurs in the question, the bigram with the next one does)."""
    q = [lower(w) for w in question.words]
    bigrams = set(zip(q, q[1:]))
    p = lowered
    return [
        (float(i > 0 and (p[i - 1], lw) in bigrams), float(i + 1 < len(p) and (lw, p[i + 1]) in bigrams))
        for i, lw in enumerate(p)
    ]


def build_input(
    question: Words,
    passage: Words,
    vocab: Vocab,
    *,
    char_buckets: int,
    bigram_match: bool = False,
    start: int = -1,
    end: int = -1,
) -> ReaderInput:
    def chars(words: Words) -> list[tuple[int, ...]] | None:
        return [char_ngrams(w, char_buckets) for w in words.words] if char_buckets else None

    return ReaderInput(
        question=question,
        passage=passage,
        question_ids=vocab.ids(question.words),
        passage_ids=vocab.ids(passage.words),
        match=match_features(question, passage, bigram_match=bigram_match),
        question_chars=chars(question),
        passage_chars=chars(passage),
        start=start,
        end=end,
    )


def windows(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) word windows of at most `size` covering `length` words, `stride` apart; the last one ends
    at `length`. One window when the passage fits."""
    if length <= size:
        return [(0, length)]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return [(s, s + size) for s in starts]


def _pad_chars(rows: Sequence[Sequence[tuple[int, ...]]], width: int) -> torch.Tensor:
    padding = (0,) * MAX_NGRAMS
    flat = [
        (grams + padding)[:MAX_NGRAMS] for words in rows for grams in (*words, *[()] * (width - len(words)))
    ]
    return torch.tensor(flat, dtype=torch.long).view(len(rows), width, MAX_NGRAMS)


def collate(inputs: Sequence[ReaderInput]) -> ReaderBatch:
    q_len = max(1, max(len(x.question_ids) for x in inputs))
    p_len = max(1, max(len(x.passage_ids) for x in inputs))
    batch = len(inputs)
    question_ids = torch.zeros((batch, q_len), dtype=torch.long)
    passage_ids = torch.zeros((batch, p_len), dtype=torch.long)
    match = torch.zeros((batch, p_len, MATCH_FEATURES))
    for b, x in enumerate(inputs):
        question_ids[b, : len(x.question_ids)] = torch.tensor(x.question_ids, dtype=torch.long)
        passage_ids[b, : len(x.passage_ids)] = torch.tensor(x.passage_ids, dtype=torch.long)
        if x.match:
            match[b, : len(x.match)] = torch.tensor(x.match)
    question_mask = torch.arange(q_len).unsqueeze(0) < torch.tensor(
        [len(x.question_ids) for x in inputs]
    ).unsqueeze(1)
    passage_mask = torch.arange(p_len).unsqueeze(0) < torch.tensor(
        [len(x.passage_ids) for x in inputs]
    ).unsqueeze(1)
    has_chars = inputs[0].passage_chars is not None
    return ReaderBatch(
        question_ids=question_ids,
        question_mask=question_mask,
        passage_ids=passage_ids,
        passage_mask=passage_mask,
        match=match,
        question_chars=_pad_chars([x.question_chars or [] for x in inputs], q_len) if has_chars else None,
        passage_chars=_pad_chars([x.passage_chars or [] for x in inputs], p_len) if has_chars else None,
        starts=torch.tensor([x.start for x in inputs], dtype=torch.long),
        ends=torch.tensor([x.end for x in inputs], dtype=torch.long),
    )
