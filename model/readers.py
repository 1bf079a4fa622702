"""Readers for the RC and chat corpora we train on, turning files into typed records.

Formats: SQuAD-style JSON (SQuAD v1.1, CMRC 2018, XQuAD), DailyDialog text, LCCC JSON and TAB pairs,
ChatterBot YAML, and our users' JSONL. Every reader returns ``(records, ReadReport)``: a broken record is
skipped and counted, never fatal; only a file that cannot be read at all raises ``ValueError``.

Not here: tokenization into ids, tensors and train/valid splitting (see ``model/data.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

MAX_REASONS = 5
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    passage: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]  # -1 where the answer does not occur in the passage
    title: str = ""


@dataclass(frozen=True)
class Dialog:
    id: str
    turns: tuple[str, ...]
    source: str = ""


@dataclass(frozen=True)
class TextPair:
    source: str
    target: str


Record = QAExample | Dialog | TextPair


@dataclass
class ReadReport:
    """How a read went: records kept, records skipped, and the first few reasons ("line N: why")."""

    read: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def note(self, reason: str) -> None:
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.note(reason)


# --- text clean-up -------------------------------------------------------------------------------

_CONTRACTION = re.compile(r"(\w) ?['\u2019] ?(s|t|re|ve|ll|m|d)\b", re.IGNORECASE)
_SPACE_BEFORE = re.compile(r" +([.,!?;:%)\]}])")
_SPACE_AFTER = re.compile(r"([(\[{$]) +")


def detokenize(text: str) -> str:
    """Undo DailyDialog's tokenization: "Hello , how are you ?" -> "Hello, how are you?".

    Handles spaces before punctuation, inside brackets, after "$", and split contractions
    ("don ' t", "don 't", "do n't" -> "don't"). Quotes are left alone: their direction is ambiguous.
    """
    text = " ".join(text.split()).replace("\u2019", "'")  # DailyDialog mixes ' and the typographic apostrophe
    text = re.sub(r"(\w) n't\b", r"\1n't", text)
    text = _CONTRACTION.sub(r"\1'\2", text)
    text = _SPACE_BEFORE.sub(r"\1", text)
    return _SPACE_AFTER.sub(r"\1", text)


def join_characters(text: str) -> str:
    """Undo LCCC's character tokenization: "你 好 ， C F" -> "你好，CF".

    Spaces are dropped, except between two ASCII tokens of which one is a whole word ("I love NBA"
    keeps its spaces); single spaced letters and digits ("3 1 万") are joined, as LCCC writes them.
    """
    tokens = text.split()
    out: list[str] = []
    for prev, token in zip([""] + tokens, tokens, strict=False):
        both_ascii = _ASCII_WORD.fullmatch(prev) and _ASCII_WORD.fullmatch(token)
        if out and both_ascii and max(len(prev), len(token)) > 1:
            out.append(" ")
        out.append(token)
    return "".join(out)


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


# --- file access ---------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"cannot read {path}: not an existing file")


def _load_json(path: Path) -> Any:
    _check_file(path)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: not valid UTF-8 JSON ({e})") from e


def _lines(path: Path, report: ReadReport) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, text) for non-blank lines; undecodable lines are skipped."""
    _check_file(path)
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                report.skip(f"line {line_no}: not UTF-8")
                continue
            if line.strip():
                yield line_no, line


# --- SQuAD-style reading comprehension -----------------------------------------------------------


def _anchor(context: str, text: str, start: Any) -> int:
    """The offset of `text` in `context`: `start` if right, else the nearest occurrence, else -1."""
    if isinstance(start, int) and start >= 0 and context[start : start + len(text)] == text:
        return start
    hint = start if isinstance(start, int) else 0
    found = [m.start() for m in re.finditer(re.escape(text), context)]
    return min(found, key=lambda s: abs(s - hint)) if found else -1


def _squad_question(qa: Any, context: str, title: str, n: int, report: ReadReport) -> QAExample | None:
    if not isinstance(qa, dict):
        report.skip(f"record {n}: question is not an object")
        return None
    qid = str(qa.get("id", n))
    question = qa.get("question")
    if not isinstance(question, str) or not question.strip():
        report.skip(f"record {n} ({qid}): empty question")
        return None
    answers: list[str] = []
    starts: list[int] = []
    for answer in qa.get("answers") or []:
        text = answer.get("text") if isinstance(answer, dict) else None
        start = _anchor(context, text, answer.get("answer_start")) if isinstance(text, str) and text else -1
        if start < 0 or not isinstance(text, str):
            report.note(f"record {n} ({qid}): answer {text!r} not in context, dropped")
            continue
        answers.append(text)
        starts.append(start)
    if not answers:
        report.skip(f"record {n} ({qid}): no answer found in the context")
        return None
    return QAExample(qid, question.strip(), context, tuple(answers), tuple(starts), title)


def _squad_records(data: Any, path: Path) -> tuple[list[QAExample], ReadReport]:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"cannot read {path}: not SQuAD-format JSON (no 'data' list)")
    report = ReadReport()
    examples: list[QAExample] = []
    n = 0
    for article in data["data"]:
        article = article if isinstance(article, dict) else {}
        title = article.get("title")
        title = title if isinstance(title, str) else ""
        for paragraph in article.get("paragraphs") or []:
            paragraph = paragraph if isinstance(paragraph, dict) else {}
            context = paragraph.get("context")
            for qa in paragraph.get("qas") or []:
                n += 1
                if not isinstance(context, str) or not context:
                    report.skip(f"record {n}: paragraph has no context")
                    continue
                example = _squad_question(qa, context, title, n, report)
                if example is not None:
                    examples.append(example)
    report.read = len(examples)
    return examples, report


def read_squad(path: str | Path) -> tuple[list[QAExample], ReadReport]:
    """Reads SQuAD-format JSON (SQuAD v1.1, CMRC 2018, XQuAD) into one QAExample per question.

    An `answer_start` that does not point at its text is moved to the nearest occurrence (CMRC 2018
    has offsets a few characters off); answers absent from the context are dropped, and a question
    left with no answer, or with an empty question text, is skipped.
    """
    path = Path(path)
    return _squad_records(_load_json(path), path)


# --- chit-chat -----------------------------------------------------------------------------------


def read_dailydialog(path: str | Path) -> tuple[list[Dialog], ReadReport]:
    """Reads DailyDialog: one dialog per line, each utterance ended by "__eou__"; text is detokenized."""
    path = Path(path)
    report = ReadReport()
    dialogs: list[Dialog] = []
    for line_no, line in _lines(path, report):
        turns = tuple(detokenize(u) for u in line.split("__eou__") if u.strip())
        if not turns:
            report.skip(f"line {line_no}: no utterances")
            continue
        dialogs.append(Dialog(f"{path.stem}-{line_no}", turns, source=path.name))
    report.read = len(dialogs)
    return dialogs, report


def _lccc_dialog(raw: Any, dialog_id: str, where: str, source: str, report: ReadReport) -> Dialog | None:
    if not isinstance(raw, list) or not raw:
        report.skip(f"{where}: dialog is not a non-empty list")
        return None
    if not all(isinstance(u, str) for u in raw):
        report.skip(f"{where}: utterance is not a string")
        return None
    turns = tuple(join_characters(u) for u in raw)
    if not all(turns):
        report.skip(f"{where}: empty utterance")
        return None
    return Dialog(dialog_id, turns, source=source)


def _lccc_records(data: Any, path: Path, split: str) -> tuple[list[Dialog], ReadReport]:
    if isinstance(data, dict):
        if split not in data:
            raise ValueError(f"cannot read {path}: no split {split!r} (has {sorted(data)})")
        data = data[split]
    if not isinstance(data, list):
        raise ValueError(f"cannot read {path}: not a JSON list of dialogs")
    report = ReadReport()
    dialogs: list[Dialog] = []
    for n, raw in enumerate(data, start=1):
        dialog = _lccc_dialog(raw, f"{path.stem}-{split}-{n}", f"record {n}", path.name, report)
        if dialog is not None:
            dialogs.append(dialog)
    report.read = len(dialogs)
    return dialogs, report


def read_lccc(path: str | Path, split: str = "train") -> tuple[list[Dialog], ReadReport]:
    """Reads LCCC dialogs, joining the space-separated characters back into text.

    Shapes: a JSON list of dialogs (lists of utterances); the CDial-GPT toy_data.json dict of splits,
    of which `split` is read; or TAB-separated lines ("post<TAB>response", any .txt), one dialog each.
    """
    path = Path(path)
    if path.suffix != ".txt":
        return _lccc_records(_load_json(path), path, split)
    report = ReadReport()
    dialogs: list[Dialog] = []
    for line_no, line in _lines(path, report):
        fields = line.split("\t")
        if len(fields) < 2:
            report.skip(f"line {line_no}: no TAB between post and response")
            continue
        dialog = _lccc_dialog(fields, f"{path.stem}-{line_no}", f"line {line_no}", path.name, report)
        if dialog is not None:
            dialogs.append(dialog)
    report.read = len(dialogs)
    return dialogs, report


def _chatterbot_turn(value: Any) -> str | None:
    # YAML turns bare scalars into numbers, booleans and dates; those are still sayable text.
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool | int | float | date | datetime):
        return str(value)
    return None


def _chatterbot_file(path: Path, root: Path, report: ReadReport) -> list[Dialog]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: not valid UTF-8 YAML ({e})") from e
    conversations = data.get("conversations") if isinstance(data, dict) else None
    if not isinstance(conversations, list):
        raise ValueError(f"cannot read {path}: no 'conversations' list")
    source = path.relative_to(root).as_posix() if path != root else path.name
    dialogs: list[Dialog] = []
    for n, conversation in enumerate(conversations, start=1):
        turns = [_chatterbot_turn(u) for u in conversation] if isinstance(conversation, list) else []
        if not turns or None in turns:
            report.skip(f"record {n} of {source}: not a list of text utterances")
            continue
        dialogs.append(Dialog(f"{path.stem}-{n}", tuple(t for t in turns if t is not None), source=source))
    return dialogs


def read_chatterbot(path: str | Path) -> tuple[list[Dialog], ReadReport]:
    """Reads ChatterBot corpus YAML (`conversations: [[utt, ...], ...]`): one file, or every *.yml/*.yaml
    below a directory (an unreadable file there is skipped with a reason, not fatal)."""
    path = Path(path)
    report = ReadReport()
    if not path.is_dir():
        _check_file(path)
        dialogs = _chatterbot_file(path, path, report)
        report.read = len(dialogs)
        return dialogs, report
    dialogs = []
    files = sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    for file in files:
        try:
            dialogs.extend(_chatterbot_file(file, path, report))
        except ValueError as e:
            report.skip(str(e))
    report.read = len(dialogs)
    return dialogs, report


def dialogs_to_pairs(dialogs: Sequence[Dialog], max_history: int) -> list[tuple[tuple[str, ...], str]]:
    """Turns dialogs into (history, reply) training pairs: every turn after the first is a reply,
    with up to `max_history` turns before it as history (oldest first)."""
    if max_history < 1:
        raise ValueError(f"max_history must be at least 1, got {max_history}")
    pairs: list[tuple[tuple[str, ...], str]] = []
    for dialog in dialogs:
        for i in range(1, len(dialog.turns)):
            pairs.append((dialog.turns[max(0, i - max_history) : i], dialog.turns[i]))
    return pairs


# --- users' JSONL --------------------------------------------------------------------------------


def _nonempty_strings(obj: dict[str, Any], keys: Sequence[str]) -> str | None:
    """Why `obj` fails to hold a non-empty string under each key, or None if it does."""
    for key in keys:
        if key not in obj:
            return f"missing key {key!r}"
        if not isinstance(obj[key], str) or not obj[key].strip():
            return f"{key!r} is not a non-empty string"
    return None


def _jsonl_record(obj: Any, record_id: str) -> Record | str:
    """The record a JSONL object describes, or why it describes none."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if "dialog" in obj:
        turns = obj["dialog"]
        if not isinstance(turns, list) or not turns:
            return "'dialog' is not a non-empty list"
        if not all(isinstance(t, str) and t.strip() for t in turns):
            return "'dialog' holds an empty or non-string turn"
        return Dialog(str(obj.get("id", record_id)), tuple(t.strip() for t in turns), source="jsonl")
    if {"question", "passage", "answer"} & obj.keys():
        why = _nonempty_strings(obj, ("question", "passage", "answer"))
        if why:
            return why
        passage, answer = obj["passage"], obj["answer"].strip()
        qid = str(obj.get("id", record_id))
        return QAExample(qid, obj["question"].strip(), passage, (answer,), (passage.find(answer),))
    if {"source", "target"} & obj.keys():
        return _nonempty_strings(obj, ("source", "target")) or TextPair(obj["source"], obj["target"])
    return "no known keys (question/passage/answer, dialog, or source/target)"


def read_jsonl(path: str | Path) -> tuple[list[Record], ReadReport]:
    """Reads our users' JSONL, one record a line: {"question","passage","answer"} -> QAExample
    (answer_starts is -1 when the answer is not in the passage), {"dialog": [...]} -> Dialog,
    {"source","target"} -> TextPair. Broken lines are skipped; blank lines are ignored."""
    path = Path(path)
    report = ReadReport()
    records: list[Record] = []
    for line_no, line in _lines(path, report):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            report.skip(f"line {line_no}: bad JSON ({e.msg})")
            continue
        record = _jsonl_record(obj, f"{path.stem}-{line_no}")
        if isinstance(record, str):
            report.skip(f"line {line_no}: {record}")
        else:
            records.append(record)
    report.read = len(records)
    return records, report


def read_any(path: str | Path, split: str = "train") -> tuple[list[Record], ReadReport]:
    """Reads any format above, chosen by extension and content:
    .json SQuAD-style if it has "data", else LCCC (list of dialogs, or dict of splits: `split`);
    .txt DailyDialog if it holds "__eou__", else TAB pairs; .yml/.yaml or a directory ChatterBot;
    .jsonl our JSONL."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in (".yml", ".yaml"):
        return _widen(read_chatterbot(path))
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        data = _load_json(path)
        if isinstance(data, dict) and "data" in data:
            return _widen(_squad_records(data, path))
        return _widen(_lccc_records(data, path, split))
    if suffix == ".txt":
        _check_file(path)
        with path.open(encoding="utf-8", errors="replace") as f:
            is_dailydialog = "__eou__" in f.read(65536)
        return _widen(read_dailydialog(path) if is_dailydialog else read_lccc(path))
    raise ValueError(f"cannot read {path}: unknown format {suffix!r}")


def _widen(result: tuple[Sequence[Record], ReadReport]) -> tuple[list[Record], ReadReport]:
    records, report = result
    return list(records), report
