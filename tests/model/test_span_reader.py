"""The boundary-pointer reader: span search, features, the GloVe loader, batching, checkpoints, serving."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from model.config import DecodeConfig
from model.inference import InputError, ModelSet
from model.span.checkpoint import load_reader, save_reader
from model.span.examples import request_inputs, training_input
from model.span.features import collate, match_features, windows
from model.span.glove import read_text_vectors
from model.span.network import ReaderConfig, SpanReader, reverse_padded
from model.span.predictor import ReaderPredictor
from model.span.search import best_spans
from model.span.text import split_words, stem, token_span
from model.span.vocab import build_vocab, char_ngrams

PASSAGE = "Bob was born in Oslo in 1874. Later Bob moved to Lima, where he built a lighthouse."


def brute_force(
    start: list[float], end: list[float], max_words: int, n_best: int
) -> list[tuple[float, int, int]]:
    spans = [
        (start[i] + end[j], i, j)
        for i in range(len(start))
        for j in range(i, min(len(end), i + max_words))
        if start[i] > -math.inf and end[j] > -math.inf
    ]
    return sorted(spans, key=lambda s: -s[0])[:n_best]


@pytest.mark.parametrize("seed", range(5))
def test_best_spans_equal_an_exhaustive_search_within_the_cap(seed):
    generator = torch.Generator().manual_seed(seed)
    start = torch.log_softmax(torch.randn(3, 17, generator=generator), -1)
    end = torch.log_softmax(torch.randn(3, 17, generator=generator), -1)
    start[1, 12:] = end[1, 12:] = -math.inf  # a shorter row: padding
    found = best_spans(start, end, max_words=4, n_best=6)
    for row in range(3):
        expected = brute_force(start[row].tolist(), end[row].tolist(), 4, 6)
        assert [(i, j) for _, i, j in found[row]] == [(i, j) for _, i, j in expected]
        assert [s for s, _, _ in found[row]] == pytest.approx([s for s, _, _ in expected])
        assert all(j - i < 4 and i <= j for _, i, j in found[row])
    assert all(j < 12 for _, _, j in found[1])


def test_best_spans_never_pick_padding_even_when_it_would_score_best():
    start = torch.tensor([[-3.0, -2.0, -math.inf, -math.inf]])
    end = torch.tensor([[-2.5, -3.0, -math.inf, -math.inf]])
    found = best_spans(start, end, max_words=5, n_best=10)[0]
    assert [(i, j) for _, i, j in found] == [(1, 1), (0, 0), (0, 1)]
    assert [s for s, _, _ in found] == pytest.approx([-5.0, -5.5, -6.0])


def test_words_keep_character_offsets_and_split_chinese_into_characters():
    words = split_words("Who built it? 小明在2019年去了Lima。")
    assert words.words == (
        "Who",
        "built",
        "it",
        "?",
        "小",
        "明",
        "在",
        "2019",
        "年",
        "去",
        "了",
        "Lima",
        "。",
    )
    text = "Who built it? 小明在2019年去了Lima。"
    assert all(text[s:e] == w for w, (s, e) in zip(words.words, words.spans))
    assert split_words("It cost 1,000.5 dollars").words == ("It", "cost", "1,000.5", "dollars")
    assert token_span(split_words(PASSAGE).spans, PASSAGE.index("Oslo"), PASSAGE.index("Oslo") + 4) == (4, 4)
    assert stem("played") == stem("playing") == stem("plays") == "play"


def test_match_features_flag_raw_lower_and_stemmed_matches_and_term_frequency():
    question = split_words("Where did bob play in Lima?")
    passage = split_words("Bob played where Bob lived Lima")
    rows = match_features(question, passage)
    assert rows[0][:3] == (0.0, 1.0, 1.0)  # "Bob" ~ "bob": lower-case and stem match only
    assert rows[1][:3] == (0.0, 0.0, 1.0)  # "played" ~ "play": stem only
    assert rows[2][:3] == (0.0, 1.0, 1.0)  # "where" ~ "Where"
    assert rows[4][:3] == (0.0, 0.0, 0.0)  # "lived"
    assert rows[5][:3] == (1.0, 1.0, 1.0)  # "Lima"
    assert rows[0][3] == pytest.approx(2 / 6)


def test_chinese_bigram_match_tells_a_matching_word_from_a_recurring_character():
    question = split_words("北京大学在哪年建立？")
    passage = split_words("大学在北京，建于1898年。北方")
    rows = match_features(question, passage, bigram_match=True)
    by_char = dict(zip(passage.words, rows))
    assert [r[0] for r in rows[:5]] == [
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
    ]  # 大 学 在 北 京: each char is in the question
    assert by_char["大"][1:3] == (0.0, 1.0)  # 大学: with the next character
    assert by_char["学"][1:3] == (1.0, 1.0)  # 大学 and 学在
    assert by_char["京"][1:3] == (1.0, 0.0)  # 北京 with the previous one; 京， is not in the question
    assert rows[-1][1:3] == (0.0, 0.0) and rows[-2][:3] == (1.0, 0.0, 0.0)  # 北方: 北 recurs, no bigram
    assert rows[-1][3] == pytest.approx(1 / len(passage))
    plain = match_features(question, passage)
    assert [r[0] for r in plain] == [r[0] for r in rows] and [r[3] for r in plain] == [r[3] for r in rows]


def test_windows_cover_the_passage_and_training_picks_the_window_holding_the_answer():
    assert windows(5, 10, 5) == [(0, 5)]
    assert windows(25, 10, 5) == [(0, 10), (5, 15), (10, 20), (15, 25)]
    assert windows(23, 10, 5)[-1] == (13, 23)
    vocab = build_vocab(
        Counter(["who"]), Counter(w.lower() for w in split_words(PASSAGE).words), None, min_count=1
    )
    config = ReaderConfig(
        vocab_size=len(vocab), tuned_count=vocab.tuned_count, max_passage_words=8, window_stride=4
    )
    item = training_input("Where did Bob move?", PASSAGE, PASSAGE.index("Lima"), "Lima", vocab, config)
    assert not isinstance(item, str)
    assert item.passage.words[item.start] == "Lima" and item.start == item.end
    assert training_input("Q?", PASSAGE, -1, "x", vocab, config) == "the answer is not in the passage"


def test_glove_text_loader_reads_a_table_and_names_a_broken_line(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("the 0.1 0.2 0.3\nbob 1 2 3\nlima -1 -2 -3\n")
    table = read_text_vectors(path)
    assert table.words == ("the", "bob", "lima") and table.dim == 3
    assert table.vectors[1].tolist() == [1.0, 2.0, 3.0]
    assert table.index["lima"] == 2
    path.write_text("the 0.1 0.2 0.3\nbob 1 2\n")
    with pytest.raises(ValueError, match=":2: 2 values, expected 3"):
        read_text_vectors(path)


def test_vocab_trains_top_question_words_and_fixes_the_other_pretrained_rows():
    pretrained = {"the": 0, "bob": 1, "lima": 2, "oslo": 3, "cat": 4}
    vocab = build_vocab(
        Counter({"bob": 5, "where": 4}),
        Counter({"the": 9, "lima": 3, "zorb": 3, "rare": 1}),
        pretrained,
        tune_top=1,
        min_count=2,
        extra_pretrained=["cat", "the"],
    )
    assert vocab.words[:2] == ("<pad>", "<unk>")
    tuned = set(vocab.words[2 : vocab.tuned_count])
    assert tuned == {"bob", "where", "zorb"}  # top question word with a vector + words without vectors
    assert set(vocab.words[vocab.tuned_count :]) == {"the", "lima", "cat"}
    assert vocab.id("Bob") == vocab.id("bob") and vocab.id("rare") == 1
    assert char_ngrams("Lima", 1000) == char_ngrams("lima", 1000) and all(
        0 < g < 1000 for g in char_ngrams("x", 1000)
    )


def test_reverse_padded_reverses_within_each_length():
    x = torch.arange(8.0).view(2, 4, 1)
    out = reverse_padded(x, torch.tensor([4, 2]))
    assert out[:, :, 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]


def tiny_predictor(char_buckets: int = 64) -> ReaderPredictor:
    torch.manual_seed(0)
    vocab = build_vocab(
        Counter(w.lower() for w in split_words("where did bob move who built it").words),
        Counter(w.lower() for w in split_words(PASSAGE).words),
        None,
        min_count=1,
    )
    config = ReaderConfig(
        vocab_size=len(vocab),
        tuned_count=vocab.tuned_count,
        embed_size=12,
        hidden_size=8,
        passage_layers=2,
        question_layers=1,
        char_buckets=char_buckets,
        char_size=4,
        max_passage_words=10,
        window_stride=5,
        max_answer_words=4,
    )
    return ReaderPredictor(
        SpanReader(config),
        vocab,
        device=torch.device("cpu"),
        decode=DecodeConfig(beam_size=3, n_best=3, max_length=4),
    )


def test_a_batch_gives_the_same_logits_as_its_rows_alone():
    predictor = tiny_predictor()
    texts = [("Where did Bob move?", PASSAGE), ("Who built it?", "He built it."), ("Bob?", "Bob moved")]
    items = [request_inputs(q, p, predictor.vocab, predictor.config)[0][1] for q, p in texts]
    with torch.no_grad():
        together = predictor.model(collate(items))
        for row, item in enumerate(items):
            alone = predictor.model(collate([item]))
            n = len(item.passage_ids)
            assert torch.allclose(together.start_logits[row, :n], alone.start_logits[0], atol=1e-5)
            assert torch.allclose(together.end_logits[row, :n], alone.end_logits[0], atol=1e-5)
            assert torch.isinf(together.start_logits[row, n:]).all()


def test_answers_are_passage_substrings_with_pointer_distributions_and_batch_equals_single():
    predictor = tiny_predictor()
    questions = [("Where did Bob move?", PASSAGE), ("Who built it?", "He built it.")]
    batched = predictor.answer(questions)
    for (question, passage), hyps in zip(questions, batched):
        single = predictor.answer([(question, passage)])[0]
        assert [h.text for h in hyps] == [h.text for h in single]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in single], abs=1e-5)
        assert len(hyps) == 3 and hyps[0].score >= hyps[1].score >= hyps[2].score
        for hyp in hyps:
            assert hyp.span is not None and passage[hyp.span[0] : hyp.span[1]] == hyp.text
            assert len(split_words(hyp.text)) <= 4
            assert len(hyp.attention) == 2 == len(hyp.tokens)
            question_words = hyp.source_tokens.index("<sep>")
            assert all(w == 0.0 for row in hyp.attention for w in row[: question_words + 1])
            assert all(sum(row) == pytest.approx(1.0, abs=1e-4) for row in hyp.attention)
            assert hyp.pointer is not None and hyp.pointer["question_tokens"] == list(
                split_words(question).words
            )
        assert len({h.span for h in hyps}) == len(hyps)
    long = predictor.answer([("Where did Bob move?", PASSAGE + " " + PASSAGE)])[0]  # read in windows
    assert all(h.text for h in long)


def test_bad_requests_are_clear_errors():
    predictor = tiny_predictor()
    with pytest.raises(InputError, match="question is empty"):
        predictor.answer([("  ", PASSAGE)])
    with pytest.raises(InputError, match="passage is empty"):
        predictor.answer([("Who?", "")])
    with pytest.raises(InputError, match="does not chat"):
        predictor.reply([["hello"]])


def test_checkpoint_round_trip_in_fp16_loads_through_model_set(tmp_path):
    predictor = tiny_predictor()
    save_reader(
        tmp_path / "rc",
        predictor.model,
        predictor.vocab,
        step=7,
        decode=predictor.default_decode,
        meta={"note": "test"},
        half=True,
    )
    loaded = load_reader(tmp_path / "rc")
    assert loaded.step == 7 and loaded.vocab == predictor.vocab and loaded.decode.n_best == 3
    models = ModelSet.load(tmp_path / "rc", device="cpu")
    question = [("Where did Bob move?", PASSAGE)]
    assert models.answer(question)[0][0].text == predictor.answer(question)[0][0].text
    assert models.versions["*"].startswith("rc@") and models.versions["*"].endswith("-7")
    (tmp_path / "rc" / "model.pt").write_bytes(b"broken")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        ModelSet.load(tmp_path / "rc", device="cpu")


def test_answers_never_start_or_end_on_punctuation():
    predictor = tiny_predictor()
    passage = "Bob , . ; Oslo . Lima , 1874 ! 北京 。 上海 ，"
    for hyps in predictor.answer(
        [("Where?", passage), ("When?", passage)], DecodeConfig(beam_size=8, n_best=8, max_length=4)
    ):
        assert hyps
        for hyp in hyps:
            assert hyp.text[0] not in ".,;!。，" and hyp.text[-1] not in ".,;!。，"
