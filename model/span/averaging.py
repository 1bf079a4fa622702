"""An exponential moving average of a network's trained weights (Polyak averaging, as QANet trains its
reader): evaluated and saved in place of the raw weights, it smooths the step-to-step noise that a plateaued
reader's held-out score jitters with. Pure PyTorch: no I/O."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """average <- decay * average + (1 - decay) * weight after every optimizer step, for the trained
    parameters only (fixed tables and buffers are left as they are)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError("the average's decay must be in (0, 1)")
        self.decay = decay
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.average = {name: params[name].detach().clone() for name in self.names}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name in self.names:
            self.average[name].mul_(self.decay).add_(params[name].detach(), alpha=1.0 - self.decay)

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own ones again after it."""
        params = dict(model.named_parameters())
        own = {name: params[name].detach().clone() for name in self.names}
        with torch.no_grad():
            for name in self.names:
                params[name].copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name in self.names:
                    params[name].copy_(own[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: tensor.clone() for name, tensor in self.average.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.names) - set(state)
        if missing:
            raise ValueError(f"the saved average lacks {sorted(missing)[:3]}")
        for name in self.names:
            self.average[name].copy_(state[name])
