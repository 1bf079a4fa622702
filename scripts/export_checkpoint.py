"""Export a training checkpoint for shipping: fp16 weights + tokenizer (Seq2Seq) or vocabulary (span reader),
no optimizer state.

Usage: python scripts/export_checkpoint.py SRC_DIR DST_DIR [--decode JSON]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.checkpoint import DECODE_FILE, load_checkpoint, save_checkpoint  # noqa: E402
from model.span.checkpoint import is_reader, load_reader, save_reader  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--decode", type=json.loads, default=None, help="default decoding settings to store")
    args = parser.parse_args()
    if is_reader(args.src):
        reader = load_reader(args.src)
        decode = reader.decode.replace(**args.decode) if args.decode else reader.decode
        path = save_reader(
            args.dst, reader.model, reader.vocab, step=reader.step, decode=decode, meta=reader.meta, half=True
        )
        step = reader.step
    else:
        loaded = load_checkpoint(args.src)
        decode = loaded.decode.replace(**args.decode) if args.decode else loaded.decode
        path = save_checkpoint(
            args.dst,
            model=loaded.model,
            tokenizer=loaded.tokenizer,
            step=loaded.step,
            decode=decode,
            meta=loaded.meta,
            half=True,
        )
        step = loaded.step
    print(json.dumps({"exported": str(path), "bytes": path.stat().st_size, "step": step}))  # noqa: T201
    override = Path(args.dst) / DECODE_FILE
    if override.exists():  # loaders apply it on top of the settings just written into the weights file
        print(  # noqa: T201
            f"warning: {override} overrides these decoding settings when the checkpoint loads: "
            f"{override.read_text(encoding='utf-8').strip()}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
