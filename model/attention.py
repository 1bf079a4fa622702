"""Attention scores over encoder states: Luong dot / general (Luong et al. 2015) and Bahdanau additive (2014).

query = decoder state, keys = values = encoder states; the output is the softmax-weighted sum of the values.
Padded source positions get a score of -inf and therefore exactly zero weight. Optional coverage
(See et al. 2017) adds w_c * coverage to every score. Several consecutive queries may share one source (the
beams of one request): the encoder states are then read once for all of them, not copied per beam. Pure
tensor code: no I/O.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import AttentionKind


class Attention(nn.Module):
    """score(q, k_s) by `kind`; weights = masked softmax over source positions; context = sum_s a_s k_s."""

    def __init__(self, kind: AttentionKind, hidden_size: int, *, coverage: bool = False) -> None:
        super().__init__()
        self.kind = kind
        if kind == "general":
            self.query_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        elif kind == "additive":
            self.query_proj = nn.Linear(hidden_size, hidden_size, bias=True)
            self.key_proj = nn.Linear(hidden_size, hidden_size, bias=False)
            self.v = nn.Linear(hidden_size, 1, bias=False)
        elif kind != "dot":
            raise ValueError(f"unknown attention kind {kind!r}")
        self.coverage_proj = (
            nn.Linear(1, hidden_size if kind == "additive" else 1, bias=False) if coverage else None
        )

    def precompute_keys(self, memory: torch.Tensor) -> torch.Tensor:
        """Per-source part of the score, computed once per source. memory: (batch, src_len, hidden)."""
        if self.kind == "additive":
            return self.key_proj(memory)  # (batch, src_len, hidden)
        return memory

    def forward(
        self,
        query: torch.Tensor,
        memory: torch.Tensor,
        keys: torch.Tensor,
        pad_mask: torch.Tensor,
        coverage: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from one decoder step.

        Args:
            query: (rows, hidden) decoder state h_t; rows = sources * group, the `group` consecutive rows of a
                source attending to it (group = 1 in training; the beams of a request in beam search).
            memory: (sources, src_len, hidden) encoder states (the values).
            keys: (sources, src_len, hidden) from `precompute_keys(memory)`.
            pad_mask: (sources, src_len) bool, True at padding.
            coverage: (rows, src_len) sum of earlier attention weights, or None.
        Returns:
            weights (rows, src_len) summing to 1 with zeros at padding, and context (rows, hidden).
        """
        sources, src_len = pad_mask.shape
        group = query.size(0) // sources
        if self.kind == "additive":
            projected = self.query_proj(query).view(sources, group, 1, -1)
            features = keys.unsqueeze(1) + projected  # (sources, group, src_len, hidden)
            if self.coverage_proj is not None and coverage is not None:
                features = features + self.coverage_proj(coverage.view(sources, group, src_len, 1))
            scores = self.v(torch.tanh(features)).view(sources, group, src_len)
        else:
            projected = self.query_proj(query) if self.kind == "general" else query
            queries = projected.view(sources, group, -1).transpose(1, 2)  # (sources, hidden, group)
            scores = torch.bmm(keys, queries).transpose(1, 2)  # (sources, group, src_len)
            if self.coverage_proj is not None and coverage is not None:
                scores = scores + self.coverage_proj(coverage.view(sources, group, src_len, 1)).squeeze(-1)
        scores = scores.float().masked_fill(pad_mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (sources, group, src_len)
        context = torch.bmm(weights.to(memory.dtype), memory)  # (sources, group, hidden)
        return weights.view(-1, src_len), context.view(-1, context.size(-1))
