"""Decoder benchmark: output tokens/s of batched beam search against one request at a time, and single-request
latency. Prints JSON.

    PYTHONPATH=. .venv/bin/python bench/beam.py [--checkpoint DIR] [--batch-sizes 1,8,32,64]
        [--output-precisions float32,bfloat16]

The default model has the size of OpenNMT-py's reference RNN (2-layer 256-hidden LSTM encoder and decoder,
256-dim embeddings, global attention) with copy on, randomly initialised (seeded) over the rc-en tokenizer;
`--checkpoint DIR` decodes with a trained one instead. Every request is decoded to exactly `--max-length` tokens
(min_length = max_length), so random weights give the same token count as any other model. Requests are chat
messages of 20-30 source tokens. Batch size 1 is the one-request-at-a-time loop over the same requests. Every
figure is measured once per output-layer precision (float32 is exact; bfloat16 is the S2S_OUTPUT_PRECISION option).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

WORDS = (
    "the river city market morning baker train station music evening friend garden window story "
    "mountain library coffee winter summer letter doctor teacher bridge island harbour forest "
    "question answer yesterday tomorrow because although quickly carefully always never"
).split()


def make_messages(tokenizer: Any, count: int, seed: int) -> list[str]:
    """`count` messages of 20-30 tokens each, reproducible from `seed`."""
    import random

    rng = random.Random(seed)
    messages = []
    while len(messages) < count:
        target = rng.randint(20, 30)
        words: list[str] = []
        while len(tokenizer.encode_ids(" ".join(words))) < target:
            words.append(rng.choice(WORDS))
        messages.append(" ".join(words))
    return messages


def build_predictor(
    checkpoint: str | None, tokenizer_path: str, seed: int, output_precision: str, copy: bool = True
) -> Any:
    import torch

    from model.config import ModelConfig
    from model.inference import Predictor
    from model.seq2seq import build_model
    from model.tokenizer import Tokenizer

    if checkpoint:
        return Predictor.from_checkpoint(checkpoint, "cpu", output_precision)
    tokenizer = Tokenizer(tokenizer_path)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        pad_id=tokenizer.pad_id,
        unk_id=tokenizer.unk_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        embed_size=256,
        hidden_size=256,
        encoder_layers=2,
        decoder_layers=2,
        self_attention=False,
        copy=copy,
        dropout=0.0,
        task="chat",
    )
    torch.manual_seed(seed)
    return Predictor(
        build_model(config),
        tokenizer,
        device=torch.device("cpu"),
        version="random-opennmt-size",
        output_precision=output_precision,
    )


def throughput(
    predictor: Any, messages: list[str], batch_size: int, decode: Any, repeats: int
) -> dict[str, Any]:
    """Decode all `messages` in batches of `batch_size`; the median of `repeats` runs."""
    runs, cpu_runs = [], []
    tokens = 0
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        tokens = 0
        for start in range(0, len(messages), batch_size):
            results = predictor.reply([[m] for m in messages[start : start + batch_size]], decode)
            tokens += sum(len(hyps[0].tokens) for hyps in results)
        runs.append(time.perf_counter() - started)
        cpu_runs.append(time.process_time() - cpu_started)
    seconds, cpu_seconds = statistics.median(runs), statistics.median(cpu_runs)
    # Tokens per CPU-second is what the decoder costs whatever else the machine runs; compare it across
    # loaded runs only with the same number of threads.
    return {
        "batch_size": batch_size,
        "requests": len(messages),
        "output_tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "tokens_per_cpu_s": round(tokens / cpu_seconds, 1),
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)


def latency(predictor: Any, messages: list[str], decode: Any) -> dict[str, float]:
    times, cpu_times = [], []
    for message in messages:
        started, cpu_started = time.perf_counter(), time.process_time()
        predictor.reply([[message]], decode)
        times.append((time.perf_counter() - started) * 1000)
        cpu_times.append((time.process_time() - cpu_started) * 1000)
    return {
        "requests": len(times),
        "p50_ms": percentile(times, 0.5),
        "p90_ms": percentile(times, 0.9),
        "cpu_p50_ms": percentile(cpu_times, 0.5),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="trained checkpoint dir; default: a random model")
    parser.add_argument(
        "--tokenizer",
        default=str(REPO_ROOT / "model" / "checkpoints" / "chat-en" / "tokenizer.model"),
        help="tokenizer of the random model",
    )
    parser.add_argument(
        "--batch-sizes", default="1,8,32,64", help="batch sizes to time (1 = the one-at-a-time loop)"
    )
    parser.add_argument("--requests", type=int, default=64, help="requests decoded at every batch size")
    parser.add_argument("--latency-requests", type=int, default=30, help="single requests timed for p50/p90")
    parser.add_argument("--beam-size", type=int, default=5, help="beam size")
    parser.add_argument("--max-length", type=int, default=30, help="output tokens per request (forced)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per batch size; the median is reported")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's default")
    parser.add_argument("--seed", type=int, default=1234, help="seed for the random model and the messages")
    parser.add_argument(
        "--no-copy",
        action="store_true",
        help="random model without the copy switch (as OpenNMT-py's default RNN model)",
    )
    parser.add_argument(
        "--output-precisions",
        default="float32,bfloat16",
        help="output-layer precisions to measure, comma-separated (float32, bfloat16, auto)",
    )
    args = parser.parse_args()

    import torch

    from model.config import DecodeConfig

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    decode = DecodeConfig(
        beam_size=args.beam_size, n_best=1, max_length=args.max_length, min_length=args.max_length
    )
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    report: dict[str, Any] = {
        "beam_size": args.beam_size,
        "max_length": args.max_length,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "runs": [],
    }
    for precision in args.output_precisions.split(","):
        predictor = build_predictor(
            args.checkpoint, args.tokenizer, args.seed, precision, copy=not args.no_copy
        )
        messages = make_messages(predictor.tokenizer, args.requests, args.seed)
        predictor.reply([[messages[0]]], decode)  # warm-up
        run: dict[str, Any] = {
            "model": predictor.version,
            "copy": predictor.config.copy,
            "output_precision": precision,
            "output_dtype": str(predictor.output_dtype).removeprefix("torch."),
        }
        run["latency"] = latency(predictor, messages[: args.latency_requests], decode)
        run["throughput"] = [throughput(predictor, messages, size, decode, args.repeats) for size in sizes]
        per_size = {row["batch_size"]: row["tokens_per_s"] for row in run["throughput"]}
        if 1 in per_size:
            run["speedup_over_loop"] = {size: round(tps / per_size[1], 2) for size, tps in per_size.items()}
        report["runs"].append(run)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
