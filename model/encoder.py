"""Encoder: token (+ feature) embedding, bidirectional LSTM layers, optional gated self-matching layer.

The first bi-LSTM layer reads the input; a gated self-attention layer (Wang et al. 2017, R-Net "self-matching")
lets every position look at the whole input (for reading comprehension: passage tokens see the question);
the remaining bi-LSTM layers read the result. Output: (batch, src_len, hidden) states and a final state.
Pure tensor code: no I/O.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .config import ModelConfig


class SelfMatching(nn.Module):
    """Gated scaled dot-product self-attention; a position never attends to itself or to padding."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.gate = nn.Linear(2 * hidden_size, 2 * hidden_size)
        self.scale = 1.0 / math.sqrt(hidden_size)

    def forward(self, states: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """states: (batch, src_len, hidden); pad_mask: (batch, src_len) True at padding -> (batch, src_len, 2*hidden)."""
        src_len = states.size(1)
        scores = (
            torch.bmm(self.query_proj(states), states.transpose(1, 2)) * self.scale
        )  # (batch, src_len, src_len)
        blocked = pad_mask.unsqueeze(1) | torch.eye(
            src_len, dtype=torch.bool, device=states.device
        ).unsqueeze(0)
        scores = scores.float().masked_fill(blocked, -1e9)
        context = torch.bmm(
            torch.softmax(scores, dim=-1).to(states.dtype), states
        )  # (batch, src_len, hidden)
        joined = torch.cat([states, context], dim=-1)  # (batch, src_len, 2*hidden)
        return torch.sigmoid(self.gate(joined)) * joined


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        half = config.hidden_size // 2
        self.embedding = embedding
        self.feature_embedding = (
            nn.Embedding(config.num_features, config.embed_size) if config.num_features > 0 else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.first = nn.LSTM(config.embed_size, half, batch_first=True, bidirectional=True)
        self.self_matching = SelfMatching(config.hidden_size) if config.self_attention else None
        rest_input = 2 * config.hidden_size if config.self_attention else config.hidden_size
        self.rest = (
            nn.LSTM(
                rest_input,
                half,
                num_layers=config.encoder_layers - 1,
                batch_first=True,
                bidirectional=True,
                dropout=config.dropout if config.encoder_layers > 2 else 0.0,
            )
            if config.encoder_layers > 1
            else None
        )

    def forward(
        self,
        src_ids: torch.Tensor,
        src_lengths: torch.Tensor,
        src_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode a padded batch.

        Args:
            src_ids: (batch, src_len) token ids, padded with pad_id.
            src_lengths: (batch,) true lengths (any device; moved to CPU for packing).
            src_features: (batch, src_len) feature ids or None.
        Returns:
            memory (batch, src_len, hidden), pad_mask (batch, src_len) True at padding, final (batch, hidden).
        """
        src_len = src_ids.size(1)
        positions = torch.arange(src_len, device=src_ids.device).unsqueeze(0)
        pad_mask = positions >= src_lengths.to(src_ids.device).unsqueeze(1)  # (batch, src_len)
        embedded = self.embedding(src_ids)
        if self.feature_embedding is not None and src_features is not None:
            embedded = embedded + self.feature_embedding(src_features)
        states, final = self._run(self.first, self.dropout(embedded), src_lengths, src_len)
        if self.self_matching is not None:
            states = self.self_matching(states, pad_mask)
        if self.rest is not None:
            states, final = self._run(self.rest, self.dropout(states), src_lengths, src_len)
        return self.dropout(states), pad_mask, final

    @staticmethod
    def _run(
        lstm: nn.LSTM,
        inputs: torch.Tensor,
        lengths: torch.Tensor,
        src_len: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if inputs.device.type == "cpu":
            if not torch.is_grad_enabled():
                return Encoder._run_by_length(lstm, inputs, lengths, src_len)
            return Encoder._run_unpacked(lstm, inputs, lengths)
        return Encoder._run_packed(lstm, inputs, lengths)

    @staticmethod
    def _run_packed(
        lstm: nn.LSTM,
        inputs: torch.Tensor,
        lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training and inference off the CPU: pack_padded_sequence, the LSTM, pad back to the input's length."""
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, (h_n, _) = lstm(packed)
        states, _ = pad_packed_sequence(outputs, batch_first=True, total_length=inputs.size(1))
        final = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # last layer, forward and backward: (batch, hidden)
        return states, final

    @staticmethod
    def _run_unpacked(
        lstm: nn.LSTM,
        inputs: torch.Tensor,
        lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training on CPU: the padded batch through the LSTM's own weights without packing, one direction and
        layer at a time; the backward direction reads every row reversed within its length, so padding never
        reaches a real token's state. Equal to the packed result at every real position (padding stays zero)."""
        lengths = lengths.to(inputs.device)
        valid = torch.arange(inputs.size(1), device=inputs.device).unsqueeze(0) < lengths.unsqueeze(1)
        valid = valid.unsqueeze(-1).to(inputs.dtype)  # (batch, src_len, 1)
        rows = torch.arange(inputs.size(0), device=inputs.device)
        layer_input = inputs
        for layer in range(lstm.num_layers):
            if layer > 0:
                layer_input = nn.functional.dropout(layer_input, lstm.dropout, lstm.training)
            forward = _one_direction(lstm, layer, "", layer_input)
            backward = reverse_padded(
                _one_direction(lstm, layer, "_reverse", reverse_padded(layer_input, lengths)), lengths
            )
            layer_input = torch.cat([forward, backward], dim=-1) * valid
        final = torch.cat(
            [layer_input[rows, lengths - 1, : lstm.hidden_size], layer_input[:, 0, lstm.hidden_size :]],
            dim=-1,
        )
        return layer_input, final

    @staticmethod
    def _run_by_length(
        lstm: nn.LSTM,
        inputs: torch.Tensor,
        lengths: torch.Tensor,
        src_len: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference on CPU: rows of equal length together, unpacked. The CPU LSTM kernel is about ten times
        faster on a plain tensor than on a packed sequence, and rows of one length need no padding, so the
        result is the packed one (padding stays zero)."""
        rows_by_length: dict[int, list[int]] = {}
        for row, length in enumerate(lengths.tolist()):
            rows_by_length.setdefault(int(length), []).append(row)
        states = inputs.new_zeros(inputs.size(0), src_len, 2 * lstm.hidden_size)
        final = inputs.new_zeros(inputs.size(0), 2 * lstm.hidden_size)
        for length, rows in rows_by_length.items():
            index = torch.tensor(rows, device=inputs.device)
            outputs, (h_n, _) = lstm(inputs.index_select(0, index)[:, :length].contiguous())
            states[index, :length] = outputs
            final[index] = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        return states, final


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of (batch, time, dim) within its length; padding stays where it is."""
    steps = torch.arange(x.size(1), device=x.device).unsqueeze(0)
    lengths = lengths.to(x.device).unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


def _one_direction(lstm: nn.LSTM, layer: int, suffix: str, inputs: torch.Tensor) -> torch.Tensor:
    """Layer `layer`'s forward (suffix "") or backward ("_reverse") weights of `lstm` run left to right over
    (batch, time, in) -> (batch, time, hidden), from a zero state."""
    weights = [
        getattr(lstm, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]
    zeros = inputs.new_zeros(1, inputs.size(0), lstm.hidden_size)
    outputs, _, _ = torch.lstm(inputs, (zeros, zeros), weights, True, 1, 0.0, lstm.training, False, True)
    return outputs
