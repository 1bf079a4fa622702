"""Batch QA input files -> items and per-line errors. Pure: bytes in, plain values out, no I/O.

Formats: JSONL (one {"id", "question", "passage"} per line), CSV with `id,question,passage` columns (more
columns are ignored), and SQuAD-format JSON ({"data": [{"paragraphs": [{"context", "qas": [{"id",
"question"}]}]}]}). The id is optional: a record without one is named by its line number (for SQuAD: the
question's ordinal), so training-style JSONL ({"question", "passage", "answer"}) runs as it is. A bad record is
reported with its line number (for SQuAD: the question's ordinal in the file) and the reason, and the rest of
the file still runs; its texts are checked by storage.limits.check_text, the check storage repeats when it
stores the job, so a line storage would refuse is a bad line here, not a failed job. A file that is empty, too large, not UTF-8, in no
known format, or with more items than allowed raises BatchFileError with a message for the user.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from storage.errors import EmptyInput, InputTooLong, UnstorableText
from storage.limits import check_text
from storage.models import ITEM_KEY_MAX_CHARS

FORMATS = ("jsonl", "csv", "squad")
FIELDS = ("id", "question", "passage")
REQUIRED_FIELDS = ("question", "passage")  # a record without an id gets its line number


class BatchFileError(ValueError):
    """The file as a whole cannot be used; the message says why."""


@dataclass(frozen=True)
class BatchLimits:
    max_items: int
    max_bytes: int
    max_question_chars: int
    max_passage_chars: int

    @classmethod
    def from_settings(cls, settings: Any) -> BatchLimits:
        """The bounds the deployment configured (S2S_MAX_BATCH_ITEMS, S2S_MAX_UPLOAD_BYTES, ...)."""
        return cls(
            max_items=settings.max_batch_items,
            max_bytes=settings.max_upload_bytes,
            max_question_chars=settings.max_question_chars,
            max_passage_chars=settings.max_passage_chars,
        )


@dataclass
class ParsedBatch:
    format: str
    items: list[dict[str, str]] = field(default_factory=list)  # {"item_key", "question", "passage"}
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"line", "reason"}


def detect_format(filename: str, text: str) -> str:
    lowered = filename.lower()
    if lowered.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv")):
        return "csv"
    stripped = text.lstrip()
    if lowered.endswith(".json") or stripped.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            if _first_line_is_an_object(stripped):
                return "jsonl"  # several objects, one per line
            # One document that does not parse (a SQuAD file cut short, say): not a file of bad lines.
            raise BatchFileError(
                f"{filename or 'the file'} is not valid JSON: {error.msg} at line {error.lineno}, "
                f"column {error.colno} (is it cut short?)"
            ) from error
        return "squad" if isinstance(document, dict) and "data" in document else "jsonl"
    first_line = stripped.splitlines()[0] if stripped else ""
    if all(name in first_line for name in REQUIRED_FIELDS) and "," in first_line:
        return "csv"
    raise BatchFileError(f"{filename or 'the file'}: unknown format; use .jsonl, .csv or SQuAD .json")


def _first_line_is_an_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text.splitlines()[0]), dict)
    except (json.JSONDecodeError, IndexError):
        return False


# Byte-order marks of the UTF-16 and UTF-32 text some editors and spreadsheets save ("Unicode text"); with one
# the encoding is certain. UTF-32 first: its little-endian mark starts with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_upload(data: bytes) -> str:
    """The text of an uploaded file: UTF-8 (with or without a byte-order mark), or UTF-16/UTF-32 with one.
    BatchFileError, saying where and what to do, for anything else (Latin-1, UTF-16 without a mark)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as error:
                raise BatchFileError(
                    f"the file is not UTF-8 text: it starts with a {encoding.upper()} byte-order mark "
                    f"but does not decode ({error.reason}); save it as UTF-8"
                ) from error
    head = data[:4096]
    if head.count(0) > len(head) // 4:  # mostly-ASCII text as UTF-16 without a mark: every other byte is NUL
        raise BatchFileError(
            "the file is not UTF-8 text: it is mostly NUL bytes (UTF-16 text without a "
            "byte-order mark?); save it as UTF-8"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise BatchFileError(
            f"the file is not UTF-8 text: byte 0x{data[error.start]:02X} on line {line} (Latin-1 "
            f"or Windows-1252?); save it as UTF-8"
        ) from error


def parse_batch_file(data: bytes, filename: str, *, limits: BatchLimits) -> ParsedBatch:
    """Parse an uploaded file; raise BatchFileError if it cannot be used at all."""
    if len(data) > limits.max_bytes:
        raise BatchFileError(f"the file is too large: {len(data)} bytes > limit {limits.max_bytes}")
    text = decode_upload(data)
    if not text.strip():
        raise BatchFileError("the file is empty")
    kind = detect_format(filename, text)
    parsed = ParsedBatch(format=kind)
    records = {"jsonl": _jsonl_records, "csv": _csv_records, "squad": _squad_records}[kind](text)
    seen: set[str] = set()
    for line, record in records:
        if (
            len(parsed.errors) > limits.max_items
        ):  # the bad lines are stored with the job, for the user to read
            raise BatchFileError(f"too many bad lines: more than {limits.max_items}; is it the right file?")
        if isinstance(record, str):
            parsed.errors.append({"line": line, "reason": record})
            continue
        if record.get("id") is None or record["id"] == "":
            record["id"] = str(line)
        reason = _check(record, seen, limits)
        if reason is not None:
            parsed.errors.append({"line": line, "reason": reason})
            continue
        seen.add(record["id"])
        parsed.items.append(
            {"item_key": record["id"], "question": record["question"], "passage": record["passage"]}
        )
        if len(parsed.items) > limits.max_items:
            raise BatchFileError(f"too many items: more than the limit of {limits.max_items}")
    if not parsed.items and not parsed.errors:
        raise BatchFileError("the file holds no records")
    return parsed


def _check(record: dict[str, Any], seen: set[str], limits: BatchLimits) -> str | None:
    """Why the record cannot be an item, or None. The texts are checked by storage.limits.check_text, the one
    check storage runs again when the job is stored, so a bad line is reported here instead of failing the job."""
    bounds = {
        "id": ITEM_KEY_MAX_CHARS,
        "question": limits.max_question_chars,
        "passage": limits.max_passage_chars,
    }
    for name in FIELDS:  # in this order, so a record lacking several fields is told about the first
        value = record.get(name)
        if value is None:
            return f"missing or empty {name!r}"
        allowed = (str, int) if name == "id" else str  # an id may be a JSON number; a text may not
        if not isinstance(value, allowed) or isinstance(value, bool):
            return f"{name!r} must be a string"
        record[name] = str(value)
        try:
            check_text(record[name], limit=bounds[name], field=name)
        except EmptyInput:
            return f"missing or empty {name!r}"
        except InputTooLong as error:
            return f"{name} too long: {error.length} > {error.limit} characters"
        except UnstorableText as error:
            return f"{name} contains {error.reason}, which cannot be stored"
    if record["id"] in seen:
        return f"duplicate id {record['id']!r}"
    return None


Record = tuple[int, "dict[str, Any] | str"]  # (line, record or the reason it is unreadable)


def _jsonl_records(text: str) -> Iterator[Record]:
    """One record per non-blank line, read as the caller asks for them (so a file over the item limit is
    refused at the first item past it, not after every line is parsed)."""
    for number, line in enumerate(io.StringIO(text), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, f"invalid JSON: {error.msg}"
            continue
        yield number, value if isinstance(value, dict) else "not a JSON object"


def _csv_records(text: str) -> Iterator[Record]:
    dialect = "excel-tab" if "\t" in text.splitlines()[0] and "," not in text.splitlines()[0] else "excel"
    # strict: a quote opened and never closed, or text after a closing quote, is an error, not a field that
    # swallows the rest of the file
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect, strict=True)
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_FIELDS if name not in header]
    if missing:
        raise BatchFileError(f"the CSV header lacks {', '.join(missing)} (it has: {', '.join(header)})")
    reader.fieldnames = header
    start = 2
    try:
        for row in reader:
            if None in row:
                yield start, "more fields than the header"
            elif any(row.get(name) is None for name in REQUIRED_FIELDS if name in header):
                yield start, "fewer fields than the header"
            else:
                yield start, {name: row.get(name) for name in FIELDS}
            start = reader.line_num + 1
    except csv.Error as error:  # the reader cannot go on: say so, and that the rest was not read
        lines = len(text.splitlines())
        rest = f"; lines {start}-{lines} were not read" if lines > start else ""
        yield start, f"unreadable CSV from this line on: {error} (a quote opened and not closed?){rest}"


def _squad_records(text: str) -> list[Record]:
    document = json.loads(text)
    data = document.get("data")
    if not isinstance(data, list):
        raise BatchFileError('a SQuAD file needs a "data" list')
    records: list[Record] = []
    ordinal = 0
    for article in data:
        for paragraph in (article or {}).get("paragraphs", []) if isinstance(article, dict) else []:
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            for qa in paragraph.get("qas", []) if isinstance(paragraph, dict) else []:
                ordinal += 1
                if not isinstance(qa, dict):
                    records.append((ordinal, "a question entry is not an object"))
                    continue
                records.append(
                    (ordinal, {"id": qa.get("id"), "question": qa.get("question"), "passage": context})
                )
    return records
