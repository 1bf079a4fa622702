"""Word vectors trained here on the training split, and SIF sentence vectors built on them.

Word vectors: positive PMI of words within a symmetric window, with the context distribution smoothed by
0.75, factored by a seeded randomized truncated SVD (U sqrt(S)), as in Levy, Goldberg & Dagan 2015, who find
it on a par with word2vec on similarity tasks; numpy only, seconds for DailyDialog's most common 5,000 words.
Sentence vectors: SIF (Arora, Liang & Ma 2017), the a / (a + p(w)) weighted mean of the word vectors,
a = 1e-3, less its projection on the first singular vector of the training sentences' vectors.

Not here: tokenizing (tokens.py) or deciding what a similarity means for a reply (panel.py).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import numpy as np


def _cooccurrences(sentences: Sequence[Sequence[str]], index: dict[str, int], window: int) -> np.ndarray:
    """Symmetric counts of word pairs at most `window` tokens apart in one sentence: (vocab, vocab)."""
    flat: list[int] = []
    gap = [-1] * window  # so no pair spans two sentences
    for tokens in sentences:
        flat.extend(index.get(t, -1) for t in tokens)
        flat.extend(gap)
    ids = np.asarray(flat, dtype=np.int64)
    vocab_size = len(index)
    keys = []
    for distance in range(1, window + 1):
        left, right = ids[:-distance], ids[distance:]
        both = (left >= 0) & (right >= 0)
        keys.append(left[both] * vocab_size + right[both])
    pair_keys, counts = np.unique(np.concatenate(keys), return_counts=True)
    matrix = np.zeros((vocab_size, vocab_size), dtype=np.float32)
    matrix[pair_keys // vocab_size, pair_keys % vocab_size] = counts
    return matrix + matrix.T


def _ppmi(matrix: np.ndarray, smoothing: float = 0.75) -> np.ndarray:
    word = matrix.sum(axis=1, keepdims=True)  # (vocab, 1)
    context = matrix.sum(axis=0, keepdims=True) ** smoothing  # (1, vocab)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(matrix * context.sum() / (word * context))
    return np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0).astype(np.float32)


def _truncated_svd(matrix: np.ndarray, rank: int, seed: int, power_iterations: int = 4) -> np.ndarray:
    """U[:, :rank] sqrt(S[:rank]) of `matrix` by randomized range finding (Halko, Martinsson & Tropp 2011)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], rank + 10)).astype(np.float32))
    for _ in range(power_iterations):
        basis, _ = np.linalg.qr(matrix @ (matrix.T @ basis))
    small_u, singular, _ = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    return (basis @ small_u[:, :rank]) * np.sqrt(singular[:rank])


class SifEncoder:
    """Sentence vectors for the panel's relevance check: `encode(tokens)`, `similarity(first, second)`."""

    def __init__(
        self,
        word_vectors: dict[str, np.ndarray],
        weights: dict[str, float],
        common_direction: np.ndarray | None,
    ) -> None:
        self._vectors = word_vectors
        self._weights = weights
        self._common = common_direction

    @classmethod
    def build(
        cls,
        sentences: Sequence[Sequence[str]],
        *,
        dim: int = 100,
        window: int = 4,
        max_words: int = 5000,
        min_count: int = 3,
        a: float = 1e-3,
        seed: int = 0,
        common_sample: int = 10000,
    ) -> SifEncoder:
        """Trains word vectors for the `max_words` most common tokens seen at least `min_count` times, and
        takes p(w) for the SIF weights and the common direction from the same sentences."""
        counts = Counter(t for tokens in sentences for t in tokens)
        total = sum(counts.values())
        words = [w for w, c in counts.most_common(max_words) if c >= min_count]
        index = {w: i for i, w in enumerate(words)}
        rank = min(dim, max(1, len(words) - 10))
        matrix = _truncated_svd(_ppmi(_cooccurrences(sentences, index, window)), rank, seed)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms > 0, norms, 1.0)
        encoder = cls(
            {w: matrix[i] for w, i in index.items()},
            {w: a / (a + c / total) for w, c in counts.items()},
            None,
        )
        sample = random.Random(seed).sample(list(sentences), min(common_sample, len(sentences)))
        rows = [v for v in map(encoder.encode, sample) if v is not None]
        if rows:
            _, _, right = np.linalg.svd(np.stack(rows), full_matrices=False)
            encoder._common = right[0]
        return encoder

    def encode(self, tokens: Sequence[str]) -> np.ndarray | None:
        """The SIF vector (dim,) of one sentence, or None when none of its tokens has a word vector."""
        known = [t for t in tokens if t in self._vectors]
        if not known:
            return None
        vector = sum(self._weights[t] * self._vectors[t] for t in known) / len(known)
        if self._common is not None:
            vector = vector - (vector @ self._common) * self._common
        return np.asarray(vector)

    def similarity(self, first: Sequence[str], second: Sequence[str]) -> float | None:
        """Cosine of two sentences' SIF vectors; None when either has no vector or a zero vector."""
        u, v = self.encode(first), self.encode(second)
        if u is None or v is None:
            return None
        scale = float(np.linalg.norm(u) * np.linalg.norm(v))
        return float(u @ v) / scale if scale > 0 else None
