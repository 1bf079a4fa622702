"""End to end through the command line: `s2s train --arch reader` learns a synthetic span task (with a GloVe
table the test writes itself), `s2s eval rc` scores it, and `--resume` continues where the run stopped."""

from __future__ import annotations

import json
import random

import pytest

from cli.main import main as s2s

NAMES = "anna boris chen dora emil fay gus hana ivo jun kai lena milo nora omar pia".split()
THINGS = {
    "color": "red blue green black white pink gray gold".split(),
    "city": "oslo lima rome cairo paris tokyo delhi quito".split(),
    "pet": "cat dog fish bird frog mouse horse snake".split(),
}


def squad_file(path, count, seed):
    rng = random.Random(seed)
    paragraphs = []
    for index in range(count):
        people = rng.sample(NAMES, 3)
        facts = [
            (p, kind, rng.choice(values))
            for p in people
            for kind, values in [rng.choice(list(THINGS.items()))]
        ]
        context = " ".join(f"The {kind} of {p.title()} is {value}." for p, kind, value in facts)
        person, kind, value = rng.choice(facts)
        start = context.index(f"The {kind} of {person.title()} is {value}.") + len(
            f"The {kind} of {person.title()} is "
        )
        paragraphs.append(
            {
                "context": context,
                "qas": [
                    {
                        "id": f"q{seed}-{index}",
                        "question": f"What is the {kind} of {person.title()}?",
                        "answers": [{"text": value, "answer_start": start}],
                    }
                ],
            }
        )
    path.write_text(
        json.dumps({"version": "1.1", "data": [{"title": "synthetic", "paragraphs": paragraphs}]})
    )


def glove_file(path):
    rng = random.Random(0)
    words = (
        ["the", "of", "is", "what", ".", "?"]
        + NAMES
        + [w for values in THINGS.values() for w in values]
        + list(THINGS)
    )
    path.write_text(
        "".join(f"{w} " + " ".join(f"{rng.uniform(-1, 1):.3f}" for _ in range(8)) + "\n" for w in words)
    )


@pytest.mark.slow
def test_a_tiny_reader_learns_a_span_task_through_the_cli(tmp_path, capsys):
    squad_file(tmp_path / "train.json", 1500, seed=1)
    squad_file(tmp_path / "dev.json", 100, seed=2)
    glove_file(tmp_path / "glove.txt")
    common = [
        "train",
        "--arch",
        "reader",
        "--preset",
        "tiny",
        "--train",
        str(tmp_path / "train.json"),
        "--out",
        str(tmp_path / "ck"),
        "--glove",
        str(tmp_path / "glove.txt"),
        "--device",
        "cpu",
        "--eval-every",
        "1000",
        "--valid-size",
        "50",
    ]
    assert s2s([*common, "--max-steps", "30"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["step"] == 30
    assert s2s([*common, "--max-steps", "400", "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 400 and summary["best_f1"] >= 90
    assert (
        s2s(
            [
                "eval",
                "rc",
                "--checkpoint",
                str(tmp_path / "ck"),
                "--data",
                str(tmp_path / "dev.json"),
                "--device",
                "cpu",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 100 and result["exact_match"] >= 90
    assert set(result["by_question_word"]) == {"what"}
    # Another machine continues the exported reader: same words and weights, the step count and curve go on.
    assert (
        s2s(
            [
                *common[:7],
                "--out",
                str(tmp_path / "ck2"),
                "--init-from",
                str(tmp_path / "ck"),
                "--device",
                "cpu",
                "--eval-every",
                "1000",
                "--valid-size",
                "50",
                "--max-steps",
                "420",
                "--no-glove",
                "--weight-average",
                "0.9",
            ]
        )
        == 0
    )
    continued = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert continued["step"] == 420 and continued["best_f1"] >= 90
