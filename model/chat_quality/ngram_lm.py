"""An interpolated Kneser-Ney trigram language model over panel tokens (Kneser & Ney 1995; the interpolated
form of Chen & Goodman 1998), built from the training split in plain Python in seconds.

    P3(w | u v) = max(c(u v w) - D3, 0) / c(u v .) + D3 N1+(u v .) / c(u v .) * P2(w | v)
    P2(w | v)   = max(N1+(. v w) - D2, 0) / N1+(. v .) + D2 N1+(v .) / N1+(. v .) * P1(w)
    P1(w)       = max(N1+(. w) - D1, 0) / N1+(. .) + D1 N1+(.) / N1+(. .) * 1 / |V|

c counts trigrams; N1+(. v w) is the number of distinct words seen before "v w" (a continuation count).
An unseen context falls through to the next order. Each order's discount is Ney's D = n1 / (n1 + 2 n2)
from its own count-of-counts. |V| holds the training words, </s> and <unk>, so the uniform floor gives an
unseen word its probability and P(. | context) sums to one over V. Sentences are padded <s> <s> ... </s>.

Not here: tokenizing text (tokens.py) or any figure built on the model (panel.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from .tokens import BOS, EOS

UNK = "<unk>"
_BITS = 21  # one token id per 21 bits of a packed n-gram key: up to 2 M word types
_MASK = (1 << _BITS) - 1
_MASK2 = (1 << (2 * _BITS)) - 1


def _discount(counts: Iterable[int]) -> float:
    count_of = Counter(c for c in counts if c <= 2)
    n1, n2 = count_of[1], count_of[2]
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


def _context_totals(counts: dict[int, int]) -> tuple[dict[int, int], dict[int, int]]:
    """For n-gram counts keyed by packed ids: per (n-1)-gram context, the summed count and the number of
    distinct words after it."""
    totals: Counter[int] = Counter()
    followers: Counter[int] = Counter()
    for key, count in counts.items():
        totals[key >> _BITS] += count
        followers[key >> _BITS] += 1
    return dict(totals), dict(followers)


class KneserNeyLM:
    """Build with `KneserNeyLM.build(sentences)`; then `log_probs(tokens)`, `perplexity(tokens)`, `prob(...)`."""

    def __init__(self, ids: dict[str, int], trigrams: dict[int, int]) -> None:
        self._ids = ids
        self._trigrams = trigrams
        self._tri_totals, self._tri_followers = _context_totals(trigrams)
        bigrams: Counter[int] = Counter(key & _MASK2 for key in trigrams)  # N1+(. v w)
        self._bigrams = dict(bigrams)
        self._bi_totals, self._bi_followers = _context_totals(self._bigrams)
        unigrams: Counter[int] = Counter(key & _MASK for key in self._bigrams)  # N1+(. w)
        self._unigrams = dict(unigrams)
        self._uni_total = sum(unigrams.values())
        self._uni_types = len(unigrams)
        self.vocab_size = len(ids) - 1  # every id but <s>, which is never predicted
        self._d3 = _discount(trigrams.values())
        self._d2 = _discount(self._bigrams.values())
        self._d1 = _discount(unigrams.values())

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]]) -> KneserNeyLM:
        """Counts the trigrams of every sentence (a list of tokens), padded <s> <s> ... </s>."""
        ids = {UNK: 0, BOS: 1, EOS: 2}
        trigrams: Counter[int] = Counter()
        for tokens in sentences:
            seq = [1, 1, *(ids.setdefault(t, len(ids)) for t in tokens), 2]
            trigrams.update(
                (seq[i] << 2 * _BITS) | (seq[i + 1] << _BITS) | seq[i + 2] for i in range(len(seq) - 2)
            )
        if len(ids) > _MASK:
            raise ValueError(f"{len(ids)} word types: the packed n-gram keys hold at most {_MASK}")
        return cls(ids, dict(trigrams))

    def vocabulary(self) -> list[str]:
        """The words P(. | context) is a distribution over: training words, </s> and <unk>."""
        return [word for word in self._ids if word != BOS]

    def _id(self, word: str) -> int:
        return self._ids.get(word, 0)

    def _prob_ids(self, u: int, v: int, w: int) -> float:
        p = (
            max(self._unigrams.get(w, 0) - self._d1, 0.0) + self._d1 * self._uni_types / self.vocab_size
        ) / self._uni_total
        total = self._bi_totals.get(v)
        if total:
            count = self._bigrams.get((v << _BITS) | w, 0)
            p = (max(count - self._d2, 0.0) + self._d2 * self._bi_followers[v] * p) / total
        context = (u << _BITS) | v
        total = self._tri_totals.get(context)
        if total:
            count = self._trigrams.get((context << _BITS) | w, 0)
            p = (max(count - self._d3, 0.0) + self._d3 * self._tri_followers[context] * p) / total
        return p

    def prob(self, word: str, context: tuple[str, str]) -> float:
        """P(word | the two tokens before it); use <s> for positions before the sentence."""
        return self._prob_ids(self._id(context[0]), self._id(context[1]), self._id(word))

    def log_probs(self, tokens: Sequence[str]) -> list[float]:
        """Natural-log probability of each token and of the closing </s>: len(tokens) + 1 values."""
        seq = [1, 1, *(self._id(t) for t in tokens), 2]
        return [math.log(self._prob_ids(seq[i], seq[i + 1], seq[i + 2])) for i in range(len(seq) - 2)]

    def perplexity(self, tokens: Sequence[str]) -> float:
        """Per-token perplexity of one sentence, its </s> included: exp(-mean log P)."""
        values = self.log_probs(tokens)
        return math.exp(-sum(values) / len(values))

    def has_trigram(self, trigram: tuple[str, str, str]) -> bool:
        """Whether the three tokens occurred in this order in training (sentence padding included)."""
        u, v, w = (self._ids.get(t) for t in trigram)
        if u is None or v is None or w is None:
            return False
        return ((u << 2 * _BITS) | (v << _BITS) | w) in self._trigrams
