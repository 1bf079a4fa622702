"""Attention LSTM decoder with input feeding (Luong et al. 2015) and a pointer-generator copy switch
(See et al. 2017).

One call of `step` advances every row by one token. The recurrent state is passed in and returned, never
stored, as a dict of tensors whose first dimension is the row (so beam search can reorder it with one
`index_select`). Pure tensor code: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attention
from .config import ModelConfig

DecoderState = dict[str, torch.Tensor]


@dataclass
class Memory:
    """What the decoder reads at every step; fixed for a source (beam search expands it once)."""

    states: torch.Tensor     # (rows, src_len, hidden)
    keys: torch.Tensor       # (rows, src_len, hidden) attention keys precomputed from states
    pad_mask: torch.Tensor   # (rows, src_len) True at padding
    src_ids: torch.Tensor    # (rows, src_len) token ids, for the copy distribution

    def repeat_rows(self, times: int) -> Memory:
        """Each row repeated `times` times in place (row b becomes rows b*times .. b*times+times-1)."""
        return Memory(*(t.repeat_interleave(times, dim=0) for t in (self.states, self.keys, self.pad_mask,
                                                                     self.src_ids)))


@dataclass
class StepOutput:
    log_probs: torch.Tensor   # (rows, vocab) float32
    state: DecoderState
    attention: torch.Tensor   # (rows, src_len)
    p_gen: torch.Tensor       # (rows,) probability of generating from the vocabulary (1 without copy)


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.config = config
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.embed_size + hidden, hidden, num_layers=config.decoder_layers,
                            batch_first=True, dropout=config.dropout if config.decoder_layers > 1 else 0.0)
        self.attention = Attention(config.attention, hidden, coverage=config.coverage)
        self.combine = nn.Linear(2 * hidden, hidden, bias=False)
        self.to_embedding = nn.Linear(hidden, config.embed_size)
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.copy_switch = nn.Linear(2 * hidden + config.embed_size, 1) if config.copy else None

    def initial_state(self, final: torch.Tensor, bridge: nn.Module, src_len: int) -> DecoderState:
        """State before the first step from the encoder's final state (batch, hidden)."""
        rows = final.size(0)
        h0 = torch.tanh(bridge(final))  # (rows, hidden)
        h = h0.unsqueeze(1).expand(rows, self.config.decoder_layers, -1).contiguous()  # (rows, layers, hidden)
        state: DecoderState = {"h": h, "c": torch.zeros_like(h), "feed": final.new_zeros(rows, self.config.hidden_size)}
        if self.config.coverage:
            state["coverage"] = final.new_zeros(rows, src_len, dtype=torch.float32)
        return state

    def step(self, prev_ids: torch.Tensor, state: DecoderState, memory: Memory) -> StepOutput:
        """Advance one token.

        Args:
            prev_ids: (rows,) previous output token (bos at the first step).
            state: dict with h, c (rows, layers, hidden), feed (rows, hidden) [, coverage (rows, src_len)].
            memory: encoder states, keys, pad mask and source ids, one row per decoder row.
        Returns:
            StepOutput with log-probabilities over the vocabulary (copy mixed in), the new state,
            attention weights (rows, src_len) and p_gen (rows,).
        """
        embedded = self.dropout(self.embedding(prev_ids))  # (rows, embed)
        lstm_input = torch.cat([embedded, state["feed"]], dim=-1).unsqueeze(1)  # (rows, 1, embed+hidden)
        h0 = state["h"].transpose(0, 1).contiguous()  # (layers, rows, hidden)
        c0 = state["c"].transpose(0, 1).contiguous()
        output, (h1, c1) = self.lstm(lstm_input, (h0, c0))
        query = output.squeeze(1)  # (rows, hidden)
        coverage = state.get("coverage")
        weights, context = self.attention(query, memory.states, memory.keys, memory.pad_mask, coverage)
        attentional = torch.tanh(self.combine(torch.cat([context, query], dim=-1)))  # (rows, hidden)
        attentional = self.dropout(attentional)
        logits = torch.nn.functional.linear(self.to_embedding(attentional), self.embedding.weight,
                                            self.output_bias).float()  # (rows, vocab), tied output embedding
        if self.copy_switch is None:
            log_probs = torch.log_softmax(logits, dim=-1)
            p_gen = logits.new_ones(logits.size(0))
        else:
            p_gen = torch.sigmoid(self.copy_switch(torch.cat([context, query, embedded], dim=-1)).float()).squeeze(-1)
            vocab_probs = torch.softmax(logits, dim=-1)
            copy_probs = torch.zeros_like(vocab_probs).scatter_add_(1, memory.src_ids, weights)
            mixed = p_gen.unsqueeze(-1) * vocab_probs + (1.0 - p_gen).unsqueeze(-1) * copy_probs
            log_probs = torch.log(mixed.clamp_min(1e-12))
        new_state: DecoderState = {"h": h1.transpose(0, 1), "c": c1.transpose(0, 1), "feed": attentional}
        if coverage is not None:
            new_state["coverage"] = coverage + weights
        return StepOutput(log_probs=log_probs, state=new_state, attention=weights, p_gen=p_gen)
