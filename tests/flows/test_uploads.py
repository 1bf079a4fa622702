"""Batch file parsing on good and broken input: per-line errors, whole-file errors, the three formats."""

from __future__ import annotations

import json

import pytest

from flows.uploads import BatchFileError, BatchLimits, parse_batch_file

LIMITS = BatchLimits(max_items=5, max_bytes=10_000, max_question_chars=40, max_passage_chars=100)


def _line(item_id: object, question: str = "Who?", passage: str = "Bob.") -> str:
    return json.dumps({"id": item_id, "question": question, "passage": passage})


def test_jsonl_bad_lines_are_reported_with_their_numbers_and_the_rest_kept() -> None:
    text = "\n".join([_line("a"), "{oops", "[1, 2]", _line("b", question=""), _line("a"), _line(7)])
    parsed = parse_batch_file(text.encode(), "x.jsonl", limits=LIMITS)
    assert [item["item_key"] for item in parsed.items] == ["a", "7"]
    assert [error["line"] for error in parsed.errors] == [2, 3, 4, 5]
    assert "duplicate id" in parsed.errors[3]["reason"]


def test_records_without_an_id_are_named_by_their_line_number_in_every_format() -> None:
    training_style = [
        json.dumps({"question": "Who?", "passage": "Bob.", "answer": "Bob"}),
        _line("a"),
        json.dumps({"id": "", "question": "Why?", "passage": "Bob."}),
        _line("3"),
    ]
    parsed = parse_batch_file("\n".join(training_style).encode(), "x.jsonl", limits=LIMITS)
    assert [item["item_key"] for item in parsed.items] == ["1", "a", "3"]
    assert parsed.errors == [
        {"line": 4, "reason": "duplicate id '3'"}
    ]  # an id given is kept, and still unique
    csv_file = parse_batch_file(b"question,passage\nWho?,Bob.\nWhy?,Bob.\n", "x.csv", limits=LIMITS)
    assert [item["item_key"] for item in csv_file.items] == ["2", "3"] and not csv_file.errors
    document = {"data": [{"paragraphs": [{"context": "Bob.", "qas": [{"question": "Who?"}]}]}]}
    squad = parse_batch_file(json.dumps(document).encode(), "dev.json", limits=LIMITS)
    assert [item["item_key"] for item in squad.items] == ["1"]


def test_too_long_fields_are_rejected_per_line() -> None:
    text = "\n".join([_line("a", question="q" * 41), _line("b", passage="p" * 101), _line("c")])
    parsed = parse_batch_file(text.encode(), "x.jsonl", limits=LIMITS)
    assert [item["item_key"] for item in parsed.items] == ["c"]
    assert "question too long" in parsed.errors[0]["reason"]
    assert "passage too long" in parsed.errors[1]["reason"]


def test_the_bounds_are_storage_s_own_check() -> None:
    """The parser checks each text with storage.limits.check_text, the check create_job runs again: an id over
    storage's ITEM_KEY_MAX_CHARS is a bad line (it failed the whole job when stored), a question or passage that
    is not a string is a bad line (a JSON number there raised TypeError), and a blank text is empty."""
    from storage.models import ITEM_KEY_MAX_CHARS

    text = "\n".join(
        [
            _line("k" * (ITEM_KEY_MAX_CHARS + 1)),
            _line("k" * ITEM_KEY_MAX_CHARS),
            json.dumps({"id": "n", "question": 5, "passage": "Bob."}),
            json.dumps({"id": "t", "question": "Who?", "passage": True}),
            _line("b", question=" \t "),
        ]
    )
    parsed = parse_batch_file(text.encode(), "x.jsonl", limits=LIMITS)
    assert [item["item_key"] for item in parsed.items] == ["k" * ITEM_KEY_MAX_CHARS]
    assert parsed.errors == [
        {"line": 1, "reason": f"id too long: {ITEM_KEY_MAX_CHARS + 1} > {ITEM_KEY_MAX_CHARS} characters"},
        {"line": 3, "reason": "'question' must be a string"},
        {"line": 4, "reason": "'passage' must be a string"},
        {"line": 5, "reason": "missing or empty 'question'"},
    ]


def test_csv_with_quoted_newlines_keeps_line_numbers() -> None:
    text = 'id,question,passage,extra\na,Who?,"Bob\nlives",x\nb,,Bob.,y\nc,Who?,Bob.,z\n'
    parsed = parse_batch_file(text.encode(), "x.csv", limits=LIMITS)
    assert [item["item_key"] for item in parsed.items] == ["a", "c"]
    assert parsed.items[0]["passage"] == "Bob\nlives"
    assert parsed.errors == [{"line": 4, "reason": "missing or empty 'question'"}]


def test_csv_without_the_needed_columns_is_refused() -> None:
    with pytest.raises(BatchFileError, match="lacks passage"):
        parse_batch_file(b"id,question\n1,Who?\n", "x.csv", limits=LIMITS)


def test_squad_json_gives_one_item_per_question() -> None:
    document = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "Bob was born in Oslo.",
                        "qas": [{"id": "q1", "question": "Where?"}, {"id": "q2"}],
                    }
                ]
            }
        ]
    }
    parsed = parse_batch_file(json.dumps(document).encode(), "dev.json", limits=LIMITS)
    assert parsed.format == "squad"
    assert parsed.items == [{"item_key": "q1", "question": "Where?", "passage": "Bob was born in Oslo."}]
    assert parsed.errors == [{"line": 2, "reason": "missing or empty 'question'"}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"\xff\xfd\x00bad", "not UTF-8"),  # no byte-order mark (FF FE would be UTF-16)
        (b"x" * 10_001, "too large"),
        (b"just some words", "unknown format"),
    ],
)
def test_unusable_files_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(BatchFileError, match=message):
        parse_batch_file(data, "upload", limits=LIMITS)


def test_more_items_than_the_limit_is_refused() -> None:
    text = "\n".join(_line(i) for i in range(6))
    with pytest.raises(BatchFileError, match="too many items"):
        parse_batch_file(text.encode(), "x.jsonl", limits=LIMITS)


def test_a_line_with_a_nul_or_a_lone_surrogate_is_reported_and_the_rest_kept() -> None:
    text = "\n".join(
        [
            _line("a", question="Who\u0000?"),
            '{"id": "b", "question": "Who?", "passage": "Bo\\ud800b."}',
            _line("d"),
        ]
    )
    parsed = parse_batch_file(text.encode(), "x.jsonl", limits=LIMITS)
    assert [item["item_key"] for item in parsed.items] == ["d"]
    assert "question contains a NUL character" in parsed.errors[0]["reason"]
    assert parsed.errors[0]["line"] == 1
    assert "passage contains a lone surrogate" in parsed.errors[1]["reason"]


def test_a_nul_in_a_csv_field_is_reported_for_its_line() -> None:
    text = "id,question,passage\na,Who?,Bob.\nb,Wh\x00o?,Bob.\n"
    parsed = parse_batch_file(text.encode(), "x.csv", limits=LIMITS)
    assert [item["item_key"] for item in parsed.items] == ["a"]
    assert parsed.errors[0]["line"] == 3 and "NUL" in parsed.errors[0]["reason"]
