"""Device choice and mixed precision: the only code that asks about CUDA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" -> cuda:0 when a GPU is present, else cpu; "cpu" / "cuda" / "cuda:N" as given."""
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


OUTPUT_PRECISIONS = ("auto", "float32", "bfloat16")


def native_bf16_cpu() -> bool:
    """True on CPUs that compute bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def resolve_output_precision(name: str, device: torch.device) -> torch.dtype:
    """The dtype of the decoder's output layer at inference: "float32" (exact), "bfloat16", or "auto" =
    bfloat16 on a CPU with native bf16 (where it halves single-request latency), float32 everywhere else."""
    if name not in OUTPUT_PRECISIONS:
        raise ValueError(f"output precision {name!r}: choose one of {', '.join(OUTPUT_PRECISIONS)}")
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" and native_bf16_cpu() else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32
