"""The SentencePiece wrapper: special ids, character spans, one piece per Chinese character."""

import pytest

from model.tokenizer import CONTROL_SYMBOLS, Tokenizer


def test_special_ids_are_fixed_at_training_time(tokenizer):
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert sorted(tokenizer.control_ids) == sorted(CONTROL_SYMBOLS)
    assert len(set(tokenizer.control_ids.values())) == len(CONTROL_SYMBOLS)


def test_spans_point_back_at_the_original_characters(tokenizer):
    text = "Bob  was born in Oslo, 小明出生在北京 🙂."
    encoding = tokenizer.encode(text)
    for piece, (start, end) in zip(encoding.pieces, encoding.spans):
        surface = piece.replace("\u2581", " ").strip()
        if surface and not piece.startswith("<0x"):
            assert text[start:end] == surface


def test_chinese_is_one_piece_per_character(tokenizer):
    pieces = [p.lstrip("\u2581") for p in tokenizer.encode("小明出生在北京").pieces if p != "\u2581"]
    assert pieces == list("小明出生在北京")


def test_control_symbols_typed_by_a_user_are_plain_text(tokenizer):
    ids = tokenizer.encode_ids("<sep> <rc>")
    assert not set(ids) & set(tokenizer.control_ids.values())


def test_decode_drops_special_ids(tokenizer):
    ids = [tokenizer.bos_id, *tokenizer.encode_ids("hello there"), tokenizer.eos_id]
    assert tokenizer.decode(ids) == "hello there"


def test_a_foreign_model_file_is_refused(tmp_path):
    bogus = tmp_path / "tokenizer.model"
    bogus.write_bytes(b"not a sentencepiece model")
    with pytest.raises((RuntimeError, OSError, ValueError)):
        Tokenizer(bogus)


def test_decode_does_not_double_a_space_the_model_emitted_before_a_word(tokenizer):
    space = tokenizer.sp.piece_to_id("\u2581")
    assert tokenizer.id_to_piece(space) == "\u2581"
    a, eat = tokenizer.encode_ids("a"), tokenizer.encode_ids(" eat")
    assert tokenizer.id_to_piece(eat[0]).startswith("\u2581")
    assert tokenizer.decode([*a, space, *eat]) == "a eat"  # "a  eat" before
    assert tokenizer.decode([*a, space]) == "a "  # a space at the end is not before a word: kept
