"""Tests for model/readers.py: each format on tiny inline files, broken input, and the real data (slow)."""

import json
from pathlib import Path

import pytest

from model.readers import (
    Dialog,
    QAExample,
    TextPair,
    detokenize,
    dialogs_to_pairs,
    join_characters,
    read_any,
    read_chatterbot,
    read_dailydialog,
    read_jsonl,
    read_lccc,
    read_squad,
)

DATA = Path(__file__).parents[2].parent / "shared/data"


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def squad_file(path: Path, context: str, qas: list[dict]) -> Path:
    return write_json(path, {"data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]})


# --- SQuAD-style ---------------------------------------------------------------------------------


def test_squad_question_keeps_its_answers_offsets_and_title(tmp_path: Path) -> None:
    qa = {"id": "q1", "question": "Who?", "answers": [{"text": "Bob", "answer_start": 4}]}
    examples, report = read_squad(squad_file(tmp_path / "s.json", "Hi, Bob here.", [qa]))
    assert examples == [QAExample("q1", "Who?", "Hi, Bob here.", ("Bob",), (4,), "T")]
    assert (report.read, report.skipped, report.reasons) == (1, 0, [])


def test_off_by_one_cmrc_offset_is_reanchored_to_the_nearest_occurrence(tmp_path: Path) -> None:
    context = "北京是首都。上海不是首都。"
    qa = {"id": "c1", "question": "哪里？", "answers": [{"text": "首都", "answer_start": 9}]}
    examples, _ = read_squad(squad_file(tmp_path / "c.json", context, [qa]))
    assert examples[0].answer_starts == (10,)
    assert context[10:12] == "首都"


def test_answer_missing_from_context_is_dropped_and_question_kept_if_another_answer_fits(
    tmp_path: Path,
) -> None:
    answers = [{"text": "Bob", "answer_start": 4}, {"text": "Alice", "answer_start": 0}]
    qa = {"id": "q1", "question": "Who?", "answers": answers}
    examples, report = read_squad(squad_file(tmp_path / "s.json", "Hi, Bob here.", [qa]))
    assert examples[0].answers == ("Bob",)
    assert report.skipped == 0
    assert "not in context" in report.reasons[0]


def test_question_with_no_answer_in_context_or_empty_text_is_skipped_with_reasons(tmp_path: Path) -> None:
    qas = [
        {"id": "q1", "question": "Who?", "answers": [{"text": "Alice", "answer_start": 0}]},
        {"id": "q2", "question": "  ", "answers": [{"text": "Bob", "answer_start": 4}]},
        {"id": "q3", "question": "Who else?", "answers": [{"text": "Bob", "answer_start": 4}]},
    ]
    examples, report = read_squad(squad_file(tmp_path / "s.json", "Hi, Bob here.", qas))
    assert [e.id for e in examples] == ["q3"]
    assert (report.read, report.skipped) == (1, 2)
    assert report.reasons[-2].startswith("record 1 (q1)")
    assert report.reasons[-1] == "record 2 (q2): empty question"


def test_missing_file_and_non_json_raise_value_error_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="missing.json"):
        read_squad(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="broken.json"):
        read_squad(broken)


def test_report_keeps_only_the_first_five_reasons(tmp_path: Path) -> None:
    qas = [{"id": str(i), "question": "", "answers": []} for i in range(8)]
    _, report = read_squad(squad_file(tmp_path / "s.json", "ctx", qas))
    assert report.skipped == 8
    assert len(report.reasons) == 5


# --- DailyDialog ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokenized", "natural"),
    [
        ("Hello , how are you ?", "Hello, how are you?"),
        ("I don ' t know .", "I don't know."),
        ("I don 't know", "I don't know"),
        ("I do n't know", "I don't know"),
        ("It ' s $ 5 ( about ) !", "It's $5 (about)!"),
        ("Mmmm ... well", "Mmmm... well"),
    ],
)
def test_detokenize_restores_natural_text(tokenized: str, natural: str) -> None:
    assert detokenize(tokenized) == natural


def test_dailydialog_line_becomes_one_dialog_and_blank_or_empty_lines_do_not(tmp_path: Path) -> None:
    path = tmp_path / "dialogues.txt"
    path.write_text("Hi ! __eou__ Hello , Tom . __eou__\n\n __eou__ \n", encoding="utf-8")
    dialogs, report = read_dailydialog(path)
    assert dialogs == [Dialog("dialogues-1", ("Hi!", "Hello, Tom."), source="dialogues.txt")]
    assert report.skipped == 1
    assert report.reasons == ["line 3: no utterances"]


def test_dailydialog_empty_file_reads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("", encoding="utf-8")
    dialogs, report = read_dailydialog(path)
    assert (dialogs, report.read, report.skipped) == ([], 0, 0)


def test_undecodable_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_bytes(b"A . __eou__\n\xff\xfe __eou__\nB . __eou__\n")
    dialogs, report = read_dailydialog(path)
    assert [d.turns for d in dialogs] == [("A.",), ("B.",)]
    assert report.reasons == ["line 2: not UTF-8"]


# --- LCCC ----------------------------------------------------------------------------------------


def test_join_characters_removes_spaces_but_keeps_them_between_ascii_words() -> None:
    assert join_characters("你 好 ， 世 界") == "你好，世界"
    assert join_characters("花 了 3 1 万 买 C F") == "花了31万买CF"
    assert join_characters("我 爱 NBA and football") == "我爱NBA and football"


def test_lccc_list_of_dialogs_is_joined_and_bad_dialogs_are_skipped(tmp_path: Path) -> None:
    path = write_json(tmp_path / "lccc.json", [["你 好", "你 好 啊"], ["好"], [1, "x"], "oops", ["好", " "]])
    dialogs, report = read_lccc(path)
    assert [d.turns for d in dialogs] == [("你好", "你好啊"), ("好",)]
    assert (report.read, report.skipped) == (2, 3)
    assert report.reasons == [
        "record 3: utterance is not a string",
        "record 4: dialog is not a non-empty list",
        "record 5: empty utterance",
    ]


def test_lccc_toy_dict_reads_the_requested_split(tmp_path: Path) -> None:
    path = write_json(tmp_path / "toy.json", {"train": [["甲", "乙"]], "valid": [["丙", "丁"], ["戊"]]})
    assert [d.turns for d in read_lccc(path, split="valid")[0]] == [("丙", "丁"), ("戊",)]
    with pytest.raises(ValueError, match="test"):
        read_lccc(path, split="test")


def test_lccc_tab_pairs_become_two_turn_dialogs(tmp_path: Path) -> None:
    path = tmp_path / "toy_train.txt"
    path.write_text("早 日 成 球\t目 测 。 很 快\nno tab here\n", encoding="utf-8")
    dialogs, report = read_lccc(path)
    assert [d.turns for d in dialogs] == [("早日成球", "目测。很快")]
    assert report.reasons == ["line 2: no TAB between post and response"]


# --- ChatterBot ----------------------------------------------------------------------------------


def test_chatterbot_yaml_coerces_scalars_and_skips_odd_conversations(tmp_path: Path) -> None:
    path = tmp_path / "odd.yml"
    path.write_text(
        "categories: [x]\nconversations:\n- - How old?\n  - 42\n- - yes\n  - null\n- just a string\n- - Hi\n",
        encoding="utf-8",
    )
    dialogs, report = read_chatterbot(path)
    assert [d.turns for d in dialogs] == [("How old?", "42"), ("Hi",)]
    assert (report.read, report.skipped) == (2, 2)
    assert report.reasons[0] == "record 2 of odd.yml: not a list of text utterances"


def test_chatterbot_directory_reads_yaml_recursively_and_skips_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "a.yml").write_text("conversations:\n- - Hello\n  - Hi\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("conversations:\n- - 你好\n  - 您好\n", encoding="utf-8")
    (tmp_path / "c.yml").write_text("conversations: [[unclosed\n", encoding="utf-8")
    dialogs, report = read_chatterbot(tmp_path)
    assert [(d.source, d.turns) for d in dialogs] == [
        ("b.yaml", ("你好", "您好")),
        ("en/a.yml", ("Hello", "Hi")),
    ]
    assert report.skipped == 1
    assert "c.yml" in report.reasons[0]


def test_chatterbot_single_broken_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("categories: [x]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.yml"):
        read_chatterbot(path)


# --- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_reads_all_three_record_kinds(tmp_path: Path) -> None:
    lines = [
        {"question": "Who?", "passage": "Hi, Bob here.", "answer": "Bob"},
        {"question": "Who?", "passage": "Hi, Bob here.", "answer": "Alice"},
        {"dialog": ["Hi", "Hello"]},
        {"source": "a", "target": "b"},
    ]
    path = tmp_path / "u.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    records, report = read_jsonl(path)
    assert records == [
        QAExample("u-1", "Who?", "Hi, Bob here.", ("Bob",), (4,)),
        QAExample("u-2", "Who?", "Hi, Bob here.", ("Alice",), (-1,)),
        Dialog("u-3", ("Hi", "Hello"), source="jsonl"),
        TextPair("a", "b"),
    ]
    assert (report.read, report.skipped) == (4, 0)


def test_jsonl_broken_lines_are_skipped_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text(
        '{"source": "a", "target": "b"}\n'
        "{bad json\n"
        '{"question": "Q", "passage": "P"}\n'
        '{"dialog": ["hi", 3]}\n'
        '{"source": "", "target": "b"}\n'
        "[1, 2]\n"
        '{"other": 1}\n',
        encoding="utf-8",
    )
    records, report = read_jsonl(path)
    assert records == [TextPair("a", "b")]
    assert (report.read, report.skipped) == (1, 6)
    assert report.reasons == [
        "line 2: bad JSON (Expecting property name enclosed in double quotes)",
        "line 3: missing key 'answer'",
        "line 4: 'dialog' holds an empty or non-string turn",
        "line 5: 'source' is not a non-empty string",
        "line 6: not a JSON object",
    ]


def test_jsonl_empty_file_reads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    records, report = read_jsonl(path)
    assert (records, report.read, report.skipped) == ([], 0, 0)


# --- dispatch and pairs --------------------------------------------------------------------------


def test_read_any_picks_the_reader_from_extension_and_content(tmp_path: Path) -> None:
    qa = {"id": "q", "question": "Who?", "answers": [{"text": "Bob", "answer_start": 0}]}
    squad = squad_file(tmp_path / "s.json", "Bob", [qa])
    lccc = write_json(tmp_path / "l.json", [["你 好", "好"]])
    daily = tmp_path / "d.txt"
    daily.write_text("Hi . __eou__ Yo . __eou__\n", encoding="utf-8")
    pairs = tmp_path / "p.txt"
    pairs.write_text("你 好\t好\n", encoding="utf-8")
    (tmp_path / "yml").mkdir()
    (tmp_path / "yml" / "a.yml").write_text("conversations:\n- - Hello\n  - Hi\n", encoding="utf-8")
    assert isinstance(read_any(squad)[0][0], QAExample)
    assert read_any(lccc)[0][0].turns == ("你好", "好")
    assert read_any(daily)[0][0].turns == ("Hi.", "Yo.")
    assert read_any(pairs)[0][0].turns == ("你好", "好")
    assert read_any(tmp_path / "yml")[0][0].turns == ("Hello", "Hi")
    with pytest.raises(ValueError, match="unknown format"):
        read_any(tmp_path / "x.csv")


def test_dialogs_to_pairs_limits_history_to_max_history() -> None:
    pairs = dialogs_to_pairs([Dialog("d", ("a", "b", "c", "d")), Dialog("e", ("solo",))], max_history=2)
    assert pairs == [(("a",), "b"), (("a", "b"), "c"), (("b", "c"), "d")]


# --- the real data (README counts) ---------------------------------------------------------------

REAL_COUNTS = [
    ("squad/train-v1.1.json", 87_599, 0),
    ("squad/dev-public-v1.1.json", 5_307, 0),
    ("xquad/xquad.en.dev-public.json", 590, 0),
    ("xquad/xquad.zh.dev-public.json", 590, 0),
    ("cmrc2018/cmrc2018_train.json", 10_142, 0),
    ("cmrc2018/cmrc2018_trial.json", 1_000, 2),  # README's 1,002 includes two empty questions
    ("cmrc2018/cmrc2018_dev-public.json", 1_627, 0),
    ("dailydialog/train/dialogues_train.txt", 11_118, 0),
    ("dailydialog/validation/dialogues_validation.txt", 1_000, 0),
    ("lccc/LCCC-base_valid.json", 20_000, 0),
    ("lccc/cdial-gpt-toy/toy_train.txt", 10_000, 0),
    ("lccc/cdial-gpt-toy/toy_valid.txt", 2_000, 0),
    ("lccc/cdial-gpt-toy/toy_data.json", 1_000, 0),
    ("chatterbot_corpus/chinese", 467, 0),
    ("chatterbot_corpus/english", 2_025, 1),  # README's 2,026 includes one conversation written as a string
]


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="real data not present")
@pytest.mark.parametrize(("name", "read", "skipped"), REAL_COUNTS)
def test_real_file_reads_the_readme_counts(name: str, read: int, skipped: int) -> None:
    records, report = read_any(DATA / name)
    assert (report.read, report.skipped, len(records)) == (read, skipped, read)


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="real data not present")
def test_real_answer_offsets_all_point_at_their_text_after_reanchoring() -> None:
    examples, _ = read_squad(DATA / "cmrc2018/cmrc2018_dev-public.json")
    # 102 annotator answers (answer_start -1) do not occur in their context and are dropped.
    assert sum(len(e.answers) for e in examples) == 4_881 - 102
    assert all(
        e.passage[s : s + len(a)] == a
        for e in examples
        for a, s in zip(e.answers, e.answer_starts, strict=True)
    )


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="real data not present")
def test_real_dialog_utterance_counts_match_the_readme() -> None:
    turns = {
        "dailydialog/validation/dialogues_validation.txt": 8_069,
        "lccc/LCCC-base_valid.json": 56_917,
        "chatterbot_corpus/chinese": 1_019,
    }
    for name, expected in turns.items():
        assert sum(len(d.turns) for d in read_any(DATA / name)[0]) == expected, name


def test_detokenize_joins_typographic_apostrophes_too():
    from model.readers import detokenize

    assert detokenize("That \u2019 s right . I don \u2019 t know .") == "That's right. I don't know."
