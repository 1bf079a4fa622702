"""Inference speed-ups of the decoder: the bf16 output layer (an option) and the malloc tuning (always on)."""

import pytest
import torch

from model.allocator import keep_freed_memory
from model.config import DecodeConfig
from model.device import resolve_output_precision
from model.inference import Predictor
from model.seq2seq import Batch

QUESTIONS = [
    ("Where was Bob born?", "Bob was born in Oslo. Later Bob moved to Lima for work."),
    ("Where did Alice move?", "Alice was born in Paris. Later Alice moved to Tokyo for work."),
    ("小红出生在哪里？", "小红出生在上海。后来小红去了北京工作。"),
]
HISTORIES = [["hello"], ["how are you?"], ["你好"], ["hello", "hi there", "what is your name?"]]


@pytest.fixture(scope="module")
def exact(tiny_model_dir):
    return Predictor.from_checkpoint(tiny_model_dir, "cpu", "float32")


@pytest.fixture(scope="module")
def bf16(tiny_model_dir):
    return Predictor.from_checkpoint(tiny_model_dir, "cpu", "bfloat16")


def _logits(predictor, rows=6):
    torch.manual_seed(0)
    hidden = torch.randn(rows, predictor.config.hidden_size)
    with torch.inference_mode():
        return predictor.model.decoder.output_logits(hidden)


def test_bf16_output_layer_is_close_to_float32_and_stays_float32(exact, bf16):
    assert exact.output_dtype == torch.float32 and bf16.output_dtype == torch.bfloat16
    reference, rounded = _logits(exact), _logits(bf16)
    assert rounded.dtype == torch.float32
    assert not torch.equal(reference, rounded)  # it really computes in bf16
    assert (reference - rounded).abs().max() < 0.05 * max(1.0, float(reference.abs().max()))


def test_bf16_decoding_gives_the_tiny_models_answers_and_batch_equals_single(exact, bf16):
    decode = DecodeConfig(beam_size=3, n_best=2, max_length=10)
    assert [h[0].text for h in bf16.answer(QUESTIONS, decode)] == [
        h[0].text for h in exact.answer(QUESTIONS, decode)
    ]
    batched = bf16.reply(HISTORIES, decode)
    for history, hyps in zip(HISTORIES, batched):
        alone = bf16.reply([history], decode)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in alone], abs=1e-4)


def test_training_and_saving_ignore_the_low_precision_copy(tiny_model_dir):
    predictor = Predictor.from_checkpoint(tiny_model_dir, "cpu", "bfloat16")
    model, tok = predictor.model, predictor.tokenizer
    assert model.config.dropout == 0.0  # so train mode is deterministic here
    assert not any("low_precision" in name for name in model.state_dict())
    ids = torch.tensor([tok.encode_ids("Bob was born in Oslo.")])
    target = torch.tensor([[tok.bos_id, *tok.encode_ids("Oslo"), tok.eos_id]])
    batch = Batch(src_ids=ids, src_lengths=torch.tensor([ids.size(1)]), src_features=None, tgt_ids=target)
    with torch.no_grad():
        low = model(batch).nll_sum
        model.train()
        trained = model(batch).nll_sum  # training mode computes the output layer from the float32 weights
        model.eval()
        model.decoder.set_output_precision(torch.float32)
        exact = model(batch).nll_sum
    assert torch.equal(trained, exact)
    assert not torch.equal(low, exact)


def test_output_precision_names():
    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    assert resolve_output_precision("float32", cpu) == torch.float32
    assert resolve_output_precision("bfloat16", cpu) == torch.bfloat16
    assert resolve_output_precision("auto", cuda) == torch.float32  # GPUs keep the exact output layer
    assert resolve_output_precision("auto", cpu) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="output precision 'fp8'"):
        resolve_output_precision("fp8", cpu)


def test_malloc_tuning_applies_once_on_glibc():
    import platform

    applied = keep_freed_memory()
    assert keep_freed_memory() == applied
    if platform.libc_ver()[0] == "glibc":
        assert applied
