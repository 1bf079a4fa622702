"""Evaluation metrics as pure functions: SQuAD v1.1 and CMRC 2018 EM/F1, and chat metrics (BLEU, distinct-n,
perplexity, reply diversity).

The SQuAD functions follow the official evaluate-v1.1.py; the CMRC functions port the official
cmrc2018_evaluate.py, with a regex standing in for nltk.word_tokenize. Not here: running a model or reading
files (see model/readers.py for the data and its records).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from sacrebleu.metrics import BLEU

from model.readers import QAExample

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_Scorer = Callable[[str, Sequence[str]], float]


def _has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


# --- SQuAD v1.1 (official evaluate-v1.1.py) ------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-cases, drops ASCII punctuation and the articles a/an/the, and collapses whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _overlap_f1(common: int, prediction_len: int, truth_len: int) -> float:
    if common == 0:
        return 0.0
    precision = common / prediction_len
    recall = common / truth_len
    return 2 * precision * recall / (precision + recall)


def _token_f1(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    common = sum((Counter(prediction_tokens) & Counter(truth_tokens)).values())
    return _overlap_f1(common, len(prediction_tokens), len(truth_tokens))


def exact_match(prediction: str, ground_truths: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized ground truth, else 0.0."""
    return float(normalize_answer(prediction) in {normalize_answer(truth) for truth in ground_truths})


def f1(prediction: str, ground_truths: Sequence[str]) -> float:
    """Token-overlap F1 (bag of normalized words), the max over the ground truths; 0.0 if there are none."""
    return max((_token_f1(prediction, truth) for truth in ground_truths), default=0.0)


def squad_evaluate(predictions: Mapping[str, str], examples: Iterable[QAExample]) -> dict[str, float]:
    """SQuAD v1.1 EM and F1 in percent over `examples`; an example with no prediction scores 0.

    Returns {"exact_match", "f1", "count"}.
    """
    return _evaluate(predictions, examples, exact_match, f1)


# --- CMRC 2018 (official cmrc2018_evaluate.py) ---------------------------------------------------

# The official list, kept as is: "……" is one entry but text is compared a character at a time, so a
# lone "…" is never removed; ASCII "." and "," are not in the list either.
_CMRC_PUNCTUATION = frozenset(
    ["-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“", "”", "；"]
    + ["’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』"]
)
_CMRC_CHINESE = re.compile(r"[\u4e00-\u9fa5]")
# Stands in for nltk.word_tokenize on the non-Chinese runs: words and numbers (3.5, 1,000) stay whole,
# any other symbol is a token of its own. Contractions ("don't") are not split as nltk would.
_CMRC_WORD = re.compile(r"[^\W_]+(?:[.,][^\W_]+)*|\S")


def mixed_segmentation(text: str, remove_punc: bool = False) -> list[str]:
    """Splits into CMRC tokens: every Chinese character and listed punctuation mark is one token,
    and the text between them is split into words, e.g. "2008年北京Olympic Games" ->
    ["2008", "年", "北", "京", "olympic", "games"] (lower-cased)."""
    tokens: list[str] = []
    run: list[str] = []
    for ch in text.lower().strip():
        if remove_punc and ch in _CMRC_PUNCTUATION:
            continue
        if _CMRC_CHINESE.match(ch) or ch in _CMRC_PUNCTUATION:
            tokens.extend(_CMRC_WORD.findall("".join(run)))
            run = []
            tokens.append(ch)
        else:
            run.append(ch)
    tokens.extend(_CMRC_WORD.findall("".join(run)))
    return tokens


def remove_punctuation(text: str) -> str:
    """Lower-cases, strips and drops the official CMRC punctuation list."""
    return "".join(ch for ch in text.lower().strip() if ch not in _CMRC_PUNCTUATION)


def longest_common_substring(first: Sequence[str], second: Sequence[str]) -> int:
    """Length of the longest common contiguous run of tokens (official find_lcs)."""
    best = 0
    previous = [0] * (len(second) + 1)
    for a in first:
        current = [0] * (len(second) + 1)
        for j, b in enumerate(second):
            if a == b:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def _cmrc_f1_one(prediction: str, ground_truth: str) -> float:
    prediction_tokens = mixed_segmentation(prediction, remove_punc=True)
    truth_tokens = mixed_segmentation(ground_truth, remove_punc=True)
    common = longest_common_substring(truth_tokens, prediction_tokens)
    return _overlap_f1(common, len(prediction_tokens), len(truth_tokens))


def cmrc_exact_match(prediction: str, ground_truths: Sequence[str]) -> float:
    """1.0 if the prediction equals any ground truth once punctuation is removed, else 0.0."""
    return float(remove_punctuation(prediction) in {remove_punctuation(truth) for truth in ground_truths})


def cmrc_f1(prediction: str, ground_truths: Sequence[str]) -> float:
    """Longest-common-substring F1 over mixed-segmentation tokens, the max over the ground truths."""
    return max((_cmrc_f1_one(prediction, truth) for truth in ground_truths), default=0.0)


def cmrc_evaluate(predictions: Mapping[str, str], examples: Iterable[QAExample]) -> dict[str, float]:
    """CMRC 2018 EM and F1 in percent over `examples`; an example with no prediction scores 0,
    as in the official script. Returns {"exact_match", "f1", "count"}."""
    return _evaluate(predictions, examples, cmrc_exact_match, cmrc_f1)


def _evaluate(
    predictions: Mapping[str, str], examples: Iterable[QAExample], em_fn: _Scorer, f1_fn: _Scorer
) -> dict[str, float]:
    count = 0
    em_total = f1_total = 0.0
    for example in examples:
        count += 1
        if example.id in predictions:
            em_total += em_fn(predictions[example.id], example.answers)
            f1_total += f1_fn(predictions[example.id], example.answers)
    scale = 100.0 / count if count else 0.0
    return {"exact_match": em_total * scale, "f1": f1_total * scale, "count": count}


# --- chat ----------------------------------------------------------------------------------------


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], max_order: int = 2, tokenize: str | None = None
) -> float:
    """Corpus BLEU-`max_order` (0-100) of one reference per hypothesis, with sacrebleu.

    `tokenize` defaults to "zh" when any text holds Chinese characters, else "13a".
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if tokenize is None:
        tokenize = "zh" if any(_has_cjk(t) for t in [*hypotheses, *references]) else "13a"
    bleu = BLEU(max_ngram_order=max_order, tokenize=tokenize)
    return float(bleu.corpus_score(list(hypotheses), [list(references)]).score)


def _chat_tokens(text: str) -> list[str]:
    # Chinese is scored per character, other text per whitespace-separated word.
    return [ch for ch in text if not ch.isspace()] if _has_cjk(text) else text.split()


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams / all n-grams over the corpus, 0.0 if none.

    Tokens are characters for text with Chinese characters, words otherwise.
    """
    total = 0
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        tokens = _chat_tokens(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(total_nll / total_tokens), with total_nll the summed negative log-likelihood in nats."""
    if total_tokens <= 0:
        raise ValueError(f"total_tokens must be positive, got {total_tokens}")
    mean = total_nll / total_tokens
    return math.exp(mean) if mean < 700 else math.inf


def top_reply_share(texts: Iterable[str]) -> tuple[str, float]:
    """The most common reply (stripped) and its share of all replies: a high share is a bot stuck on
    one safe answer. ("", 0.0) for no replies."""
    counts = Counter(text.strip() for text in texts)
    if not counts:
        return "", 0.0
    reply, count = counts.most_common(1)[0]
    return reply, count / sum(counts.values())


def answer_length_bucket(text: str) -> str:
    """Buckets an answer's length in words: "0", "1", "2", "3", "4-5" or "6+".

    Two Chinese characters count as one word (rounded up), so "北京" is 1 and "1963年" is 2.
    """
    cjk_chars = len(_CJK.findall(text))
    words = len(_CJK.sub(" ", text).split()) + math.ceil(cjk_chars / 2)
    if words <= 3:
        return str(words)
    return "4-5" if words <= 5 else "6+"


_QUESTION_WORDS = (
    ("how many", "how many"),
    ("how much", "how much"),
    ("who", "who"),
    ("whom", "who"),
    ("whose", "who"),
    ("when", "when"),
    ("where", "where"),
    ("why", "why"),
    ("which", "which"),
    ("what", "what"),
    ("how", "how"),
)
_ZH_QUESTION_WORDS = (
    ("多少", "how many"),
    ("几", "how many"),
    ("谁", "who"),
    ("什么时候", "when"),
    ("何时", "when"),
    ("哪一年", "when"),
    ("哪年", "when"),
    ("哪里", "where"),
    ("哪儿", "where"),
    ("在哪", "where"),
    ("为什么", "why"),
    ("为何", "why"),
    ("哪", "which"),
    ("什么", "what"),
    ("怎么", "how"),
    ("如何", "how"),
)


def question_word(question: str) -> str:
    """The question's wh-word as an English bucket ("who", "when", "where", "how many", "why", "what",
    "which", "how", "how much"), from its first wh-word (Chinese: its first interrogative); "other" if none."""
    if _has_cjk(question):
        found = [
            (question.find(word), -len(word), bucket)
            for word, bucket in _ZH_QUESTION_WORDS
            if word in question
        ]
        return min(found)[2] if found else "other"
    words = re.findall(r"[a-z]+", question.lower())
    text = " ".join(words)
    best: tuple[int, str] | None = None
    for phrase, bucket in _QUESTION_WORDS:
        match = re.search(rf"\b{phrase}\b", text)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), bucket)
    return best[1] if best else "other"
