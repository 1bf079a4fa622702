"""`s2s tokenizer train`, `s2s train`, `s2s generate`, `s2s eval rc|chat`: the model's command line.

Heavy imports (torch) happen inside the handlers. Without --checkpoint, generate and eval use the shipped
models (settings S2S_CHECKPOINT), choosing by task and by the language of each input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tok = subparsers.add_parser("tokenizer", help="train the SentencePiece tokenizer")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True)
    tok_train = tok_sub.add_parser("train", help="train a shared English/Chinese unigram tokenizer")
    tok_train.add_argument("--out", required=True, help="output directory (tokenizer.model)")
    tok_train.add_argument("--vocab-size", type=int, required=True, help="number of pieces")
    tok_train.add_argument("inputs", nargs="+", help="corpus files in any supported format")
    tok_train.set_defaults(handler=tokenizer_train)

    from model.train import add_train_arguments  # light: argparse only, torch is imported lazily below

    train = subparsers.add_parser("train", help="train a Seq2Seq model")
    add_train_arguments(train)
    train.set_defaults(handler=train_command)

    gen = subparsers.add_parser("generate", help="decode a JSONL file of requests")
    gen.add_argument("--checkpoint", help="checkpoint directory (default: the shipped models)")
    gen.add_argument("--input", required=True, help='JSONL: {"source"} / {"question","passage"} / {"dialog"}')
    gen.add_argument("--output", help="write JSONL here instead of stdout")
    add_decode_arguments(gen)
    gen.set_defaults(handler=generate_command)

    ev = subparsers.add_parser("eval", help="evaluate a model")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)
    rc = ev_sub.add_parser("rc", help="reading comprehension: SQuAD (EN) or CMRC 2018 (ZH) EM/F1")
    rc.add_argument("--checkpoint", help="checkpoint directory (default: the shipped models)")
    rc.add_argument("--data", required=True, help="SQuAD-format JSON")
    rc.add_argument("--limit", type=int, help="first N questions only")
    rc.add_argument("--predictions", help="write {question_id: answer} JSON here")
    rc.add_argument(
        "--metric", choices=["auto", "squad", "cmrc"], default="auto", help="scoring (auto: by language)"
    )
    rc.add_argument("--batch-size", type=int, default=64, help="questions per decoding batch")
    rc.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default); 1 on a machine that is busy with other work",
    )
    add_decode_arguments(rc)
    rc.set_defaults(handler=eval_rc_command)
    chat = ev_sub.add_parser(
        "chat", help="chat: perplexity, BLEU-1/2, distinct-1/2, top-reply share, quality panel"
    )
    chat.add_argument("--checkpoint", help="checkpoint directory (default: the shipped models)")
    chat.add_argument("--data", required=True, help="dialog file (DailyDialog, LCCC, ChatterBot, JSONL)")
    chat.add_argument("--limit", type=int, help="first N (history, reply) pairs only")
    chat.add_argument("--batch-size", type=int, default=64, help="pairs per decoding batch")
    chat.add_argument("--outputs", help="write the generated replies (JSONL) here")
    chat.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    chat.add_argument(
        "--panel-train",
        nargs="+",
        default=[],
        metavar="FILE",
        help="training dialog files: add the quality panel (trigram LM, word vectors and common "
        "replies built from them), for the replies and for the references",
    )
    chat.add_argument(
        "--drop-seen-pairs",
        action="store_true",
        help="leave out evaluation pairs whose (history, reply) occurs verbatim in --panel-train",
    )
    chat.add_argument(
        "--panel-seed", type=int, default=0, help="seed of the random training replies (relevance)"
    )
    add_decode_arguments(chat)
    chat.set_defaults(handler=eval_chat_command)


def add_decode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beam-size", type=int, help="beam size (1 = greedy)")
    parser.add_argument("--n-best", type=int, help="hypotheses returned per input")
    parser.add_argument("--max-length", type=int, help="maximum output tokens")
    parser.add_argument("--min-length", type=int, help="minimum output tokens")
    parser.add_argument("--length-penalty", type=float, help="GNMT alpha")
    parser.add_argument("--length-normalize", action="store_true", default=None, help="rank by mean log-prob")
    parser.add_argument("--no-repeat-ngram-size", type=int, help="block repeated n-grams of this size")
    parser.add_argument(
        "--mmi-weight", type=float, help="chat: anti-LM reranking weight of the n-best (0 = off)"
    )
    parser.add_argument(
        "--sample-count",
        type=int,
        help="chat: also draw this many replies by nucleus sampling, reranked with the beam (0 = off)",
    )
    parser.add_argument("--top-p", type=float, help="chat sampling: nucleus probability mass")
    parser.add_argument(
        "--top-k", type=int, help="chat sampling: nucleus within the K most likely tokens (0 = all)"
    )
    parser.add_argument("--temperature", type=float, help="chat sampling: divides the log-probs")
    parser.add_argument(
        "--fluency-margin",
        type=float,
        help="chat reranking: drop candidates whose mean log-prob per token is more than this many "
        "nats below the best candidate's",
    )
    parser.add_argument(
        "--abstractive", action="store_true", help="RC: do not constrain answers to the passage"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    parser.add_argument(
        "--output-precision",
        choices=["auto", "float32", "bfloat16"],
        default=None,
        help="dtype of the output layer at inference (default: S2S_OUTPUT_PRECISION)",
    )


def decode_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from model.config import REQUESTABLE

    names = sorted(REQUESTABLE)  # the settings a request may change, each with its flag above
    changes = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if getattr(args, "abstractive", False):
        changes["extractive"] = False
    if "beam_size" in changes and "n_best" not in changes:
        changes["n_best"] = 1
    return changes


def load_models(args: argparse.Namespace) -> Any:
    from model.inference import ModelSet
    from settings import get_settings

    settings = get_settings()
    precision = getattr(args, "output_precision", None) or settings.output_precision
    return ModelSet.load(args.checkpoint or settings.checkpoint_dir, args.device, precision)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)


def tokenizer_train(args: argparse.Namespace) -> int:
    from model.data import read_records, record_texts
    from model.tokenizer import Tokenizer, train_tokenizer

    _setup_logging()
    records, reports = read_records(args.inputs)
    for name, report in reports:
        logging.info("%s: read %d, skipped %d", name, report.read, report.skipped)
    path = train_tokenizer(record_texts(records), args.out, vocab_size=args.vocab_size)
    tokenizer = Tokenizer(path)
    print(
        json.dumps({"tokenizer": str(path), "vocab_size": tokenizer.vocab_size, "sha256": tokenizer.checksum})
    )
    return 0


def train_command(args: argparse.Namespace) -> int:
    from model.train import run_training

    _setup_logging()
    print(json.dumps(run_training(args)))
    return 0


def generate_command(args: argparse.Namespace) -> int:
    """Decode every line of a JSONL file, batched by task; bad lines are reported on stderr and skipped."""
    models = load_models(args)
    requests: list[tuple[int, str, Any]] = []  # (line number, task, request)
    with open(args.input, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                requests.append((number, *_generation_request(json.loads(line))))
            except (json.JSONDecodeError, ValueError) as error:
                print(f"line {number}: {error}", file=sys.stderr)
    overrides = decode_overrides(args)
    results: dict[int, Any] = {}
    for task in ("rc", "chat"):
        batch = [(number, request) for number, kind, request in requests if kind == task]
        if not batch:
            continue
        decode = models.default_decode(task).replace(**overrides) if overrides else None
        run = models.answer if task == "rc" else models.reply
        for (number, _), hyps in zip(batch, run([request for _, request in batch], decode)):
            results[number] = hyps
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for number, task, request in requests:
            hyps = results[number]
            best = hyps[0] if hyps else None
            out.write(
                json.dumps(
                    {
                        "source": request[0] if task == "rc" else request[-1],
                        "output": best.text if best else "",
                        "score": best.score if best else None,
                        "nbest": [{"output": h.text, "score": h.score} for h in hyps],
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _generation_request(row: Any) -> tuple[str, Any]:
    """("rc", (question, passage)) or ("chat", history) from one JSONL object; ValueError says what is wrong."""
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    if "question" in row:
        question, passage = row.get("question"), row.get("passage")
        if (
            not isinstance(question, str)
            or not isinstance(passage, str)
            or not question.strip()
            or not passage.strip()
        ):
            raise ValueError('"question" and "passage" must be non-empty strings')
        return "rc", (question, passage)
    turns = row.get("dialog", [row.get("source")] if "source" in row else None)
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise ValueError('expected {"source": text}, {"dialog": [turns]} or {"question", "passage"}')
    return "chat", turns


def eval_rc_command(args: argparse.Namespace) -> int:
    import torch

    from model.evaluation import evaluate_rc

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    models = load_models(args)
    result = evaluate_rc(
        models,
        args.data,
        limit=args.limit,
        metric=args.metric,
        batch_size=args.batch_size,
        decode_overrides=decode_overrides(args),
    )
    if args.predictions:
        Path(args.predictions).write_text(
            json.dumps(result.pop("predictions"), ensure_ascii=False), encoding="utf-8"
        )
    else:
        result.pop("predictions")
    print(json.dumps(result, ensure_ascii=False))
    return 0


def eval_chat_command(args: argparse.Namespace) -> int:
    import torch

    from model.evaluation import evaluate_chat

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    models = load_models(args)
    started = time.monotonic()
    result = evaluate_chat(
        models,
        args.data,
        limit=args.limit,
        batch_size=args.batch_size,
        decode_overrides=decode_overrides(args),
        outputs_path=args.outputs,
        panel_train=args.panel_train,
        drop_seen=args.drop_seen_pairs,
        panel_seed=args.panel_seed,
    )
    result["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(result, ensure_ascii=False))
    return 0
