"""ReaderPredictor: the boundary-pointer reader behind the same interface as model.inference.Predictor.

A request's passage is read whole when it fits the model's budget, else in overlapping windows; the span
search runs over each window and the n-best spans of all windows are merged by score (one entry per distinct
character span). Each hypothesis carries the two pointer steps: `tokens` are the start and end words,
`attention` their distributions over `source_tokens` (question words, "<sep>", the window's passage words),
and `pointer` the passage-to-question alignment of the words the answer covers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import DecodeConfig
from ..inference import Hypothesis, InputError, check_questions
from .examples import request_inputs
from .features import ReaderInput, collate
from .network import ReaderConfig, SpanReader
from .search import best_spans
from .vocab import Vocab

SEPARATOR = "<sep>"
# Windows per network call: a request batch is read in length-sorted groups of this many. Measured with
# bench/reader.py on rc-en, batch 64 (2-core EPYC, idle): one group of 64 232-238 q/s on 1 thread, 316-325 on 2;
# groups of 16 391-399 and 475-585 (less padding: SQuAD paragraphs run from 20 to 400 words); 8 and 32 slower.
MAX_BATCH_WINDOWS = 16
# Marks an answer never starts or ends with (sentence and clause punctuation, Latin and CJK); "$" or a quote may.
NOT_A_BOUNDARY = frozenset(".,;:?!。，、；：？！…")


@dataclass(frozen=True)
class Span:
    score: float
    char_start: int
    char_end: int
    window: int  # index of the request's window
    start: int  # word indices inside the window, end inclusive
    end: int


def windows_in_batches(inputs: list[ReaderInput], size: int = MAX_BATCH_WINDOWS) -> list[list[int]]:
    """Indices of `inputs` grouped into batches of similar passage length (less padding)."""
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i].passage_ids))
    return [order[i : i + size] for i in range(0, len(order), size)]


@torch.inference_mode()
def read_windows(
    model: SpanReader,
    inputs: list[ReaderInput],
    device: torch.device,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(start log-probs, end log-probs, alignment) per input, each trimmed to its own words."""
    out: list[Any] = [None] * len(inputs)
    for group in windows_in_batches(inputs):
        batch = collate([inputs[i] for i in group]).to(device)
        result = model(batch)
        start = torch.log_softmax(result.start_logits.float(), -1)
        end = torch.log_softmax(result.end_logits.float(), -1)
        for row, index in enumerate(group):
            p_len, q_len = len(inputs[index].passage_ids), len(inputs[index].question_ids)
            out[index] = (
                start[row, :p_len].cpu(),
                end[row, :p_len].cpu(),
                result.alignment[row, :p_len, :q_len].cpu(),
            )
    return out


def merge_spans(
    windows: list[tuple[int, ReaderInput]],
    read: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    max_words: int,
    n_best: int,
) -> list[Span]:
    """The n_best spans of all windows of one request, best first, one per distinct character span."""
    found: dict[tuple[int, int], Span] = {}
    for window, ((_, item), (start, end, _)) in enumerate(zip(windows, read)):
        punctuation = torch.tensor([w in NOT_A_BOUNDARY for w in item.passage.words], dtype=torch.bool)
        if not bool(punctuation.all()):
            start, end = (
                start.masked_fill(punctuation, float("-inf")),
                end.masked_fill(punctuation, float("-inf")),
            )
        for score, first, last in best_spans(
            start.unsqueeze(0), end.unsqueeze(0), max_words=max_words, n_best=n_best
        )[0]:
            chars = (item.passage.spans[first][0], item.passage.spans[last][1])
            if chars not in found or found[chars].score < score:
                found[chars] = Span(score, chars[0], chars[1], window, first, last)
    return sorted(found.values(), key=lambda s: s.score, reverse=True)[:n_best]


class ReaderPredictor:
    """One reader checkpoint on one device; answers (question, passage) pairs."""

    task = "rc"

    def __init__(
        self,
        model: SpanReader,
        vocab: Vocab,
        *,
        device: torch.device,
        decode: DecodeConfig | None = None,
        version: str = "unversioned",
    ) -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.config: ReaderConfig = model.config
        self.torch_device = device
        self.device = str(device)
        self.default_decode = decode or DecodeConfig(
            beam_size=5, n_best=3, max_length=self.config.max_answer_words
        )
        self.version = version

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        output_precision: str = "float32",
    ) -> ReaderPredictor:
        from ..device import resolve_device
        from .checkpoint import load_reader

        torch_device = resolve_device(device)
        loaded = load_reader(path, device=torch_device)
        name = Path(path).name if Path(path).is_dir() else Path(path).parent.name
        digest = hashlib.sha256("\n".join(loaded.vocab.words).encode("utf-8")).hexdigest()[:8]
        return cls(
            loaded.model,
            loaded.vocab,
            device=torch_device,
            decode=loaded.decode,
            version=f"{name}@{digest}-{loaded.step}",
        )

    def answer(
        self, questions: list[tuple[str, str]], decode: DecodeConfig | None = None
    ) -> list[list[Hypothesis]]:
        decode = decode or self.default_decode
        check_questions(questions)
        requests = []
        for index, (question, passage) in enumerate(questions):
            windows = request_inputs(question, passage, self.vocab, self.config)
            if not windows[0][1].question_ids:
                raise InputError(f"request {index}: the question has no words")
            if not any(item.passage_ids for _, item in windows):
                raise InputError(f"request {index}: the passage has no words")
            requests.append(windows)
        flat = [item for windows in requests for _, item in windows]
        read = read_windows(self.model, flat, self.torch_device)
        results, cursor = [], 0
        for windows, (_, passage) in zip(requests, questions):
            mine = read[cursor : cursor + len(windows)]
            cursor += len(windows)
            spans = merge_spans(windows, mine, max_words=decode.max_length, n_best=decode.n_best)
            results.append(
                [
                    self._hypothesis(span, windows[span.window][1], mine[span.window], passage)
                    for span in spans
                ]
            )
        return results

    def reply(self, histories: list[list[str]], decode: DecodeConfig | None = None) -> list[list[Hypothesis]]:
        raise InputError("this model reads passages to answer questions; it does not chat")

    def warm_up(self) -> None:
        self.answer(
            [("What is warm?", "The warm up run.")], DecodeConfig(beam_size=2, n_best=1, max_length=4)
        )

    @staticmethod
    def _hypothesis(
        span: Span, item: ReaderInput, read: tuple[torch.Tensor, torch.Tensor, torch.Tensor], passage: str
    ) -> Hypothesis:
        start_log, end_log, alignment = read
        q_len = len(item.question.words)
        lead = [0.0] * (q_len + 1)
        rows = [lead + start_log.exp().tolist(), lead + end_log.exp().tolist()]
        covered = alignment[span.start : span.end + 1]
        pointer = {
            "question_tokens": list(item.question.words),
            "answer_tokens": list(item.passage.words[span.start : span.end + 1]),
            "passage_to_question": [[round(w, 4) for w in row] for row in covered.tolist()],
            "start_log_prob": round(float(start_log[span.start]), 6),
            "end_log_prob": round(float(end_log[span.end]), 6),
        }
        return Hypothesis(
            text=passage[span.char_start : span.char_end],
            tokens=[item.passage.words[span.start], item.passage.words[span.end]],
            score=span.score,
            log_prob=span.score,
            source_tokens=[*item.question.words, SEPARATOR, *item.passage.words],
            attention=rows,
            p_gen=[0.0, 0.0],
            span=(span.char_start, span.char_end),
            pointer=pointer,
        )
