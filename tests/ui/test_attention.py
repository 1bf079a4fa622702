"""ui.attention on hand-made records: the HTML view a person reads (English, Chinese byte pieces, a span
reader over a long passage) and that user text in it is always escaped."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from typing import Any

from tests.ui.conftest import ATTENTION, PASSAGE, SOURCE
from ui import attention


class Cells(HTMLParser):
    """The shaded token cells of the view: (text, classes, shade, title), and every tag seen."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.cells: list[dict[str, Any]] = []
        self.tags: list[str] = []
        self._open: dict[str, Any] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        classes = (values.get("class") or "").split()
        if tag == "span" and "t" in classes:
            shade = float(re.fullmatch(r"--w:([0-9.]+)", values.get("style") or "").group(1))  # type: ignore[union-attr]
            self._open = {"text": "", "classes": classes, "shade": shade, "title": values.get("title")}

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._open is not None:
            self.cells.append(self._open)
            self._open = None


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_english_tokens_are_cells_shaded_by_their_weight_with_the_weight_as_a_tooltip() -> None:
    html = attention.attention_html(PASSAGE, ATTENTION)
    cells = Cells(html).cells
    assert [c["text"] for c in cells][:5] == ["Where", "was", "Bob", "born", "?"]
    oslo = [c for c in cells if c["text"] == "Oslo"]
    assert len(oslo) == 1 and oslo[0]["shade"] == 1.0 and "a" in oslo[0]["classes"]  # the answer, underlined
    assert oslo[0]["title"] == "Oslo: weight 0.900 while writing “Oslo”"
    assert all(c["shade"] < 0.05 for c in cells if c["text"] != "Oslo")
    assert "writing “Oslo”" in html and "<h4>" in html
    # "▁B", "o", "b" read as one word: no gap inside it, a gap before the next word
    assert re.search(
        r">\|</span> <span[^>]*>B</span><span[^>]*>o</span><span[^>]*>b</span> <span[^>]*>was<", html
    )
    assert "Most attended:" in html and re.search(r"Oslo <small>90%</small>", html)


def test_chinese_byte_pieces_are_shown_as_their_characters_not_as_numbers() -> None:
    passage = "鲍勃出生在奥斯陆。"
    pieces = [
        "<rc>",
        "▁",
        "鲍",
        "勃",
        "出",
        "生",
        "在",
        "哪",
        "里",
        "？",
        "<sep>",
        "▁",
        "<0xE9>",
        "<0xB2>",
        "<0x8D>",
        "勃",
        "出",
        "生",
        "在",
        "<0xE5>",
        "<0xA5>",
        "<0xA5>",
        "斯",
        "陆",
        "。",
    ]
    row = [0.0] * len(pieces)
    for index in (19, 20, 21):  # the three bytes of 奥
        row[index] = 0.2
    row[pieces.index("斯")] = 0.4
    outputs = ["▁", "<0xE5>", "<0xA5>", "<0xA5>", "斯"]  # the answer 奥斯, 奥 written as three bytes
    record = {
        "source_tokens": pieces,
        "output_tokens": outputs,
        "attention": [row] * len(outputs),
        "span": [5, 7],
    }
    html = attention.attention_html(passage, record)
    cells = Cells(html).cells
    shown = "".join(c["text"] for c in cells)
    assert "鲍勃出生在哪里？" in shown and "鲍勃出生在奥斯陆。" in shown
    assert not re.search(r"#\d|0x", _text(html))
    ao = next(c for c in cells if c["text"] == "奥")
    assert ao["shade"] == 1.0 and "a" in ao["classes"] and "0.600" in ao["title"]  # 3 bytes × 0.2
    assert "writing “奥”" in html and "writing “斯”" in html  # one row per character, not per byte


def _reader_record(passage_words: list[str], answer: int) -> dict[str, Any]:
    """A span reader's record: start and end distributions peaked on word `answer` (a one-word answer)."""
    question = ["Where", "is", "it", "?"]
    lead = [0.0] * (len(question) + 1)
    rest = 0.1 / (len(passage_words) - 1)
    start = [0.9 if i == answer else rest for i in range(len(passage_words))]
    end = [0.8 if i == answer else 0.2 / (len(passage_words) - 1) for i in range(len(passage_words))]
    return {
        "source_tokens": [*question, "<sep>", *passage_words],
        "output_tokens": [passage_words[answer]] * 2,
        "attention": [lead + start, lead + end],
        "p_gen": [0.0, 0.0],
        "pointer": {
            "question_tokens": question,
            "answer_tokens": [passage_words[answer]],
            "passage_to_question": [[0.25] * 4],
            "start_log_prob": math.log(0.9),
            "end_log_prob": math.log(0.8),
        },
    }


def test_a_span_readers_start_and_end_show_as_two_rows_windowed_around_the_answer() -> None:
    words = [f"w{i}" for i in range(3000)]
    words[2000] = "w5"  # the same word earlier in the passage: the pointer says which one is the answer
    passage = " ".join(words)
    record = _reader_record(words, 2000)
    start_char = passage.index(" w5 ", passage.index("w1999")) + 1
    record["span"] = [start_char, start_char + 2]
    html = attention.attention_html(passage, record)
    rows = re.findall(r'<div class="label">([^<]*)</div>', html)
    assert rows == ["start pointer", "end pointer"]
    cells = Cells(html).cells
    per_row = len(cells) // 2
    assert per_row == 2 * attention.WINDOW_TOKENS + 1  # a window, not 3,000 cells
    start_row, end_row = cells[:per_row], cells[per_row:]
    assert start_row[0]["text"] == "w1940" and start_row[-1]["text"] == "w2060"
    answer = [c for c in start_row if "a" in c["classes"]]
    assert [c["text"] for c in answer] == ["w5"] and answer[0]["shade"] == 1.0
    assert answer[0]["title"] == "w5: start probability 90.0%"
    assert all("start" in c["classes"] for c in start_row) and all("end" in c["classes"] for c in end_row)
    assert "showing passage tokens 1941–2061 of 3000" in html
    assert "Likeliest start:" in html and "Likeliest end:" in html
    assert "start</b> there" in html and "underlined in green" in html  # the legend
    assert "Where" not in _text(html.split("</p>", 3)[-1])  # the question row is not drawn for the reader
    segments = attention.highlight_segments(passage, record)
    assert ("w5", attention.ANSWER) in segments


def test_a_short_passage_is_shown_whole() -> None:
    words = "Ada Lund built the lighthouse in 1887 .".split()
    html = attention.attention_html(" ".join(words), _reader_record(words, 1))
    assert "showing passage tokens" not in html
    assert len(Cells(html).cells) == 2 * len(words)


def test_markup_in_a_passage_or_question_is_escaped() -> None:
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    words = ["<script>alert(1)</script>", '<img src=x onerror="alert(2)">', "Oslo"]
    record = _reader_record(words, 2)
    record["source_tokens"][0] = '"><u onmouseover="alert(3)">'
    html = attention.attention_html(hostile + " Oslo", record)
    assert "<script" not in html and "<img" not in html and "<u" not in html
    assert set(Cells(html).tags) <= {"div", "h4", "p", "span", "b", "small"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    sources = ["<rc>", '▁"><u onmouseover="alert(3)">', *SOURCE[2:-1], "▁<script>"]
    seq2seq = {**ATTENTION, "source_tokens": sources, "output_tokens": ['▁"<i>']}
    html = attention.attention_html(PASSAGE, seq2seq)
    assert "<script" not in html and "<i>" not in html and "<u" not in html and "&lt;script&gt;" in html
    assert set(Cells(html).tags) <= {"div", "h4", "p", "span", "b", "small"}


def test_no_attention_says_so() -> None:
    assert "No attention" in attention.attention_html(PASSAGE, {})
    assert "No attention" in attention.attention_html(PASSAGE, None)


def test_a_window_of_a_long_passage_lines_up_with_the_text_it_came_from_and_says_so() -> None:
    passage = " ".join(f"Town {i} lies by the river." for i in range(200)) + " " + PASSAGE
    window = [f"▁{w}" for w in "Town 199 lies by the river .".split()]  # "Town", "lies"... occur 200 times
    sources = ["<rc>", "▁Where", "▁was", "▁Bob", "▁born", "?", "<sep>", *window, *SOURCE[7:]]
    row = [0.9 if token == "▁Oslo" else 0.1 / (len(sources) - 1) for token in sources]
    span = [passage.index("Oslo"), passage.index("Oslo") + 4]
    record = {"source_tokens": sources, "output_tokens": ["▁Oslo"], "attention": [row], "span": span}
    html = attention.attention_html(passage, record)
    start = passage.index("Town 199") + 1
    assert f"characters {start}–{len(passage)} of {len(passage)}" in html and "read only part" in html
    assert [c["text"] for c in Cells(html).cells if "a" in c["classes"]] == ["Oslo"]
    weights = attention.passage_weights(passage, record)
    assert sum(weights[: start - 1]) == 0 and weights[span[0]] > 0.2  # nothing lands on the unread part
