"""Shapes, masks and the copy distribution of the model's parts, on tiny dimensions."""

import pytest
import torch

from model.attention import Attention
from model.config import ModelConfig
from model.seq2seq import Batch, build_model

VOCAB = 20


def tiny_config(**overrides):
    values = dict(vocab_size=VOCAB, embed_size=8, hidden_size=8, encoder_layers=2, dropout=0.0)
    values.update(overrides)
    return ModelConfig(**values)


def tiny_batch():
    torch.manual_seed(0)
    src = torch.randint(4, VOCAB, (3, 7))
    lengths = torch.tensor([7, 4, 2])
    src[1, 4:] = 0
    src[2, 2:] = 0
    return Batch(
        src_ids=src,
        src_lengths=lengths,
        src_features=torch.randint(0, 2, (3, 7)),
        tgt_ids=torch.randint(4, VOCAB, (3, 5)),
    )


def attention_and_sources(kind, seed):
    """An attention module with coverage and two sources of 5 positions, the first with 2 of padding."""
    torch.manual_seed(seed)
    return (
        Attention(kind, 8, coverage=True),
        torch.randn(2, 5, 8),
        torch.tensor([[False, False, False, True, True], [False] * 5]),
    )


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_attention_gives_padding_exactly_zero_weight(kind):
    attention, memory, pad_mask = attention_and_sources(kind, 0)
    weights, context = attention(
        torch.randn(2, 8), memory, attention.precompute_keys(memory), pad_mask, torch.rand(2, 5)
    )
    assert weights.shape == (2, 5) and context.shape == (2, 8)
    assert torch.all(weights[0, 3:] == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(2))
    assert torch.allclose(context[0], weights[0] @ memory[0], atol=1e-6)


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_rows_sharing_a_source_attend_as_if_it_were_copied_for_each(kind):
    attention, memory, pad_mask = attention_and_sources(kind, 1)
    query, coverage = torch.randn(6, 8), torch.rand(6, 5)  # three rows (beams) per source
    shared = attention(query, memory, attention.precompute_keys(memory), pad_mask, coverage)
    copied_memory = memory.repeat_interleave(3, dim=0)
    copied = attention(
        query,
        copied_memory,
        attention.precompute_keys(copied_memory),
        pad_mask.repeat_interleave(3, dim=0),
        coverage,
    )
    for got, expected in zip(shared, copied):
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_forward_returns_a_finite_loss_and_per_step_log_probs(kind):
    model = build_model(tiny_config(attention=kind, coverage=True))
    out = model(tiny_batch(), label_smoothing=0.1, coverage_weight=1.0)
    assert out.log_probs.shape == (3, 4, VOCAB)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.dim() > 1)


def test_encoder_output_ignores_what_sits_in_the_padding():
    model = build_model(tiny_config()).eval()
    batch = tiny_batch()
    memory_a, _ = model.encode(batch.src_ids, batch.src_lengths, batch.src_features)
    noisy = batch.src_ids.clone()
    noisy[2, 2:] = 9
    memory_b, _ = model.encode(noisy, batch.src_lengths, batch.src_features)
    assert torch.allclose(memory_a.states[2, :2], memory_b.states[2, :2], atol=1e-6)


def test_copy_distribution_is_a_probability_distribution_that_favours_attended_tokens():
    model = build_model(tiny_config(copy=True)).eval()
    batch = tiny_batch()
    memory, state = model.encode(batch.src_ids, batch.src_lengths, batch.src_features)
    out = model.decode_step(torch.full((3,), 2), state, memory)
    assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(3), atol=1e-5)
    assert torch.all((out.p_gen > 0) & (out.p_gen < 1))
    assert out.attention.shape == (3, 7)
    assert torch.all(out.attention[2, 2:] == 0)


def test_without_copy_p_gen_is_one():
    model = build_model(tiny_config(copy=False)).eval()
    batch = tiny_batch()
    memory, state = model.encode(batch.src_ids, batch.src_lengths, batch.src_features)
    out = model.decode_step(torch.full((3,), 2), state, memory)
    assert torch.all(out.p_gen == 1)


def test_config_rejects_an_unknown_attention():
    with pytest.raises(ValueError):
        tiny_config(attention="cosine")


def test_requested_decoding_overrides_defaults_within_bounds():
    from model.config import DecodeConfig

    base = DecodeConfig(beam_size=5, n_best=3, max_length=40)
    assert base.with_request(None) is base
    changed = base.with_request({"beam_size": 2, "length_penalty": 0.6})
    assert (changed.beam_size, changed.n_best, changed.length_penalty, changed.max_length) == (2, 2, 0.6, 40)
    with pytest.raises(ValueError, match="unknown"):
        base.with_request({"extractive": False})
    with pytest.raises(ValueError, match="beam_size"):
        base.with_request({"beam_size": 64})
    with pytest.raises(ValueError):
        base.with_request({"beam_size": 0})


# --- the CPU training path: unpacked encoder LSTMs, one-pass teacher forcing, adaptive softmax ---------------


def test_unpacked_training_encoder_equals_the_packed_lstm_at_every_real_position():
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from model.encoder import Encoder

    torch.manual_seed(3)
    lstm = torch.nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
    inputs, lengths = torch.randn(3, 7, 6), torch.tensor([7, 4, 1])
    states, final = Encoder._run_unpacked(lstm, inputs, lengths)
    packed, (h_n, _) = lstm(pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False))
    expected, _ = pad_packed_sequence(packed, batch_first=True, total_length=7)
    assert torch.allclose(states, expected, atol=1e-6)  # padding included: zero in both
    assert torch.allclose(final, torch.cat([h_n[-2], h_n[-1]], dim=-1), atol=1e-6)
    states.sum().backward()
    assert lstm.weight_hh_l1_reverse.grad is not None and lstm.weight_hh_l1_reverse.grad.abs().sum() > 0


FAST_PATHS = [
    dict(input_feeding=False),
    dict(input_feeding=False, copy=False),
    dict(input_feeding=False, copy=False, adaptive_cutoffs=(6, 12), hidden_size=16),
]


@pytest.mark.parametrize("overrides", FAST_PATHS, ids=["copy", "tied", "adaptive"])
def test_one_pass_teacher_forcing_scores_targets_as_the_step_by_step_decoder_does(overrides):
    model = build_model(tiny_config(**overrides)).eval()
    batch = tiny_batch()
    batch.tgt_ids[2, 3:] = 0  # a shorter target
    with torch.no_grad():
        out = model(batch)
        memory, state = model.encode(batch.src_ids, batch.src_lengths, batch.src_features)
        stepped = torch.zeros(3)
        for t in range(batch.tgt_ids.size(1) - 1):
            step = model.decode_step(batch.tgt_ids[:, t], state, memory)
            gold = batch.tgt_ids[:, t + 1]
            stepped += step.log_probs.gather(1, gold.unsqueeze(1)).squeeze(1) * (gold != 0)
            state = step.state
    assert torch.allclose(out.target_log_probs.sum(-1), stepped, atol=1e-4)
    assert float(out.nll_sum) == pytest.approx(-float(stepped.sum()), rel=1e-4)
    assert int(out.tokens) == int((batch.tgt_ids[:, 1:] != 0).sum())


def test_adaptive_softmax_step_is_a_distribution_and_the_model_trains():
    model = build_model(
        tiny_config(input_feeding=False, copy=False, adaptive_cutoffs=(6, 12), hidden_size=16)
    )
    out = model(tiny_batch())
    assert out.log_probs is None and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.dim() > 1)
    model.eval()
    batch = tiny_batch()
    memory, state = model.encode(batch.src_ids, batch.src_lengths, batch.src_features)
    step = model.decode_step(torch.full((3,), 2), state, memory)
    assert step.log_probs.shape == (3, VOCAB)
    assert torch.allclose(step.log_probs.exp().sum(-1), torch.ones(3), atol=1e-5)


def test_adaptive_softmax_model_fits_a_small_batch():
    torch.manual_seed(0)
    model = build_model(
        tiny_config(input_feeding=False, copy=False, adaptive_cutoffs=(6, 12), hidden_size=16)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = tiny_batch()
    first = float(model(batch).loss)
    for _ in range(80):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(model(batch).loss) < 0.3 * first


def test_config_refuses_an_adaptive_softmax_with_copy_or_bad_cutoffs():
    with pytest.raises(ValueError, match="copy"):
        tiny_config(adaptive_cutoffs=(6, 12))
    with pytest.raises(ValueError, match="cutoffs"):
        tiny_config(copy=False, adaptive_cutoffs=(12, 6))
    with pytest.raises(ValueError, match="cutoffs"):
        tiny_config(copy=False, adaptive_cutoffs=(6, VOCAB))
    with pytest.raises(ValueError, match="width"):
        tiny_config(copy=False, adaptive_cutoffs=(6, 12))  # hidden 8: the second cluster would be 0 wide
    config = tiny_config(copy=False, adaptive_cutoffs=[6, 12], hidden_size=16)
    assert ModelConfig.from_dict(config.to_dict()).adaptive_cutoffs == (6, 12)


def test_word_dropout_replaces_only_decoder_input_words_and_only_in_training():
    from model.seq2seq import drop_target_words

    torch.manual_seed(0)
    inputs = torch.randint(4, VOCAB, (64, 20))
    inputs[:, 0] = 2  # bos
    inputs[5, 12:] = 0  # padding
    everything = drop_target_words(inputs, 1.0, unk_id=1, pad_id=0)
    assert (everything[:, 0] == 2).all() and (everything[5, 12:] == 0).all()
    assert (everything[:, 1:][inputs[:, 1:] != 0] == 1).all()
    assert torch.equal(drop_target_words(inputs, 0.0, unk_id=1, pad_id=0), inputs)
    share = (drop_target_words(inputs, 0.3, unk_id=1, pad_id=0)[:, 1:] == 1).float().mean().item()
    assert 0.25 < share < 0.35

    model = build_model(tiny_config(copy=False, input_feeding=False, self_attention=False))
    batch = tiny_batch()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch, word_dropout=0.9).loss, model(batch).loss)  # inference never drops
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        dropped = model(batch, word_dropout=0.9)
        torch.manual_seed(1)
        kept = model(batch)
    assert dropped.tokens == kept.tokens and not torch.equal(dropped.loss, kept.loss)
