"""Chat training speed on the CPU: training examples/s of one optimizer step for each training-path change,
measured on the same length-bucketed DailyDialog batches, one after another. Prints JSON.

Variants (each adds one change to the one before it):
  packed          the stepwise decoder (input feeding, copy, tied 16k-style output) with packed encoder LSTMs
  unpacked        the same, encoder LSTMs unpacked (the training default on CPU)
  no_input_feed   the decoder without input feeding: teacher forcing in one LSTM call, no Python step loop
  no_copy         and no copy switch (the tied output layer alone)
  adaptive        and an adaptive softmax (cutoffs --cutoffs) instead of the tied output layer

PYTHONPATH=. .venv/bin/python bench/chat_training.py --tokenizer runs/chat-en/tokenizer.model
    [--data FILE] [--steps 12] [--batch-size 64] [--embed-size 128] [--hidden-size 256] [--encoder-layers 1]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "dailydialog" / "train" / "dialogues_train.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="tokenizer.model")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--embed-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--encoder-layers", type=int, default=1)
    parser.add_argument("--max-source-len", type=int, default=96)
    parser.add_argument("--cutoffs", default="1000,4000")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="packed,unpacked,no_input_feed,no_copy,adaptive")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    import torch

    from model.config import ModelConfig
    from model.data import build_examples, iterate_batches, read_records
    from model.encoder import Encoder
    from model.seq2seq import build_model
    from model.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    tokenizer = Tokenizer(args.tokenizer)
    records, _ = read_records([args.data])
    base = dict(
        vocab_size=tokenizer.vocab_size,
        pad_id=tokenizer.pad_id,
        unk_id=tokenizer.unk_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        embed_size=args.embed_size,
        hidden_size=args.hidden_size,
        encoder_layers=args.encoder_layers,
        self_attention=False,
        max_source_len=args.max_source_len,
        dropout=0.1,
        task="chat",
    )
    examples, _ = build_examples(records, tokenizer, ModelConfig(**base))
    examples = random.Random(0).sample(examples, min(len(examples), args.batch_size * 200))
    batches = list(
        iterate_batches(examples, batch_size=args.batch_size, pad_id=tokenizer.pad_id, shuffle=True, seed=0)
    )[: args.steps + 2]
    cutoffs = tuple(int(c) for c in args.cutoffs.split(","))
    changes: dict[str, dict[str, Any]] = {
        "packed": {},
        "unpacked": {},
        "no_input_feed": {"input_feeding": False},
        "no_copy": {"input_feeding": False, "copy": False},
        "adaptive": {"input_feeding": False, "copy": False, "adaptive_cutoffs": cutoffs},
    }
    unpacked = Encoder._run_unpacked
    results: dict[str, Any] = {}
    for name in args.variants.split(","):
        torch.manual_seed(0)
        model = build_model(ModelConfig(**{**base, **changes[name]})).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        # "packed" routes training through pack_padded_sequence, as before the unpacked path existed
        Encoder._run_unpacked = Encoder._run_packed if name == "packed" else unpacked  # type: ignore[method-assign]
        elapsed, rows, tokens = 0.0, 0, 0
        for index, batch in enumerate(batches):
            started = time.process_time()
            out = model(batch, label_smoothing=0.0)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            if index >= 2:  # the first two steps warm the allocator up
                elapsed += time.process_time() - started
                rows += batch.src_ids.size(0)
                tokens += int(out.tokens)
        results[name] = {
            "examples_per_s": round(rows / elapsed, 1),
            "target_tokens_per_s": round(tokens / elapsed),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    Encoder._run_unpacked = unpacked  # type: ignore[method-assign]
    print(
        json.dumps(
            {
                "batch_size": args.batch_size,
                "steps": args.steps,
                "threads": args.threads,
                "model": {
                    k: base[k]
                    for k in ("vocab_size", "embed_size", "hidden_size", "encoder_layers", "max_source_len")
                },
                "variants": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
