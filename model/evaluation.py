"""Evaluation of a ModelSet on files: reading comprehension (EM/F1, by answer length) and chat
(perplexity, BLEU-1/2, distinct-1/2, top-reply share, and the quality panel of model/chat_quality built from
the training files it is given). Used by `s2s eval`, the benchmarks and model cards.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .chat_quality.panel import TrainingProfile, chat_panel
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
    question_word,
    top_reply_share,
)
from .readers import Dialog, dialogs_to_pairs, read_any, read_squad


def evaluate_rc(
    models: ModelSet,
    data_path: str | Path,
    *,
    limit: int | None = None,
    metric: str = "auto",
    batch_size: int = 64,
    decode_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """EM/F1 (SQuAD v1.1 or CMRC 2018 scoring) over a SQuAD-format file, with a breakdown by gold answer length."""
    examples, report = read_squad(data_path)
    examples = examples[:limit] if limit else examples
    if not examples:
        raise ValueError(f"{data_path}: no questions to evaluate")
    if metric == "auto":
        metric = (
            "cmrc" if detect_language(examples[0].question + examples[0].passage[:200]) == "zh" else "squad"
        )
    em_fn, f1_fn = (cmrc_exact_match, cmrc_f1) if metric == "cmrc" else (exact_match, f1)
    language = "zh" if metric == "cmrc" else "en"
    decode = models.default_decode("rc", language)
    if decode_overrides:
        decode = decode.replace(**decode_overrides)
    started = time.monotonic()
    predictions: dict[str, str] = {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        answers = models.answer([(e.question, e.passage) for e in chunk], decode)
        for example, hyps in zip(chunk, answers):
            predictions[example.id] = hyps[0].text if hyps else ""
    seconds = time.monotonic() - started
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    by_word: dict[str, list[tuple[float, float]]] = defaultdict(list)
    em_total = f1_total = 0.0
    substring = gold_substring = 0
    for example in examples:
        prediction = predictions[example.id]
        em, f = em_fn(prediction, example.answers), f1_fn(prediction, example.answers)
        em_total += em
        f1_total += f
        buckets[answer_length_bucket(example.answers[0])].append((em, f))
        by_word[question_word(example.question)].append((em, f))
        substring += int(bool(prediction) and prediction in example.passage)
        gold_substring += int(example.answers[0] in example.passage)
    count = len(examples)
    return {
        "exact_match": round(100 * em_total / count, 2),
        "f1": round(100 * f1_total / count, 2),
        "count": count,
        "seconds": round(seconds, 2),
        "metric": metric,
        "skipped_records": report.skipped,
        "by_answer_length": _breakdown(buckets),
        "by_question_word": _breakdown(by_word),
        "prediction_substring_share": round(substring / count, 4),
        "gold_substring_share": round(gold_substring / count, 4),
        "decode": decode.to_dict(),
        "predictions": predictions,
    }


def _breakdown(groups: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "count": len(v),
            "exact_match": round(100 * sum(e for e, _ in v) / len(v), 2),
            "f1": round(100 * sum(x for _, x in v) / len(v), 2),
        }
        for name, v in sorted(groups.items())
    }


def read_chat_pairs(
    data_path: str | Path, max_history: int, limit: int | None
) -> list[tuple[list[str], str]]:
    records, _ = read_any(data_path)
    dialogs = [r for r in records if isinstance(r, Dialog)]
    pairs = [(list(h), reply) for h, reply in dialogs_to_pairs(dialogs, max_history)]
    return pairs[:limit] if limit else pairs


@torch.no_grad()
def teacher_forced_nll(
    models: ModelSet, pairs: list[tuple[list[str], str]], language: str, batch_size: int
) -> tuple[float, int]:
    predictor = models.predictor_for("chat", language)
    examples = [
        e
        for h, reply in pairs
        if (e := chat_example(predictor.tokenizer, predictor.config, h, reply)) is not None
    ]
    nll, tokens = 0.0, 0
    for batch in iterate_batches(
        examples, batch_size=batch_size, pad_id=predictor.tokenizer.pad_id, shuffle=False, seed=0
    ):
        out = predictor.model(batch.to(predictor.torch_device))
        nll += float(out.nll_sum)
        tokens += int(out.tokens)
    return nll, tokens


def with_other_contexts(pairs: list[tuple[list[str], str]]) -> list[tuple[list[str], str]]:
    """Each reference reply after the conversation of the pair half the list away: the same replies and the
    same contexts, mismatched (deterministic; a single pair keeps its own)."""
    half = len(pairs) // 2
    return [(pairs[(index + half) % len(pairs)][0], reply) for index, (_, reply) in enumerate(pairs)]


def read_dialogs(paths: Sequence[str | Path]) -> list[Dialog]:
    """Every dialog in the given files (any format model/readers.py reads)."""
    return [r for path in paths for r in read_any(path)[0] if isinstance(r, Dialog)]


def drop_seen_pairs(
    pairs: list[tuple[list[str], str]], dialogs: Sequence[Dialog], max_history: int
) -> tuple[list[tuple[list[str], str]], int]:
    """The pairs whose (history, reply) is not verbatim a training pair of `dialogs` (same history window),
    and how many were dropped. With a 4-turn history, DailyDialog validation repeats 818 of its 7,069 pairs from train."""
    seen = set(dialogs_to_pairs(dialogs, max_history))
    kept = [(history, reply) for history, reply in pairs if (tuple(history), reply) not in seen]
    return kept, len(pairs) - len(kept)


def chat_quality_panel(
    pairs: Sequence[tuple[list[str], str]],
    replies: Sequence[str],
    train_dialogs: Sequence[Dialog],
    language: str,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """The panel (model/chat_quality/panel.py) for `replies` and for the references of `pairs`, with the LM
    and vectors built from the training dialogs in `language`."""
    dialogs = [d.turns for d in train_dialogs if detect_language(" ".join(d.turns)) == language]
    if not dialogs:
        raise ValueError(f"no {language} dialogs in the panel's training files")
    profile = TrainingProfile.build(dialogs, seed=seed)
    return chat_panel(
        [history[-1] for history, _ in pairs], replies, [reply for _, reply in pairs], profile, seed=seed
    )


def evaluate_chat(
    models: ModelSet,
    data_path: str | Path,
    *,
    limit: int | None = None,
    batch_size: int = 64,
    decode_overrides: dict[str, Any] | None = None,
    outputs_path: str | None = None,
    panel_train: Sequence[str | Path] = (),
    drop_seen: bool = False,
    panel_seed: int = 0,
) -> dict[str, Any]:
    """Perplexity of the references, and BLEU-1/2, distinct-1/2 and top-reply share of the generated replies;
    with `panel_train` (training files) also the quality panel, and with `drop_seen` the evaluation pairs
    seen verbatim in those files are left out first (then `limit` applies)."""
    if drop_seen and not panel_train:
        raise ValueError("dropping seen pairs needs the training files (panel_train)")
    probe = models.predictor_for("chat", "en")
    pairs = read_chat_pairs(data_path, probe.config.max_history_turns, None)
    train_dialogs = read_dialogs(panel_train)
    dropped = 0
    if drop_seen:
        pairs, dropped = drop_seen_pairs(pairs, train_dialogs, probe.config.max_history_turns)
    pairs = pairs[:limit] if limit else pairs
    if not pairs:
        raise ValueError(f"{data_path}: no (history, reply) pairs")
    language = detect_language(" ".join(reply for _, reply in pairs[:50]))
    decode = models.default_decode("chat", language)
    if decode_overrides:
        decode = decode.replace(**decode_overrides)
    nll, tokens = teacher_forced_nll(models, pairs, language, batch_size)
    other_nll, other_tokens = teacher_forced_nll(models, with_other_contexts(pairs), language, batch_size)
    started = time.monotonic()
    replies: list[str] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        replies.extend(h[0].text if h else "" for h in models.reply([h for h, _ in chunk], decode))
    seconds = time.monotonic() - started
    references = [reply for _, reply in pairs]
    top, share = top_reply_share(replies)
    if outputs_path:
        with open(outputs_path, "w", encoding="utf-8") as handle:
            for (history, reference), reply in zip(pairs, replies):
                handle.write(
                    json.dumps(
                        {"history": history, "reference": reference, "reply": reply}, ensure_ascii=False
                    )
                    + "\n"
                )
    result: dict[str, Any] = {
        "count": len(pairs),
        "language": language,
        "perplexity": round(perplexity(nll, tokens), 3),
        "perplexity_other_context": round(perplexity(other_nll, other_tokens), 3),
        # how much the conversation helps the model predict the reference: 1.0 = it ignores what it reads
        "context_gain": round(perplexity(other_nll, other_tokens) / perplexity(nll, tokens), 4),
        "bleu1": round(corpus_bleu(replies, references, 1), 2),
        "bleu2": round(corpus_bleu(replies, references, 2), 2),
        "distinct1": round(distinct_n(replies, 1), 4),
        "distinct2": round(distinct_n(replies, 2), 4),
        "top_reply": top,
        "top_reply_share": round(share, 4),
        "decode_seconds": round(seconds, 2),
        "decode": decode.to_dict(),
    }
    if drop_seen:
        result["dropped_seen_pairs"] = dropped
    if panel_train:
        panel = chat_quality_panel(pairs, replies, train_dialogs, language, seed=panel_seed)
        # Reference perplexity and BLEU belong to the model's side only: people score 100 BLEU against themselves.
        panel["reply"].update({key: result[key] for key in ("perplexity", "context_gain", "bleu1", "bleu2")})
        result["panel_train"] = [str(path) for path in panel_train]
        result["panel"] = panel
    return result
