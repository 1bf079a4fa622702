"""Attention LSTM decoder with input feeding (Luong et al. 2015) and a pointer-generator copy switch
(See et al. 2017).

One call of `step` advances every row by one token. The recurrent state is passed in and returned, never
stored, as a dict of tensors whose first dimension is the row (so beam search can reorder it with one
`index_select`). Pure tensor code: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attention
from .config import ModelConfig

DecoderState = dict[str, torch.Tensor]


@dataclass
class Memory:
    """What the decoder reads at every step; fixed for a source. The encoder states are kept once per source and
    shared by its rows (the beams of a request); the token ids are per decoder row, for the copy distribution."""

    states: torch.Tensor  # (sources, src_len, hidden)
    keys: torch.Tensor  # (sources, src_len, hidden) attention keys precomputed from states
    pad_mask: torch.Tensor  # (sources, src_len) True at padding
    src_ids: torch.Tensor  # (rows, src_len) token ids of each row's source
    first_position: torch.Tensor  # (rows, src_len) the first position holding the same token id

    def select_sources(self, sources: torch.Tensor, rows_per_source: int) -> Memory:
        """Only the sources `sources` (n,) (of a Memory with one row per source), in that order, each read by
        `rows_per_source` decoder rows: what beam search still decodes."""
        rows = sources.repeat_interleave(rows_per_source) if rows_per_source > 1 else sources
        return Memory(
            self.states.index_select(0, sources),
            self.keys.index_select(0, sources),
            self.pad_mask.index_select(0, sources),
            self.src_ids.index_select(0, rows),
            self.first_position.index_select(0, rows),
        )


def first_positions(src_ids: torch.Tensor) -> torch.Tensor:
    """(batch, src_len) ids -> (batch, src_len) index of the first position holding the same id: the slot
    where the copy distribution sums the attention a repeated source token receives."""
    same = src_ids.unsqueeze(2) == src_ids.unsqueeze(1)  # (batch, src_len, src_len)
    return same.byte().argmax(dim=2)  # argmax returns the first of equal maxima


@dataclass
class StepOutput:
    log_probs: torch.Tensor  # (rows, vocab) float32
    state: DecoderState
    attention: torch.Tensor  # (rows, src_len)
    p_gen: torch.Tensor  # (rows,) probability of generating from the vocabulary (1 without copy)


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.config = config
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        lstm_input = config.embed_size + (hidden if config.input_feeding else 0)
        self.lstm = nn.LSTM(
            lstm_input,
            hidden,
            num_layers=config.decoder_layers,
            batch_first=True,
            dropout=config.dropout if config.decoder_layers > 1 else 0.0,
        )
        self.attention = Attention(config.attention, hidden, coverage=config.coverage)
        self.combine = nn.Linear(2 * hidden, hidden, bias=False)
        self.adaptive: nn.AdaptiveLogSoftmaxWithLoss | None = None
        if config.adaptive_cutoffs:
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
                hidden, config.vocab_size, list(config.adaptive_cutoffs), div_value=4.0, head_bias=True
            )
        else:
            self.to_embedding = nn.Linear(hidden, config.embed_size)
            self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.copy_switch = nn.Linear(2 * hidden + config.embed_size, 1) if config.copy else None
        # Inference only: the output layer's weight and bias in a lower precision (see set_output_precision).
        # Plain attributes, not parameters: never saved, never trained, rebuilt after the model moves.
        self._low_precision_output: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_output_precision(self, dtype: torch.dtype) -> None:
        """Compute the output layer (hidden -> vocabulary logits, the largest matrix product of a step) in
        `dtype` at inference: torch.bfloat16 halves the bytes read per step and runs at about 2.5x the float32
        speed on CPUs with native bf16 (AVX512-BF16/AMX), at the price of logits rounded to 8 mantissa bits
        (about 0.02 absolute on this model's logits). torch.float32 (the default) restores exact computation.
        Call it after the model has moved to its device; training ignores it."""
        if dtype == torch.float32 or self.adaptive is not None:  # the adaptive softmax stays in float32
            self._low_precision_output = None
        else:
            self._low_precision_output = (
                self.embedding.weight.detach().to(dtype),
                self.output_bias.detach().to(dtype),
            )

    def output_logits(self, attentional: torch.Tensor) -> torch.Tensor:
        """(rows, hidden) attentional states -> (rows, vocab) float32 logits over the tied output embedding."""
        projected = self.to_embedding(attentional)  # (rows, embed)
        low_precision = None if self.training else self._low_precision_output
        if low_precision is not None:
            weight, bias = low_precision
            return torch.nn.functional.linear(projected.to(weight.dtype), weight, bias).float()
        return torch.nn.functional.linear(projected, self.embedding.weight, self.output_bias).float()

    def initial_state(self, final: torch.Tensor, bridge: nn.Module, src_len: int) -> DecoderState:
        """State before the first step from the encoder's final state (batch, hidden)."""
        rows = final.size(0)
        h0 = torch.tanh(bridge(final))  # (rows, hidden)
        h = (
            h0.unsqueeze(1).expand(rows, self.config.decoder_layers, -1).contiguous()
        )  # (rows, layers, hidden)
        state: DecoderState = {
            "h": h,
            "c": torch.zeros_like(h),
            "feed": final.new_zeros(rows, self.config.hidden_size),
        }
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
        lstm_input = torch.cat([embedded, state["feed"]], dim=-1) if self.config.input_feeding else embedded
        h1, c1 = self._lstm_step(lstm_input, state["h"], state["c"])  # (rows, layers, hidden)
        query = h1[:, -1]  # (rows, hidden)
        coverage = state.get("coverage")
        weights, context = self.attention(query, memory.states, memory.keys, memory.pad_mask, coverage)
        attentional = torch.tanh(self.combine(torch.cat([context, query], dim=-1)))  # (rows, hidden)
        attentional = self.dropout(attentional)
        if self.adaptive is not None:
            log_probs = self.adaptive.log_prob(attentional.float())
            p_gen = log_probs.new_ones(log_probs.size(0))
        elif self.copy_switch is None:
            log_probs = torch.log_softmax(self.output_logits(attentional), dim=-1)  # (rows, vocab) float32
            p_gen = log_probs.new_ones(log_probs.size(0))
        else:
            p_gen = torch.sigmoid(
                self.copy_switch(torch.cat([context, query, embedded], dim=-1)).float()
            ).squeeze(-1)
            log_probs = _mix_copy(self.output_logits(attentional), p_gen, weights, memory)
        new_state: DecoderState = {"h": h1, "c": c1, "feed": attentional}
        if coverage is not None:
            new_state["coverage"] = coverage + weights
        return StepOutput(log_probs=log_probs, state=new_state, attention=weights, p_gen=p_gen)

    def teacher_force(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        state: DecoderState,
        memory: Memory,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every target step at once, for a decoder without input feeding or coverage (training's fast path):
        one LSTM call over the whole target, then attention, combination and output for all steps together.

        Args: inputs, targets (batch, tgt_len) ids (tgt[:, :-1], tgt[:, 1:]); state from initial_state; memory
            with one row per source.
        Returns: (batch, tgt_len) log-probabilities of the targets and, for the tied output layer, the whole
            (batch, tgt_len, vocab) distribution (None with the adaptive softmax, which never builds it).
        """
        assert not self.config.input_feeding and not self.config.coverage, (
            "teacher_force needs step-free inputs"
        )
        batch, length = inputs.shape
        embedded = self.dropout(self.embedding(inputs))  # (batch, tgt_len, embed)
        h0 = state["h"].transpose(0, 1).contiguous()  # (layers, batch, hidden)
        queries, _ = self.lstm(
            embedded, (h0, state["c"].transpose(0, 1).contiguous())
        )  # (batch, tgt_len, hidden)
        flat = queries.reshape(batch * length, -1)  # rows of one source are consecutive: group = tgt_len
        weights, context = self.attention(flat, memory.states, memory.keys, memory.pad_mask)
        attentional = self.dropout(torch.tanh(self.combine(torch.cat([context, flat], dim=-1))))
        if self.adaptive is not None:
            flat_targets = targets.reshape(-1)
            keep = flat_targets != self.config.pad_id
            target_log_probs = attentional.new_zeros(batch * length, dtype=torch.float32)
            target_log_probs[keep] = self.adaptive(attentional[keep].float(), flat_targets[keep]).output
            return target_log_probs.view(batch, length), None
        logits = self.output_logits(attentional)  # (batch * tgt_len, vocab)
        if self.copy_switch is None:
            log_probs = torch.log_softmax(logits, dim=-1)
        else:
            embedded_flat = embedded.reshape(batch * length, -1)
            p_gen = torch.sigmoid(self.copy_switch(torch.cat([context, flat, embedded_flat], dim=-1)).float())
            expanded = Memory(
                memory.states,
                memory.keys,
                memory.pad_mask,
                memory.src_ids.repeat_interleave(length, dim=0),
                memory.first_position.repeat_interleave(length, dim=0),
            )
            log_probs = _mix_copy(logits, p_gen.squeeze(-1), weights, expanded)
        log_probs = log_probs.view(batch, length, -1)
        return log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1), log_probs

    def _lstm_step(
        self, inputs: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step of self.lstm, layer by layer with its own weights: for a single step, torch.lstm_cell
        is about twice as fast on CPU as nn.LSTM (which re-lays its weights out on every call).

        inputs (rows, embed+hidden); h, c (rows, layers, hidden) -> new h, c (rows, layers, hidden).
        Dropout between layers, as nn.LSTM applies it, in training only.
        """
        lstm = self.lstm
        hs, cs = [], []
        for layer in range(lstm.num_layers):
            if layer > 0:
                inputs = nn.functional.dropout(inputs, lstm.dropout, self.training)
            h_layer, c_layer = torch.lstm_cell(
                inputs,
                (h[:, layer], c[:, layer]),
                getattr(lstm, f"weight_ih_l{layer}"),
                getattr(lstm, f"weight_hh_l{layer}"),
                getattr(lstm, f"bias_ih_l{layer}"),
                getattr(lstm, f"bias_hh_l{layer}"),
            )
            hs.append(h_layer)
            cs.append(c_layer)
            inputs = h_layer
        return torch.stack(hs, dim=1), torch.stack(cs, dim=1)


MIN_PROB = 1e-12  # floor of a mixed probability, so that log never returns -inf


def _mix_copy(
    logits: torch.Tensor, p_gen: torch.Tensor, weights: torch.Tensor, memory: Memory
) -> torch.Tensor:
    """log(p_gen * P_vocab + (1 - p_gen) * P_copy), floored at log(MIN_PROB) (See et al. 2017).

    Args: logits (rows, vocab) of the output layer; p_gen (rows,); weights (rows, src_len) attention. P_copy is
    zero outside the source's tokens, so the vocabulary-wide work is the log-softmax and one shift by log p_gen,
    and only the source's tokens are mixed in probability space, with the copy mass of a repeated token summed
    at its first position. Equal to mixing over the whole vocabulary up to float rounding in the last place.
    At inference the shift is in place: the vocabulary-wide tensors (320 rows x 16,000 pieces = 20 MB at batch
    64, beam 5) are the step's main memory traffic.
    """
    src_ids = memory.src_ids
    log_vocab = torch.log_softmax(logits, dim=-1)  # (rows, vocab)
    vocab_at_source = log_vocab.gather(1, src_ids).exp()  # (rows, src_len) P_vocab of the source tokens
    log_shift = torch.log(p_gen).unsqueeze(-1)
    log_probs = log_vocab + log_shift if log_vocab.requires_grad else log_vocab.add_(log_shift)
    copy_probs = torch.zeros_like(weights).scatter_add_(1, memory.first_position, weights)
    copy_probs = copy_probs.gather(
        1, memory.first_position
    )  # (rows, src_len) copy mass of each position's token
    p_gen = p_gen.unsqueeze(-1)
    mixed = p_gen * vocab_at_source + (1.0 - p_gen) * copy_probs  # (rows, src_len)
    # A token at several source positions gets the same value from each, so the scatter is deterministic.
    log_probs.scatter_(1, src_ids, torch.log(mixed.clamp_min(MIN_PROB)))
    return log_probs.clamp_min_(math.log(MIN_PROB))
