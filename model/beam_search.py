"""Batched beam search: every request and every beam of a batch advance in one tensor per step.

`beam_search(step_fn, state, ...)` knows nothing about the model: `step_fn(prev_ids, state, step)` returns
log-probabilities over the vocabulary for each of the batch*beam rows, the new state, and optionally the
attention weights and p_gen of that step. Finished hypotheses are kept per request. Options (DecodeConfig):
beam size (1 = greedy), n-best, GNMT length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016) or
average log-prob normalisation, min/max output length, and repeated n-gram blocking (Paulus et al. 2017).

A request stops as soon as no live beam can still beat its n-th best finished hypothesis, using an exact bound,
so a large enough beam returns the same best sequence as exhaustive search. No nn.Module in here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import DecodeConfig

State = dict[str, torch.Tensor]
StepFn = Callable[[torch.Tensor, State, int],
                  tuple[torch.Tensor, State, torch.Tensor | None, torch.Tensor | None]]


@dataclass
class BeamHypothesis:
    token_ids: list[int]              # output ids without bos/eos
    score: float                      # ranking score (length-penalised)
    log_prob: float                   # sum of token log-probs, eos included when finished with eos
    attention: torch.Tensor | None    # (len(token_ids), src_len) on CPU
    p_gen: torch.Tensor | None        # (len(token_ids),) on CPU


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
        banned = torch.zeros_like(log_probs).scatter_add_(1, history, torch.ones_like(history, dtype=log_probs.dtype))
        log_probs.masked_fill_(banned > 0, float("-inf"))
        return
    if steps < size:
        return
    windows = history.unfold(1, size, 1)  # (rows, steps - size + 1, size)
    prefix = history[:, steps - size + 1:].unsqueeze(1)  # (rows, 1, size - 1)
    matches = (windows[:, :, :-1] == prefix).all(-1)  # (rows, windows)
    banned = torch.zeros_like(log_probs).scatter_add_(1, windows[:, :, -1], matches.to(log_probs.dtype))
    log_probs.masked_fill_(banned > 0, float("-inf"))


def beam_search(step_fn: StepFn, state: State, *, batch_size: int, bos_id: int, eos_id: int,
                config: DecodeConfig, device: torch.device | str = "cpu",
                record_attention: bool = True) -> list[list[BeamHypothesis]]:
    """Decode `batch_size` requests with `config.beam_size` beams each.

    Args:
        step_fn: (prev_ids (rows,), state, step) -> (log_probs (rows, vocab), state, attention (rows, src_len)
            or None, p_gen (rows,) or None), with rows = batch_size * beam_size, beam-major within a request.
        state: tensors with rows as first dimension, already repeated beam_size times per request.
        config: beam size, n-best, length limits and penalty, n-gram blocking.
    Returns:
        For each request, up to n_best hypotheses, best first.
    """
    beam = config.beam_size
    rows = batch_size * beam
    neg_inf = float("-inf")
    scores = torch.full((batch_size, beam), neg_inf, device=device)
    scores[:, 0] = 0.0  # only the first beam is live at the start: the others would be copies
    prev_ids = torch.full((rows,), bos_id, dtype=torch.long, device=device)
    history = torch.zeros((batch_size, beam, 0), dtype=torch.long, device=device)
    attention_history: torch.Tensor | None = None  # (batch, beam, steps, src_len)
    p_gen_history: torch.Tensor | None = None       # (batch, beam, steps)
    finished: list[list[BeamHypothesis]] = [[] for _ in range(batch_size)]
    done = [False] * batch_size
    final_norm = normaliser(config.max_length + 1, config)
    raw_scores = config.length_penalty == 0 and not config.length_normalize

    for step in range(config.max_length + 1):
        log_probs, state, attention, p_gen = step_fn(prev_ids, state, step)
        vocab = log_probs.size(-1)
        log_probs = log_probs.float().clone()
        log_probs[:, bos_id] = neg_inf  # the start symbol is never an output
        if step < config.min_length:
            log_probs[:, eos_id] = neg_inf
        if step == config.max_length:  # out of room: every live beam ends here, truncated, at no cost
            log_probs.fill_(neg_inf)
            log_probs[:, eos_id] = 0.0
        if config.no_repeat_ngram_size > 0:
            _block_repeated_ngrams(log_probs, history.view(rows, -1), config.no_repeat_ngram_size)

        candidates = (scores.unsqueeze(-1) + log_probs.view(batch_size, beam, vocab)).view(batch_size, -1)
        width = min(2 * beam, candidates.size(1))
        top_scores, top_index = candidates.topk(width, dim=1)  # (batch, width)
        top_beam = torch.div(top_index, vocab, rounding_mode="floor")
        top_token = top_index % vocab
        is_eos = top_token == eos_id

        if record_attention and attention is not None:
            step_attention = attention.float().view(batch_size, beam, 1, -1)
            step_p_gen = (p_gen if p_gen is not None else attention.new_ones(rows)).float().view(batch_size, beam, 1)
        else:
            step_attention = step_p_gen = None

        # Hypotheses ending here: eos among the best `beam` candidates of a request.
        eos_rank = is_eos & (torch.arange(width, device=device) < beam) & torch.isfinite(top_scores)
        if bool(eos_rank.any()):
            hits = eos_rank.nonzero().tolist()
            hit_scores = top_scores.cpu()
            hit_beams = top_beam.cpu()
            for b, r in hits:
                if done[b]:
                    continue
                parent = int(hit_beams[b, r])
                log_prob = float(hit_scores[b, r])
                tokens = history[b, parent].tolist()
                finished[b].append(BeamHypothesis(
                    token_ids=tokens, score=log_prob / normaliser(len(tokens) + 1, config), log_prob=log_prob,
                    attention=None if attention_history is None else attention_history[b, parent].cpu(),
                    p_gen=None if p_gen_history is None else p_gen_history[b, parent].cpu(),
                ))

        # The next live beams: the best `beam` candidates that did not end.
        live_scores = top_scores.masked_fill(is_eos, neg_inf)
        live_scores, pick = live_scores.topk(beam, dim=1)  # (batch, beam)
        parent_beam = top_beam.gather(1, pick)
        next_token = top_token.gather(1, pick)
        scores = live_scores

        for b in range(batch_size):
            if done[b]:
                continue
            kept = sorted(finished[b], key=lambda h: h.score, reverse=True)[:config.n_best]
            best_live = float(scores[b, 0])
            if best_live == neg_inf:
                done[b] = True
            elif len(kept) >= config.n_best:
                bound = best_live if raw_scores else best_live / final_norm
                if bound <= kept[-1].score:
                    done[b] = True
        if all(done) or step == config.max_length:
            break

        flat_parent = (parent_beam + torch.arange(batch_size, device=device).unsqueeze(1) * beam).view(-1)
        state = {name: tensor.index_select(0, flat_parent) for name, tensor in state.items()}
        gather_index = parent_beam.unsqueeze(-1)
        history = torch.cat([history.gather(1, gather_index.expand(-1, -1, history.size(2))),
                             next_token.unsqueeze(-1)], dim=2)
        if step_attention is not None and step_p_gen is not None:
            src_len = step_attention.size(-1)
            new_attention = step_attention.gather(1, gather_index.unsqueeze(-1).expand(-1, -1, 1, src_len))
            new_p_gen = step_p_gen.gather(1, gather_index)
            if attention_history is None or p_gen_history is None:
                attention_history, p_gen_history = new_attention, new_p_gen
            else:
                attention_history = torch.cat([attention_history.gather(
                    1, gather_index.unsqueeze(-1).expand(-1, -1, attention_history.size(2), src_len)),
                    new_attention], dim=2)
                p_gen_history = torch.cat([p_gen_history.gather(
                    1, gather_index.expand(-1, -1, p_gen_history.size(2))), new_p_gen], dim=2)
        prev_ids = next_token.view(-1)
        # Requests already done keep no live beams, so they add no work to the decisions above.
        done_rows = torch.tensor(done, device=device)
        scores = scores.masked_fill(done_rows.unsqueeze(1), neg_inf)

    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:config.n_best] for hyps in finished]
