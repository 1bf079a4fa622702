"""Save and load checkpoints: the only torch.save / torch.load in the repository.

A checkpoint is a directory:
  model.pt         {"format": 1, "model_config", "state_dict", "tokenizer_sha256", "step", "decode", "meta"}
  tokenizer.model  the SentencePiece model the ids refer to
  decode.json      (optional) decoding defaults that override model.pt's "decode", so shipped defaults can be
                   retuned without rewriting the weights file
  last.pt          (training only) optimizer, scheduler and RNG state for --resume
Loading always uses weights_only=True, so a checkpoint cannot run code.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import DecodeConfig, ModelConfig
from .decode_file import DECODE_FILE, read_decode_file
from .seq2seq import Seq2Seq, build_model
from .tokenizer import Tokenizer

FORMAT = 1
MODEL_FILE = "model.pt"
TOKENIZER_FILE = "tokenizer.model"
TRAIN_STATE_FILE = "last.pt"


@dataclass
class LoadedCheckpoint:
    model: Seq2Seq
    tokenizer: Tokenizer
    config: ModelConfig
    step: int
    decode: DecodeConfig
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    out_dir: str | Path,
    *,
    model: Seq2Seq,
    tokenizer: Tokenizer,
    step: int,
    decode: DecodeConfig | None = None,
    meta: dict[str, Any] | None = None,
    half: bool = False,
    file_name: str = MODEL_FILE,
) -> Path:
    """Write model weights (fp16 when `half`), config and tokenizer into `out_dir`; atomic per file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    converted: dict[int, torch.Tensor] = {}  # tied weights (one embedding, three names) are stored once
    state_dict = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key not in converted:
            converted[key] = (
                tensor.detach().half() if half and tensor.is_floating_point() else tensor.detach()
            ).cpu()
        state_dict[name] = converted[key]
    payload = {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "state_dict": state_dict,
        "tokenizer_sha256": tokenizer.checksum,
        "step": int(step),
        "decode": (decode or DecodeConfig()).to_dict(),
        "meta": dict(meta or {}),
    }
    target = out / file_name
    save_atomically(payload, target)
    tokenizer_target = out / TOKENIZER_FILE
    if tokenizer.path.resolve() != tokenizer_target.resolve():
        shutil.copyfile(tokenizer.path, tokenizer_target)
    return target


def save_atomically(payload: dict[str, Any], target: Path) -> None:
    """torch.save to a temporary file, then rename: a reader never sees half a file."""
    tmp = target.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(target)


def read_payload(
    path: str | Path,
    file_name: str = MODEL_FILE,
    *,
    mmap: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """(the weights file, its contents) for a checkpoint directory or a model.pt; weights_only=True, so the file
    cannot run code. A missing, truncated or foreign file is an error that names it. With `mmap` the tensors
    are mapped, not read (enough to look at the header fields)."""
    path = Path(path)
    model_file = path if path.is_file() else path / file_name
    if not model_file.exists():
        raise FileNotFoundError(f"no checkpoint at {model_file}")
    try:
        payload = torch.load(model_file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # a truncated or foreign file: say which
        raise ValueError(f"{model_file} is not a readable checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{model_file} is not an s2s checkpoint (format {FORMAT})")
    return model_file, payload


def load_checkpoint(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    file_name: str = MODEL_FILE,
) -> LoadedCheckpoint:
    """Load a checkpoint directory (or a model.pt inside one) onto `device`, in eval mode, as float32."""
    model_file, payload = read_payload(path, file_name)
    directory = model_file.parent
    tokenizer = Tokenizer(directory / TOKENIZER_FILE)
    if tokenizer.checksum != payload["tokenizer_sha256"]:
        raise ValueError(f"{directory / TOKENIZER_FILE} is not the tokenizer this model was trained with")
    config = ModelConfig.from_dict(payload["model_config"])
    model = build_model(config)
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    model.load_state_dict(state_dict)
    model.to(device).eval()
    decode = decode_of(payload, directory)
    return LoadedCheckpoint(
        model=model,
        tokenizer=tokenizer,
        config=config,
        step=int(payload["step"]),
        decode=decode,
        meta=dict(payload.get("meta", {})),
    )


def decode_of(payload: dict[str, Any], directory: Path) -> DecodeConfig:
    """The decoding defaults stored in a checkpoint's payload, with a decode.json beside it applied on top."""
    known = set(DecodeConfig.__dataclass_fields__)
    decode = DecodeConfig(**{k: v for k, v in payload.get("decode", {}).items() if k in known})
    return apply_decode_file(decode, directory / DECODE_FILE)


def apply_decode_file(decode: DecodeConfig, path: Path) -> DecodeConfig:
    """`decode` with the settings of a decode.json beside the weights, if there is one."""
    return decode.replace(**read_decode_file(path))


def save_train_state(out_dir: str | Path, state: dict[str, Any]) -> None:
    save_atomically(state, Path(out_dir) / TRAIN_STATE_FILE)


def load_train_state(out_dir: str | Path) -> dict[str, Any] | None:
    target = Path(out_dir) / TRAIN_STATE_FILE
    if not target.exists():
        return None
    return torch.load(target, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
