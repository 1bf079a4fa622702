"""Predictor = tokenizer + model + default DecodeConfig: answer(question, passage) and reply(history), batched.

Requests of a call are sorted by source length, padded into batches and decoded together by one batched beam
search; results come back in request order. Reading-comprehension answers are decoded extractively by default:
each hypothesis is constrained to a contiguous run of passage tokens, and its text is the exact passage
substring those tokens cover. ModelSet holds the shipped models and picks one by task and language.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .allocator import keep_freed_memory
from .beam_search import BeamHypothesis, beam_search, normaliser
from .checkpoint import MODEL_FILE, load_checkpoint
from .config import DecodeConfig, ModelConfig
from .decode_file import MODELS_FILE
from .decode_step import CANDIDATES, DecodeStep, PassageConstraint
from .device import resolve_device, resolve_output_precision
from .formatting import Source, format_chat, format_rc
from .language import detect_language
from .sampling import sample, seed_of
from .seq2seq import Batch, Seq2Seq
from .tokenizer import Tokenizer

MAX_BATCH_ROWS = 512  # batch * beam rows decoded at once
SCORE_ROWS = 64  # hypotheses teacher-forced at once when reranking: each holds (tgt_len, vocab) log-probs


class InputError(ValueError):
    """A request the model cannot answer as given (empty text, no turns); the message says why."""


def check_questions(questions: list[tuple[str, str]]) -> None:
    """InputError naming the first (question, passage) request with an empty question or passage."""
    for index, (question, passage) in enumerate(questions):
        if not question.strip():
            raise InputError(f"request {index}: the question is empty")
        if not passage.strip():
            raise InputError(f"request {index}: the passage is empty")


@dataclass(frozen=True)
class Hypothesis:
    text: str
    tokens: list[str]
    score: float
    log_prob: float
    source_tokens: list[str]
    attention: list[list[float]]
    p_gen: list[float]
    span: tuple[int, int] | None = None
    pointer: dict[str, Any] | None = None  # span reader: question tokens, passage-to-question alignment

    def to_dict(self) -> dict[str, Any]:
        extra = {"pointer": self.pointer} if self.pointer is not None else {}
        return {
            **extra,
            "text": self.text,
            "tokens": self.tokens,
            "score": round(self.score, 6),
            "log_prob": round(self.log_prob, 6),
            "source_tokens": self.source_tokens,
            "attention": [[round(w, 4) for w in row] for row in self.attention],
            "p_gen": [round(p, 4) for p in self.p_gen],
            "span": list(self.span) if self.span else None,
        }


def pad_sources(sources: list[Source], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(batch, src_len) ids, (batch,) lengths, (batch, src_len) features, (batch, src_len) passage mask,
    and the (batch, src_len) masks of passage tokens an extractive answer may start and end with."""
    src_len = max(len(s) for s in sources)
    ids = torch.full((len(sources), src_len), pad_id, dtype=torch.long)
    features = torch.zeros((len(sources), src_len), dtype=torch.long)
    passage = torch.zeros((len(sources), src_len), dtype=torch.bool)
    starts = torch.zeros((len(sources), src_len), dtype=torch.bool)
    ends = torch.zeros((len(sources), src_len), dtype=torch.bool)
    for row, source in enumerate(sources):
        ids[row, : len(source)] = torch.tensor(source.ids)
        features[row, : len(source)] = torch.tensor(source.features)
        passage[row, : len(source)] = torch.tensor(source.passage_mask)
        if source.word_start is not None and source.word_end is not None:
            starts[row, : len(source)] = torch.tensor(source.word_start)
            ends[row, : len(source)] = torch.tensor(source.word_end)
    lengths = torch.tensor([len(s) for s in sources])
    return (
        ids.to(device),
        lengths,
        features.to(device),
        passage.to(device),
        starts.to(device),
        ends.to(device),
    )


class Predictor:
    """One checkpoint on one device."""

    def __init__(
        self,
        model: Seq2Seq,
        tokenizer: Tokenizer,
        *,
        device: torch.device,
        decode: DecodeConfig | None = None,
        version: str = "unversioned",
        output_precision: str = "float32",
    ) -> None:
        keep_freed_memory()  # decoding reallocates the same large tensors every step (see model/allocator.py)
        self.model = model.eval()
        self.output_dtype = resolve_output_precision(output_precision, device)
        self.model.decoder.set_output_precision(self.output_dtype)
        self.tokenizer = tokenizer
        self.config: ModelConfig = model.config
        self.torch_device = device
        self.device = str(device)
        self.default_decode = decode or DecodeConfig()
        self.version = version
        self.task = self.config.task
        banned = [tokenizer.pad_id, tokenizer.unk_id, *tokenizer.control_ids.values()]
        self._banned_ids = torch.tensor(sorted(set(banned)), device=device)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", output_precision: str = "float32"
    ) -> Predictor:
        torch_device = resolve_device(device)
        loaded = load_checkpoint(path, device=torch_device)
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        version = f"{folder.name}@{loaded.tokenizer.checksum[:8]}-{loaded.step}"
        return cls(
            loaded.model,
            loaded.tokenizer,
            device=torch_device,
            decode=loaded.decode,
            version=version,
            output_precision=output_precision,
        )

    # --- public API -------------------------------------------------------------------------
    def answer(
        self, questions: list[tuple[str, str]], decode: DecodeConfig | None = None
    ) -> list[list[Hypothesis]]:
        """(question, passage) pairs -> n-best answers each, best first."""
        decode = decode or self.default_decode
        check_questions(questions)
        budget = min(self.config.max_source_len, decode.max_source_len or self.config.max_source_len)
        sources = [format_rc(self.tokenizer, q, p, max_source_len=budget) for q, p in questions]
        extractive = True if decode.extractive is None else decode.extractive
        results = self._decode(sources, decode, extractive=extractive)
        return [
            [self._to_hypothesis(h, source, passage if extractive else None) for h in hyps]
            for hyps, source, (_, passage) in zip(results, sources, questions)
        ]

    def reply(self, histories: list[list[str]], decode: DecodeConfig | None = None) -> list[list[Hypothesis]]:
        """Conversations (oldest turn first, ending with the user's message) -> n-best replies each."""
        decode = decode or self.default_decode
        for index, history in enumerate(histories):
            if not history or not history[-1].strip():
                raise InputError(f"request {index}: the conversation has no message to answer")
        budget = min(self.config.max_source_len, decode.max_source_len or self.config.max_source_len)
        sources = [
            format_chat(
                self.tokenizer, list(h), max_source_len=budget, max_turns=self.config.max_history_turns
            )
            for h in histories
        ]
        if decode.mmi_weight > 0 or decode.sample_count > 0:
            candidates = self._decode(sources, decode.replace(n_best=decode.beam_size), extractive=False)
            if decode.sample_count > 0:
                candidates = [
                    _unique(beam + drawn) for beam, drawn in zip(candidates, self._sample(sources, decode))
                ]
            results = self._rerank_mmi(candidates, decode)
        else:
            results = self._decode(sources, decode, extractive=False)
        return [
            [self._to_hypothesis(h, source, None) for h in hyps] for hyps, source in zip(results, sources)
        ]

    @torch.inference_mode()
    def _rerank_mmi(
        self, results: list[list[BeamHypothesis]], decode: DecodeConfig
    ) -> list[list[BeamHypothesis]]:
        """Maximum mutual information reranking (Li et al. 2016, anti-LM form): replies that are likely after
        any message ("I don't know") lose to replies that are likely after this one.

        score = (log p(T|S) - mmi_weight * log p(T)) / lp(|T|), where log p(T) is the model's own score for T
        after a conversation with an empty message. With mmi_weight 0 this is plain length-penalised ranking.
        All candidates are scored in batches; a request keeps its n_best. First, replies cut off at max_length
        go when any candidate ended by itself (MMI favours their unusual tails). Then the fluency floor: a candidate
        whose mean log p(T|S) per token is more than decode.fluency_margin below its request's best is dropped,
        so neither a sample nor a low beam that MMI favours for being unusual can win when it is garbled."""
        results = [
            fluent_candidates(finished_candidates(hyps, decode.max_length), decode.fluency_margin)
            for hyps in results
        ]
        flat = [hyp for hyps in results for hyp in hyps if hyp.token_ids]
        neutral = format_chat(self.tokenizer, [""], max_source_len=8, max_turns=1)
        for start in range(0, len(flat), SCORE_ROWS):
            chunk = flat[start : start + SCORE_ROWS]
            priors = (
                self.score_targets([neutral] * len(chunk), [h.token_ids for h in chunk])
                if decode.mmi_weight > 0
                else [0.0] * len(chunk)
            )
            for hyp, prior in zip(chunk, priors):
                hyp.score = (hyp.log_prob - decode.mmi_weight * prior) / normaliser(
                    len(hyp.token_ids) + 1, decode
                )
        return [sorted(hyps, key=lambda h: h.score, reverse=True)[: decode.n_best] for hyps in results]

    @torch.inference_mode()
    def score_targets(self, sources: list[Source], targets: list[list[int]]) -> list[float]:
        """Sum of log p(target | source) per pair (eos included), by teacher forcing."""
        ids, lengths, features, *_ = pad_sources(sources, self.tokenizer.pad_id, self.torch_device)
        width = max(len(t) for t in targets) + 2
        tgt = torch.full((len(targets), width), self.tokenizer.pad_id, dtype=torch.long)
        for row, target in enumerate(targets):
            tgt[row, : len(target) + 2] = torch.tensor(
                [self.tokenizer.bos_id, *target, self.tokenizer.eos_id]
            )
        tgt = tgt.to(self.torch_device)
        out = self.model(Batch(src_ids=ids, src_lengths=lengths, src_features=features, tgt_ids=tgt))
        return out.target_log_probs.sum(-1).tolist()

    def warm_up(self) -> None:
        self.answer([("What is warm?", "The warm up run.")], DecodeConfig(beam_size=2, max_length=4))
        self.reply([["hello"]], DecodeConfig(beam_size=2, max_length=4))

    # --- decoding ---------------------------------------------------------------------------
    @torch.inference_mode()
    def _decode(
        self, sources: list[Source], decode: DecodeConfig, *, extractive: bool
    ) -> list[list[BeamHypothesis]]:
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        per_batch = max(1, MAX_BATCH_ROWS // decode.beam_size)
        results: list[list[BeamHypothesis]] = [[] for _ in sources]
        for start in range(0, len(order), per_batch):
            chunk = order[start : start + per_batch]
            decoded = self._decode_batch([sources[i] for i in chunk], decode, extractive=extractive)
            for index, hyps in zip(chunk, decoded):
                results[index] = hyps
        return results

    def _decode_batch(
        self,
        sources: list[Source],
        decode: DecodeConfig,
        *,
        extractive: bool,
    ) -> list[list[BeamHypothesis]]:
        beam = decode.beam_size
        ids, lengths, features, passage, starts, ends = pad_sources(
            sources, self.tokenizer.pad_id, self.torch_device
        )
        memory, state = self.model.encode(ids, lengths, features)
        state = {k: v.repeat_interleave(beam, dim=0) for k, v in state.items()}
        constraint = None
        if extractive:
            state[CANDIDATES] = starts.repeat_interleave(beam, dim=0)
            constraint = PassageConstraint(passage=passage, ends=ends, eos_id=self.tokenizer.eos_id)
        step = DecodeStep(self.model, memory, self._banned_ids, constraint)
        return beam_search(
            step,
            state,
            batch_size=len(sources),
            bos_id=self.tokenizer.bos_id,
            eos_id=self.tokenizer.eos_id,
            config=decode,
            device=self.torch_device,
            narrow_rows=True,
        )

    @torch.inference_mode()
    def _sample(self, sources: list[Source], decode: DecodeConfig) -> list[list[BeamHypothesis]]:
        """decode.sample_count nucleus samples per source, seeded by the source's ids (reproducible)."""
        count = decode.sample_count
        per_batch = max(1, MAX_BATCH_ROWS // count)
        results: list[list[BeamHypothesis]] = []
        for start in range(0, len(sources), per_batch):
            chunk = sources[start : start + per_batch]
            ids, lengths, features, *_ = pad_sources(chunk, self.tokenizer.pad_id, self.torch_device)
            memory, state = self.model.encode(ids, lengths, features)
            state = {k: v.repeat_interleave(count, dim=0) for k, v in state.items()}
            step = DecodeStep(self.model, memory, self._banned_ids)
            results.extend(
                sample(
                    step,
                    state,
                    seeds=[seed_of(s.ids) for s in chunk],
                    num_samples=count,
                    bos_id=self.tokenizer.bos_id,
                    eos_id=self.tokenizer.eos_id,
                    config=decode,
                    device=self.torch_device,
                    narrow_rows=True,
                )
            )
        return results

    def _to_hypothesis(self, hyp: BeamHypothesis, source: Source, passage: str | None) -> Hypothesis:
        tokens = [self.tokenizer.id_to_piece(i) for i in hyp.token_ids]
        attention = (
            hyp.attention[:, : len(source)]
            if hyp.attention is not None
            else torch.zeros(len(tokens), len(source))
        )
        p_gen = hyp.p_gen.tolist() if hyp.p_gen is not None else [1.0] * len(tokens)
        span = None
        text = self.tokenizer.decode(hyp.token_ids)
        if passage is not None and hyp.token_ids:
            span = _locate_span(hyp.token_ids, source, attention)
            if span is not None:
                text = passage[span[0] : span[1]]
        return Hypothesis(
            text=text,
            tokens=tokens,
            score=hyp.score,
            log_prob=hyp.log_prob,
            source_tokens=list(source.pieces),
            attention=attention.tolist(),
            p_gen=p_gen,
            span=span,
        )


def finished_candidates(hyps: list[BeamHypothesis], max_length: int) -> list[BeamHypothesis]:
    """The candidates that ended before max_length (the rest were cut off mid-reply), or all when none did."""
    finished = [h for h in hyps if len(h.token_ids) < max_length]
    return finished or hyps


def fluent_candidates(hyps: list[BeamHypothesis], margin: float) -> list[BeamHypothesis]:
    """The candidates whose mean log-prob per token (eos included) is within `margin` nats of the best one's."""

    def mean(hyp: BeamHypothesis) -> float:
        return hyp.log_prob / (len(hyp.token_ids) + 1)

    if not hyps:
        return hyps
    best = max(mean(h) for h in hyps)
    return [h for h in hyps if mean(h) >= best - margin]


def _unique(hyps: list[BeamHypothesis]) -> list[BeamHypothesis]:
    """The first of each distinct token sequence, in order."""
    seen: set[tuple[int, ...]] = set()
    kept = []
    for hyp in hyps:
        key = tuple(hyp.token_ids)
        if key not in seen:
            seen.add(key)
            kept.append(hyp)
    return kept


def _locate_span(token_ids: list[int], source: Source, attention: torch.Tensor) -> tuple[int, int] | None:
    """Character span of the passage run equal to `token_ids`, choosing the occurrence attended to most."""
    width = len(token_ids)
    best: tuple[float, int] | None = None
    for start in range(len(source.ids) - width + 1):
        if not source.passage_mask[start] or source.ids[start : start + width] != token_ids:
            continue
        mass = float(sum(attention[t, start + t] for t in range(min(width, attention.size(0)))))
        if best is None or mass > best[0]:
            best = (mass, start)
    if best is None:
        return None
    spans = [s for s in source.spans[best[1] : best[1] + width] if s is not None and s[1] > s[0]]
    if not spans:
        return None
    return spans[0][0], spans[-1][1]


def load_predictor(path: str | Path, device: str = "auto", output_precision: str = "float32") -> Any:
    """The predictor for the checkpoint at `path`: a span reader (model.span) or a Seq2Seq model. Both answer
    `answer`, `reply`, `warm_up` and carry `version`, `device`, `task` and `default_decode`."""
    from .span.checkpoint import is_reader

    if is_reader(path):
        from .span.predictor import ReaderPredictor

        return ReaderPredictor.from_checkpoint(path, device)
    return Predictor.from_checkpoint(path, device, output_precision)


class ModelSet:
    """The models a worker serves, chosen per request by task ("rc"/"chat") and language ("en"/"zh")."""

    def __init__(self, routes: dict[str, Predictor]) -> None:
        if not routes:
            raise ValueError("a ModelSet needs at least one model")
        self.routes = routes
        first = next(iter(routes.values()))
        self.device = first.device
        self.versions = {key: predictor.version for key, predictor in routes.items()}

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", output_precision: str = "float32") -> ModelSet:
        """`path` is one checkpoint (used for every task and language) or a folder with models.json."""
        root = Path(path)
        if (root / MODEL_FILE).exists():
            return cls({"*": load_predictor(root, device, output_precision)})
        manifest = root / MODELS_FILE
        if not manifest.exists():
            raise FileNotFoundError(f"{root} holds neither {MODEL_FILE} nor {MODELS_FILE}")
        table: dict[str, str] = json.loads(manifest.read_text(encoding="utf-8"))
        loaded: dict[str, Predictor] = {}
        routes = {}
        for key, sub in table.items():
            if sub not in loaded:
                loaded[sub] = load_predictor(root / sub, device, output_precision)
            routes[key] = loaded[sub]
        return cls(routes)

    def predictor_for(self, task: str, language: str) -> Predictor:
        for key in (f"{task}/{language}", f"{task}/*", task, "*"):
            if key in self.routes:
                return self.routes[key]
        for key, predictor in self.routes.items():
            if key.startswith(f"{task}/"):
                return predictor
        raise InputError(f"no model for task {task!r}")

    def answer(
        self, questions: list[tuple[str, str]], decode: DecodeConfig | None = None
    ) -> list[list[Hypothesis]]:
        return self._dispatch("rc", questions, lambda predictor, batch: predictor.answer(batch, decode))

    def reply(self, histories: list[list[str]], decode: DecodeConfig | None = None) -> list[list[Hypothesis]]:
        return self._dispatch("chat", histories, lambda predictor, batch: predictor.reply(batch, decode))

    def predictor_for_request(self, task: str, request: Any) -> Predictor:
        """The predictor that decodes one request: a (question, passage) pair for "rc", a history for "chat",
        routed by the language of its text (the question and the passage's start; the last message)."""
        text = request[0] + " " + request[1][:500] if task == "rc" else (request[-1] if request else "")
        return self.predictor_for(task, detect_language(text))

    def _dispatch(
        self, task: str, requests: list[Any], run: Callable[[Predictor, list[Any]], list[list[Hypothesis]]]
    ) -> list[list[Hypothesis]]:
        """Group requests by the predictor their task and language pick, run each group as one batch, and
        return the results in request order."""
        groups: dict[int, tuple[Predictor, list[int]]] = {}
        for index, request in enumerate(requests):
            predictor = self.predictor_for_request(task, request)
            groups.setdefault(id(predictor), (predictor, []))[1].append(index)
        results: list[list[Hypothesis]] = [[] for _ in requests]
        for predictor, indices in groups.values():
            for index, hyps in zip(indices, run(predictor, [requests[i] for i in indices])):
                results[index] = hyps
        return results

    def default_decode(self, task: str, language: str = "en") -> DecodeConfig:
        return self.predictor_for(task, language).default_decode

    def warm_up(self) -> None:
        for predictor in {id(p): p for p in self.routes.values()}.values():
            predictor.warm_up()
