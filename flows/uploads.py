"""Batch QA input files -> items and per-line errors. Pure: bytes in, plain values out, no I/O.

Formats: JSONL (one {"id", "question", "passage"} per line), CSV with `id,question,passage` columns (more
columns are ignored), and SQuAD-format JSON ({"data": [{"paragraphs": [{"context", "qas": [{"id",
"question"}]}]}]}). A bad record is reported with its line number (for SQuAD: the question's ordinal in the
file) and the reason, and the rest of the file still runs. A file that is empty, too large, not UTF-8, in no
known format, or with more items than allowed raises BatchFileError with a message for the user.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from storage.limits import unstorable_reason

FORMATS = ("jsonl", "csv", "squad")
REQUIRED_FIELDS = ("id", "question", "passage")


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
        return cls(max_items=settings.max_batch_items, max_bytes=settings.max_upload_bytes,
                   max_question_chars=settings.max_question_chars, max_passage_chars=settings.max_passage_chars)


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
        except json.JSONDecodeError:
            return "jsonl"  # several objects, one per line
        return "squad" if isinstance(document, dict) and "data" in document else "jsonl"
    first_line = stripped.splitlines()[0] if stripped else ""
    if all(name in first_line for name in REQUIRED_FIELDS) and "," in first_line:
        return "csv"
    raise BatchFileError(f"{filename or 'the file'}: unknown format; use .jsonl, .csv or SQuAD .json")


def parse_batch_file(data: bytes, filename: str, *, limits: BatchLimits) -> ParsedBatch:
    """Parse an uploaded file; raise BatchFileError if it cannot be used at all."""
    if len(data) > limits.max_bytes:
        raise BatchFileError(f"the file is too large: {len(data)} bytes > limit {limits.max_bytes}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BatchFileError(f"the file is not UTF-8 text (byte {error.start})") from error
    if not text.strip():
        raise BatchFileError("the file is empty")
    kind = detect_format(filename, text)
    parsed = ParsedBatch(format=kind)
    records = {"jsonl": _jsonl_records, "csv": _csv_records, "squad": _squad_records}[kind](text)
    seen: set[str] = set()
    for line, record in records:
        if isinstance(record, str):
            parsed.errors.append({"line": line, "reason": record})
            continue
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
    for name in REQUIRED_FIELDS:
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return f"missing or empty {name!r}"
        if not isinstance(value, str | int) or isinstance(value, bool):
            return f"{name!r} must be a string"
    record["id"] = str(record["id"])
    for name in REQUIRED_FIELDS:  # the storage layer's own check, so one bad line does not fail the whole job
        if (unstorable := unstorable_reason(record[name])) is not None:
            return f"{name} contains {unstorable}, which cannot be stored"
    if record["id"] in seen:
        return f"duplicate id {record['id']!r}"
    if len(record["question"]) > limits.max_question_chars:
        return f"question too long: {len(record['question'])} > {limits.max_question_chars} characters"
    if len(record["passage"]) > limits.max_passage_chars:
        return f"passage too long: {len(record['passage'])} > {limits.max_passage_chars} characters"
    return None


Record = tuple[int, "dict[str, Any] | str"]  # (line, record or the reason it is unreadable)


def _jsonl_records(text: str) -> list[Record]:
    records: list[Record] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            records.append((number, f"invalid JSON: {error.msg}"))
            continue
        records.append((number, value if isinstance(value, dict) else "not a JSON object"))
    return records


def _csv_records(text: str) -> list[Record]:
    dialect = "excel-tab" if "\t" in text.splitlines()[0] and "," not in text.splitlines()[0] else "excel"
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_FIELDS if name not in header]
    if missing:
        raise BatchFileError(f"the CSV header lacks {', '.join(missing)} (it has: {', '.join(header)})")
    reader.fieldnames = header
    records: list[Record] = []
    start = 2
    try:
        for row in reader:
            if None in row:
                records.append((start, "more fields than the header"))
            elif any(row.get(name) is None for name in REQUIRED_FIELDS):
                records.append((start, "fewer fields than the header"))
            else:
                records.append((start, {name: row[name] for name in REQUIRED_FIELDS}))
            start = reader.line_num + 1
    except csv.Error as error:
        records.append((reader.line_num, f"unreadable CSV: {error}"))
    return records


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
                records.append((ordinal, {"id": qa.get("id"), "question": qa.get("question"), "passage": context}))
    return records
