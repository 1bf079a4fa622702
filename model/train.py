"""Training loop: `s2s train` (or `python -m model.train`) -> checkpoints with config and tokenizer.

Seeded; AdamW with linear warm-up then cosine decay; gradient clipping; label smoothing; periodic validation
(best checkpoint by validation loss, last checkpoint with optimizer state for --resume); bf16 autocast on CUDA;
a progress bar with loss, tokens/s and ETA; --max-minutes stops cleanly and saves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .checkpoint import TOKENIZER_FILE, load_checkpoint, load_train_state, save_checkpoint, save_train_state
from .config import PRESETS, DecodeConfig, ModelConfig, TrainConfig
from .data import build_examples, iterate_batches, read_records, record_texts
from .device import autocast, resolve_device
from .seq2seq import Seq2Seq, build_model
from .span.train import add_reader_arguments, run_reader_training
from .tokenizer import Tokenizer, train_tokenizer

log = logging.getLogger("s2s.train")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="small", help="model and training preset"
    )
    parser.add_argument(
        "--train",
        nargs="+",
        required=True,
        help="training files (SQuAD/CMRC JSON, DailyDialog, LCCC, ChatterBot YAML, JSONL)",
    )
    parser.add_argument("--valid", nargs="+", default=[], help="validation files (same formats)")
    parser.add_argument(
        "--out", required=True, help="checkpoint directory (model.pt, last.pt, tokenizer.model)"
    )
    parser.add_argument(
        "--tokenizer",
        help="existing tokenizer.model to use (default: out/tokenizer.model, else train one on --train)",
    )
    parser.add_argument(
        "--vocab-size", type=int, default=None, help="vocabulary size when training a tokenizer"
    )
    parser.add_argument("--task", choices=["rc", "chat", "any"], default="any", help="what the model is for")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--max-minutes", type=float, help="stop (and save) after this many minutes")
    parser.add_argument("--batch-size", type=int, help="examples per batch")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate")
    parser.add_argument("--eval-every", type=int, help="validate every N steps")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--attention", choices=["dot", "general", "additive"], help="attention scoring")
    parser.add_argument("--hidden-size", type=int, help="encoder output / decoder state size")
    parser.add_argument("--embed-size", type=int, help="embedding size")
    parser.add_argument("--encoder-layers", type=int, help="bi-LSTM encoder layers")
    parser.add_argument("--max-source-len", type=int, help="source budget in tokens")
    parser.add_argument("--no-copy", action="store_true", help="disable the copy mechanism")
    parser.add_argument(
        "--no-input-feeding",
        action="store_true",
        help="decoder without input feeding: teacher forcing in one LSTM call (faster training)",
    )
    parser.add_argument(
        "--adaptive-softmax",
        metavar="CUTOFFS",
        type=lambda v: tuple(int(c) for c in v.split(",")),
        help="adaptive softmax cluster cutoffs, e.g. 1000,4000 (needs --no-copy)",
    )
    parser.add_argument("--coverage", action="store_true", help="enable coverage (and its loss)")
    parser.add_argument("--label-smoothing", type=float, help="label smoothing epsilon")
    parser.add_argument(
        "--word-dropout",
        type=float,
        help="share of the decoder's input words replaced by <unk> in training, so that replies "
        "depend on the source (0 = off)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (one is fastest on 2 cores)"
    )
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    parser.add_argument("--resume", action="store_true", help="continue from out/last.pt")
    parser.add_argument(
        "--init-from",
        help="start from this checkpoint's weights, config and tokenizer "
        "(fine-tuning; the optimizer starts fresh)",
    )
    parser.add_argument("--dry-run", action="store_true", help="one batch, one step, save, stop")
    parser.add_argument(
        "--decode",
        type=json.loads,
        default=None,
        help='default decoding settings stored in the checkpoint, JSON, e.g. {"beam_size": 5}',
    )
    parser.add_argument(
        "--arch",
        choices=["seq2seq", "reader"],
        default="seq2seq",
        help="seq2seq: the attention encoder-decoder (chat, abstractive RC); reader: the "
        "boundary-pointer span reader (extractive RC, SQuAD/CMRC JSON)",
    )
    add_reader_arguments(parser)


def model_config_from_args(args: argparse.Namespace, vocab_size: int, special: dict[str, int]) -> ModelConfig:
    """The preset's network with the flags' changes (not used with --init-from: the checkpoint's network is)."""
    model_overrides = PRESETS[args.preset][0]
    model_values: dict[str, Any] = {**model_overrides, **special, "vocab_size": vocab_size}
    if args.task != "any" or "task" not in model_values:
        model_values["task"] = args.task
    for flag, field_name in (
        ("attention", "attention"),
        ("hidden_size", "hidden_size"),
        ("embed_size", "embed_size"),
        ("encoder_layers", "encoder_layers"),
        ("max_source_len", "max_source_len"),
    ):
        if getattr(args, flag) is not None:
            model_values[field_name] = getattr(args, flag)
    if args.no_copy:
        model_values["copy"] = False
    if args.coverage:
        model_values["coverage"] = True
    if args.no_input_feeding:
        model_values["input_feeding"] = False
    if args.adaptive_softmax:
        model_values["adaptive_cutoffs"] = args.adaptive_softmax
    return ModelConfig(**model_values)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    train_values: dict[str, Any] = dict(PRESETS[args.preset][1])
    train_values["amp"] = bool(args.amp)
    for flag in (
        "max_steps",
        "max_minutes",
        "batch_size",
        "learning_rate",
        "eval_every",
        "seed",
        "label_smoothing",
        "word_dropout",
    ):
        if getattr(args, flag) is not None:
            train_values[flag] = getattr(args, flag)
    if args.coverage:
        train_values.setdefault("coverage_weight", 1.0)
    return TrainConfig(**train_values)


def prepare_tokenizer(args: argparse.Namespace, out: Path, train_records: Sequence[Any]) -> Tokenizer:
    target = out / TOKENIZER_FILE
    if target.exists():
        return Tokenizer(target)
    if args.tokenizer:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.tokenizer, target)
        return Tokenizer(target)
    vocab_size = args.vocab_size or (400 if args.preset == "tiny" else 16000)
    log.info("training a %d-piece tokenizer on the training data", vocab_size)
    return Tokenizer(train_tokenizer(record_texts(train_records), out, vocab_size=vocab_size))


def learning_rate_at(step: int, config: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to a tenth; the decay follows steps or the --max-minutes clock,
    whichever is further along, so a time-limited run still ends at a low learning rate."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(
        1.0, max(time_fraction, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    )
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate_loss(
    model: Seq2Seq, examples: Sequence[Any], config: TrainConfig, device: torch.device, pad_id: int
) -> dict[str, float]:
    model.eval()
    nll, tokens = 0.0, 0
    for index, batch in enumerate(
        iterate_batches(examples, batch_size=config.batch_size, pad_id=pad_id, shuffle=False, seed=0)
    ):
        if index >= config.eval_batches:
            break
        with autocast(device, config.amp):
            out = model(batch.to(device))
        nll += float(out.nll_sum)
        tokens += int(out.tokens)
    model.train()
    mean = nll / max(1, tokens)
    return {"valid_nll": mean, "valid_ppl": math.exp(min(mean, 50.0)), "valid_tokens": tokens}


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(max(1, getattr(args, "threads", 1)))
    if getattr(args, "arch", "seq2seq") == "reader":
        return run_reader_training(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_records, reports = read_records(args.train)
    for path, report in reports:
        log.info("%s: read %d, skipped %d %s", path, report.read, report.skipped, report.reasons[:3])
    valid_records, _ = read_records(args.valid) if args.valid else ([], [])
    initial = load_checkpoint(args.init_from) if args.init_from else None
    if initial is not None and not (out / TOKENIZER_FILE).exists():
        shutil.copyfile(initial.tokenizer.path, out / TOKENIZER_FILE)
    tokenizer = prepare_tokenizer(args, out, train_records)
    special = {
        "pad_id": tokenizer.pad_id,
        "unk_id": tokenizer.unk_id,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id,
    }
    # --init-from continues the checkpoint's network: the preset's (whose adaptive cutoffs may not even fit
    # this tokenizer) is not built
    model_config = (
        initial.config if initial is not None else model_config_from_args(args, tokenizer.vocab_size, special)
    )
    train_config = train_config_from_args(args)
    seed_everything(train_config.seed)
    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for fp32 training on CUDA
    torch.backends.cudnn.allow_tf32 = True
    train_examples, build_report = build_examples(train_records, tokenizer, model_config)
    if not train_examples:
        raise SystemExit("no usable training examples in " + ", ".join(args.train))
    valid_examples = build_examples(valid_records, tokenizer, model_config)[0] if valid_records else []
    if not valid_examples:  # hold out a slice of the training data
        cut = max(1, len(train_examples) // 50)
        shuffled = random.Random(train_config.seed).sample(train_examples, len(train_examples))
        valid_examples, train_examples = shuffled[:cut], shuffled[cut:] or shuffled
    log.info(
        "examples: train %d, valid %d, dropped %d %s",
        len(train_examples),
        len(valid_examples),
        build_report.dropped,
        build_report.reasons,
    )

    model = build_model(model_config)
    if initial is not None:
        model.load_state_dict(initial.model.state_dict())
    model = model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    step, epoch, best = 0, 0, float("inf")
    state = load_train_state(out) if args.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, best = int(state["step"]), int(state["epoch"]), float(state["best"])
        torch.set_rng_state(state["rng"])
        log.info("resumed from step %d", step)
    decode = DecodeConfig(**(args.decode or {}))
    meta = {
        "train_files": [str(p) for p in args.train],
        "preset": args.preset,
        "train_config": {k: v for k, v in dataclasses.asdict(train_config).items() if k != "extra"},
    }

    def save_all(reason: str) -> None:
        save_train_state(
            out,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "epoch": epoch,
                "best": best,
                "rng": torch.get_rng_state(),
            },
        )
        if not (out / "model.pt").exists():
            save_checkpoint(out, model=model, tokenizer=tokenizer, step=step, decode=decode, meta=meta)
        log.info("saved at step %d (%s)", step, reason)

    started = time.monotonic()
    deadline = started + 60 * train_config.max_minutes if train_config.max_minutes else None
    max_steps = 1 if args.dry_run else train_config.max_steps
    model.train()
    progress = tqdm(
        total=max_steps, initial=step, desc="train", dynamic_ncols=True, disable=None, file=sys.stderr
    )
    tokens_seen, window_start, last_loss = 0, time.monotonic(), float("nan")
    history: list[dict[str, float]] = []
    stop = step >= max_steps
    while not stop:
        for batch in iterate_batches(
            train_examples,
            batch_size=train_config.batch_size,
            pad_id=tokenizer.pad_id,
            shuffle=True,
            seed=train_config.seed + epoch,
        ):
            time_fraction = 0.0 if deadline is None else (time.monotonic() - started) / (deadline - started)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, train_config, time_fraction)
            with autocast(device, train_config.amp):
                out_step = model(
                    batch.to(device),
                    label_smoothing=train_config.label_smoothing,
                    coverage_weight=train_config.coverage_weight,
                    word_dropout=train_config.word_dropout,
                )
            optimizer.zero_grad(set_to_none=True)
            out_step.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
            optimizer.step()
            step += 1
            tokens_seen += int(batch.src_lengths.sum())
            last_loss = out_step.loss.item()
            progress.update(1)
            if step % train_config.log_every == 0 or args.dry_run:
                elapsed = time.monotonic() - window_start
                progress.set_postfix(
                    loss=f"{last_loss:.3f}", tok_s=f"{tokens_seen / max(elapsed, 1e-9):.0f}", epoch=epoch
                )
                tokens_seen, window_start = 0, time.monotonic()
            timed_out = deadline is not None and time.monotonic() >= deadline
            if step % train_config.eval_every == 0 or step >= max_steps or timed_out:
                metrics = {
                    "step": step,
                    "train_loss": last_loss,
                    **evaluate_loss(model, valid_examples, train_config, device, tokenizer.pad_id),
                }
                history.append(metrics)
                log.info("eval %s", json.dumps(metrics))
                if metrics["valid_nll"] < best:
                    best = metrics["valid_nll"]
                    save_checkpoint(
                        out,
                        model=model,
                        tokenizer=tokenizer,
                        step=step,
                        decode=decode,
                        meta={**meta, "valid": metrics},
                    )
                save_all("eval")
            if step >= max_steps or timed_out:
                stop = True
                break
        else:
            epoch += 1
    progress.close()
    save_all("end")
    summary = {
        "out": str(out),
        "step": step,
        "best_valid_nll": best,
        "minutes": (time.monotonic() - started) / 60,
        "history": history[-5:],
    }
    (out / "train_log.json").write_text(json.dumps({"history": history, "summary": summary}, indent=1))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__)
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(json.dumps(run_training(args)))  # noqa: T201 - entry point output
    return 0


if __name__ == "__main__":
    sys.exit(main())
