"""The chat quality panel (issue #14): one figure per way a reply can fail, each a pure function of the
replies (as panel tokens) and of what the panel knows about the training split (`TrainingProfile`).

    disfluent_share       replies whose per-token trigram-LM perplexity exceeds `cut` (garbled text)
    unseen_trigram_share  mean share of a reply's trigrams (<s>/</s>-padded) never seen in training
    generic_share         replies equal to one of the 50 commonest training replies
    top_reply_share       share of the single commonest reply
    relevance             share of contexts where the reply is closer (SIF cosine) to the last user turn
                          than a random training reply is
    copy_share            mean share of a reply's content words found in the last user turn
    language_agreement    replies in the language of the last user turn
    repetition_share      replies holding some word trigram twice
    distinct_2            distinct bigrams / all bigrams (metrics.distinct_n)
    trigram_perplexity    per-token perplexity of all replies together under the trigram LM

`chat_panel` scores the model's replies and the human references of the same contexts against the same
random training replies, so every threshold can be read relative to people. Not here: reading files,
running the model, or the model's own likelihood (MMI reranking maximises it, so it cannot judge replies).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from model.language import detect_language
from model.metrics import distinct_n, top_reply_share

from .ngram_lm import KneserNeyLM
from .tokens import content_words, normalize, padded_trigrams, panel_tokens
from .vectors import SifEncoder

DISFLUENT_CUT = 150.0
COMMON_REPLIES = 50

Tokens = Sequence[str]


@dataclass(frozen=True)
class TrainingProfile:
    """What the panel knows about the training split: its trigram LM, its SIF sentence vectors, its commonest
    replies (normalized text) and every training reply (tokens) to draw random rivals from."""

    lm: KneserNeyLM
    sif: SifEncoder
    common_replies: frozenset[str]
    replies: tuple[tuple[str, ...], ...]

    @classmethod
    def build(
        cls,
        dialogs: Sequence[Sequence[str]],
        *,
        common: int = COMMON_REPLIES,
        seed: int = 0,
    ) -> TrainingProfile:
        """From training dialogs (each its turns, oldest first): every turn trains the LM and the vectors;
        every turn after the first is a reply."""
        sentences = [panel_tokens(turn) for turns in dialogs for turn in turns]
        replies = tuple(tuple(panel_tokens(turn)) for turns in dialogs for turn in turns[1:])
        if not replies:
            raise ValueError("the panel needs training dialogs of two turns or more")
        counts = Counter(" ".join(reply) for reply in replies)
        return cls(
            lm=KneserNeyLM.build(sentences),
            sif=SifEncoder.build(sentences, seed=seed),
            common_replies=frozenset(text for text, _ in counts.most_common(common)),
            replies=replies,
        )

    def draw_rivals(self, count: int, seed: int) -> list[tuple[str, ...]]:
        """`count` training replies drawn at random (with replacement), the same ones for the same seed."""
        rng = random.Random(seed)
        return [self.replies[rng.randrange(len(self.replies))] for _ in range(count)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def disfluent_share(replies: Sequence[Tokens], lm: KneserNeyLM, cut: float = DISFLUENT_CUT) -> float:
    """Share of replies whose per-token perplexity under `lm` exceeds `cut`; an empty reply is disfluent."""
    return _mean([float(not reply or lm.perplexity(reply) > cut) for reply in replies])


def unseen_trigram_share(replies: Sequence[Tokens], lm: KneserNeyLM) -> float:
    """Mean over replies of the share of their padded trigrams never seen in training (an empty reply: 1)."""
    shares = []
    for reply in replies:
        grams = padded_trigrams(list(reply)) if reply else []
        shares.append(_mean([float(not lm.has_trigram(g)) for g in grams]) if grams else 1.0)
    return _mean(shares)


def generic_share(replies: Sequence[Tokens], common_replies: frozenset[str]) -> float:
    """Share of replies that equal (as normalized text) one of the commonest training replies."""
    return _mean([float(" ".join(reply) in common_replies) for reply in replies])


def relevance(
    last_turns: Sequence[Tokens], replies: Sequence[Tokens], rivals: Sequence[Tokens], sif: SifEncoder
) -> float:
    """Share of contexts where the reply is more similar to the last user turn than its rival (a random
    training reply) is. A reply without a vector loses; a rival without one loses to any reply with one."""
    wins = []
    for turn, reply, rival in zip(last_turns, replies, rivals, strict=True):
        mine, theirs = sif.similarity(reply, turn), sif.similarity(rival, turn)
        wins.append(float(mine is not None and (theirs is None or mine > theirs)))
    return _mean(wins)


def copy_share(last_turns: Sequence[Tokens], replies: Sequence[Tokens]) -> float:
    """Mean over replies of the share of their content words that occur in the last user turn; a reply
    without content words copies nothing (0)."""
    shares = []
    for turn, reply in zip(last_turns, replies, strict=True):
        words, offered = content_words(list(reply)), set(content_words(list(turn)))
        shares.append(_mean([float(w in offered) for w in words]))
    return _mean(shares)


def language_agreement(last_turns: Sequence[str], replies: Sequence[str]) -> float:
    """Share of replies in the language of the last user turn (model.language.detect_language); an empty
    reply does not agree."""
    return _mean(
        [
            float(bool(reply.strip()) and detect_language(reply) == detect_language(turn))
            for turn, reply in zip(last_turns, replies, strict=True)
        ]
    )


def repetition_share(replies: Sequence[Tokens]) -> float:
    """Share of replies that hold some word trigram (no padding) more than once."""
    repeats = []
    for reply in replies:
        grams = [tuple(reply[i : i + 3]) for i in range(len(reply) - 2)]
        repeats.append(float(len(set(grams)) < len(grams)))
    return _mean(repeats)


def trigram_perplexity(replies: Sequence[Tokens], lm: KneserNeyLM) -> float:
    """exp(-mean log P) over every token (and </s>) of all replies together."""
    values = [value for reply in replies for value in lm.log_probs(reply)]
    return math.exp(-_mean(values)) if values else math.inf


def panel_figures(
    last_turns: Sequence[str],
    replies: Sequence[str],
    rivals: Sequence[Tokens],
    profile: TrainingProfile,
    *,
    cut: float = DISFLUENT_CUT,
) -> dict[str, float]:
    """Every figure of the panel for one set of replies to the contexts ending in `last_turns`."""
    turn_tokens = [panel_tokens(turn) for turn in last_turns]
    reply_tokens = [panel_tokens(reply) for reply in replies]
    figures = {
        "count": len(replies),
        "disfluent_share": disfluent_share(reply_tokens, profile.lm, cut),
        "unseen_trigram_share": unseen_trigram_share(reply_tokens, profile.lm),
        "generic_share": generic_share(reply_tokens, profile.common_replies),
        "top_reply_share": top_reply_share(normalize(reply) for reply in replies)[1],
        "relevance": relevance(turn_tokens, reply_tokens, rivals, profile.sif),
        "copy_share": copy_share(turn_tokens, reply_tokens),
        "language_agreement": language_agreement(last_turns, replies),
        "repetition_share": repetition_share(reply_tokens),
        "distinct_2": distinct_n(replies, 2),
        "trigram_perplexity": trigram_perplexity(reply_tokens, profile.lm),
    }
    return {name: round(value, 4) for name, value in figures.items()}


def chat_panel(
    last_turns: Sequence[str],
    replies: Sequence[str],
    references: Sequence[str],
    profile: TrainingProfile,
    *,
    seed: int = 0,
    cut: float = DISFLUENT_CUT,
) -> dict[str, dict[str, float]]:
    """{"reply": figures, "human": figures}: the model's replies and the human references of the same
    contexts, both against the same random training rivals (drawn with `seed`)."""
    if not len(last_turns) == len(replies) == len(references):
        raise ValueError(f"{len(last_turns)} contexts, {len(replies)} replies, {len(references)} references")
    rivals = profile.draw_rivals(len(last_turns), seed)
    return {
        "reply": panel_figures(last_turns, replies, rivals, profile, cut=cut),
        "human": panel_figures(last_turns, references, rivals, profile, cut=cut),
    }
