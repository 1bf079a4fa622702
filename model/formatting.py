"""Input formatting, in one place for training and inference.

Reading comprehension: <rc> question <sep> passage-window. When the passage does not fit the source budget,
the window of the passage that shares most words and word pairs with the question is kept, the same way at
training and at inference time. Chat: <chat> then the last turns, oldest first, each after a speaker mark
(<usr> for the person being answered, <bot> for the replier), cut from the oldest end to fit the budget.
Every source token carries a feature id: 1 when its word also occurs on the other side (question <->
passage), else 0 (the exact-match feature of Chen et al. 2017, DrQA).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .language import detect_language
from .tokenizer import PASSAGE_SEP, SPEAKER_BOT, SPEAKER_USER, TASK_CHAT, TASK_RC, Encoding, Tokenizer

MAX_QUESTION_TOKENS = 64
MAX_TURN_TOKENS = 80
_STOPWORDS = frozenset(
    "a an the of to in on at by for with from and or is are was were be been what which who whom whose when "
    "where why how did do does that this these those it its as into than then there their they he she his her "
    "的 了 是 在 和 与 及 有 为 什 么 哪 个 些 吗 呢 吧 啊 一 中 之 这 那 谁 几 多 少 年 月 日 于 由 被 把".split()
)


@dataclass(frozen=True)
class Source:
    """A formatted source sequence: ids, feature ids, and where each token came from."""

    ids: list[int]
    features: list[int]
    pieces: list[str]
    passage_mask: list[bool]  # True at passage tokens (where an extractive answer may come from)
    spans: list[tuple[int, int] | None]  # character span in the passage, None outside it
    word_start: list[bool] | None = None  # passage tokens an extractive answer may start with
    word_end: list[bool] | None = None  # passage tokens an extractive answer may end with

    def __len__(self) -> int:
        return len(self.ids)


def _key(piece: str) -> str:
    """The word a piece stands for, for overlap counting: lower-case, no word-start mark, no punctuation."""
    text = piece.replace("\u2581", "").lower()
    if not text or all(unicodedata.category(ch).startswith(("P", "S")) for ch in text):
        return ""
    return text


def select_window(passage_keys: list[str], question_keys: list[str], budget: int) -> tuple[int, int]:
    """[start, end) of the passage window (at most `budget` tokens) sharing most words/word pairs with the question."""
    if len(passage_keys) <= budget:
        return 0, len(passage_keys)
    unigrams = {k for k in question_keys if k and k not in _STOPWORDS}
    bigrams = {(a, b) for a, b in zip(question_keys, question_keys[1:]) if a and b}
    stride = max(1, budget // 4)
    starts = list(range(0, len(passage_keys) - budget + 1, stride))
    if starts[-1] != len(passage_keys) - budget:
        starts.append(len(passage_keys) - budget)
    best_start, best_score = 0, -1.0
    for start in starts:
        window = passage_keys[start : start + budget]
        score = len(unigrams.intersection(window)) + 2 * len(bigrams.intersection(zip(window, window[1:])))
        if score > best_score:
            best_start, best_score = start, score
    return best_start, best_start + budget


def format_rc(
    tokenizer: Tokenizer,
    question: str,
    passage: str,
    *,
    max_source_len: int,
    passage_encoding: Encoding | None = None,
) -> Source:
    """<rc> question <sep> passage-window, with exact-match features and passage character spans."""
    q = tokenizer.encode(question)
    p = passage_encoding if passage_encoding is not None else tokenizer.encode(passage)
    q_ids, q_pieces = q.ids[:MAX_QUESTION_TOKENS], q.pieces[:MAX_QUESTION_TOKENS]
    q_keys = [_key(piece) for piece in q_pieces]
    p_keys = [_key(piece) for piece in p.pieces]
    budget = max(1, max_source_len - len(q_ids) - 2)
    start, end = select_window(p_keys, q_keys, budget)
    q_set, p_set = set(q_keys) - {""}, set(p_keys[start:end]) - {""}
    rc, sep = tokenizer.control_ids[TASK_RC], tokenizer.control_ids[PASSAGE_SEP]
    ids = [rc, *q_ids, sep, *p.ids[start:end]]
    pieces = [TASK_RC, *q_pieces, PASSAGE_SEP, *p.pieces[start:end]]
    features = [0, *(int(k in p_set) for k in q_keys), 0, *(int(k in q_set) for k in p_keys[start:end])]
    prefix = len(q_ids) + 2
    passage_mask = [False] * prefix + [True] * (end - start)
    spans: list[tuple[int, int] | None] = [None] * prefix + list(p.spans[start:end])
    starts, ends = word_boundaries(passage, p.spans[start:end])
    return Source(
        ids=ids,
        features=features,
        pieces=pieces,
        passage_mask=passage_mask,
        spans=spans,
        word_start=[False] * prefix + starts,
        word_end=[False] * prefix + ends,
    )


def _inside_word(left: str, right: str) -> bool:
    """True between two ASCII letters/digits: a boundary there would cut a word ("Architectural|ly")."""
    return left.isascii() and left.isalnum() and right.isascii() and right.isalnum()


def word_boundaries(passage: str, spans: list[tuple[int, int]]) -> tuple[list[bool], list[bool]]:
    """Per passage token: may an answer start here, may it end here? Not inside an English word or a number,
    not on a bare word mark, not on the second byte piece of one character. Chinese characters are words."""
    starts, ends = [], []
    for index, (begin, finish) in enumerate(spans):
        visible = finish > begin
        new_char = index == 0 or spans[index - 1] != (
            begin,
            finish,
        )  # byte pieces of one character share a span
        last_piece = index == len(spans) - 1 or spans[index + 1] != (begin, finish)
        starts.append(
            visible and new_char and not (begin > 0 and _inside_word(passage[begin - 1], passage[begin]))
        )
        ends.append(
            visible
            and last_piece
            and not (finish < len(passage) and _inside_word(passage[finish - 1], passage[finish]))
        )
    return starts, ends


def format_chat(tokenizer: Tokenizer, history: list[str], *, max_source_len: int, max_turns: int) -> Source:
    """<chat> then the last `max_turns` turns, oldest first; the last turn is the one being answered.

    Turns before a change of language are left out (a user who switches from English to Chinese gets a
    Chinese reply: the model answers in the language of what it reads)."""
    turns = same_language_suffix(history[-max_turns:])
    blocks: list[tuple[list[int], list[str]]] = []
    for back, text in enumerate(reversed(turns)):
        mark = SPEAKER_USER if back % 2 == 0 else SPEAKER_BOT
        enc = tokenizer.encode(text)
        blocks.append(
            ([tokenizer.control_ids[mark], *enc.ids[:MAX_TURN_TOKENS]], [mark, *enc.pieces[:MAX_TURN_TOKENS]])
        )
    ids: list[int] = []
    pieces: list[str] = []
    budget = max_source_len - 1
    for block_ids, block_pieces in blocks:  # newest first; stop when the next older turn does not fit
        if ids and len(ids) + len(block_ids) > budget:
            break
        ids = block_ids + ids
        pieces = block_pieces + pieces
    ids, pieces = ids[:budget], pieces[:budget]
    ids = [tokenizer.control_ids[TASK_CHAT], *ids]
    pieces = [TASK_CHAT, *pieces]
    return Source(
        ids=ids,
        features=[0] * len(ids),
        pieces=pieces,
        passage_mask=[False] * len(ids),
        spans=[None] * len(ids),
    )


def same_language_suffix(turns: list[str]) -> list[str]:
    """The last turns that are in the language of the last one (all of them for a one-language dialog)."""
    if not turns:
        return turns
    language = detect_language(turns[-1])
    start = len(turns) - 1
    while start > 0 and detect_language(turns[start - 1]) == language:
        start -= 1
    return turns[start:]


def rc_target(source: Source, answer_start: int, answer_end: int) -> list[int] | None:
    """The passage tokens that cover characters [answer_start, answer_end), or None when the window misses them."""
    positions = [
        i
        for i, span in enumerate(source.spans)
        if span is not None and span[1] > answer_start and span[0] < answer_end and span[1] > span[0]
    ]
    if not positions:
        return None
    first, last = positions[0], positions[-1]
    if source.spans[first][0] > answer_start or source.spans[last][1] < answer_end:  # type: ignore[index]
        return None  # the answer runs past the window
    return source.ids[first : last + 1]


def chat_target(tokenizer: Tokenizer, reply: str, *, max_len: int) -> list[int]:
    return tokenizer.encode_ids(reply)[:max_len]
