"""Batch files a user might really send, or an attacker might: other encodings, files cut short, broken CSV
quotes, duplicate ids, and a million lines. Each is either parsed into items and per-line reasons, or refused
as a whole with one line saying why and what to do; never a traceback, never lines silently dropped."""

from __future__ import annotations

import json
import time

import pytest

from flows.uploads import BatchFileError, BatchLimits, parse_batch_file

LIMITS = BatchLimits(max_items=20_000, max_bytes=50_000_000, max_question_chars=500, max_passage_chars=20_000)
RECORD = {"id": "a", "question": "Où est né Bob ?", "passage": "Bob est né à Montréal, près du fleuve."}
LINE = json.dumps(RECORD, ensure_ascii=False)


def parse(data: bytes, filename: str = "batch.jsonl") -> tuple[list[str], list[tuple[int, str]]]:
    parsed = parse_batch_file(data, filename, limits=LIMITS)
    return [item["item_key"] for item in parsed.items], [(e["line"], e["reason"]) for e in parsed.errors]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_text_with_a_byte_order_mark_is_read_in_its_encoding(encoding: str) -> None:
    data = (LINE + "\r\n" + LINE.replace('"a"', '"b"') + "\r\n").encode(encoding)
    parsed = parse_batch_file(data, "windows.jsonl", limits=LIMITS)
    assert [item["question"] for item in parsed.items] == [RECORD["question"]] * 2 and not parsed.errors


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (LINE.encode("utf-16-le"), "UTF-16 text without a byte-order mark"),
        (LINE.encode("utf-16-be"), "mostly NUL bytes"),
        (LINE.encode("latin-1"), "not UTF-8 text: byte 0xF9 on line 1"),
        (("ok line\n" + LINE).encode("cp1252"), "on line 2"),
        (b"\xff\xfe" + b"\x00\xd8", "does not decode"),  # a UTF-16 mark, then a lone surrogate
    ],
)
def test_text_in_another_encoding_is_refused_saying_where_and_what_to_do(data: bytes, said: str) -> None:
    with pytest.raises(BatchFileError, match="save it as UTF-8") as caught:
        parse(data)
    assert said in str(caught.value)


def test_a_squad_file_cut_short_is_refused_as_not_json_not_reported_line_by_line() -> None:
    squad = json.dumps(
        {
            "data": [
                {
                    "paragraphs": [
                        {"context": "Bob was born in Oslo.", "qas": [{"id": "q1", "question": "Where?"}]}
                    ]
                }
            ]
        },
        indent=1,
    )
    with pytest.raises(
        BatchFileError, match=r"not valid JSON: .* at line \d+, column \d+ \(is it cut short\?\)"
    ):
        parse(squad[: len(squad) // 2].encode(), "dev.json")


def test_a_jsonl_file_cut_short_keeps_its_whole_lines_and_reports_the_last() -> None:
    data = (LINE + "\n" + LINE[:25]).encode()
    assert parse(data) == (["a"], [(2, "invalid JSON: Unterminated string starting at")])


def test_a_line_separator_inside_a_json_string_does_not_split_the_line() -> None:
    record = {"id": "a", "question": "Where\u2028was he born?", "passage": "Bob\u2029was born in Oslo.\x85"}
    parsed = parse_batch_file(json.dumps(record, ensure_ascii=False).encode(), "x.jsonl", limits=LIMITS)
    assert [(i["question"], i["passage"]) for i in parsed.items] == [(record["question"], record["passage"])]


@pytest.mark.parametrize(
    ("text", "items", "line", "said"),
    [
        # a quote opened and never closed swallowed the rest of the file into one field
        (
            'id,question,passage\na,Where?,Bob was born in Oslo.\nb,Who?,"Bob\nc,When?,1990\n',
            ["a"],
            3,
            "unexpected end of data",
        ),
        # text after a closing quote
        ('id,question,passage\na,"Where" is it,Oslo\nb,Who?,Bob\n', [], 2, "expected after"),
    ],
)
def test_broken_csv_quotes_are_reported_with_the_lines_left_unread(
    text: str, items: list[str], line: int, said: str
) -> None:
    keys, errors = parse(text.encode(), "broken.csv")
    assert keys == items
    assert len(errors) == 1 and errors[0][0] == line and said in errors[0][1], errors
    assert "not closed" in errors[0][1]


def test_text_after_the_broken_quote_is_named_as_not_read() -> None:
    text = 'id,question,passage\na,"Where" is it,Oslo\nb,Who?,Bob\nc,Why?,Because\n'
    _, errors = parse(text.encode(), "broken.csv")
    assert errors[0][1].endswith("lines 2-4 were not read")


def test_duplicate_ids_keep_the_first_and_report_the_others() -> None:
    lines = [json.dumps({**RECORD, "id": key}) for key in ("a", "b", "a", "a")]
    assert parse("\n".join(lines).encode()) == (
        ["a", "b"],
        [(3, "duplicate id 'a'"), (4, "duplicate id 'a'")],
    )


def test_a_million_lines_are_refused_at_the_item_limit_without_reading_them_all() -> None:
    data = b"".join(b'{"id":%d,"question":"q","passage":"p"}\n' % i for i in range(1_000_000))
    assert len(data) < LIMITS.max_bytes  # under the byte limit: the item limit must stop it
    started = time.perf_counter()
    with pytest.raises(BatchFileError, match="too many items: more than the limit of 20000"):
        parse(data)
    assert time.perf_counter() - started < 10  # stops at item 20,001 (was: every line parsed first)


def test_a_million_bad_lines_are_refused_rather_than_stored_as_errors() -> None:
    with pytest.raises(BatchFileError, match="too many bad lines"):
        parse(b"not json\n" * 1_000_000)


def test_a_million_lines_over_the_byte_limit_are_refused_before_parsing() -> None:
    small = BatchLimits(
        max_items=20_000, max_bytes=1_000_000, max_question_chars=500, max_passage_chars=20_000
    )
    with pytest.raises(BatchFileError, match="too large"):
        parse_batch_file(b"x\n" * 1_000_000, "m.jsonl", limits=small)
