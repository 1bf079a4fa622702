"""Best answer spans from the pointer's start and end distributions: every span within the length cap.

score(i, j) = log P(start = i) + log P(end = j) for i <= j < i + max_words. The search is exhaustive over that
band (batch x passage x cap scores, one top-k), so the best span is exactly the best of all allowed spans.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def best_spans(
    start_log_probs: torch.Tensor,
    end_log_probs: torch.Tensor,
    *,
    max_words: int,
    n_best: int,
) -> list[list[tuple[float, int, int]]]:
    """(batch, p_len) log-probs (-inf where no word) -> per row up to n_best (score, start, end), best first;
    `end` is inclusive. Rows with no allowed span get an empty list."""
    batch, length = start_log_probs.shape
    width = max(1, min(max_words, length))
    ends = F.pad(end_log_probs, (0, width - 1), value=float("-inf")).unfold(
        1, width, 1
    )  # (batch, len, width)
    scores = (start_log_probs.unsqueeze(-1) + ends).reshape(batch, -1)
    top = scores.topk(min(n_best, scores.size(1)), dim=1)
    results: list[list[tuple[float, int, int]]] = []
    for values, indices in zip(top.values.tolist(), top.indices.tolist()):
        row = []
        for value, index in zip(values, indices):
            if value == float("-inf"):
                break
            start = index // width
            row.append((value, start, start + index % width))
        results.append(row)
    return results
