"""Nucleus sampling of chat candidates: inverse-CDF picks, reproducible seeds, exact log-probs, length rules."""

import math

import pytest
import torch

from model.beam_search import StepOutput
from model.config import DecodeConfig
from model.sampling import nucleus_pick, sample, seed_of

BOS, EOS, VOCAB = 0, 1, 5


def table_step(table):
    """A step function whose probabilities depend only on the prefix so far (a dict prefix -> probs)."""

    def step(prev_ids, state, step_index, selection=None):
        prefixes = state["prefix"]
        if step_index > 0:
            prefixes = prefixes.clone()
            prefixes[:, step_index - 1] = prev_ids
        probs = [table(tuple(int(t) for t in prefix if t >= 0)) for prefix in prefixes]
        return StepOutput(torch.tensor(probs).log(), {"prefix": prefixes})

    return step


def flat_table(prefix):
    """Four words equally likely until the third token, then eos is likely."""
    if len(prefix) >= 3:
        return [0.0, 0.9, 0.025, 0.025, 0.05]
    return [0.0, 0.0, 0.25, 0.25, 0.5]


def draw(seeds, config, num_samples=4, table=flat_table):
    state = {"prefix": torch.full((len(seeds) * num_samples, config.max_length + 1), -1)}
    return sample(
        table_step(table), state, seeds=seeds, num_samples=num_samples, bos_id=BOS, eos_id=EOS, config=config
    )


def pick(probs, uniforms, *, top_p=1.0, top_k=0, temperature=1.0):
    log_probs = torch.tensor([probs]).log().expand(len(uniforms), -1)
    return nucleus_pick(
        log_probs, torch.tensor(uniforms), top_p=top_p, top_k=top_k, temperature=temperature
    ).tolist()


def test_nucleus_pick_inverts_the_cumulative_distribution():
    assert pick([0.5, 0.3, 0.2], [0.0, 0.45, 0.65, 0.95]) == [0, 0, 1, 2]


def test_nucleus_pick_never_leaves_the_top_p_nucleus():
    assert pick([0.5, 0.3, 0.2], [0.1, 0.7, 0.99], top_p=0.7) == [0, 1, 1]
    assert pick([0.5, 0.3, 0.2], [0.99, 0.5, 0.0], top_p=0.4) == [0, 0, 0]


def test_nucleus_pick_keeps_only_the_top_k_tokens():
    probs = [0.1, 0.2, 0.05, 0.3, 0.35] + [0.0] * 300  # wide enough for the blocked top-k
    assert pick(probs, [0.0, 0.4, 0.6, 0.99], top_k=2) == [4, 4, 3, 3]


def test_nucleus_pick_never_picks_a_forbidden_token():
    uniforms = torch.rand(50, generator=torch.Generator().manual_seed(0)).tolist()
    assert set(pick([0.7, 0.0, 0.3, 0.0], uniforms, temperature=2.0)) <= {0, 2}


def test_the_same_seed_draws_the_same_samples_and_another_seed_draws_others():
    config = DecodeConfig(beam_size=1, max_length=6, sample_count=4, top_p=1.0)
    first = [h.token_ids for h in draw([7], config)[0]]
    again = [h.token_ids for h in draw([7], config)[0]]
    other = [h.token_ids for h in draw([8], config)[0]]
    assert first == again
    assert first != other


def test_a_request_draws_the_same_samples_whatever_else_is_in_the_batch():
    config = DecodeConfig(beam_size=1, max_length=6, sample_count=3, top_p=1.0)
    alone = draw([11], config, num_samples=3)[0]
    batched = draw([5, 11, 12], config, num_samples=3)[1]
    assert [h.token_ids for h in alone] == [h.token_ids for h in batched]


def test_sample_log_prob_is_the_models_log_prob_of_the_tokens_and_eos():
    config = DecodeConfig(beam_size=1, max_length=6, sample_count=4, top_p=1.0, temperature=2.0)
    for hyp in draw([3], config)[0]:
        prefix, expected = (), 0.0
        for token in [*hyp.token_ids, EOS]:
            expected += math.log(flat_table(prefix)[token])
            prefix += (token,)
        assert hyp.log_prob == pytest.approx(expected, rel=1e-5)
        assert EOS not in hyp.token_ids and BOS not in hyp.token_ids


def test_samples_respect_min_length_max_length_and_ngram_blocking():
    def eos_first(prefix):
        return [0.0, 0.7, 0.1, 0.1, 0.1]

    config = DecodeConfig(
        beam_size=1, min_length=2, max_length=3, sample_count=8, top_p=1.0, no_repeat_ngram_size=1
    )
    for hyp in draw([1, 2], config, num_samples=8, table=eos_first)[0]:
        assert 2 <= len(hyp.token_ids) <= 3
        assert len(set(hyp.token_ids)) == len(hyp.token_ids)


def test_seed_of_depends_only_on_the_ids():
    assert seed_of([5, 6, 7]) == seed_of([5, 6, 7])
    assert seed_of([5, 6, 7]) != seed_of([5, 6, 8])
    assert 0 <= seed_of([1]) < 2**63


def test_decode_config_rejects_sampling_settings_out_of_range():
    for bad in ({"sample_count": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"temperature": 0.0}, {"top_k": -1}):
        with pytest.raises(ValueError):
            DecodeConfig(**bad)
    with pytest.raises(ValueError, match="sample_count"):
        DecodeConfig().with_request({"sample_count": 1000})
    assert DecodeConfig().with_request({"sample_count": 8, "top_p": "0.8"}).top_p == 0.8


def test_sampling_only_the_rows_still_running_draws_the_same_samples():
    def short_or_long(prefix):  # eos is likely at once, so some requests end long before others
        return [0.0, 0.5, 0.2, 0.2, 0.1] if prefix else [0.0, 0.0, 0.4, 0.3, 0.3]

    config = DecodeConfig(beam_size=1, max_length=12, sample_count=2, top_p=1.0, no_repeat_ngram_size=2)
    seeds = list(range(20, 36))

    def run(narrow):
        calls, selections, seen = [], [], []

        def step(prev_ids, state, step_index, selection):
            calls.append(prev_ids.size(0))
            if not seen or selection is not seen[-1]:  # a new selection: the rows changed
                seen.append(selection)
                selections.append((selection.requests.tolist(), selection.per_request))
            return table_step(short_or_long)(prev_ids, state, step_index)

        state = {"prefix": torch.full((len(seeds) * 2, config.max_length + 1), -1)}
        hyps = sample(
            step, state, seeds=seeds, num_samples=2, bos_id=BOS, eos_id=EOS, config=config, narrow_rows=narrow
        )
        return hyps, calls, selections

    (full, full_calls, _), (narrow, narrow_calls, selections) = run(False), run(True)
    assert [[h.token_ids for h in r] for r in narrow] == [[h.token_ids for h in r] for r in full]
    assert [h.log_prob for r in narrow for h in r] == pytest.approx([h.log_prob for r in full for h in r])
    assert narrow_calls[0] == len(seeds)  # the first step: one row per request
    assert selections[0] == (list(range(len(seeds))), 1) and selections[1] == (list(range(len(seeds))), 2)
    assert sum(narrow_calls) < sum(full_calls) and len(selections) > 2  # finished requests were dropped
