"""Shared fixtures for model tests: a tiny tokenizer trained once per session, tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.tokenizer import Tokenizer, train_tokenizer

TINY_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-model"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Bob was born in Oslo. Later Bob moved to Lima for work.",
    "Where was Bob born? Where did Alice move?",
    "小明出生在北京。后来小明去了上海工作。",
    "你好，你是谁？我是聊天机器人。",
    "hello there, how are you today? i am fine, thank you.",
] * 20


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    out = tmp_path_factory.mktemp("tokenizer")
    return Tokenizer(train_tokenizer(CORPUS, out, vocab_size=380))


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return TINY_MODEL
