"""Beam search driven by scripted and random step functions with known answers."""

import itertools
import math

import pytest
import torch

from model.beam_search import StepOutput, beam_search, length_penalty
from model.config import DecodeConfig

BOS, EOS, VOCAB = 0, 1, 4


def scripted_step(table):
    """A step function whose log-probs depend only on the prefix, from a dict prefix-tuple -> probs."""

    def step(prev_ids, state, step_index, selection=None):
        prefixes = state["prefix"]
        probs = []
        for row in range(prev_ids.size(0)):
            prefix = tuple(int(t) for t in prefixes[row] if t >= 0)
            if step_index > 0:
                prefix = prefix + (int(prev_ids[row]),)
            probs.append(table(prefix))
        new_prefix = prefixes.clone()
        if step_index > 0:
            new_prefix[:, step_index - 1] = prev_ids
        return StepOutput(torch.tensor(probs).log(), {"prefix": new_prefix})

    return step


def random_table(seed):
    cache = {}

    def table(prefix):
        if prefix not in cache:
            g = torch.Generator().manual_seed(hash((seed, prefix)) % (2**31))
            cache[prefix] = torch.softmax(torch.randn(VOCAB, generator=g) * 2, -1).tolist()
        return cache[prefix]

    return table


def run(table, config, batch_size=1):
    state = {"prefix": torch.full((batch_size * config.beam_size, config.max_length + 1), -1)}
    return beam_search(
        scripted_step(table), state, batch_size=batch_size, bos_id=BOS, eos_id=EOS, config=config
    )


def exhaustive_best(table, config):
    best = None
    for length in range(config.min_length, config.max_length + 1):
        for tokens in itertools.product([t for t in range(VOCAB) if t not in (EOS, BOS)], repeat=length):
            log_prob, prefix = 0.0, ()
            # At max_length a hypothesis is cut off: it ends without paying for eos.
            ending = () if length == config.max_length else (EOS,)
            for token in tokens + ending:
                log_prob += math.log(table(prefix)[token])
                prefix += (token,)
            score = log_prob / length_penalty(length + 1, config.length_penalty)
            if best is None or score > best[0]:
                best = (score, list(tokens))
    return best


def test_greedy_follows_the_most_likely_token_and_stops_at_eos():
    def table(prefix):
        return {(): [0.0, 0.1, 0.7, 0.2], (2,): [0.0, 0.2, 0.1, 0.7], (2, 3): [0.0, 0.9, 0.05, 0.05]}.get(
            prefix, [0.0, 1.0, 0.0, 0.0]
        )

    [[hyp]] = run(table, DecodeConfig(beam_size=1, max_length=5, length_penalty=0))
    assert hyp.token_ids == [2, 3]
    assert hyp.log_prob == pytest.approx(math.log(0.7 * 0.7 * 0.9), abs=1e-5)


def test_beam_finds_a_path_greedy_misses():
    def table(prefix):
        return {(): [0.0, 0.0, 0.55, 0.45], (2,): [0.0, 0.3, 0.35, 0.35], (3,): [0.0, 0.95, 0.03, 0.02]}.get(
            prefix, [0.0, 1.0, 0.0, 0.0]
        )

    [[greedy]] = run(table, DecodeConfig(beam_size=1, max_length=4, length_penalty=0))
    [[best]] = run(table, DecodeConfig(beam_size=2, max_length=4, length_penalty=0))
    assert greedy.token_ids[0] == 2
    assert best.token_ids == [3]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("seed", range(6))
def test_large_beam_equals_exhaustive_search(seed, alpha):
    table = random_table(seed)
    config = DecodeConfig(beam_size=32, max_length=3, length_penalty=alpha)
    [[hyp, *_]] = run(table, config)
    score, tokens = exhaustive_best(table, config)
    assert hyp.token_ids == tokens
    assert hyp.score == pytest.approx(score, abs=1e-5)


def test_min_length_blocks_an_early_eos():
    def table(prefix):
        return [0.0, 0.9, 0.05, 0.05]

    [[hyp]] = run(table, DecodeConfig(beam_size=2, max_length=5, min_length=2))
    assert len(hyp.token_ids) == 2


def test_max_length_ends_every_hypothesis():
    def table(prefix):
        return [0.0, 0.0, 0.5, 0.5]

    [[hyp]] = run(table, DecodeConfig(beam_size=2, max_length=3))
    assert len(hyp.token_ids) == 3


def test_n_best_returns_distinct_hypotheses_best_first():
    table = random_table(7)
    [hyps] = run(table, DecodeConfig(beam_size=6, n_best=4, max_length=3))
    assert len(hyps) == 4
    assert [h.score for h in hyps] == sorted([h.score for h in hyps], reverse=True)
    assert len({tuple(h.token_ids) for h in hyps}) == 4


def test_repeated_bigrams_are_blocked():
    def table(prefix):
        return [0.0, 0.01, 0.5, 0.49]  # prefers 2 3 2 3 ...

    [[plain]] = run(table, DecodeConfig(beam_size=1, max_length=6))
    [[blocked]] = run(table, DecodeConfig(beam_size=1, max_length=6, no_repeat_ngram_size=2))
    bigrams = list(zip(blocked.token_ids, blocked.token_ids[1:]))
    assert len(bigrams) == len(set(bigrams))
    assert len(set(zip(plain.token_ids, plain.token_ids[1:]))) < len(plain.token_ids) - 1


def test_batch_rows_are_decoded_independently():
    tables = [random_table(s) for s in (11, 12, 13)]

    def table_for_row(rows_per_request):
        def step(prev_ids, state, step_index, selection):
            new_state = scripted_step(lambda p: [0.25] * 4)(prev_ids, state, step_index).state
            prefixes = new_state["prefix"]
            out = []
            for row in range(prev_ids.size(0)):
                prefix = tuple(int(t) for t in prefixes[row] if t >= 0)
                out.append(tables[row // rows_per_request](prefix))
            return StepOutput(torch.tensor(out).log(), new_state)

        return step

    config = DecodeConfig(beam_size=3, n_best=2, max_length=4)
    state = {"prefix": torch.full((3 * 3, 5), -1)}
    batched = beam_search(table_for_row(3), state, batch_size=3, bos_id=BOS, eos_id=EOS, config=config)
    for index, table in enumerate(tables):
        alone = run(table, config)[0]
        assert [h.token_ids for h in batched[index]] == [h.token_ids for h in alone]
        assert [h.score for h in batched[index]] == pytest.approx([h.score for h in alone], abs=1e-5)


@pytest.mark.parametrize("width, k", [(16000, 10), (16001, 2), (300, 6), (129, 1)])
def test_blocked_top_k_returns_the_values_of_a_plain_top_k(width, k):
    from model.beam_search import topk_rows

    values = torch.randn(6, width, generator=torch.Generator().manual_seed(width))
    values[0] = float("-inf")
    values[0, width // 2] = 0.0
    values[1] = torch.randint(0, 3, (width,), generator=torch.Generator().manual_seed(k)).float()  # many ties
    top, columns = topk_rows(values, k)
    assert torch.equal(top, values.topk(k, dim=1).values)
    assert torch.equal(values.gather(1, columns), top)


def _per_request_step(tables, calls):
    """Step function in which each row follows the table of the request its RowSelection names; the number of
    rows of every call goes to `calls`."""

    def step(prev_ids, state, step_index, selection):
        new_state = scripted_step(lambda p: [0.25] * VOCAB)(prev_ids, state, step_index).state
        prefixes = new_state["prefix"]
        out = []
        for row in range(prev_ids.size(0)):
            request = int(selection.requests[row // selection.per_request])
            prefix = tuple(int(t) for t in prefixes[row] if t >= 0)
            out.append(tables[request](prefix))
        calls.append(prev_ids.size(0))
        return StepOutput(torch.tensor(out).log(), new_state)

    return step


@pytest.mark.parametrize("seeds", [(11, 12, 13), (5, 6, 7, 8, 9)])
def test_decoding_only_the_rows_still_searching_gives_the_same_hypotheses(seeds):
    tables = [random_table(s) for s in seeds]
    config = DecodeConfig(beam_size=3, n_best=2, max_length=6)
    batch = len(tables)

    def decode(narrow):
        calls = []
        state = {"prefix": torch.full((batch * 3, 7), -1)}
        hyps = beam_search(
            _per_request_step(tables, calls),
            state,
            batch_size=batch,
            bos_id=BOS,
            eos_id=EOS,
            config=config,
            narrow_rows=narrow,
        )
        return hyps, calls

    (full, full_calls), (narrow, narrow_calls) = decode(False), decode(True)
    for request in range(batch):
        assert [h.token_ids for h in narrow[request]] == [h.token_ids for h in full[request]]
        assert [h.score for h in narrow[request]] == pytest.approx([h.score for h in full[request]], abs=1e-6)
    assert set(full_calls) == {batch * 3}
    assert narrow_calls[0] == batch  # one row per request at the first step: the other beams would be copies
    assert sum(narrow_calls) < sum(full_calls)


def test_narrowed_decoding_copes_with_fewer_candidates_than_beams_at_the_first_step():
    def table(prefix):  # one possible first token, then eos
        return [0.0, 0.0, 1.0, 0.0] if not prefix else [0.0, 1.0, 0.0, 0.0]

    config = DecodeConfig(beam_size=4, n_best=4, max_length=3)
    state = {"prefix": torch.full((2 * 4, 4), -1)}
    hyps = beam_search(
        _per_request_step([table, table], []),
        state,
        batch_size=2,
        bos_id=BOS,
        eos_id=EOS,
        config=config,
        narrow_rows=True,
    )
    assert [[h.token_ids for h in request] for request in hyps] == [[[2]], [[2]]]
