"""Training data: records from the readers -> formatted id sequences -> padded, length-bucketed batches.

Uses model/formatting.py, so training sees exactly the inputs inference builds. Reading-comprehension
targets are the passage tokens that cover the answer, so every target can be copied from the source.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import ModelConfig
from .formatting import Source, chat_target, format_chat, format_rc, rc_target
from .readers import Dialog, QAExample, ReadReport, Record, TextPair, dialogs_to_pairs, read_any
from .seq2seq import Batch
from .tokenizer import Encoding, Tokenizer

MAX_TARGET_TOKENS = 64


@dataclass(frozen=True)
class Example:
    src_ids: list[int]
    features: list[int]
    tgt_ids: list[int]  # bos ... eos
    task: str


@dataclass
class BuildReport:
    examples: int = 0
    dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def read_records(paths: Sequence[str | Path]) -> tuple[list[Record], list[tuple[str, ReadReport]]]:
    records: list[Record] = []
    reports = []
    for path in paths:
        found, report = read_any(path)
        records.extend(found)
        reports.append((str(path), report))
    return records, reports


def record_texts(records: Sequence[Record]) -> Iterator[str]:
    """Every text in the records, for training a tokenizer; a passage shared by several questions once."""
    seen_passages: set[str] = set()
    for record in records:
        if isinstance(record, QAExample):
            yield record.question
            if record.passage not in seen_passages:
                seen_passages.add(record.passage)
                yield record.passage
        elif isinstance(record, Dialog):
            yield from record.turns
        elif isinstance(record, TextPair):
            yield record.source
            yield record.target


def build_examples(
    records: Sequence[Record],
    tokenizer: Tokenizer,
    config: ModelConfig,
) -> tuple[list[Example], BuildReport]:
    """Format every record the way inference will; RC answers outside the chosen window are dropped."""
    report = BuildReport()
    examples: list[Example] = []
    passages: dict[str, Encoding] = {}
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    dialogs = [r for r in records if isinstance(r, Dialog)]
    for record in records:
        if isinstance(record, QAExample):
            encoding = passages.get(record.passage)
            if encoding is None:
                encoding = passages[record.passage] = tokenizer.encode(record.passage)
            source = format_rc(
                tokenizer,
                record.question,
                record.passage,
                max_source_len=config.max_source_len,
                passage_encoding=encoding,
            )
            start = record.answer_starts[0] if record.answer_starts else -1
            if start < 0:
                report.drop("answer not in passage")
                continue
            target = rc_target(source, start, start + len(record.answers[0]))
            if target is None or len(target) > MAX_TARGET_TOKENS:
                report.drop("answer outside the passage window" if target is None else "answer too long")
                continue
            examples.append(_example(source, target, bos, eos, "rc"))
        elif isinstance(record, TextPair):
            source = format_chat(
                tokenizer, [record.source], max_source_len=config.max_source_len, max_turns=1
            )
            examples.append(
                _example(
                    source, chat_target(tokenizer, record.target, max_len=MAX_TARGET_TOKENS), bos, eos, "pair"
                )
            )
    for history, reply in dialogs_to_pairs(dialogs, config.max_history_turns):
        example = chat_example(tokenizer, config, list(history), reply)
        if example is None:
            report.drop("empty reply")
            continue
        examples.append(example)
    report.examples = len(examples)
    return examples, report


def chat_example(tokenizer: Tokenizer, config: ModelConfig, history: list[str], reply: str) -> Example | None:
    """One (conversation so far -> reply) training example, or None when the reply has no tokens."""
    target = chat_target(tokenizer, reply, max_len=MAX_TARGET_TOKENS)
    if not target:
        return None
    source = format_chat(
        tokenizer, history, max_source_len=config.max_source_len, max_turns=config.max_history_turns
    )
    return _example(source, target, tokenizer.bos_id, tokenizer.eos_id, "chat")


def _example(source: Source, target: list[int], bos: int, eos: int, task: str) -> Example:
    return Example(src_ids=source.ids, features=source.features, tgt_ids=[bos, *target, eos], task=task)


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    src_len = max(len(e.src_ids) for e in examples)
    tgt_len = max(len(e.tgt_ids) for e in examples)
    src = torch.full((len(examples), src_len), pad_id, dtype=torch.long)
    features = torch.zeros((len(examples), src_len), dtype=torch.long)
    tgt = torch.full((len(examples), tgt_len), pad_id, dtype=torch.long)
    for row, example in enumerate(examples):
        src[row, : len(example.src_ids)] = torch.tensor(example.src_ids)
        features[row, : len(example.features)] = torch.tensor(example.features)
        tgt[row, : len(example.tgt_ids)] = torch.tensor(example.tgt_ids)
    lengths = torch.tensor([len(e.src_ids) for e in examples])
    return Batch(src_ids=src, src_lengths=lengths, src_features=features, tgt_ids=tgt)


def iterate_batches(
    examples: Sequence[Example],
    *,
    batch_size: int,
    pad_id: int,
    shuffle: bool,
    seed: int,
) -> Iterator[Batch]:
    """Batches of similar source length (less padding); order shuffled per epoch when `shuffle`."""
    rng = random.Random(seed)
    indices = list(range(len(examples)))
    if shuffle:
        rng.shuffle(indices)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(indices), pool):
        chunk = sorted(indices[start : start + pool], key=lambda i: len(examples[i].src_ids))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if shuffle:
        rng.shuffle(batches)
    for batch in batches:
        yield collate([examples[i] for i in batch], pad_id)
