"""Seq2Seq: the encoder, the attention decoder and tied embeddings put together.

`encode()` reads a source batch, `decode_step()` advances the decoder by one token (used by beam search),
and `forward()` runs teacher forcing and returns the per-step log-probabilities and the loss
(label-smoothed NLL of the copy-mixed distribution, plus the coverage loss when coverage is on). Without input
feeding and coverage, teacher forcing runs every target step in one pass (`Decoder.teacher_force`); with
them, step by step.
`build_model(config)` is the one factory. Pure tensor code: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import ModelConfig
from .decoder import Decoder, DecoderState, Memory, StepOutput, first_positions
from .encoder import Encoder


@dataclass
class Batch:
    """A padded training/inference batch; every tensor is (batch, len)."""

    src_ids: torch.Tensor
    src_lengths: torch.Tensor  # (batch,)
    src_features: torch.Tensor | None
    tgt_ids: torch.Tensor | None = None  # bos y1 .. yn eos, padded

    def to(self, device: torch.device | str) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.src_ids), self.src_lengths, move(self.src_features), move(self.tgt_ids))  # type: ignore[arg-type]


@dataclass
class ForwardOutput:
    loss: torch.Tensor  # scalar: mean over target tokens
    nll_sum: torch.Tensor  # scalar: summed NLL without smoothing (for perplexity)
    tokens: torch.Tensor  # scalar: number of target tokens
    target_log_probs: torch.Tensor  # (batch, tgt_len) log p of each target token (0 at padding)
    log_probs: torch.Tensor | None  # (batch, tgt_len, vocab); None with the adaptive softmax


class Seq2Seq(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size, padding_idx=config.pad_id)
        nn.init.normal_(self.embedding.weight, std=config.embed_size**-0.5)
        with torch.no_grad():
            self.embedding.weight[config.pad_id].zero_()
        self.encoder = Encoder(config, self.embedding)
        self.decoder = Decoder(config, self.embedding)
        self.bridge = nn.Linear(config.hidden_size, config.hidden_size)

    def encode(
        self, src_ids: torch.Tensor, src_lengths: torch.Tensor, src_features: torch.Tensor | None = None
    ) -> tuple[Memory, DecoderState]:
        """Encode (batch, src_len) ids -> the decoder's Memory and its initial state."""
        states, pad_mask, final = self.encoder(src_ids, src_lengths, src_features)
        memory = Memory(
            states=states,
            keys=self.decoder.attention.precompute_keys(states),
            pad_mask=pad_mask,
            src_ids=src_ids,
            first_position=first_positions(src_ids),
        )
        return memory, self.decoder.initial_state(final, self.bridge, src_ids.size(1))

    def decode_step(self, prev_ids: torch.Tensor, state: DecoderState, memory: Memory) -> StepOutput:
        return self.decoder.step(prev_ids, state, memory)

    def forward(
        self,
        batch: Batch,
        *,
        label_smoothing: float = 0.0,
        coverage_weight: float = 0.0,
        word_dropout: float = 0.0,
    ) -> ForwardOutput:
        """Teacher forcing over batch.tgt_ids (batch, tgt_len): inputs are tgt[:, :-1], targets tgt[:, 1:].
        In training mode `word_dropout` replaces that share of the decoder's input words (not bos) by <unk>."""
        assert batch.tgt_ids is not None, "forward() needs target ids"
        memory, state = self.encode(batch.src_ids, batch.src_lengths, batch.src_features)
        inputs, targets = batch.tgt_ids[:, :-1], batch.tgt_ids[:, 1:]
        if self.training and word_dropout > 0:
            inputs = drop_target_words(
                inputs, word_dropout, unk_id=self.config.unk_id, pad_id=self.config.pad_id
            )
        target_mask = targets != self.config.pad_id
        tokens = target_mask.sum()
        coverage_loss = memory.states.new_zeros((), dtype=torch.float32)
        if not self.config.input_feeding and not self.config.coverage:
            target_log_probs, log_probs = self.decoder.teacher_force(inputs, targets, state, memory)
        else:
            log_probs, coverage_loss = self._step_by_step(inputs, targets, state, memory)
            target_log_probs = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (batch, tgt_len)
        target_log_probs = target_log_probs * target_mask
        per_token = -target_log_probs
        if label_smoothing > 0 and log_probs is not None:  # the adaptive softmax never builds log_probs
            per_token = (1.0 - label_smoothing) * per_token - label_smoothing * log_probs.mean(
                dim=-1
            ) * target_mask
        loss = per_token.sum() / tokens.clamp_min(1)
        if coverage_weight > 0:
            loss = loss + coverage_weight * coverage_loss / tokens.clamp_min(1)
        return ForwardOutput(
            loss=loss,
            nll_sum=-target_log_probs.sum().detach(),
            tokens=tokens.detach(),
            target_log_probs=target_log_probs,
            log_probs=log_probs,
        )

    def _step_by_step(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        state: DecoderState,
        memory: Memory,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing one decoder step at a time (input feeding, coverage): the (batch, tgt_len, vocab)
        log-probabilities and the coverage loss summed over real target tokens."""
        step_log_probs = []
        coverage_loss = memory.states.new_zeros((), dtype=torch.float32)
        for t in range(inputs.size(1)):
            coverage_before = state.get("coverage")
            out = self.decoder.step(inputs[:, t], state, memory)
            if coverage_before is not None:
                step_cov = torch.minimum(out.attention, coverage_before).sum(-1)  # (batch,)
                coverage_loss = coverage_loss + (step_cov * (targets[:, t] != self.config.pad_id)).sum()
            step_log_probs.append(out.log_probs)
            state = out.state
        return torch.stack(step_log_probs, dim=1), coverage_loss


def build_model(config: ModelConfig) -> Seq2Seq:
    return Seq2Seq(config)


def drop_target_words(inputs: torch.Tensor, rate: float, *, unk_id: int, pad_id: int) -> torch.Tensor:
    """Word dropout on the decoder's inputs (Bowman et al. 2016): each input word after bos becomes <unk> with
    probability `rate`, so the decoder cannot predict the reply from its own prefix alone and must read the
    source through attention. Padding and the first column (bos) stay; the targets are not touched."""
    drop = torch.rand(inputs.shape, device=inputs.device) < rate
    drop[:, 0] = False
    return inputs.masked_fill(drop & (inputs != pad_id), unk_id)
