"""Predictor and ModelSet on the committed tiny checkpoint: batching, extractive answers, round trip, goldens."""

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import DecodeConfig
from model.inference import InputError, ModelSet, Predictor

QUESTIONS = [
    ("Where was Bob born?", "Bob was born in Oslo. Later Bob moved to Lima for work."),
    ("Where did Alice move?", "Alice was born in Paris. Later Alice moved to Tokyo for work."),
    ("小红出生在哪里？", "小红出生在上海。后来小红去了北京工作。"),
    ("Where was Grace born?", "Grace was born in Cairo. Later Grace moved to Delhi for work. " * 3),
]
HISTORIES = [["hello"], ["how are you?"], ["你好"], ["hello", "hi there", "what is your name?"]]


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    return Predictor.from_checkpoint(tiny_model_dir, "cpu")


def test_golden_answers_of_the_tiny_model(predictor):
    answers = [hyps[0].text for hyps in predictor.answer(QUESTIONS[:3], DecodeConfig(beam_size=3))]
    assert answers == ["Oslo", "Tokyo", "上海"]


def test_extractive_answers_are_exact_passage_substrings_with_their_span(predictor):
    for (_, passage), hyps in zip(
        QUESTIONS, predictor.answer(QUESTIONS, DecodeConfig(beam_size=4, n_best=4))
    ):
        for hyp in hyps:
            assert hyp.span is not None
            assert passage[hyp.span[0] : hyp.span[1]] == hyp.text
            assert hyp.text in passage


@pytest.mark.parametrize("task", ["answer", "reply"])
def test_batched_results_equal_one_request_at_a_time(predictor, task):
    decode = DecodeConfig(beam_size=4, n_best=3, max_length=12)
    requests = QUESTIONS if task == "answer" else HISTORIES
    run = getattr(predictor, task)
    batched = run(requests, decode)
    for request, batch_hyps in zip(requests, batched):
        [alone] = run([request], decode)
        assert [h.tokens for h in batch_hyps] == [h.tokens for h in alone]
        assert [h.score for h in batch_hyps] == pytest.approx([h.score for h in alone], abs=1e-4)


def test_attention_rows_cover_the_source_and_sum_to_one(predictor):
    [[hyp]] = predictor.reply([HISTORIES[3]], DecodeConfig(beam_size=2, max_length=8))
    assert len(hyp.attention) == len(hyp.tokens) == len(hyp.p_gen)
    for row in hyp.attention:
        assert len(row) == len(hyp.source_tokens)
        assert sum(row) == pytest.approx(1.0, abs=1e-4)
    assert hyp.to_dict()["tokens"] == hyp.tokens


def test_beam_of_one_matches_greedy_argmax(predictor):
    [[beam_one]] = predictor.reply([["hello"]], DecodeConfig(beam_size=1, max_length=10))
    ids = [predictor.tokenizer.sp.piece_to_id(p) for p in beam_one.tokens]
    from model.formatting import format_chat
    from model.inference import pad_sources

    source = format_chat(predictor.tokenizer, ["hello"], max_source_len=64, max_turns=4)
    src, lengths, features, *_ = pad_sources([source], 0, torch.device("cpu"))
    with torch.no_grad():
        memory, state = predictor.model.encode(src, lengths, features)
        prev, greedy = torch.tensor([predictor.tokenizer.bos_id]), []
        for _ in range(10):
            out = predictor.model.decode_step(prev, state, memory)
            log_probs = out.log_probs.index_fill(1, predictor._banned_ids, float("-inf"))
            log_probs[:, predictor.tokenizer.bos_id] = float("-inf")
            prev = log_probs.argmax(-1)
            if int(prev) == predictor.tokenizer.eos_id:
                break
            greedy.append(int(prev))
            state = out.state
    assert ids == greedy


def test_checkpoint_round_trip_gives_identical_outputs(predictor, tmp_path):
    save_checkpoint(tmp_path, model=predictor.model, tokenizer=predictor.tokenizer, step=5)
    again = Predictor.from_checkpoint(tmp_path, "cpu")
    decode = DecodeConfig(beam_size=3, n_best=2)
    first, second = predictor.answer(QUESTIONS, decode), again.answer(QUESTIONS, decode)
    assert [[h.text for h in x] for x in first] == [[h.text for h in x] for x in second]
    assert [[h.score for h in x] for x in first] == [[h.score for h in x] for x in second]


def test_fp16_export_loads_back_as_float32(predictor, tmp_path):
    save_checkpoint(tmp_path, model=predictor.model, tokenizer=predictor.tokenizer, step=5, half=True)
    loaded = load_checkpoint(tmp_path)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_a_decode_json_beside_the_weights_overrides_the_stored_decoding(predictor, tmp_path):
    save_checkpoint(
        tmp_path,
        model=predictor.model,
        tokenizer=predictor.tokenizer,
        step=1,
        decode=DecodeConfig(beam_size=4, mmi_weight=0.5),
    )
    (tmp_path / "decode.json").write_text('{"sample_count": 8, "top_p": 0.7}')
    loaded = load_checkpoint(tmp_path)
    assert (loaded.decode.beam_size, loaded.decode.mmi_weight) == (4, 0.5)
    assert (loaded.decode.sample_count, loaded.decode.top_p) == (8, 0.7)
    (tmp_path / "decode.json").write_text('{"sample_cuont": 8}')
    with pytest.raises(ValueError, match="sample_cuont"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_with_another_tokenizer_is_refused(predictor, tmp_path, tokenizer):
    save_checkpoint(tmp_path, model=predictor.model, tokenizer=predictor.tokenizer, step=1)
    (tmp_path / "tokenizer.model").write_bytes(tokenizer.model_bytes)
    with pytest.raises(ValueError, match="tokenizer"):
        load_checkpoint(tmp_path)


def test_a_broken_checkpoint_file_gets_a_clear_error(tmp_path, predictor):
    save_checkpoint(tmp_path, model=predictor.model, tokenizer=predictor.tokenizer, step=1)
    (tmp_path / "model.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path)


def test_empty_input_is_refused_with_a_clear_error(predictor):
    with pytest.raises(InputError, match="question is empty"):
        predictor.answer([("  ", "passage")])
    with pytest.raises(InputError, match="no message"):
        predictor.reply([[]])


def test_model_set_routes_by_task_and_language(tmp_path, tiny_model_dir):
    import json
    import shutil

    for name in ("a", "b"):
        shutil.copytree(tiny_model_dir, tmp_path / name)
    (tmp_path / "models.json").write_text(json.dumps({"rc/en": "a", "rc/zh": "b", "chat/*": "a"}))
    models = ModelSet.load(tmp_path, "cpu")
    assert models.predictor_for("rc", "zh") is not models.predictor_for("rc", "en")
    assert models.predictor_for("chat", "zh") is models.predictor_for("rc", "en")
    answers = models.answer(QUESTIONS[:3], DecodeConfig(beam_size=2))
    assert [a[0].text for a in answers] == ["Oslo", "Tokyo", "上海"]
    # One rule routes a request, for decoding and for what the workers record about it: an RC request by its
    # question and the start of its passage (a chat request by its last message).
    zh, en = models.predictor_for("rc", "zh"), models.predictor_for("rc", "en")
    assert models.predictor_for_request("rc", QUESTIONS[2]) is zh
    assert models.predictor_for_request("rc", ("Where?", "小红出生在上海。后来小红去了北京工作。")) is zh
    assert models.predictor_for_request("rc", QUESTIONS[0]) is en


def test_mmi_reranking_returns_the_requested_n_best_sorted_by_the_new_score(predictor):
    plain = predictor.reply(HISTORIES, DecodeConfig(beam_size=4, n_best=4, max_length=8))
    reranked = predictor.reply(HISTORIES, DecodeConfig(beam_size=4, n_best=2, max_length=8, mmi_weight=0.5))
    for before, after in zip(plain, reranked):
        assert len(after) == 2
        assert after[0].score >= after[1].score
        assert {tuple(h.tokens) for h in after} <= {tuple(h.tokens) for h in before}


def test_extractive_answers_start_and_end_on_word_boundaries(tokenizer):
    from model.formatting import word_boundaries

    passage = "Architecturally, the year 1984 in Krak\u00f3w; \u5317\u4eac"
    encoding = tokenizer.encode(passage)
    starts, ends = word_boundaries(passage, encoding.spans)
    by_start = {
        span[0]: index for index, span in reversed(list(enumerate(encoding.spans))) if span[1] > span[0]
    }
    year = passage.index("1984")
    assert starts[by_start[year]] and not ends[by_start[year]]  # split digits: 1984 is one word
    assert ends[by_start[year + 3]] and not starts[by_start[year + 3]]
    assert not any(starts[by_start[year + k]] for k in (1, 2, 3))
    for char in ("\u5317", "\u4eac"):  # each Chinese character is a word
        index = by_start[passage.index(char)]
        assert starts[index] and ends[index]
    for index, (begin, finish) in enumerate(encoding.spans):
        if starts[index]:
            assert finish > begin and not (
                passage[begin - 1].isalnum()
                and passage[begin].isascii()
                and passage[begin - 1].isascii()
                and passage[begin].isalnum()
            )
    assert sum(starts) < len(starts) and sum(ends) < len(ends)


def test_a_switch_of_language_leaves_the_earlier_turns_out_of_the_source(tokenizer):
    from model.formatting import format_chat, same_language_suffix

    history = ["hello there, how are you today?", "i am fine, thank you.", "你好，你是谁？"]
    assert same_language_suffix(history) == ["你好，你是谁？"]
    assert same_language_suffix(history[:2]) == history[:2]
    source = format_chat(tokenizer, history, max_source_len=64, max_turns=4)
    assert not any(
        piece.strip("\u2581").isascii() and piece.strip("\u2581").isalpha()
        for piece in source.pieces
        if not piece.startswith("<")
    )


def test_sampled_candidates_make_replies_reproducible_and_ranked(predictor):
    decode = DecodeConfig(beam_size=3, n_best=3, max_length=8, sample_count=6, top_p=0.95, mmi_weight=0.5)
    first = predictor.reply(HISTORIES, decode)
    again = predictor.reply(list(reversed(HISTORIES)), decode)[::-1]
    assert [[h.text for h in hyps] for hyps in first] == [[h.text for h in hyps] for hyps in again]
    for hyps in first:
        assert len(hyps) == 3 and len({tuple(h.tokens) for h in hyps}) == 3
        assert hyps[0].score >= hyps[1].score >= hyps[2].score
    beam_only = predictor.reply(HISTORIES, decode.replace(sample_count=0))
    assert [[h.text for h in hyps] for hyps in first] != [[h.text for h in hyps] for hyps in beam_only]


def test_fluency_floor_drops_candidates_far_below_the_best_mean_log_prob():
    from model.beam_search import BeamHypothesis
    from model.inference import fluent_candidates

    def hyp(tokens, log_prob):
        return BeamHypothesis(
            token_ids=list(range(tokens)), score=0.0, log_prob=log_prob, attention=None, p_gen=None
        )

    fluent, short_fluent, garbled = hyp(5, -6.0), hyp(1, -2.0), hyp(9, -40.0)  # means -1.0, -1.0, -4.0
    assert fluent_candidates([fluent, garbled, short_fluent], 1.5) == [fluent, short_fluent]
    assert fluent_candidates([fluent, garbled], 5.0) == [fluent, garbled]
    assert fluent_candidates([], 1.0) == []


def test_replies_cut_off_at_max_length_lose_to_any_that_ended_by_themselves():
    from model.beam_search import BeamHypothesis
    from model.inference import finished_candidates

    def hyp(tokens):
        return BeamHypothesis(
            token_ids=list(range(tokens)), score=0.0, log_prob=-1.0, attention=None, p_gen=None
        )

    cut, short, long_finished = hyp(40), hyp(3), hyp(39)
    assert finished_candidates([cut, short, long_finished], 40) == [short, long_finished]
    assert finished_candidates([cut], 40) == [cut]  # nothing else to say: keep it rather than no reply
    assert finished_candidates([], 40) == []


def test_reranked_replies_are_all_cut_off_or_none_are(predictor):
    decode = DecodeConfig(beam_size=6, n_best=6, max_length=6, min_length=1, mmi_weight=0.5, sample_count=6)

    def cut(hyps):
        return [len(h.tokens) >= decode.max_length for h in hyps]

    plain = predictor.reply(HISTORIES, decode.replace(mmi_weight=0.0, sample_count=0))
    assert any(any(cut(hyps)) and not all(cut(hyps)) for hyps in plain)  # the beam does end some mid-reply
    for hyps in predictor.reply(HISTORIES, decode):
        assert all(cut(hyps)) or not any(cut(hyps)), [h.text for h in hyps]
