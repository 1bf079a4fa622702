"""Device choice and mixed precision: the only code that asks about CUDA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda:0 when a GPU is present, else cpu; "cpu" / "cuda" / "cuda:N" as given."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but no CUDA device is available")
    return device


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA; nothing on CPU (fp32 is faster there for LSTMs)."""
    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield
