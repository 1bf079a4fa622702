"""The shipped checkpoints: they load from a fresh clone, stay within the size budget, and decode a handful of
fixed inputs to the pinned golden outputs (any change to the model or to decoding shows up here as a diff).

Regenerate the goldens on purpose with: python tests/model/test_shipped_models.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "model" / "checkpoints"
GOLDEN = Path(__file__).with_name("golden_shipped.json")

QUESTIONS = [
    (
        "What is the capital of France?",
        "Paris is the capital and most populous city of France. It has been a "
        "major centre of finance, diplomacy and science since the 17th century.",
    ),
    (
        "When was the bridge opened?",
        "The Golden Gate Bridge, which spans the strait between San Francisco and "
        "Marin County, was opened to traffic in 1937 after four years of construction.",
    ),
    (
        "Who wrote the novel?",
        "The novel Pride and Prejudice was written by Jane Austen and published in 1813.",
    ),
    ("长城有多长？", "长城是中国古代的军事防御工程，总长度超过两万一千公里，东起山海关，西至嘉峪关。"),
    ("鲁迅原名叫什么？", "鲁迅，原名周樟寿，后改名周树人，是中国现代著名的文学家和思想家。"),
]
HISTORIES = [
    ["Hello! How are you today?"],
    ["What would you like to eat tonight?"],
    ["I'm going to the airport tomorrow morning.", "What time is your flight?", "At eight o'clock."],
    ["你好，今天天气怎么样？"],
    ["我今天去看电影了"],
]

pytestmark = pytest.mark.skipif(not (CHECKPOINTS / "models.json").exists(), reason="no shipped checkpoints")


def decode_goldens() -> dict[str, list[str]]:
    from model.inference import ModelSet

    models = ModelSet.load(CHECKPOINTS, "cpu")
    return {
        "answers": [h[0].text for h in models.answer(QUESTIONS)],
        "replies": [h[0].text for h in models.reply(HISTORIES)],
    }


def test_shipped_checkpoints_fit_the_size_budget():
    total = sum(p.stat().st_size for p in CHECKPOINTS.rglob("*") if p.is_file())
    assert total <= 80 * 1024 * 1024


def test_every_route_in_models_json_names_a_checkpoint():
    routes = json.loads((CHECKPOINTS / "models.json").read_text())
    assert {"rc/en", "rc/zh", "chat/en", "chat/zh"} <= set(routes)
    for sub in routes.values():
        assert (CHECKPOINTS / sub / "model.pt").exists() and (CHECKPOINTS / sub / "MODEL_CARD.md").exists()


def test_shipped_models_decode_the_golden_outputs():
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert decode_goldens() == expected


def test_answers_are_in_the_language_and_passage_of_the_question():
    goldens = json.loads(GOLDEN.read_text(encoding="utf-8"))
    for (_, passage), answer in zip(QUESTIONS, goldens["answers"]):
        assert answer and answer in passage


def test_replies_come_in_the_language_of_the_message():
    from model.language import detect_language

    goldens = json.loads(GOLDEN.read_text(encoding="utf-8"))
    for history, reply in zip(HISTORIES, goldens["replies"]):
        assert detect_language(reply) == detect_language(history[-1])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    GOLDEN.write_text(json.dumps(decode_goldens(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(GOLDEN.read_text(encoding="utf-8"))
