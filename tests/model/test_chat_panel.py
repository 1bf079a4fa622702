"""Tests for model/chat_quality: the Kneser-Ney trigram LM, and each panel figure on hand-made replies.

A garbled, a copied and a generic reply must each fail the check meant for it; a fluent, relevant reply passes.
Every corpus here is built in the test; the tiny corpus's perplexities are far below real data's, so the
disfluency cut is set for it (TINY_CUT) instead of the real-data DISFLUENT_CUT.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from model.chat_quality.ngram_lm import KneserNeyLM
from model.chat_quality.panel import (
    TrainingProfile,
    chat_panel,
    copy_share,
    disfluent_share,
    generic_share,
    language_agreement,
    relevance,
    repetition_share,
    unseen_trigram_share,
)
from model.chat_quality.tokens import content_words, padded_trigrams, panel_tokens

DIALOGS = [
    ("Hello, how are you today?", "I am fine, thank you. And you?", "Very well, thank you."),
    ("Can you recommend a good book?", "I really enjoyed reading the old man and the sea.", "Thank you."),
    (
        "What would you like to eat tonight?",
        "Let's have pizza for dinner tonight.",
        "Good idea, I love pizza.",
    ),
    ("Where is the train station?", "The train station is two blocks from here.", "Thank you."),
    ("Do you like music?", "Yes, I listen to jazz music every day.", "I like jazz music too."),
    ("Is it going to rain tomorrow?", "The weather report says it will rain all day.", "Thank you."),
    ("What time does the bank open?", "The bank opens at nine in the morning.", "Thank you."),
    ("Shall we go to the cinema?", "Sure, let's watch a film at the cinema tonight.", "Great, see you then."),
    ("你好，今天过得怎么样？", "我今天过得很好，谢谢。", "不客气。"),
    ("你喜欢吃什么？", "我喜欢吃饺子和面条。", "我也喜欢吃饺子。"),
] * 5
TINY_CUT = 20.0

GARBLED = "tonight the pizza book cinema rain here the of morning"
COPIED = "what would you like to eat tonight"
GENERIC = "Thank you."
FLUENT = "Let's have pizza for dinner, I love pizza."
TURN = "What would you like to eat tonight?"


@pytest.fixture(scope="module")
def profile() -> TrainingProfile:
    return TrainingProfile.build(DIALOGS, common=2)


@pytest.fixture(scope="module")
def lm() -> KneserNeyLM:
    return KneserNeyLM.build([panel_tokens(turn) for dialog in DIALOGS for turn in dialog])


def tokens(text: str) -> list[str]:
    return panel_tokens(text)


@pytest.mark.parametrize("context", [("<s>", "<s>"), ("the", "train"), ("pizza", "book"), ("zebra", "<unk>")])
def test_probabilities_sum_to_one_over_the_vocabulary(lm: KneserNeyLM, context: tuple[str, str]) -> None:
    # a seen trigram context, another seen one, a seen word in an unseen pair, and an unseen word
    assert math.isclose(sum(lm.prob(word, context) for word in lm.vocabulary()), 1.0, rel_tol=1e-9)


def test_seen_text_has_lower_perplexity_than_shuffled_text(lm: KneserNeyLM) -> None:
    seen = tokens("The weather report says it will rain all day.")
    shuffled = seen[:]
    random.Random(0).shuffle(shuffled)
    assert shuffled != seen
    assert lm.perplexity(seen) < lm.perplexity(shuffled) / 3


def test_an_unseen_word_keeps_a_small_positive_probability(lm: KneserNeyLM) -> None:
    unseen = lm.prob("zebra", ("the", "train"))
    assert 0 < unseen < lm.prob("station", ("the", "train"))


def test_trigrams_are_seen_only_in_training_order(lm: KneserNeyLM) -> None:
    assert lm.has_trigram(("the", "train", "station"))
    assert not lm.has_trigram(("station", "train", "the"))
    assert lm.has_trigram(("<s>", "thank", "you"))


def test_english_splits_into_words_and_marks_and_chinese_into_characters() -> None:
    assert panel_tokens("I don't know, Sorry.") == ["i", "don't", "know", ",", "sorry", "."]
    assert panel_tokens("你好 ，Bob") == ["你", "好", "，", "B", "o", "b"]
    assert padded_trigrams(["ok"]) == [("<s>", "ok", "</s>")]


def test_content_words_leave_out_function_words_and_marks() -> None:
    assert content_words(tokens("Can you recommend a good book?")) == ["recommend", "good", "book"]
    assert content_words(panel_tokens("我喜欢吃饺子。")) == ["喜", "欢", "吃", "饺", "子"]


def test_garbled_reply_is_disfluent_and_a_fluent_one_is_not(profile: TrainingProfile) -> None:
    assert disfluent_share([tokens(GARBLED)], profile.lm, TINY_CUT) == 1.0
    assert disfluent_share([tokens(FLUENT)], profile.lm, TINY_CUT) == 0.0
    assert disfluent_share([[]], profile.lm, TINY_CUT) == 1.0


def test_garbled_reply_is_mostly_unseen_trigrams_and_a_fluent_one_is_not(profile: TrainingProfile) -> None:
    assert unseen_trigram_share([tokens(GARBLED)], profile.lm) > 0.8
    assert unseen_trigram_share([tokens(FLUENT)], profile.lm) < 0.4


def test_generic_reply_is_generic_and_a_fluent_one_is_not(profile: TrainingProfile) -> None:
    assert generic_share([tokens(GENERIC)], profile.common_replies) == 1.0
    assert generic_share([tokens(FLUENT)], profile.common_replies) == 0.0


def test_copied_reply_fails_copy_share_and_a_fluent_one_passes() -> None:
    assert copy_share([tokens(TURN)], [tokens(COPIED)]) == 1.0
    assert copy_share([tokens(TURN)], [tokens(FLUENT)]) == 0.0
    assert copy_share([tokens(TURN)], [tokens(GENERIC)]) == 0.0


def test_fluent_relevant_reply_beats_an_unrelated_training_reply(profile: TrainingProfile) -> None:
    rival = tokens("The train station is two blocks from here.")
    assert relevance([tokens(TURN)], [tokens(FLUENT)], [rival], profile.sif) == 1.0
    assert relevance([tokens(TURN)], [rival], [tokens(FLUENT)], profile.sif) == 0.0


def test_copied_reply_wins_relevance_which_is_why_copy_share_is_read_with_it(
    profile: TrainingProfile,
) -> None:
    rival = tokens("The bank opens at nine in the morning.")
    assert relevance([tokens(TURN)], [tokens(COPIED)], [rival], profile.sif) == 1.0


def test_reply_without_known_words_loses_relevance(profile: TrainingProfile) -> None:
    assert relevance([tokens(TURN)], [["zzz"]], [tokens("Thank you.")], profile.sif) == 0.0


def test_reply_in_another_language_or_empty_disagrees() -> None:
    turns = [TURN, TURN, "你喜欢吃什么？", TURN]
    assert language_agreement(turns, [FLUENT, "我喜欢吃饺子。", "我喜欢吃饺子。", "  "]) == 0.5


def test_repeated_trigram_counts_as_repetition() -> None:
    assert repetition_share([tokens("I like it, I like it, I like it."), tokens(FLUENT)]) == 0.5


def test_panel_scores_replies_and_references_against_the_same_rivals(profile: TrainingProfile) -> None:
    panel = chat_panel(
        [TURN, "Do you like music?"], [GARBLED, GENERIC], [FLUENT, "Yes, I like jazz."], profile
    )
    expected = {
        "count",
        "disfluent_share",
        "unseen_trigram_share",
        "generic_share",
        "top_reply_share",
        "relevance",
        "copy_share",
        "language_agreement",
        "repetition_share",
        "distinct_2",
        "trigram_perplexity",
    }
    assert set(panel["reply"]) == set(panel["human"]) == expected
    assert panel["reply"]["generic_share"] == 0.5 and panel["human"]["generic_share"] == 0.0
    assert panel["reply"]["unseen_trigram_share"] > panel["human"]["unseen_trigram_share"]
    json.dumps(panel)


def test_panel_refuses_replies_that_do_not_match_the_contexts(profile: TrainingProfile) -> None:
    with pytest.raises(ValueError, match="2 contexts, 1 replies"):
        chat_panel([TURN, TURN], [FLUENT], [FLUENT], profile)


def test_panel_figures_are_the_same_for_the_same_seed() -> None:
    first = TrainingProfile.build(DIALOGS, seed=3)
    second = TrainingProfile.build(DIALOGS, seed=3)
    args = ([TURN, "Do you like music?"], [FLUENT, GENERIC], [FLUENT, GENERIC])
    assert chat_panel(*args, first, seed=3) == chat_panel(*args, second, seed=3)


def write_dailydialog(path, dialogs) -> None:
    path.write_text("".join(" __eou__ ".join(turns) + " __eou__\n" for turns in dialogs), encoding="utf-8")


@pytest.mark.slow
def test_eval_chat_prints_the_panel_and_drops_pairs_seen_in_training(
    tmp_path, capsys, tiny_model_dir
) -> None:
    from cli.main import main as s2s

    english = DIALOGS[:8]
    write_dailydialog(tmp_path / "train.txt", english)
    # the first validation dialog is a training dialog: its 2 pairs are dropped; the other has 2 new pairs
    write_dailydialog(
        tmp_path / "valid.txt",
        [english[0], ("Do you like tea?", "Yes, I drink tea every day.", "I like tea too.")],
    )
    assert (
        s2s(
            [
                "eval",
                "chat",
                "--checkpoint",
                str(tiny_model_dir),
                "--data",
                str(tmp_path / "valid.txt"),
                "--panel-train",
                str(tmp_path / "train.txt"),
                "--drop-seen-pairs",
                "--device",
                "cpu",
                "--beam-size",
                "1",
                "--max-length",
                "6",
                "--mmi-weight",
                "0",
                "--sample-count",
                "0",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["dropped_seen_pairs"] == 2 and result["count"] == 2
    assert set(result["panel"]) == {"reply", "human"}
    assert result["panel"]["reply"]["perplexity"] == result["perplexity"]
    assert result["context_gain"] == pytest.approx(
        result["perplexity_other_context"] / result["perplexity"], rel=1e-3
    )
    assert result["panel"]["reply"]["context_gain"] == result["context_gain"]
    assert result["panel"]["human"]["language_agreement"] == 1.0
    assert result["panel"]["human"]["count"] == 2


def test_other_contexts_keep_every_reply_and_give_each_a_different_pairs_conversation() -> None:
    from model.evaluation import with_other_contexts

    pairs = [([f"message {i}"], f"reply {i}") for i in range(5)]
    mixed = with_other_contexts(pairs)
    assert [reply for _, reply in mixed] == [reply for _, reply in pairs]
    assert all(history != own for (history, _), (own, _) in zip(mixed, pairs))
    assert sorted(h[0] for h, _ in mixed) == sorted(h[0] for h, _ in pairs)
    assert with_other_contexts(pairs[:1]) == pairs[:1]
