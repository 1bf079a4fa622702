"""Batched beam search: every request and every beam of a batch advance in one tensor per step.

`beam_search(step_fn, state, ...)` knows nothing about the model: `step_fn(prev_ids, state, step, rows)` returns
a `StepOutput`: log-probabilities over the vocabulary for each row it was given, the new state, and optionally
the attention weights and p_gen of that step. Finished hypotheses are kept per request. Options (DecodeConfig):
beam size (1 = greedy), n-best, GNMT length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016) or
average log-prob normalisation, min/max output length, and repeated n-gram blocking (Paulus et al. 2017).

A request stops as soon as no live beam can still beat its n-th best finished hypothesis, using an exact bound,
so a large enough beam returns the same best sequence as exhaustive search. No nn.Module in here.

With `narrow_rows`, the model is run only on the rows that can still change a result: one row per request at
the first step (the other beams would be copies of it), then the beams of the requests still searching
(requests that are done are dropped once they make up a quarter of the rows). A batch of requests of different
lengths then costs about what its requests need, not what its slowest one needs. `ActiveRows` keeps that
bookkeeping (for sampling too), and every step function call says which rows it gets (`RowSelection`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import DecodeConfig

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StepOutput:
    """What a step function returns for the rows it was given."""

    log_probs: torch.Tensor  # (rows, vocab); the search masks it in place: a fresh tensor each step
    state: State  # tensors with rows as first dimension
    attention: torch.Tensor | None = None  # (rows, src_len)
    p_gen: torch.Tensor | None = None  # (rows,) probability of generating rather than copying


@dataclass(frozen=True, eq=False)
class RowSelection:
    """The requests the rows of a step belong to: `per_request` consecutive rows for each of `requests` (n,), in
    that order. A search makes a new one only when the rows change, so a step function can keep what it derives
    from one (the encoder memory of those rows) for as long as it is given the same object."""

    requests: torch.Tensor
    per_request: int

    def row_requests(self) -> torch.Tensor:
        """(n * per_request,) the request of each row."""
        return self.requests.repeat_interleave(self.per_request)


StepFn = Callable[[torch.Tensor, State, int, RowSelection], StepOutput]


@dataclass
class BeamHypothesis:
    token_ids: list[int]  # output ids without bos/eos
    score: float  # ranking score (length-penalised)
    log_prob: float  # sum of token log-probs, eos included when finished with eos
    attention: torch.Tensor | None  # (len(token_ids), src_len) on CPU
    p_gen: torch.Tensor | None  # (len(token_ids),) on CPU


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** alpha."""
    return ((5.0 + length) / 6.0) ** alpha


def normaliser(length: int, config: DecodeConfig) -> float:
    if config.length_normalize:
        return float(length)
    return length_penalty(length, config.length_penalty)


def _block_repeated_ngrams(log_probs: torch.Tensor, history: torch.Tensor, size: int) -> None:
    """Set -inf on tokens that would repeat an n-gram of `size` already in `history` (rows, steps). In place."""
    steps = history.size(1)
    if steps < size - 1 or steps == 0:
        return
    if size == 1:
        banned = torch.zeros_like(log_probs).scatter_add_(
            1, history, torch.ones_like(history, dtype=log_probs.dtype)
        )
        log_probs.masked_fill_(banned > 0, float("-inf"))
        return
    if steps < size:
        return
    windows = history.unfold(1, size, 1)  # (rows, steps - size + 1, size)
    prefix = history[:, steps - size + 1 :].unsqueeze(1)  # (rows, 1, size - 1)
    matches = (windows[:, :, :-1] == prefix).all(-1)  # (rows, windows)
    banned = torch.zeros_like(log_probs).scatter_add_(1, windows[:, :, -1], matches.to(log_probs.dtype))
    log_probs.masked_fill_(banned > 0, float("-inf"))


def rows_of(requests: torch.Tensor, per_request: int) -> torch.Tensor:
    """The rows of `requests` (n,) where each request has `per_request` consecutive rows: (n * per_request,)."""
    return (requests.unsqueeze(1) * per_request + torch.arange(per_request, device=requests.device)).view(-1)


def index_among(active: torch.Tensor, rows: int) -> torch.Tensor:
    """(rows,) the index of each row within `active` (the rows a step function computed); 0 for the others."""
    position = torch.zeros((rows,), dtype=torch.long, device=active.device)
    position[active] = torch.arange(active.numel(), device=active.device)
    return position


def worth_narrowing(selected: torch.Tensor, remaining: torch.Tensor) -> bool:
    """Drop finished requests from the rows computed once they are a quarter of them: narrowing copies what the
    caller keeps per request, so not at every single request that ends."""
    return 4 * (selected.numel() - remaining.numel()) >= selected.numel()


class ActiveRows:
    """The rows a step function computes, within the `batch_size * per_request` rows (the layout) a search keeps
    for its own decisions.

    Without narrowing: every row, always (gather, scatter and positions change nothing). With it: one row per
    request at first, then `select` moves to the rows of the requests still running. `active` (indices into the
    layout) and `selection` (what the step function is told) always describe the same rows.
    """

    def __init__(
        self, batch_size: int, per_request: int, *, narrow: bool, device: torch.device | str
    ) -> None:
        self.narrow = narrow
        self.rows = batch_size * per_request
        requests = torch.arange(batch_size, device=device)
        self.selection = RowSelection(requests, 1 if narrow else per_request)
        self.active = requests * per_request if narrow else torch.arange(self.rows, device=device)

    def select(self, requests: torch.Tensor, per_request: int) -> None:
        """From now on, `per_request` rows of each of `requests` (n,)."""
        self.selection = RowSelection(requests, per_request)
        self.active = rows_of(requests, per_request)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """(layout rows, ...) -> (active rows, ...)."""
        return tensor.index_select(0, self.active) if self.narrow else tensor

    def scatter(self, values: torch.Tensor, fill: float) -> torch.Tensor:
        """(active rows, ...) -> (layout rows, ...), with `fill` in the rows not computed."""
        if not self.narrow:
            return values
        return values.new_full((self.rows, *values.shape[1:]), fill).index_copy_(0, self.active, values)

    def positions(self, layout_rows: torch.Tensor) -> torch.Tensor:
        """Where each of `layout_rows` is among the active rows (0 for a row that is not active)."""
        return (
            index_among(self.active, self.rows).index_select(0, layout_rows) if self.narrow else layout_rows
        )


def topk_rows(values: torch.Tensor, k: int, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values of each row of `values` (rows, width) and their columns, like values.topk(k, dim=1)
    (equal values may come back in another order), a few times faster on wide rows.

    The columns are cut into blocks of `block`; the k blocks with the largest maxima hold k values at least as
    large as the k-th of those maxima, and every value outside them is at most that large, so the top k of
    those blocks (plus the columns that do not fill a block) are the top k of the row.
    """
    rows, width = values.shape
    blocks = width // block
    if blocks <= k:
        return values.topk(k, dim=1)
    body = values[:, : blocks * block].unflatten(1, (blocks, block))  # (rows, blocks, block)
    top_blocks = body.amax(dim=2).topk(k, dim=1).indices  # (rows, k)
    picked = body.gather(1, top_blocks.unsqueeze(-1).expand(-1, -1, block)).view(rows, k * block)
    columns = (top_blocks.unsqueeze(-1) * block + torch.arange(block, device=values.device)).view(
        rows, k * block
    )
    if blocks * block < width:
        picked = torch.cat([picked, values[:, blocks * block :]], dim=1)
        tail = torch.arange(blocks * block, width, device=values.device).expand(rows, -1)
        columns = torch.cat([columns, tail], dim=1)
    top, where = picked.topk(k, dim=1)
    return top, columns.gather(1, where)


def beam_search(
    step_fn: StepFn,
    state: State,
    *,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    config: DecodeConfig,
    device: torch.device | str = "cpu",
    record_attention: bool = True,
    narrow_rows: bool = False,
) -> list[list[BeamHypothesis]]:
    """Decode `batch_size` requests with `config.beam_size` beams each.

    Args:
        step_fn: (prev_ids (rows,), state, step, selection) -> StepOutput(log_probs (rows, vocab), state,
            attention (rows, src_len) or None, p_gen (rows,) or None) for the rows `selection` names
            (RowSelection: `per_request` consecutive rows, beam-major, for each of its requests). beam_search
            masks the returned log_probs in place, so return a fresh tensor each step.
        state: tensors with rows as first dimension, already repeated beam_size times per request.
        config: beam size, n-best, length limits and penalty, n-gram blocking.
        narrow_rows: step_fn gets only the rows that can still change a result (see the module docstring),
            so it must read its per-row inputs (encoder memory, masks) for the selection it is given. Without
            it every call gets all batch_size * beam_size rows.
    Returns:
        For each request, up to n_best hypotheses, best first.

    The loop keeps everything in tensors and reads one boolean per step (are all requests done?). Tokens and
    attention are not copied along with the beams: each step writes its rows once, with a back-pointer to the
    parent row, and the returned hypotheses are traced back at the end (as OpenNMT-py and fairseq do).
    """
    beam = config.beam_size
    rows = batch_size * beam
    neg_inf = float("-inf")
    scores = torch.full((batch_size, beam), neg_inf, device=device)
    scores[:, 0] = 0.0  # only the first beam is live at the start: the others would be copies
    prev_ids = torch.full((rows,), bos_id, dtype=torch.long, device=device)
    row_offset = (
        torch.arange(batch_size, device=device).unsqueeze(1) * beam
    )  # (batch, 1) first row of a request
    trace = _Trace(steps=config.max_length + 1, batch_size=batch_size, beam=beam, device=device)
    history = torch.zeros(
        (rows, config.max_length + 1), dtype=torch.long, device=device
    )  # for n-gram blocking
    best_finished = torch.full((batch_size, config.n_best), neg_inf, dtype=torch.float64, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    final_norm = normaliser(config.max_length + 1, config)
    raw_scores = config.length_penalty == 0 and not config.length_normalize

    # The rows step_fn computes, and the state and prev_ids of those rows only; everything else here uses the
    # batch_size * beam layout.
    computed = ActiveRows(batch_size, beam, narrow=narrow_rows, device=device)
    state = {name: computed.gather(tensor) for name, tensor in state.items()}
    prev_ids = computed.gather(prev_ids)

    for step in range(config.max_length + 1):
        out = step_fn(prev_ids, state, step, computed.selection)
        log_probs, state = out.log_probs.float(), out.state
        vocab = log_probs.size(-1)
        log_probs[:, bos_id] = neg_inf  # the start symbol is never an output
        if step < config.min_length:
            log_probs[:, eos_id] = neg_inf
        if step == config.max_length:  # out of room: every live beam ends here, truncated, at no cost
            log_probs.fill_(neg_inf)
            log_probs[:, eos_id] = 0.0
        if config.no_repeat_ngram_size > 0:
            _block_repeated_ngrams(log_probs, computed.gather(history[:, :step]), config.no_repeat_ngram_size)
        if record_attention and out.attention is not None:
            trace.record_attention(
                step, out.attention, out.p_gen, rows=computed.active if narrow_rows else None
            )

        # The best 2*beam continuations of a request are among the best 2*beam of each of its beams, so the
        # vocabulary-wide work is one top-k per row; adding the beam's score keeps the order within a row.
        row_width = min(2 * beam, vocab)
        row_top, row_token = topk_rows(log_probs, row_width)  # (active rows, row_width)
        # rows step_fn did not compute are dead beams (-inf): no candidates from them
        row_top, row_token = (
            computed.scatter(row_top, neg_inf),
            computed.scatter(row_token, 0),
        )  # (rows, row_width)
        candidates = (scores.unsqueeze(-1) + row_top.view(batch_size, beam, row_width)).view(batch_size, -1)
        width = min(2 * beam, candidates.size(1))
        top_scores, top_index = candidates.topk(width, dim=1)  # (batch, width)
        top_beam = torch.div(top_index, row_width, rounding_mode="floor")
        top_token = row_token.view(batch_size, -1).gather(1, top_index)
        is_eos = top_token == eos_id

        # Hypotheses ending here: eos among the best `beam` candidates of a request that is still searching.
        ends = (is_eos & torch.isfinite(top_scores) & ~done.unsqueeze(1))[:, :beam]  # (batch, beam)
        end_scores = top_scores[:, :beam].masked_fill(~ends, neg_inf)
        trace.record_ends(step, end_scores, top_beam[:, :beam] + row_offset)
        ranked = end_scores.double() / normaliser(step + 1, config)  # a hypothesis of `step` tokens, plus eos
        best_finished = torch.cat([best_finished, ranked], dim=1).topk(config.n_best, dim=1).values

        # The next live beams: the best `beam` candidates that did not end.
        live_scores, pick = top_scores.masked_fill(is_eos, neg_inf).topk(beam, dim=1)  # (batch, beam)
        parent_row = (top_beam.gather(1, pick) + row_offset).view(-1)  # (rows,)
        next_token = top_token.gather(1, pick).view(-1)  # (rows,)
        scores = live_scores

        # Done when no live beam is left, or none can beat the n-th best finished hypothesis any more: the
        # score of a live beam only falls, and its normaliser is largest at max_length.
        best_live = scores[:, 0].double()
        bound = best_live if raw_scores else best_live / final_norm
        done |= (best_live == neg_inf) | (bound <= best_finished[:, -1])
        if step == config.max_length or bool(done.all()):
            break

        trace.record_step(step, parent_row, next_token)
        if config.no_repeat_ngram_size > 0:
            history = history.index_select(0, parent_row)
            history[:, step] = next_token
        # Requests already done keep no live beams, so they add no work to the decisions above.
        scores = scores.masked_fill(done.unsqueeze(1), neg_inf)
        if narrow_rows:
            searching = (~done).nonzero().squeeze(1)  # (n,) requests still searching
            # A dead beam (score -inf) may descend from a row step_fn did not compute (a tie of -inf candidates
            # at the first step): positions gives it row 0's state, and any state will do for it.
            if step == 0 or worth_narrowing(computed.selection.requests, searching):
                parents = computed.positions(parent_row.index_select(0, rows_of(searching, beam)))
                computed.select(searching, beam)
            else:
                parents = computed.positions(parent_row.index_select(0, computed.active))
            prev_ids = next_token.index_select(0, computed.active)
        else:
            parents, prev_ids = parent_row, next_token
        state = {name: tensor.index_select(0, parents) for name, tensor in state.items()}

    return trace.hypotheses(config)


class _Trace:
    """Per-step records of a beam search, from which the returned hypotheses are traced back.

    Layout, for step t (rows = batch * beam, in the order of that step's step_fn call):
        parent[t], token[t]  (rows,)           row t+1's parent row at step t, and the token it appended
        attention[t]         (rows, src_len)   attention of step t's call, per row; p_gen[t] (rows,)
        end_score[t]         (batch, beam)     log-prob of hypotheses ending with eos at step t, else -inf
        end_row[t]           (batch, beam)     the row each of them ended from
    A hypothesis ending at step t from row r has t tokens: token[t-1][r], and before it those of r's parents.
    """

    def __init__(self, *, steps: int, batch_size: int, beam: int, device: torch.device | str) -> None:
        rows = batch_size * beam
        self.batch_size = batch_size
        self.parent = torch.zeros((steps, rows), dtype=torch.long, device=device)
        self.token = torch.zeros((steps, rows), dtype=torch.long, device=device)
        self.end_score = torch.full((steps, batch_size, beam), float("-inf"), device=device)
        self.end_row = torch.zeros((steps, batch_size, beam), dtype=torch.long, device=device)
        self.attention: torch.Tensor | None = None
        self.p_gen: torch.Tensor | None = None
        self.last_step = 0

    def record_attention(
        self, step: int, attention: torch.Tensor, p_gen: torch.Tensor | None, rows: torch.Tensor | None = None
    ) -> None:
        """Attention and p_gen of step `step`, for every row or (with `rows`) for those rows only."""
        if self.attention is None or self.p_gen is None:
            steps, all_rows = self.parent.shape
            self.attention = attention.new_zeros((steps, all_rows, attention.size(-1)), dtype=torch.float32)
            self.p_gen = attention.new_ones((steps, all_rows), dtype=torch.float32)
        if rows is None:
            self.attention[step] = attention
            if p_gen is not None:
                self.p_gen[step] = p_gen
            return
        self.attention[step].index_copy_(0, rows, attention.float())
        if p_gen is not None:
            self.p_gen[step].index_copy_(0, rows, p_gen.float())

    def record_ends(self, step: int, end_score: torch.Tensor, end_row: torch.Tensor) -> None:
        self.end_score[step] = end_score
        self.end_row[step] = end_row
        self.last_step = step

    def record_step(self, step: int, parent_row: torch.Tensor, next_token: torch.Tensor) -> None:
        self.parent[step] = parent_row
        self.token[step] = next_token

    def hypotheses(self, config: DecodeConfig) -> list[list[BeamHypothesis]]:
        """The n best finished hypotheses per request, best first; ties keep the order they ended in."""
        steps = self.last_step + 1
        end_score = self.end_score[:steps].transpose(0, 1).cpu()  # (batch, steps, beam)
        end_row = self.end_row[:steps].transpose(0, 1).cpu()
        parent = self.parent[:steps].cpu().tolist()
        token = self.token[:steps].cpu().tolist()
        attention = None if self.attention is None else self.attention[:steps].cpu()
        p_gen = None if self.p_gen is None else self.p_gen[:steps].cpu()
        results = []
        for b in range(self.batch_size):
            ended = []
            for step, rank in torch.isfinite(end_score[b]).nonzero().tolist():
                log_prob = float(end_score[b, step, rank])
                ended.append(
                    (log_prob / normaliser(step + 1, config), log_prob, step, int(end_row[b, step, rank]))
                )
            ended.sort(key=lambda end: end[0], reverse=True)
            hyps = []
            for score, log_prob, step, row in ended[: config.n_best]:
                rows_back = [0] * step  # rows_back[t]: the row that produced the hypothesis's token t
                tokens = [0] * step
                for t in range(step - 1, -1, -1):
                    tokens[t] = token[t][row]
                    row = parent[t][row]
                    rows_back[t] = row
                hyps.append(
                    BeamHypothesis(
                        token_ids=tokens,
                        score=score,
                        log_prob=log_prob,
                        attention=None
                        if attention is None or step == 0
                        else attention[torch.arange(step), rows_back],
                        p_gen=None if p_gen is None or step == 0 else p_gen[torch.arange(step), rows_back],
                    )
                )
            results.append(hyps)
        return results
