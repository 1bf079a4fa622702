"""How the chat panel reads text: lower-cased English words and punctuation marks, or Chinese characters;
the content words among them; and the trigrams of a token sequence.

Not here: the model's SentencePiece tokens (model/tokenizer.py), which the panel deliberately does not use,
so that figures do not depend on the model being scored.
"""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Words keep their apostrophes ("don't", "i'm"); every other symbol is a token of its own.
_EN_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)*|[^\w\s]")
_EN_WORD = re.compile(r"[a-z][a-z']*")

BOS = "<s>"
EOS = "</s>"

_EN_STOP_WORDS = frozenset(
    """
a about above after again all also am an and any are aren't as at be because been before being below between
both but by can can't could couldn't did didn't do does doesn't doing don't down during each few for from
further get got had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him
himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's me more most
mustn't my myself no nor not now of off oh ok okay on once only or other ought our ours ourselves out over own
really same shan't she she'd she'll she's should shouldn't so some such than that that's the their theirs them
themselves then there there's these they they'd they'll they're they've this those through to too under until
up very was wasn't we we'd we'll we're we've well were weren't what what's when when's where where's which
while who who's whom why why's will with won't would wouldn't yeah yes you you'd you'll you're you've your
yours yourself yourselves
""".split()
)
# Function characters of everyday Chinese chat: particles, pronouns, copulas, negations, measure words.
_ZH_STOP_CHARACTERS = frozenset(
    "的了是我你他她它们吗呢吧啊呀哦嗯哈在有和也都就不没这那个么要会还很太又才被把给着过对与及或"
)


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def panel_tokens(text: str) -> list[str]:
    """Chinese text (any CJK character): every non-space character; other text: lower-cased words and
    punctuation marks, e.g. "I don't know, sorry." -> ["i", "don't", "know", ",", "sorry", "."]."""
    if has_cjk(text):
        return [ch for ch in text if not ch.isspace()]
    return _EN_TOKEN.findall(text.lower().replace("\u2019", "'"))


def content_words(tokens: list[str]) -> list[str]:
    """The tokens that carry meaning: Chinese characters outside a short list of function characters, or
    English words outside a stop-word list (punctuation and digits are never content)."""
    kept = []
    for token in tokens:
        if _CJK.fullmatch(token):
            if token not in _ZH_STOP_CHARACTERS:
                kept.append(token)
        elif _EN_WORD.fullmatch(token) and token not in _EN_STOP_WORDS:
            kept.append(token)
    return kept


def normalize(text: str) -> str:
    """The text as the panel compares utterances: its tokens joined by single spaces ("Thank you!" and
    "thank you !" are the same utterance)."""
    return " ".join(panel_tokens(text))


def padded_trigrams(tokens: list[str]) -> list[tuple[str, str, str]]:
    """Word trigrams of one utterance with one BOS before and one EOS after, so a one-word reply still has
    one trigram (<s>, word, </s>) and the way a reply starts and ends counts too."""
    padded = [BOS, *tokens, EOS]
    return [(padded[i], padded[i + 1], padded[i + 2]) for i in range(len(padded) - 2)]
