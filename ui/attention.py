"""Pictures of an answer's attention: passage highlights (plain text segments) and a token heatmap image.

Input is the record the worker stores with each answer (storage.models.Question.attention): source_tokens
(SentencePiece pieces of "<rc> question <sep> passage", byte pieces like <0xE9> included), output_tokens,
attention [out][src] and the answer span. Nothing here builds HTML: highlights are (text, label) pairs for
gr.HighlightedText and the heatmap is a PIL image, so user text is never interpreted by the browser.
"""

from __future__ import annotations

import re
from typing import Any

from PIL import Image, ImageDraw

SEPARATOR = "<sep>"
ANSWER = "answer"
ATTENDED = "attended"
COLOR_MAP = {ANSWER: "green", ATTENDED: "orange"}
ATTENDED_SHARE = 0.1  # a passage character is "attended" if it got this share of the strongest weight
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def passage_weights(passage: str, record: dict[str, Any]) -> list[float]:
    """Total attention (summed over output tokens) each passage character received; 0 where unknown.

    The passage pieces (those after <sep>) are located in the passage left to right; byte pieces are joined
    until they decode to a character. A piece that cannot be found is skipped rather than guessed.
    """
    weights = [0.0] * len(passage)
    sources: list[str] = list(record.get("source_tokens") or [])
    rows: list[list[float]] = list(record.get("attention") or [])
    if SEPARATOR not in sources or not rows:
        return weights
    start = sources.index(SEPARATOR) + 1
    column_mass = [sum(row[i] for row in rows if i < len(row)) for i in range(len(sources))]
    cursor = 0
    pending_bytes = b""
    pending_mass = 0.0
    for index in range(start, len(sources)):
        piece = sources[index]
        match = _BYTE_PIECE.match(piece)
        if match:
            pending_bytes += bytes([int(match.group(1), 16)])
            pending_mass += column_mass[index]
            try:
                surface = pending_bytes.decode("utf-8")
            except UnicodeDecodeError:
                continue
            mass, pending_bytes, pending_mass = pending_mass, b"", 0.0
        else:
            surface, mass = piece.replace("▁", " ").strip(), column_mass[index]
        if not surface:
            continue
        found = passage.find(surface, cursor)
        if found < 0:
            continue
        for position in range(found, found + len(surface)):
            weights[position] += mass / len(surface)
        cursor = found + len(surface)
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


def _label(token: str, index: int) -> str:
    text = token.replace("▁", "_")
    # The built-in bitmap font has Latin glyphs only; other tokens are shown by position.
    return text[:10] if text.isascii() and text.isprintable() else f"#{index}"


def heatmap_image(record: dict[str, Any], *, cell: int = 16) -> Image.Image | None:
    """Output tokens (rows) × source tokens (columns), darker = more attention; None without attention."""
    rows: list[list[float]] = list(record.get("attention") or [])
    sources: list[str] = list(record.get("source_tokens") or [])
    outputs: list[str] = list(record.get("output_tokens") or [])
    if not rows or not sources:
        return None
    left, top = 80, 70
    width, height = left + cell * len(sources) + 10, top + cell * len(rows) + 10
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for out_index, row in enumerate(rows):
        label = _label(outputs[out_index], out_index) if out_index < len(outputs) else f"#{out_index}"
        draw.text((4, top + out_index * cell + 2), label, fill="black")
        for src_index, weight in enumerate(row[: len(sources)]):
            shade = int(255 * (1.0 - max(0.0, min(1.0, weight))))
            x, y = left + src_index * cell, top + out_index * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(255, shade, shade), outline=(230, 230, 230))
    for src_index, token in enumerate(sources):
        x = left + src_index * cell + 3
        for line, char in enumerate(_label(token, src_index)[:6]):
            draw.text((x, 4 + line * 10), char, fill="black")
    return image
