"""Reproducible nucleus sampling of several candidate outputs per request, for chat reranking.

`sample(step_fn, state, ...)` takes the same step function as `beam_search` and draws `num_samples`
independent outputs per request, each token from the smallest set of most likely tokens whose probability
reaches `top_p` (nucleus sampling, Holtzman et al. 2020) among the `top_k` most likely (Fan et al. 2018),
after dividing the log-probs by `temperature`.
Every request has its own seed, and its random numbers come from its own generator, so a request draws the
same samples whatever else is in the batch and on every run (the service stays reproducible). Length limits
and repeated n-gram blocking follow DecodeConfig as in beam search.

It returns candidates, not answers: the Predictor reranks them together with the beam (MMI). No nn.Module
and no I/O in here.
"""

from __future__ import annotations

import hashlib

import torch

from .beam_search import (
    ActiveRows,
    BeamHypothesis,
    StepFn,
    _block_repeated_ngrams,
    normaliser,
    rows_of,
    topk_rows,
    worth_narrowing,
)
from .config import DecodeConfig


def seed_of(ids: list[int]) -> int:
    """A 63-bit seed from a token id sequence (the formatted request): equal requests sample alike."""
    digest = hashlib.sha256(",".join(map(str, ids)).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def nucleus_pick(
    log_probs: torch.Tensor, uniforms: torch.Tensor, *, top_p: float, top_k: int, temperature: float
) -> torch.Tensor:
    """One token per row by inverse-CDF sampling from the top-p nucleus of softmax(log_probs / temperature),
    taken within the top_k most likely tokens (top_k 0: the whole vocabulary).

    Args:
        log_probs: (rows, vocab), -inf at tokens that may not come next.
        uniforms: (rows,) numbers in [0, 1), one per row.
    Returns:
        (rows,) token ids. The most likely token is always in the nucleus; a uniform of 0 picks it.
    """
    probs = (log_probs / temperature).softmax(dim=-1)
    if 0 < top_k < probs.size(1):
        sorted_probs, order = topk_rows(probs, top_k)  # (rows, top_k); sorting the whole row is the slow part
        sorted_probs, where = sorted_probs.sort(dim=-1, descending=True)
        order = order.gather(1, where)
    else:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (rows, vocab)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more likely tokens
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    cdf = sorted_probs.cumsum(dim=-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)  # (rows, 1)
    index = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.size(1) - 1)
    return order.gather(1, index).squeeze(1)


def sample(
    step_fn: StepFn,
    state: dict[str, torch.Tensor],
    *,
    seeds: list[int],
    num_samples: int,
    bos_id: int,
    eos_id: int,
    config: DecodeConfig,
    device: torch.device | str = "cpu",
    narrow_rows: bool = False,
) -> list[list[BeamHypothesis]]:
    """Draw `num_samples` outputs for each of len(seeds) requests.

    Args:
        step_fn: as for beam_search, with rows = len(seeds) * num_samples, sample-major within a request.
        state: tensors with rows as first dimension, already repeated num_samples times per request.
        seeds: one seed per request (see seed_of).
        config: top_p, top_k, temperature, min/max length, n-gram blocking, length penalty (for the score).
        narrow_rows: as for beam_search: step_fn gets one row per request at the first step (all samples of a
            request start from the same state), then the rows of the requests with samples still running; a
            request whose samples have all ended draws no more random numbers, so the others draw what they
            would have drawn anyway.
    Returns:
        For each request, its samples in drawing order (duplicates included). log_prob is the model's own
        log p(T|S) (before temperature and the nucleus cut), eos included unless cut off at max_length; score
        is log_prob over the length normaliser.
    """
    batch_size = len(seeds)
    rows = batch_size * num_samples
    neg_inf = float("-inf")
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    prev_ids = torch.full((rows,), bos_id, dtype=torch.long, device=device)
    history = torch.zeros((rows, config.max_length + 1), dtype=torch.long, device=device)
    log_prob = torch.zeros(rows, dtype=torch.float64, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    attention_steps: list[torch.Tensor] = []
    p_gen_steps: list[torch.Tensor] = []

    # The rows step_fn computes, and their state only; everything else here uses the rows layout above.
    computed = ActiveRows(batch_size, num_samples, narrow=narrow_rows, device=device)
    state = {name: computed.gather(tensor) for name, tensor in state.items()}

    for step in range(config.max_length + 1):
        out = step_fn(computed.gather(prev_ids), state, step, computed.selection)
        log_probs, state, attention, p_gen = out.log_probs.float(), out.state, out.attention, out.p_gen
        if narrow_rows and step == 0:  # the one row of each request stands for all its samples
            log_probs = log_probs.repeat_interleave(num_samples, dim=0)
            attention = None if attention is None else attention.repeat_interleave(num_samples, dim=0)
            p_gen = None if p_gen is None else p_gen.repeat_interleave(num_samples, dim=0)
            state = {name: tensor.repeat_interleave(num_samples, dim=0) for name, tensor in state.items()}
            computed.select(computed.selection.requests, num_samples)
        log_probs[:, bos_id] = neg_inf
        if step < config.min_length:
            log_probs[:, eos_id] = neg_inf
        if step == config.max_length:  # out of room: end here, truncated, at no cost (as beam search does)
            log_probs.fill_(neg_inf)
            log_probs[:, eos_id] = 0.0
        if config.no_repeat_ngram_size > 0:
            _block_repeated_ngrams(log_probs, computed.gather(history[:, :step]), config.no_repeat_ngram_size)
        if attention is not None:
            attention_step = attention.float()
            p_gen_step = (
                p_gen.float()
                if p_gen is not None
                else attention.new_ones(attention.size(0), dtype=torch.float32)
            )
            # rows of requests already done: no attention (their samples have all ended)
            attention_steps.append(computed.scatter(attention_step, 0.0).cpu())
            p_gen_steps.append(computed.scatter(p_gen_step, 1.0).cpu())
        requests = computed.selection.requests.tolist()
        uniforms = torch.cat([torch.rand(num_samples, generator=generators[r]) for r in requests]).to(device)
        token = nucleus_pick(
            log_probs, uniforms, top_p=config.top_p, top_k=config.top_k, temperature=config.temperature
        )
        ended = computed.gather(finished)
        token = token.masked_fill(ended, eos_id)
        picked = log_probs.gather(1, token.unsqueeze(1)).squeeze(1).double().masked_fill(ended, 0.0)
        token, picked = computed.scatter(token, eos_id), computed.scatter(picked, 0.0)  # (rows,)
        log_prob += picked
        lengths += (~finished & (token != eos_id)).long()
        finished |= token == eos_id
        history[:, step] = token
        prev_ids = token
        if bool(finished.all()):
            break
        if narrow_rows:  # drop the requests whose samples have all ended
            running = (~finished.view(batch_size, num_samples).all(dim=1)).nonzero().squeeze(1)
            if worth_narrowing(computed.selection.requests, running):
                kept_rows = computed.positions(rows_of(running, num_samples))
                state = {name: tensor.index_select(0, kept_rows) for name, tensor in state.items()}
                computed.select(running, num_samples)

    history_rows = history.cpu().tolist()
    lengths_list = lengths.cpu().tolist()
    log_probs_list = log_prob.cpu().tolist()
    attention_all = torch.stack(attention_steps) if attention_steps else None  # (steps, rows, src_len)
    p_gen_all = torch.stack(p_gen_steps) if p_gen_steps else None  # (steps, rows)
    results: list[list[BeamHypothesis]] = []
    for request in range(batch_size):
        hyps = []
        for row in range(request * num_samples, (request + 1) * num_samples):
            length = lengths_list[row]
            hyps.append(
                BeamHypothesis(
                    token_ids=history_rows[row][:length],
                    score=log_probs_list[row] / normaliser(length + 1, config),
                    log_prob=log_probs_list[row],
                    attention=None if attention_all is None or length == 0 else attention_all[:length, row],
                    p_gen=None if p_gen_all is None or length == 0 else p_gen_all[:length, row],
                )
            )
        results.append(hyps)
    return results
