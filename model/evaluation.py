"""Evaluation of a ModelSet on files: reading comprehension (EM/F1, by answer length) and chat
(perplexity, BLEU-1/2, distinct-1/2, top-reply share). Used by `s2s eval`, the benchmarks and model cards.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from .data import chat_example, iterate_batches
from .inference import ModelSet
from .language import detect_language
from .metrics import (
    answer_length_bucket,
    cmrc_exact_match,
    cmrc_f1,
    corpus_bleu,
    distinct_n,
    exact_match,
    f1,
    perplexity,
    top_reply_share,
)
from .readers import Dialog, dialogs_to_pairs, read_any, read_squad


def evaluate_rc(models: ModelSet, data_path: str | Path, *, limit: int | None = None, metric: str = "auto",
                batch_size: int = 64, decode_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """EM/F1 (SQuAD v1.1 or CMRC 2018 scoring) over a SQuAD-format file, with a breakdown by gold answer length."""
    examples, report = read_squad(data_path)
    examples = examples[:limit] if limit else examples
    if not examples:
        raise ValueError(f"{data_path}: no questions to evaluate")
    if metric == "auto":
        metric = "cmrc" if detect_language(examples[0].question + examples[0].passage[:200]) == "zh" else "squad"
    em_fn, f1_fn = (cmrc_exact_match, cmrc_f1) if metric == "cmrc" else (exact_match, f1)
    language = "zh" if metric == "cmrc" else "en"
    decode = models.default_decode("rc", language)
    if decode_overrides:
        decode = decode.replace(**decode_overrides)
    started = time.monotonic()
    predictions: dict[str, str] = {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        answers = models.answer([(e.question, e.passage) for e in chunk], decode)
        for example, hyps in zip(chunk, answers):
            predictions[example.id] = hyps[0].text if hyps else ""
    seconds = time.monotonic() - started
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    em_total = f1_total = 0.0
    substring = gold_substring = 0
    for example in examples:
        prediction = predictions[example.id]
        em, f = em_fn(prediction, example.answers), f1_fn(prediction, example.answers)
        em_total += em
        f1_total += f
        buckets[answer_length_bucket(example.answers[0])].append((em, f))
        substring += int(bool(prediction) and prediction in example.passage)
        gold_substring += int(example.answers[0] in example.passage)
    count = len(examples)
    return {
        "exact_match": round(100 * em_total / count, 2), "f1": round(100 * f1_total / count, 2), "count": count,
        "seconds": round(seconds, 2), "metric": metric, "skipped_records": report.skipped,
        "by_answer_length": {b: {"count": len(v), "exact_match": round(100 * sum(e for e, _ in v) / len(v), 2),
                                 "f1": round(100 * sum(x for _, x in v) / len(v), 2)}
                             for b, v in sorted(buckets.items())},
        "prediction_substring_share": round(substring / count, 4),
        "gold_substring_share": round(gold_substring / count, 4),
        "decode": decode.to_dict(),
        "predictions": predictions,
    }


def read_chat_pairs(data_path: str | Path, max_history: int, limit: int | None) -> list[tuple[list[str], str]]:
    records, _ = read_any(data_path)
    dialogs = [r for r in records if isinstance(r, Dialog)]
    pairs = [(list(h), reply) for h, reply in dialogs_to_pairs(dialogs, max_history)]
    return pairs[:limit] if limit else pairs


@torch.no_grad()
def teacher_forced_nll(models: ModelSet, pairs: list[tuple[list[str], str]], language: str,
                       batch_size: int) -> tuple[float, int]:
    predictor = models.predictor_for("chat", language)
    examples = [e for h, reply in pairs
                if (e := chat_example(predictor.tokenizer, predictor.config, h, reply)) is not None]
    nll, tokens = 0.0, 0
    for batch in iterate_batches(examples, batch_size=batch_size, pad_id=predictor.tokenizer.pad_id,
                                 shuffle=False, seed=0):
        out = predictor.model(batch.to(predictor.torch_device))
        nll += float(out.nll_sum)
        tokens += int(out.tokens)
    return nll, tokens


def evaluate_chat(models: ModelSet, data_path: str | Path, *, limit: int | None = None, batch_size: int = 64,
                  decode_overrides: dict[str, Any] | None = None, outputs_path: str | None = None,
                  ) -> dict[str, Any]:
    """Perplexity of the references, and BLEU-1/2, distinct-1/2 and top-reply share of the generated replies."""
    probe = models.predictor_for("chat", "en")
    pairs = read_chat_pairs(data_path, probe.config.max_history_turns, limit)
    if not pairs:
        raise ValueError(f"{data_path}: no (history, reply) pairs")
    language = detect_language(" ".join(reply for _, reply in pairs[:50]))
    decode = models.default_decode("chat", language)
    if decode_overrides:
        decode = decode.replace(**decode_overrides)
    nll, tokens = teacher_forced_nll(models, pairs, language, batch_size)
    started = time.monotonic()
    replies: list[str] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        replies.extend(h[0].text if h else "" for h in models.reply([h for h, _ in chunk], decode))
    seconds = time.monotonic() - started
    references = [reply for _, reply in pairs]
    top, share = top_reply_share(replies)
    if outputs_path:
        with open(outputs_path, "w", encoding="utf-8") as handle:
            for (history, reference), reply in zip(pairs, replies):
                handle.write(json.dumps({"history": history, "reference": reference, "reply": reply},
                                        ensure_ascii=False) + "\n")
    return {
        "count": len(pairs), "language": language, "perplexity": round(perplexity(nll, tokens), 3),
        "bleu1": round(corpus_bleu(replies, references, 1), 2), "bleu2": round(corpus_bleu(replies, references, 2), 2),
        "distinct1": round(distinct_n(replies, 1), 4), "distinct2": round(distinct_n(replies, 2), 4),
        "top_reply": top, "top_reply_share": round(share, 4), "decode_seconds": round(seconds, 2),
        "decode": decode.to_dict(),
    }


