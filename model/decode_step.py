"""The step function a Predictor gives beam search and sampling, and the passage constraint of extractive answers.

`DecodeStep` runs the model's decode step on the rows the search names (its `RowSelection`), with the tokens no
output may hold masked out, and, given a `PassageConstraint`, only the tokens that keep the hypothesis a
contiguous run of passage tokens. What it reads per row (the encoder memory and the passage masks of those
rows' requests) it narrows once per selection, not at every step. Pure tensor code: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .beam_search import RowSelection, State, StepOutput
from .decoder import Memory
from .seq2seq import Seq2Seq

CANDIDATES = "candidates"  # the state entry of the positions an extractive answer may continue at


@dataclass(frozen=True)
class PassageConstraint:
    """Extractive answers: each hypothesis is a contiguous run of passage tokens, and may end (eos) only where
    that run ends on a word boundary.

    `passage` marks the passage's positions, `ends` those an answer may end at, both (n, src_len) with one row
    per request or, after `for_rows`, per decoder row. The positions a hypothesis may continue at travel in the
    decoder state as CANDIDATES (rows, src_len): at the first step every position an answer may start at (the
    caller's initial state), afterwards the position right after each place where the hypothesis so far ends.
    """

    passage: torch.Tensor
    ends: torch.Tensor
    eos_id: int

    def for_rows(self, row_requests: torch.Tensor) -> PassageConstraint:
        """The constraint of the decoder rows whose requests are `row_requests` (rows,)."""
        return PassageConstraint(
            self.passage.index_select(0, row_requests), self.ends.index_select(0, row_requests), self.eos_id
        )

    def allow(
        self,
        log_probs: torch.Tensor,
        *,
        prev_ids: torch.Tensor,
        candidates: torch.Tensor,
        src_ids: torch.Tensor,
        step: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-probs (rows, vocab) with -inf wherever a token would leave the passage run (and at eos where
        the run may not end yet), and the next step's candidates (rows, src_len).

        Args:
            log_probs: (rows, vocab) of this step. prev_ids: (rows,) the tokens the hypotheses end with.
            candidates: (rows, src_len) where this step's token may sit. src_ids: (rows, src_len) each row's source.
        """
        can_end = None
        if step > 0:
            matched = candidates & (src_ids == prev_ids.unsqueeze(1))  # (rows, src_len)
            can_end = (matched & self.ends).any(dim=1)  # (rows,)
            candidates = torch.zeros_like(matched)
            candidates[:, 1:] = matched[:, :-1]
            candidates &= self.passage
        # Work on the source's positions, not the vocabulary: a token keeps its log-prob if any of its
        # positions is a candidate (positions of one token carry the same value, so amax picks it).
        kept = log_probs.gather(1, src_ids).masked_fill(~candidates, float("-inf"))  # (rows, src_len)
        allowed = torch.full_like(log_probs, float("-inf")).scatter_reduce_(1, src_ids, kept, reduce="amax")
        if can_end is not None:
            allowed[:, self.eos_id] = log_probs[:, self.eos_id].masked_fill(~can_end, float("-inf"))
        return allowed, candidates


class DecodeStep:
    """One batch's step function: `model.decode_step` on the rows of a RowSelection (Memory and constraint
    narrowed to them when the selection changes), banned tokens at -inf, then the passage constraint if any."""

    def __init__(
        self,
        model: Seq2Seq,
        memory: Memory,
        banned_ids: torch.Tensor,
        constraint: PassageConstraint | None = None,
    ) -> None:
        self.model = model
        self.memory_of_request = memory  # one row per request
        self.banned_ids = banned_ids
        self.constraint_of_request = constraint
        self._selection: RowSelection | None = None
        self._memory = memory
        self._constraint = constraint

    def _select(self, selection: RowSelection) -> None:
        self._selection = selection
        self._memory = self.memory_of_request.select_sources(selection.requests, selection.per_request)
        if self.constraint_of_request is not None:
            self._constraint = self.constraint_of_request.for_rows(selection.row_requests())

    def __call__(self, prev_ids: torch.Tensor, state: State, step: int, rows: RowSelection) -> StepOutput:
        if rows is not self._selection:
            self._select(rows)
        memory = self._memory
        decoder_state = {name: tensor for name, tensor in state.items() if name != CANDIDATES}
        out = self.model.decode_step(prev_ids, decoder_state, memory)
        log_probs = out.log_probs.index_fill_(1, self.banned_ids, float("-inf"))  # a fresh tensor each step
        new_state = dict(out.state)
        if self._constraint is not None:
            log_probs, new_state[CANDIDATES] = self._constraint.allow(
                log_probs, prev_ids=prev_ids, candidates=state[CANDIDATES], src_ids=memory.src_ids, step=step
            )
        return StepOutput(log_probs=log_probs, state=new_state, attention=out.attention, p_gen=out.p_gen)
