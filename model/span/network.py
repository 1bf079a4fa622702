"""The boundary-pointer reader (DrQA's encoders, an answer-pointer decoder). Pure PyTorch: no I/O.

    passage word  = [word vector; char n-grams; aligned question embedding; exact-match flags, tf]
    question word = [word vector; char n-grams]
    passage, question -> stacked bi-LSTMs (outputs of every layer concatenated)
    question vector   = self-attentive pooling of the question states
    decoder step 1: start = softmax_i(p_i . W_s q)           (attention over the passage IS the output)
                    c = sum_i start_i p_i;  s = GRUCell(c, q)
    decoder step 2: end   = softmax_j(p_j . W_e s)

The aligned question embedding is attention with the passage word as query and the question words as keys
and values: a_ij = softmax_j(relu(W x_i) . relu(W y_j)), aligned_i = sum_j a_ij y_j.

The LSTMs run on right-padded batches without packing (the CPU kernel is several times faster on plain
tensors). The backward direction reads each sequence reversed within its own length, so padding never reaches
a real word's state and a batch gives the same result as its rows alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..encoder import reverse_padded
from .features import MATCH_FEATURES, ReaderBatch


@dataclass(frozen=True)
class ReaderConfig:
    vocab_size: int
    tuned_count: int
    embed_size: int = 50
    char_buckets: int = 0  # hashed character n-gram rows; 0 = no character channel
    char_size: int = 16
    hidden_size: int = 128  # per direction
    passage_layers: int = 3
    question_layers: int = 3
    dropout: float = 0.3
    language: Literal["en", "zh"] = "en"
    max_passage_words: int = 400  # longer passages are read in overlapping windows
    window_stride: int = 200
    max_question_words: int = 64
    max_answer_words: int = 15  # the span search's length cap
    bigram_match: bool = False  # Chinese: match slots 2-3 are bigram matches (features.bigram_match_features)
    task: str = "rc"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ReaderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class ReaderOutput:
    start_logits: torch.Tensor  # (batch, p_len), -inf on padding
    end_logits: torch.Tensor
    alignment: torch.Tensor  # (batch, p_len, q_len) passage-to-question attention
    loss: torch.Tensor | None = None


class StackedBiLSTM(nn.Module):
    """Bi-LSTM layers; returns every layer's output concatenated (batch, time, 2 * hidden * layers)."""

    def __init__(self, input_size: int, hidden_size: int, layers: int, dropout: float) -> None:
        super().__init__()
        sizes = [input_size] + [2 * hidden_size] * (layers - 1)
        self.forward_layers = nn.ModuleList(nn.LSTM(s, hidden_size, batch_first=True) for s in sizes)
        self.backward_layers = nn.ModuleList(nn.LSTM(s, hidden_size, batch_first=True) for s in sizes)
        self.dropout = dropout
        self.output_size = 2 * hidden_size * layers

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1)
        outputs = []
        for forward_lstm, backward_lstm in zip(self.forward_layers, self.backward_layers):
            x = F.dropout(x, self.dropout, self.training)
            ahead, _ = forward_lstm(x)
            behind, _ = backward_lstm(reverse_padded(x, lengths))
            x = torch.cat([ahead, reverse_padded(behind, lengths)], dim=-1)
            outputs.append(x)
        return torch.cat(outputs, dim=-1)


class WordEmbedding(nn.Module):
    """Rows below `tuned_count` train; the rest are fixed pretrained vectors (a buffer: no gradient, no decay)."""

    fixed: torch.Tensor

    def __init__(self, vocab_size: int, tuned_count: int, dim: int) -> None:
        super().__init__()
        self.tuned_count = tuned_count
        self.tuned = nn.Embedding(tuned_count, dim, padding_idx=0)
        self.register_buffer("fixed", torch.zeros(vocab_size - tuned_count, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tuned = self.tuned(ids.clamp(max=self.tuned_count - 1))
        if self.fixed.size(0) == 0:
            return tuned
        fixed = F.embedding((ids - self.tuned_count).clamp(min=0), self.fixed)
        return torch.where((ids < self.tuned_count).unsqueeze(-1), tuned, fixed)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


class SpanReader(nn.Module):
    def __init__(self, config: ReaderConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = WordEmbedding(config.vocab_size, config.tuned_count, config.embed_size)
        char_size = config.char_size if config.char_buckets else 0
        self.chars = nn.Embedding(config.char_buckets, config.char_size, padding_idx=0) if char_size else None
        self.align_projection = nn.Linear(config.embed_size, config.embed_size)
        word_size = config.embed_size + char_size
        self.passage_encoder = StackedBiLSTM(
            word_size + config.embed_size + MATCH_FEATURES,
            config.hidden_size,
            config.passage_layers,
            config.dropout,
        )
        self.question_encoder = StackedBiLSTM(
            word_size, config.hidden_size, config.question_layers, config.dropout
        )
        passage_size, question_size = self.passage_encoder.output_size, self.question_encoder.output_size
        self.question_pool = nn.Linear(question_size, 1)
        self.start_bilinear = nn.Linear(question_size, passage_size)
        self.decoder_cell = nn.GRUCell(passage_size, question_size)
        self.end_bilinear = nn.Linear(question_size, passage_size)

    def _words(self, ids: torch.Tensor, chars: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        vectors = F.dropout(self.embedding(ids), self.config.dropout, self.training)
        if self.chars is None or chars is None:
            return vectors, vectors
        grams = self.chars(chars).sum(2) / (chars > 0).sum(2, keepdim=True).clamp(min=1)
        return vectors, torch.cat([vectors, grams], dim=-1)

    def forward(self, batch: ReaderBatch) -> ReaderOutput:
        q_vectors, q_words = self._words(batch.question_ids, batch.question_chars)
        p_vectors, p_words = self._words(batch.passage_ids, batch.passage_chars)
        p_key = torch.relu(self.align_projection(p_vectors))
        q_key = torch.relu(self.align_projection(q_vectors))
        alignment = masked_softmax(p_key @ q_key.transpose(1, 2), batch.question_mask.unsqueeze(1))
        aligned = alignment @ q_vectors
        passage = self.passage_encoder(torch.cat([p_words, aligned, batch.match], dim=-1), batch.passage_mask)
        question = self.question_encoder(q_words, batch.question_mask)
        pool = masked_softmax(self.question_pool(question).squeeze(-1), batch.question_mask)
        query = (pool.unsqueeze(1) @ question).squeeze(1)  # (batch, q_size)
        start_logits = (passage @ self.start_bilinear(query).unsqueeze(-1)).squeeze(-1)
        start_logits = start_logits.masked_fill(~batch.passage_mask, float("-inf"))
        context = (torch.softmax(start_logits, -1).unsqueeze(1) @ passage).squeeze(1)
        state = self.decoder_cell(context, query)
        end_logits = (passage @ self.end_bilinear(state).unsqueeze(-1)).squeeze(-1)
        end_logits = end_logits.masked_fill(~batch.passage_mask, float("-inf"))
        loss = None
        if bool((batch.starts >= 0).all()):
            loss = F.cross_entropy(start_logits, batch.starts) + F.cross_entropy(end_logits, batch.ends)
        return ReaderOutput(start_logits=start_logits, end_logits=end_logits, alignment=alignment, loss=loss)
