"""Reader checkpoints: model.pt = {"format": 1, "kind": "span-reader", "reader_config", "vocab", "state_dict",
"step", "decode", "meta"}; the vocabulary (and with it the GloVe rows it needs) travels inside. Loaded with
weights_only=True, like every checkpoint here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import FORMAT, MODEL_FILE, decode_of, read_payload, save_atomically
from ..config import DecodeConfig
from .network import ReaderConfig, SpanReader
from .vocab import Vocab

KIND = "span-reader"


@dataclass
class LoadedReader:
    model: SpanReader
    vocab: Vocab
    step: int
    decode: DecodeConfig
    meta: dict[str, Any] = field(default_factory=dict)


def reader_payload(
    model: SpanReader,
    vocab: Vocab,
    *,
    step: int,
    decode: DecodeConfig,
    meta: dict[str, Any],
    half: bool = False,
) -> dict[str, Any]:
    state = {
        k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu()
        for k, v in model.state_dict().items()
    }
    return {
        "format": FORMAT,
        "kind": KIND,
        "reader_config": model.config.to_dict(),
        "vocab": list(vocab.words),
        "tuned_count": vocab.tuned_count,
        "state_dict": state,
        "step": int(step),
        "decode": decode.to_dict(),
        "meta": dict(meta),
    }


def save_reader(
    out_dir: str | Path,
    model: SpanReader,
    vocab: Vocab,
    *,
    step: int,
    decode: DecodeConfig,
    meta: dict[str, Any],
    half: bool = False,
    file_name: str = MODEL_FILE,
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / file_name
    save_atomically(reader_payload(model, vocab, step=step, decode=decode, meta=meta, half=half), target)
    return target


def is_reader(path: str | Path) -> bool:
    """Whether the checkpoint at `path` is a span reader (its header fields; the tensors are mapped, not read)."""
    return read_payload(path, mmap=True)[1].get("kind") == KIND


def load_reader(path: str | Path, *, device: torch.device | str = "cpu") -> LoadedReader:
    model_file, payload = read_payload(path)
    if payload.get("kind") != KIND:
        raise ValueError(f"{model_file} is not a span-reader checkpoint")
    config = ReaderConfig.from_dict(payload["reader_config"])
    vocab = Vocab(words=tuple(payload["vocab"]), tuned_count=int(payload["tuned_count"]))
    if len(vocab) != config.vocab_size:
        raise ValueError(f"{model_file}: {len(vocab)} words for a model of {config.vocab_size}")
    model = SpanReader(config)
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    )
    model.to(device).eval()
    decode = decode_of(payload, model_file.parent)
    return LoadedReader(
        model=model, vocab=vocab, step=int(payload["step"]), decode=decode, meta=dict(payload.get("meta", {}))
    )
