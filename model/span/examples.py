"""From text to reader inputs: one request -> one input per passage window; one training question -> the
window that holds its answer, with the answer's first and last word."""

from __future__ import annotations

from .features import ReaderInput, build_input, windows
from .network import ReaderConfig
from .text import Words, split_words, token_span
from .vocab import Vocab


def question_words(question: str, config: ReaderConfig) -> Words:
    words = split_words(question)
    return words.window(0, config.max_question_words)


def request_inputs(
    question: str,
    passage: str,
    vocab: Vocab,
    config: ReaderConfig,
) -> list[tuple[int, ReaderInput]]:
    """(first word of the window, input) for each window of the passage; whole passages when they fit."""
    q_words = question_words(question, config)
    p_words = split_words(passage)
    return [
        (
            start,
            build_input(
                q_words,
                p_words.window(start, end),
                vocab,
                char_buckets=config.char_buckets,
                bigram_match=config.bigram_match,
            ),
        )
        for start, end in windows(len(p_words), config.max_passage_words, config.window_stride)
    ]


def training_input(
    question: str, passage: str, answer_start: int, answer: str, vocab: Vocab, config: ReaderConfig
) -> ReaderInput | str:
    """The input for one answered question, or the reason it cannot train (answer not in the passage)."""
    if answer_start < 0 or not answer.strip():
        return "the answer is not in the passage"
    p_words = split_words(passage)
    span = token_span(p_words.spans, answer_start, answer_start + len(answer))
    if span is None:
        return "the answer covers no word"
    first, last = span
    q_words = question_words(question, config)
    if not q_words.words:
        return "the question has no words"
    holding = [
        (start, end)
        for start, end in windows(len(p_words), config.max_passage_words, config.window_stride)
        if start <= first and last < end
    ]
    if not holding:
        return "the answer is longer than a window"
    start, end = min(holding, key=lambda window: abs(first + last - window[0] - window[1]))  # most central
    return build_input(
        q_words,
        p_words.window(start, end),
        vocab,
        char_buckets=config.char_buckets,
        bigram_match=config.bigram_match,
        start=first - start,
        end=last - start,
    )
