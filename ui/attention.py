"""What an answer looked at, for a person: passage highlights (text runs for gr.HighlightedText) and an HTML
view of the attention weights (`attention_html`, shown in a gr.HTML styled with `CSS`).

Input is the record the worker stores with each answer (storage.models.Question.attention): source_tokens,
output_tokens, attention [out][src] and the answer span. A Seq2Seq record's source tokens are SentencePiece
pieces of "<rc> question <sep> passage" (byte pieces like <0xE9> included); a span reader's are question
words, "<sep>" and passage words, its two rows are the start and end distributions, and it adds `pointer`
(start_log_prob, end_log_prob, answer_tokens). The HTML is built here from escaped text only
(html.escape on every token, title and number): passages are user input and gr.HTML does not sanitize.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

SEPARATOR = "<sep>"
SPECIAL = frozenset({"<rc>", "<s>", "</s>", "<pad>"})
ANSWER = "answer"
ATTENDED = "attended"
COLOR_MAP = {ANSWER: "green", ATTENDED: "orange"}
ATTENDED_SHARE = 0.1  # a passage character is "attended" if it got this share of the strongest weight
WINDOW_TOKENS = 60  # passage tokens shown either side of the answer
TOP_TOKENS = 6
PLACEHOLDER = (
    '<div class="attention"><p class="note">Ask a question to see which words the model looked at.</p></div>'
)
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_MAX_UTF8_BYTES = 4
_ANCHOR_TOKENS = 12

# Scoped to the gr.HTML by Gradio (css_template). No backticks, "${" or "{{": it goes through a JS template.
CSS = """
.attention { font-size: 15px; line-height: 1.5; }
.attention h4 { margin: 0 0 4px; font-size: 16px; }
.attention .legend, .attention .note { margin: 2px 0 8px; color: var(--body-text-color); opacity: 0.85; }
.attention .top { margin: 4px 0 10px; }
.attention .chip { display: inline-block; margin: 2px 4px 2px 0; padding: 0 6px; border-radius: 4px;
  background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary); }
.attention .row { display: flex; flex-wrap: wrap; gap: 2px 8px; margin: 0 0 10px; }
.attention .label { flex: 0 0 8em; font-weight: 600; overflow-wrap: anywhere; }
.attention .cells { flex: 1 1 16em; min-width: 0; line-height: 2; overflow-wrap: anywhere; }
.attention .t { padding: 2px 0; border-radius: 2px; color: inherit;
  background-color: rgba(var(--shade), var(--w)); }
.attention .a { box-shadow: inset 0 -3px 0 #15803d; }
.attention .dark { color: #111; }
.attention .att { --shade: 245, 158, 11; }
.attention .start { --shade: 59, 130, 246; }
.attention .end { --shade: 236, 72, 153; }
.attention .sep { margin: 0 0.4em; color: var(--body-text-color-subdued); }
.attention .swatch { display: inline-block; width: 1.2em; height: 1em; vertical-align: middle;
  border: 1px solid var(--border-color-primary); background-color: rgba(var(--shade), var(--w)); }
"""


@dataclass(frozen=True)
class Token:
    """One token as a reader sees it: "▁" dropped, byte pieces decoded into their character."""

    text: str
    spaced: bool  # "▁" marked a space before it
    indices: tuple[int, ...]  # the pieces it is made of


def merge_pieces(pieces: Sequence[str], start: int = 0, end: int | None = None) -> list[Token]:
    """Pieces [start, end) as readable tokens. Byte pieces are joined until they decode (or give up after four
    bytes and show "�"); a bare "▁" is folded into the next token; <rc>-like markers are left out."""
    tokens: list[Token] = []
    raw, indices, spaced = b"", [], False
    for index in range(start, len(pieces) if end is None else end):
        piece = pieces[index]
        if piece in SPECIAL:
            continue
        indices.append(index)
        match = _BYTE_PIECE.match(piece)
        if match:
            raw += bytes([int(match.group(1), 16)])
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                if len(raw) < _MAX_UTF8_BYTES:
                    continue
                text = raw.decode("utf-8", errors="replace")
            raw = b""
        else:
            text = piece.replace("▁", " ")
        spaced = spaced or text.startswith(" ")
        if text.strip():
            tokens.append(Token(text.strip(), spaced, tuple(indices)))
            indices, spaced = [], False
    return tokens


def _window_start(passage: str, tokens: Sequence[Token]) -> int | None:
    """Where the tokens' first few occur in the passage in a row (a long passage is read in a window)."""
    lead = [re.escape(token.text) for token in tokens[:_ANCHOR_TOKENS]]
    found = re.search(r"\s*".join(lead), passage) if lead else None
    return found.start() if found else None


def _locate(
    passage: str, tokens: Sequence[Token], anchor: tuple[int, int] = (0, 0)
) -> list[tuple[int, int] | None]:
    """Each token's [start, end) in the passage, or None where it cannot be found.

    The model may have read a window deep inside a long passage: found where its first tokens occur in a row,
    or else from `anchor` (a token index and its character), tokens after which are found left to right and
    those before it right to left, so each lines up with the right occurrence of its word."""
    offsets: list[tuple[int, int] | None] = [None] * len(tokens)
    start = _window_start(passage, tokens)
    token_index, char = anchor if start is None else (0, start)
    cursor = char
    for index in range(token_index, len(tokens)):
        found = passage.find(tokens[index].text, cursor)
        if found >= 0:
            offsets[index] = (found, found + len(tokens[index].text))
            cursor = found + len(tokens[index].text)
    cursor = char
    for index in range(min(token_index, len(tokens)) - 1, -1, -1):
        found = passage.rfind(tokens[index].text, 0, cursor)
        if found >= 0:
            offsets[index] = (found, found + len(tokens[index].text))
            cursor = found
    return offsets


@dataclass(frozen=True)
class _View:
    """A record taken apart: question and passage tokens, readable output rows, where the answer is."""

    question: list[Token]
    passage: list[Token]
    offsets: list[tuple[int, int] | None]  # of the passage tokens
    labels: list[str]  # one per row
    rows: list[list[float]]  # one per label, over source_tokens
    answer: tuple[int, int] | None  # first and last passage token of the answer
    reader: bool


def _weight(row: Sequence[float], token: Token) -> float:
    return sum(row[i] for i in token.indices if i < len(row))


def _reader_answer(
    passage: list[Token], rows: list[list[float]], pointer: dict[str, Any]
) -> tuple[int, int] | None:
    """The passage tokens where the reader's start and end pointers landed: the answer's first (last) word
    whose start (end) probability is the pointer's own."""
    words = list(pointer.get("answer_tokens") or [])
    if len(rows) < 2 or not words:
        return None

    def landing(row: list[float], word: str, log_prob: float, after: int) -> int | None:
        candidates = [i for i in range(after, len(passage)) if passage[i].text == word]
        return min(candidates, key=lambda i: abs(_weight(row, passage[i]) - math.exp(log_prob)), default=None)

    first = landing(rows[0], words[0], float(pointer.get("start_log_prob", 0.0)), 0)
    if first is None:
        return None
    last = landing(rows[1], words[-1], float(pointer.get("end_log_prob", 0.0)), first)
    return (first, first if last is None else last)


def _view(passage: str, record: dict[str, Any]) -> _View | None:
    sources: list[str] = list(record.get("source_tokens") or [])
    rows: list[list[float]] = [list(row) for row in record.get("attention") or []]
    if not sources or not rows:
        return None
    split = sources.index(SEPARATOR) if SEPARATOR in sources else -1
    question = merge_pieces(sources, 0, max(split, 0))
    passage_tokens = merge_pieces(sources, split + 1)
    pointer = record.get("pointer")
    span = record.get("span")
    answer = _reader_answer(passage_tokens, rows, pointer) if pointer else None
    anchor = (answer[0], span[0]) if answer and span else (0, 0)
    offsets = _locate(passage, passage_tokens, anchor)
    if answer is None and span:
        inside = [i for i, o in enumerate(offsets) if o and o[0] < span[1] and o[1] > span[0]]
        answer = (inside[0], inside[-1]) if inside else None
    if pointer:
        labels, rows = ["start", "end"], rows[:2]
    else:
        outputs = merge_pieces(list(record.get("output_tokens") or []))
        labels = [token.text for token in outputs]
        rows = (
            [
                [
                    sum(col) / len(token.indices)
                    for col in zip(*(rows[i] for i in token.indices if i < len(rows)))
                ]
                for token in outputs
            ]
            if outputs
            else rows
        )
        labels = labels if outputs else [f"step {n + 1}" for n in range(len(rows))]
    return _View(question, passage_tokens, offsets, labels, rows, answer, bool(pointer))


def passage_weights(passage: str, record: dict[str, Any]) -> list[float]:
    """Total attention (summed over output rows) each passage character received; 0 where unknown."""
    weights = [0.0] * len(passage)
    view = _view(passage, record)
    if view is None:
        return weights
    for token, offset in zip(view.passage, view.offsets):
        if offset is None:
            continue
        mass = sum(_weight(row, token) for row in view.rows)
        for position in range(*offset):
            weights[position] += mass / (offset[1] - offset[0])
    return weights


def highlight_segments(passage: str, record: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The passage as (text, label) runs: the answer span, characters the answer attended to, the rest."""
    if not passage:
        return []
    weights = passage_weights(passage, record)
    strongest = max(weights, default=0.0)
    span = record.get("span")
    labels: list[str | None] = []
    for position, weight in enumerate(weights):
        if span and span[0] <= position < span[1]:
            labels.append(ANSWER)
        elif strongest > 0 and weight >= ATTENDED_SHARE * strongest:
            labels.append(ATTENDED)
        else:
            labels.append(None)
    segments: list[tuple[str, str | None]] = []
    run_start = 0
    for position in range(1, len(passage) + 1):
        if position == len(passage) or labels[position] != labels[run_start]:
            segments.append((passage[run_start:position], labels[run_start]))
            run_start = position
    return segments


# --- HTML ---------------------------------------------------------------------------------------------------


def _percent(value: float) -> str:
    return "<1%" if 0 < value < 0.005 else f"{value:.0%}"


def _window(view: _View) -> tuple[int, int]:
    """The passage tokens to draw: all of a short passage, else WINDOW_TOKENS either side of the answer (or
    of the most attended token when the answer is not located)."""
    count = len(view.passage)
    if count <= 2 * WINDOW_TOKENS + 1:
        return 0, count
    if view.answer is not None:
        first, last = view.answer
    else:
        totals = [sum(_weight(row, token) for row in view.rows) for token in view.passage]
        first = last = max(range(count), key=totals.__getitem__)
    return max(0, first - WINDOW_TOKENS), min(count, last + 1 + WINDOW_TOKENS)


def _spaced(view: _View, index: int) -> bool:
    """Whether passage token `index` follows a space: "▁", or a gap in the passage after the previous token."""
    here, before = view.offsets[index], view.offsets[index - 1] if index else None
    if here is not None and before is not None:
        return here[0] > before[1]
    return view.passage[index].spaced


def _cell(
    token: Token,
    text_tip: str,
    weight: float,
    strongest: float,
    kind: str,
    *,
    spaced: bool,
    answer: bool = False,
) -> str:
    shade = weight / strongest if strongest > 0 else 0.0
    classes = ["t", kind] + (["a"] if answer else []) + (["dark"] if shade > 0.5 else [])
    # A real space between words, none inside one: lines then break between words, and any CJK character.
    return (
        f'{" " if spaced else ""}<span class="{" ".join(classes)}" style="--w:{shade:.2f}" title="{escape(text_tip)}">'
        f"{escape(token.text)}</span>"
    )


def _row(view: _View, row_index: int, window: tuple[int, int]) -> str:
    row, label = view.rows[row_index], view.labels[row_index]
    kind = ("start", "end")[row_index] if view.reader else "att"
    question = [] if view.reader else view.question  # the reader's pointers never land in the question
    strongest = max((_weight(row, t) for t in [*question, *view.passage[slice(*window)]]), default=0.0)

    def cell(token: Token, *, spaced: bool, answer: bool = False) -> str:
        weight = _weight(row, token)
        tip = (
            f"{token.text}: {label} probability {weight:.1%}"
            if view.reader
            else f"{token.text}: weight {weight:.3f} while writing “{label}”"
        )
        return _cell(token, tip, weight, strongest, kind, spaced=spaced, answer=answer)

    cells = [cell(token, spaced=token.spaced and i > 0) for i, token in enumerate(question)]
    if question:
        cells.append(' <span class="sep" title="question | passage">|</span> ')
    if window[0] > 0:
        cells.append('<span class="sep">…</span> ')
    first, last = view.answer or (-1, -2)
    cells += [
        cell(
            view.passage[index],
            spaced=index > window[0] and _spaced(view, index),
            answer=first <= index <= last,
        )
        for index in range(*window)
    ]
    if window[1] < len(view.passage):
        cells.append(' <span class="sep">…</span>')
    title = f"{label} pointer" if view.reader else f"writing “{label}”"
    return f'<div class="row"><div class="label">{escape(title)}</div><div class="cells">{"".join(cells)}</div></div>'


def _top(view: _View, row: Sequence[float], heading: str, count: int) -> str:
    tokens = view.passage if view.reader else [*view.question, *view.passage]
    ranked = sorted(((_weight(row, t), t.text) for t in tokens), key=lambda pair: -pair[0])
    best = ranked[0][0] if ranked else 0.0
    chips = [
        f'<span class="chip">{escape(text)} <small>{escape(_percent(weight))}</small></span>'
        for weight, text in ranked[:count]
        if weight > 0 and weight >= ATTENDED_SHARE * best
    ]
    return f'<p class="top"><b>{escape(heading)}</b> {"".join(chips) or "(none)"}</p>'


def _legend(view: _View) -> str:
    def swatches(kind: str) -> str:
        return "".join(f'<span class="swatch {kind}" style="--w:{w}"></span>' for w in (0.1, 0.4, 0.7, 1.0))

    if view.reader:
        return (
            f'<p class="legend">Each passage word is shaded by how likely the reader found the answer to '
            f"<b>start</b> there ({swatches('start')}) and to <b>end</b> there ({swatches('end')}); darker is "
            f"more likely, relative to the likeliest word in the row. The answer is underlined in green. "
            f"Point at a word for its probability.</p>"
        )
    return (
        f'<p class="legend">One row per word of the answer: each input word is shaded '
        f"({swatches('att')}) by how much the model looked at it while writing that word; darker is more, "
        f"relative to the strongest word in the row. The answer is underlined in green in the passage. "
        f"Point at a word for its weight.</p>"
    )


def attention_html(passage: str, record: dict[str, Any] | None) -> str:
    """The record as HTML: a legend, the most attended tokens, and one row of shaded tokens per output
    token (Seq2Seq) or per pointer (span reader), windowed around the answer in a long passage."""
    view = _view(passage, record or {})
    if view is None:
        return '<div class="attention"><p class="note">No attention was recorded for this answer.</p></div>'
    window = _window(view)
    parts = ['<div class="attention">', "<h4>What the model looked at</h4>", _legend(view)]
    if view.reader:
        parts += [
            _top(view, view.rows[0], "Likeliest start:", 3),
            _top(view, view.rows[1], "Likeliest end:", 3),
        ]
    else:
        mean = [sum(column) / len(view.rows) for column in zip(*view.rows)]
        parts.append(_top(view, mean, "Most attended:", TOP_TOKENS))
    located = [offset for offset in view.offsets if offset]
    if located:
        first, last = min(o[0] for o in located), max(o[1] for o in located)
        if passage[:first].strip() or passage[last:].strip():
            parts.append(
                f'<p class="note">The model read only part of this passage (its input has a size limit): '
                f"characters {first + 1}–{last} of {len(passage)}.</p>"
            )
    if window != (0, len(view.passage)):
        parts.append(
            f'<p class="note">A long passage: showing passage tokens {window[0] + 1}–{window[1]} of '
            f"{len(view.passage)}, around the answer.</p>"
        )
    parts += [_row(view, index, window) for index in range(len(view.rows))]
    parts.append("</div>")
    return "".join(parts)
