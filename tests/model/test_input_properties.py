"""Property-based tests (hypothesis) of the tokenizer round trip and the model's input formatting, on the
tiny checkpoint's real SentencePiece model: any text a user can send, any length budget."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.formatting import MAX_QUESTION_TOKENS, format_chat, format_rc
from model.tokenizer import CONTROL_SYMBOLS, Tokenizer
from tests.model.conftest import TINY_MODEL

TOKENIZER = Tokenizer(TINY_MODEL / "tokenizer.model")
CONTROL_IDS = set(TOKENIZER.control_ids.values())

# Everything a str can hold that a user can send and the storage layer accepts: no NUL, no lone surrogate.
USER_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=200)
WORDY_TEXT = st.lists(
    st.sampled_from(
        [
            "Bob",
            "Oslo",
            "born",
            "where",
            "?",
            ".",
            " ",
            "  ",
            "\n",
            "小明",
            "出生",
            "🙂",
            "<",
            ">",
            *CONTROL_SYMBOLS,
        ]
    ),
    max_size=40,
).map("".join)
TEXT = st.one_of(USER_TEXT, WORDY_TEXT)
PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spaces_normalised(text: str) -> str:
    """What the tokenizer keeps of a text: runs of spaces become one, leading and trailing spaces go; every
    other character (tabs, newlines, control and format characters, any script, emoji) is kept."""
    return re.sub(" {2,}", " ", text).strip(" ")


@PROPERTIES
@given(TEXT)
def test_decoding_what_was_encoded_gives_the_text_back(text: str) -> None:
    assert TOKENIZER.decode(TOKENIZER.encode_ids(text)) == spaces_normalised(text)


def test_decoding_nothing_gives_an_empty_text() -> None:
    # Found by the property above: a reply of no tokens (the model ended at once) raised ValueError.
    assert TOKENIZER.decode([]) == "" and TOKENIZER.decode([TOKENIZER.eos_id]) == ""


@PROPERTIES
@given(TEXT)
def test_typed_text_never_encodes_to_a_control_symbol_and_spans_stay_inside_it(text: str) -> None:
    encoding = TOKENIZER.encode(text)
    assert not CONTROL_IDS & set(encoding.ids)
    assert len(encoding.spans) == len(encoding.ids) == len(encoding.pieces)
    starts = [start for start, _ in encoding.spans]
    assert starts == sorted(starts)
    for piece, (start, end) in zip(encoding.pieces, encoding.spans):
        assert 0 <= start <= end <= len(text)
        surface = piece.replace("\u2581", " ").strip()
        if surface and not piece.startswith("<0x"):
            assert text[start:end] == surface


def _control_count(ids: list[int]) -> int:
    return sum(1 for token in ids if token in CONTROL_IDS)


@PROPERTIES
@given(question=TEXT, passage=TEXT, max_source_len=st.integers(MAX_QUESTION_TOKENS + 3, 400))
def test_a_formatted_question_fits_its_budget_and_marks_the_passage(
    question: str, passage: str, max_source_len: int
) -> None:
    source = format_rc(TOKENIZER, question, passage, max_source_len=max_source_len)
    columns = [
        source.ids,
        source.features,
        source.pieces,
        source.passage_mask,
        source.spans,
        source.word_start,
        source.word_end,
    ]
    assert len({len(column) for column in columns}) == 1  # type: ignore[arg-type]
    assert len(source) <= max_source_len
    assert source.pieces[0] == "<rc>" and source.pieces.count("<sep>") == 1
    assert _control_count(source.ids) == 2  # only the two the formatter put there
    sep = source.pieces.index("<sep>")
    assert source.passage_mask == [False] * (sep + 1) + [True] * (len(source) - sep - 1)
    passage_spans = [span for span, inside in zip(source.spans, source.passage_mask) if inside]
    assert all(span is not None and 0 <= span[0] <= span[1] <= len(passage) for span in passage_spans)
    assert all(
        not (start and not inside) for start, inside in zip(source.word_start or [], source.passage_mask)
    )


@PROPERTIES
@given(
    history=st.lists(TEXT, min_size=1, max_size=8),
    max_source_len=st.integers(8, 300),
    max_turns=st.integers(1, 8),
)
def test_a_formatted_chat_fits_its_budget_and_ends_with_the_last_message(
    history: list[str], max_source_len: int, max_turns: int
) -> None:
    source = format_chat(TOKENIZER, history, max_source_len=max_source_len, max_turns=max_turns)
    assert len(source) <= max_source_len and source.pieces[0] == "<chat>"
    marks = [piece for piece in source.pieces[1:] if piece in CONTROL_SYMBOLS]
    assert _control_count(source.ids) == 1 + len(marks)  # <chat> and one speaker mark per turn, nothing typed
    assert all(mark in {"<usr>", "<bot>"} for mark in marks)
    if len(source) > 1:
        assert source.pieces[1] in {"<usr>", "<bot>"}
        last = TOKENIZER.encode(history[-1]).pieces
        last_mark = max(i for i, piece in enumerate(source.pieces) if piece in {"<usr>", "<bot>"})
        tail = source.pieces[last_mark + 1 :]
        assert (
            marks[-1] == "<usr>" and tail == last[: len(tail)]
        )  # the message being answered, from its start
