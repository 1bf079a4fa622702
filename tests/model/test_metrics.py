"""Tests for model/metrics.py on hand-made cases whose scores are worked out in the comments."""

import math

import pytest

from model.metrics import (
    answer_length_bucket,
    cmrc_evaluate,
    cmrc_exact_match,
    cmrc_f1,
    corpus_bleu,
    distinct_n,
    exact_match,
    f1,
    longest_common_substring,
    mixed_segmentation,
    normalize_answer,
    perplexity,
    remove_punctuation,
    squad_evaluate,
    top_reply_share,
)
from model.readers import QAExample


def qa(example_id: str, *answers: str) -> QAExample:
    return QAExample(example_id, "q", "p", answers, tuple(0 for _ in answers))


# --- SQuAD ---------------------------------------------------------------------------------------


def test_normalize_answer_drops_case_punctuation_articles_and_extra_spaces() -> None:
    assert normalize_answer("  The  Nobel-Prize, an award! ") == "nobelprize award"


def test_exact_match_ignores_articles_and_punctuation() -> None:
    assert exact_match("the Nobel Prize.", ["Nobel Prize"]) == 1.0
    assert exact_match("Nobel Prizes", ["Nobel Prize"]) == 0.0


def test_f1_partial_overlap_value() -> None:
    # "big cat sat" vs "cat sat down": 2 shared of 3 each -> P = R = 2/3 -> F1 = 2/3
    assert f1("the big cat sat", ["a cat sat down"]) == pytest.approx(2 / 3)


def test_f1_takes_the_best_ground_truth_and_zero_without_overlap() -> None:
    assert f1("cat", ["dog", "cat"]) == 1.0
    assert f1("cat", ["dog"]) == 0.0
    assert f1("cat", []) == 0.0


def test_squad_evaluate_scores_missing_predictions_as_zero_in_percent() -> None:
    examples = [qa("1", "Nobel Prize"), qa("2", "big cat"), qa("3", "x")]
    # EM 1 + 0 + 0; F1 1 + 2/3 (prediction "cat": P 1, R 1/2) + 0
    scores = squad_evaluate({"1": "The Nobel Prize", "2": "cat"}, examples)
    assert scores["count"] == 3
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


# --- CMRC 2018 -----------------------------------------------------------------------------------


def test_mixed_segmentation_splits_chinese_characters_and_keeps_words_and_numbers_whole() -> None:
    assert mixed_segmentation("2008年北京Olympic Games，3.5米") == [
        "2008", "年", "北", "京", "olympic", "games", "，", "3.5", "米",
    ]  # fmt: skip
    assert mixed_segmentation("北京，Olympic", remove_punc=True) == ["北", "京", "olympic"]


def test_cmrc_punctuation_list_is_the_official_one() -> None:
    # ASCII "." and "," are not on the official list, and a lone "…" never matches its "……" entry.
    assert remove_punctuation(" 《北京》，上海。A-B. … ") == "北京上海ab. …"


def test_longest_common_substring_counts_contiguous_tokens_only() -> None:
    assert longest_common_substring(list("abxcd"), list("abcd")) == 2
    assert longest_common_substring(list("ab"), list("cd")) == 0


def test_cmrc_f1_on_a_chinese_example_computed_by_hand() -> None:
    # prediction 北京奥运会 (5 tokens), answer 北京的奥运会 (6 tokens); longest common run 奥运会 = 3
    # P = 3/5, R = 3/6 -> F1 = 2 * 0.6 * 0.5 / 1.1 = 6/11
    assert cmrc_f1("北京奥运会", ["北京的奥运会"]) == pytest.approx(6 / 11)


def test_cmrc_f1_counts_an_english_word_as_one_token() -> None:
    # prediction [1963, 年] vs answer [1963, 年, 春]: LCS 2 -> P = 1, R = 2/3 -> F1 = 0.8
    assert cmrc_f1("1963年", ["1963年春", "无关"]) == pytest.approx(0.8)


def test_cmrc_exact_match_ignores_official_punctuation_only() -> None:
    assert cmrc_exact_match("《北京》。", ["北京"]) == 1.0
    assert cmrc_exact_match("北京.", ["北京"]) == 0.0


def test_cmrc_evaluate_averages_over_all_examples_in_percent() -> None:
    examples = [qa("a", "北京的奥运会"), qa("b", "踢爆"), qa("c", "上海")]
    scores = cmrc_evaluate({"a": "北京奥运会", "b": "踢爆！"}, examples)
    assert scores["count"] == 3
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (6 / 11 + 1) / 3)


# --- chat ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_order", [1, 2])
def test_bleu_of_identical_strings_is_100(max_order: int) -> None:
    hypotheses = ["hello , how are you ?", "我 很 好"]
    assert corpus_bleu(hypotheses, hypotheses, max_order=max_order) == pytest.approx(100.0)


def test_bleu_1_is_unigram_precision_times_brevity_penalty() -> None:
    # 3 of 3 unigrams match; hypothesis 3 tokens vs reference 4 -> BP = exp(1 - 4/3)
    assert corpus_bleu(["the cat sat"], ["the cat sat down"], max_order=1) == pytest.approx(
        100 * math.exp(1 - 4 / 3)
    )


def test_bleu_scores_chinese_per_character() -> None:
    # zh tokenization: 我爱你 vs 我爱他 -> 2 of 3 characters match, same length -> BLEU-1 = 66.7
    assert corpus_bleu(["我爱你"], ["我爱他"], max_order=1) == pytest.approx(200 / 3)


def test_bleu_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        corpus_bleu(["a"], ["a", "b"])


def test_distinct_n_counts_unique_ngrams_over_the_corpus() -> None:
    texts = ["i am fine", "i am ok"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)  # i, am, fine, ok of 6 words
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # (i am) twice, (am fine), (am ok)
    assert distinct_n(["我好", "我好"], 1) == pytest.approx(2 / 4)
    assert distinct_n([], 2) == 0.0


def test_perplexity_is_exp_of_mean_nll() -> None:
    assert perplexity(2 * math.log(5), 2) == pytest.approx(5.0)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_top_reply_share_finds_the_most_common_reply() -> None:
    assert top_reply_share(["I don't know", "yes", "I don't know ", "no"]) == ("I don't know", 0.5)
    assert top_reply_share([]) == ("", 0.0)


@pytest.mark.parametrize(
    ("text", "bucket"),
    [
        ("", "0"),
        ("Paris", "1"),
        ("Nobel Prize", "2"),
        ("a b c", "3"),
        ("a b c d e", "4-5"),
        ("a b c d e f", "6+"),
    ]
    + [("北京", "1"), ("北京市", "2"), ("1963年", "2"), ("中华人民共和国", "4-5")],
)
def test_answer_length_bucket(text: str, bucket: str) -> None:
    assert answer_length_bucket(text) == bucket
