"""Thin SentencePiece wrapper: train, encode (with character offsets), decode; special ids read from the model.

One shared unigram vocabulary covers English and Chinese. Chinese is kept at one character per piece
(training splits between CJK characters with SentencePiece's pretokenization delimiter), which matches the
character-level CMRC metric and lets the copy mechanism point at single characters. Normalisation is
`identity`, so every piece maps back to an exact span of the original text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
# Control symbols: never produced from user text, so users cannot inject them.
TASK_RC, TASK_CHAT = "<rc>", "<chat>"
PASSAGE_SEP = "<sep>"
SPEAKER_USER, SPEAKER_BOT = "<usr>", "<bot>"
CONTROL_SYMBOLS = (TASK_RC, TASK_CHAT, PASSAGE_SEP, SPEAKER_USER, SPEAKER_BOT)

WORD_START = "\u2581"  # SentencePiece's mark of a piece that begins a word (carries the space before it)
_CJK = re.compile(r"([\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef])")
_PRETOKEN_DELIMITER = "\t"
_BYTE_PIECE = re.compile(r"^<0x([0-9A-F]{2})>$")


@dataclass(frozen=True)
class Encoding:
    """Piece ids of a text and, per piece, its [start, end) character span in that text."""

    ids: list[int]
    pieces: list[str]
    spans: list[tuple[int, int]]


def _split_cjk_for_training(line: str) -> str:
    return _CJK.sub(lambda m: f"{_PRETOKEN_DELIMITER}{m.group(1)}{_PRETOKEN_DELIMITER}", line)


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    *,
    vocab_size: int,
    character_coverage: float = 0.9995,
    max_sentences: int = 2_000_000,
) -> Path:
    """Train the shared unigram model on `texts`; writes out_dir/tokenizer.model and returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "tokenizer-corpus.txt"
    with corpus.open("w", encoding="utf-8") as handle:
        for text in texts:
            line = " ".join(text.replace(_PRETOKEN_DELIMITER, " ").split())
            if line:
                handle.write(_split_cjk_for_training(line) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out / "tokenizer"),
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=character_coverage,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        pad_piece=PAD,
        unk_piece=UNK,
        bos_piece=BOS,
        eos_piece=EOS,
        control_symbols=list(CONTROL_SYMBOLS),
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        pretokenization_delimiter=_PRETOKEN_DELIMITER,
        input_sentence_size=max_sentences,
        shuffle_input_sentence=True,
        minloglevel=2,
        num_threads=2,
    )
    corpus.unlink()
    (out / "tokenizer.vocab").unlink(missing_ok=True)
    return out / "tokenizer.model"


class Tokenizer:
    """Encode and decode with one SentencePiece model; special and control ids come from the model file."""

    def __init__(self, model_path: str | Path) -> None:
        self.path = Path(model_path)
        self._model_bytes = self.path.read_bytes()
        self.sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
        self.pad_id = self.sp.pad_id()
        self.unk_id = self.sp.unk_id()
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.control_ids = {symbol: self.sp.piece_to_id(symbol) for symbol in CONTROL_SYMBOLS}
        missing = [s for s, i in self.control_ids.items() if i == self.unk_id]
        if self.pad_id < 0 or missing:
            raise ValueError(
                f"{self.path} was not trained by `s2s tokenizer train` (missing {missing or 'pad'})"
            )
        self._special_ids = {self.pad_id, self.bos_id, self.eos_id, *self.control_ids.values()}
        space = self.sp.piece_to_id(WORD_START)
        self._bare_space_id = space if self.sp.id_to_piece(space) == WORD_START else None  # None: not a piece

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self._model_bytes).hexdigest()

    @property
    def model_bytes(self) -> bytes:
        return self._model_bytes

    def encode(self, text: str) -> Encoding:
        """Pieces of `text` with their character spans (byte-fallback pieces share their character's span)."""
        pieces: list[str] = self.sp.encode(text, out_type=str)
        ids = [self.sp.piece_to_id(piece) for piece in pieces]
        return Encoding(ids=ids, pieces=pieces, spans=_align(text, pieces))

    def encode_ids(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids: special ids dropped, and a bare space piece that comes right before a piece
        with its own leading space left out (a model emitting both wrote "a  eat" with two spaces)."""
        kept = [i for i in ids if i not in self._special_ids]
        space = self._bare_space_id
        if space is not None and kept:  # (nothing kept: an empty reply, e.g. the model ended at once)
            word_starts = [self.sp.id_to_piece(i).startswith(WORD_START) for i in kept]
            kept = [
                i
                for i, next_starts_word in zip(kept, [*word_starts[1:], False], strict=True)
                if not (i == space and next_starts_word)
            ]
        return str(self.sp.decode(kept))

    def id_to_piece(self, token_id: int) -> str:
        return str(self.sp.id_to_piece(token_id))

    def is_cjk_char(self, piece: str) -> bool:
        return bool(_CJK.fullmatch(piece.lstrip(WORD_START)))


def _align(text: str, pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Map each piece to its span in `text` (identity normalisation keeps characters, only spaces change)."""
    spans: list[tuple[int, int]] = []
    position = 0
    pending_bytes = bytearray()
    pending_count = 0
    for piece in pieces:
        byte_match = _BYTE_PIECE.match(piece)
        if byte_match:
            pending_bytes.append(int(byte_match.group(1), 16))
            pending_count += 1
            try:
                surface = pending_bytes.decode("utf-8")
            except UnicodeDecodeError:
                continue
            start, position = _find(text, surface, position)
            spans.extend([(start, position)] * pending_count)
            pending_bytes.clear()
            pending_count = 0
            continue
        surface = piece.replace(WORD_START, " ").strip(" ")
        if not surface:
            while position < len(text) and text[position] == " ":
                position += 1
            spans.append((position, position))
            continue
        start, position = _find(text, surface, position)
        spans.append((start, position))
    for _ in range(pending_count):  # undecodable trailing bytes: point at the end
        spans.append((position, position))
    return spans


def _find(text: str, surface: str, position: int) -> tuple[int, int]:
    # Only spaces become the word mark; every other character, whitespace or not (\r, \t, \n, U+3000), is a
    # piece or byte pieces of its own, so skipping it would point every later piece past its text.
    while position < len(text) and text[position] == " ":
        position += 1
    if text.startswith(surface, position):
        return position, position + len(surface)
    found = text.find(surface, position)
    if found < 0:
        return position, position
    return found, found + len(surface)
