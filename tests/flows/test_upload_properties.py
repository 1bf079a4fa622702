"""Property-based tests (hypothesis) of batch-file parsing: any items written as JSONL or as CSV (by the json
and csv writers, as a user's tools would) parse back to the same items, in order, whatever their text holds:
quotes, commas, newlines, carriage returns, line and paragraph separators, any script; and any bytes at all
either parse or raise BatchFileError, never anything else."""

from __future__ import annotations

import csv
import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.uploads import BatchFileError, BatchLimits, parse_batch_file

LIMITS = BatchLimits(max_items=100, max_bytes=1_000_000, max_question_chars=500, max_passage_chars=2000)
AWKWARD = [
    ",",
    '"',
    "\n",
    "\r",
    "\u2028",
    "\u2029",
    "\x85",
    "\x0b",
    "\x0c",
    "\x1c",
    "\t",
    "'",
    "\\",
    "{",
    "}",
    "\ufeff",
    "中",
    "🙂",
    "\u202e",
    "é",
]
FIELD = st.text(
    st.one_of(st.characters(codec="utf-8", exclude_characters="\x00"), st.sampled_from(AWKWARD)),
    min_size=1,
    max_size=30,
).filter(lambda text: not text.isspace())
ITEMS = st.lists(st.tuples(FIELD, FIELD, FIELD), min_size=1, max_size=8, unique_by=lambda item: item[0])
PROPERTIES = settings(max_examples=200, deadline=None)


def _as_parsed(items: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    return [{"item_key": key, "question": question, "passage": passage} for key, question, passage in items]


@PROPERTIES
@given(ITEMS, st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_jsonl_written_by_json_dumps_parses_back_to_the_same_items(
    items: list[tuple[str, str, str]], newline: str, ascii_only: bool
) -> None:
    text = (
        newline.join(
            json.dumps({"id": key, "question": question, "passage": passage}, ensure_ascii=ascii_only)
            for key, question, passage in items
        )
        + newline
    )
    parsed = parse_batch_file(text.encode("utf-8"), "items.jsonl", limits=LIMITS)
    assert (parsed.items, parsed.errors) == (_as_parsed(items), [])


@PROPERTIES
@given(ITEMS)
def test_csv_written_by_csv_writer_parses_back_to_the_same_items(items: list[tuple[str, str, str]]) -> None:
    # The writer's default (Excel's) line ending: with "\n" alone it leaves a field's "\r" unquoted, which no
    # reader can tell from a line ending.
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["id", "question", "passage"])
    writer.writerows(items)
    parsed = parse_batch_file(out.getvalue().encode("utf-8"), "items.csv", limits=LIMITS)
    assert (parsed.items, parsed.errors) == (_as_parsed(items), [])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["x.jsonl", "x.csv", "x.json", "x.txt", ""]))
def test_any_bytes_parse_or_are_refused_with_a_batch_file_error(data: bytes, filename: str) -> None:
    try:
        parsed = parse_batch_file(data, filename, limits=LIMITS)
    except BatchFileError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert parsed.items or parsed.errors
    assert all(isinstance(error["line"], int) and error["reason"] for error in parsed.errors)
