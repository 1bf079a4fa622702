"""Hostile input through the terminal commands (`python -m cli.main ...`, real processes, a real Redis, SQLite and
PostgreSQL): each input is refused in one line with exit status 2 and nothing stored, or stored exactly as
typed. A fake worker heartbeat stands in for a worker: only what is stored matters here (answers to hostile
input from a real worker are tests/ui/test_api_hostile.py's)."""

from __future__ import annotations

import codecs
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.db import make_engine
from storage.models import QAJob, QAJobItem, Question, Role, Turn
from tests.workers import test_cli_failures as failures
from tests.workers.conftest import REPO_ROOT
from tests.workers.test_cli_failures import _count, _env, _one_clear_line, _s2s

# The fixtures of the failure tests: a Redis of this session's, a fake worker heartbeat in it, and a fresh
# database per backend (SQLite, and PostgreSQL when DATABASE_URL names one).
redis_url = failures.redis_url
fake_worker = failures.fake_worker
database_url = failures.database_url

PASSAGE = "Bob was born in Oslo."
QUESTION = "Where was Bob born?"


def _stored(database_url: str, model: type) -> int:
    """Rows of `path`'s model stored so far; 0 where the command never even created the schema."""
    if database_url.startswith("sqlite") and not Path(database_url.removeprefix("sqlite:///")).exists():
        return 0
    try:
        return _count(database_url, model)
    except Exception as error:  # no schema yet
        assert "no such table" in str(error) or "does not exist" in str(error), error
        return 0


@pytest.mark.parametrize(
    ("passage", "question", "said"),
    [
        (PASSAGE, "", "question is empty"),
        (PASSAGE, " \t\u3000 ", "question is empty"),
        ("", QUESTION, "passage is empty"),
        (PASSAGE, "q" * 501, "question is too long: 501 > limit 500"),
        (b"Bob was born in Oslo \xff\xfe.", QUESTION, "lone surrogate"),  # argv bytes that are not UTF-8
        (PASSAGE, b"Where was Bob born\xe9?", "lone surrogate"),
    ],
)
def test_hostile_ask_arguments_are_refused_in_one_line_and_nothing_stored(
    tmp_path: Path,
    fake_worker: str,
    database_url: str,
    passage: str | bytes,
    question: str | bytes,
    said: str,
) -> None:
    env = _env(tmp_path, REDIS_URL=fake_worker, DATABASE_URL=database_url)
    arguments: list[str | bytes] = [
        sys.executable,
        "-m",
        "cli.main",
        "ask",
        "--passage",
        passage,
        "--question",
        question,
    ]
    done = subprocess.run(arguments, env=env, cwd=REPO_ROOT, capture_output=True, timeout=90)
    result = subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    )
    assert result.returncode == 2, result.stderr
    assert said in _one_clear_line(result)
    assert _stored(database_url, Question) == 0


STORED_AS_TYPED = [
    "bell\x07 escape\x1b[31mred\x1b[0m \x1b]0;title\x07 end",
    "שלום \u202eevil\u202c مرحبا 你好 привет",
    "<script>alert(1)</script> '; DROP TABLE turns; --",
    "a" * 1000,
]


@pytest.mark.parametrize("text", STORED_AS_TYPED, ids=["control+ANSI", "RTL+mixed", "HTML+SQL", "long token"])
def test_hostile_chat_lines_are_stored_as_typed(
    tmp_path: Path, fake_worker: str, database_url: str, text: str
) -> None:
    env = _env(tmp_path, REDIS_URL=fake_worker, DATABASE_URL=database_url, S2S_REQUEST_TIMEOUT_S="1")
    done = _s2s(env, "chat", stdin=text + "\n/quit\n")
    assert "Traceback" not in done.stderr, done.stderr
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(Turn.role, Turn.text).order_by(Turn.id)).all()
    finally:
        engine.dispose()
    assert [(row.role, row.text) for row in rows] == [(Role.USER, text), (Role.ASSISTANT, None)]


def test_hostile_chat_lines_are_refused_one_by_one_and_the_chat_goes_on(
    tmp_path: Path, fake_worker: str, database_url: str
) -> None:
    env = _env(tmp_path, REDIS_URL=fake_worker, DATABASE_URL=database_url)
    stdin = b"caf\xe9 \xff\n" + b"x" * 1001 + b"\nnul\x00here\n/quit\n"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "chat"],
        env=env,
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        timeout=90,
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0 and "Traceback" not in stderr, stderr
    refusals = [line for line in stderr.splitlines() if line.startswith("s2s chat:")]
    assert len(refusals) == 3, stderr
    assert "lone surrogate" in refusals[0] and "too long" in refusals[1] and "NUL" in refusals[2]
    assert _stored(database_url, Turn) == 0


def _line(item_id: str, question: str = QUESTION) -> str:
    return json.dumps({"id": item_id, "question": question, "passage": PASSAGE}, ensure_ascii=False)


def test_a_utf16_batch_file_with_a_byte_order_mark_is_submitted(
    tmp_path: Path, fake_worker: str, database_url: str
) -> None:
    batch = tmp_path / "excel.jsonl"
    batch.write_bytes(
        codecs.BOM_UTF16_LE + "\r\n".join([_line("a", "Où est né Bob ?"), _line("b")]).encode("utf-16-le")
    )
    done = _s2s(
        _env(tmp_path, REDIS_URL=fake_worker, DATABASE_URL=database_url), "batch", "submit", str(batch)
    )
    assert done.returncode == 0, done.stderr
    assert _stored(database_url, QAJobItem) == 2


@pytest.mark.parametrize(
    ("content", "name", "said"),
    [
        (
            _line("a", "Où est né Bob ?").encode("latin-1"),
            "latin1.jsonl",
            "not UTF-8 text: byte 0xF9 on line 1",
        ),
        (_line("a").encode("utf-16-le"), "nobom.jsonl", "UTF-16 text without a byte-order mark"),
        (b'{"data": [{"paragraphs": [{"context": "Bob was born', "cut.json", "not valid JSON"),
        (b"not json\n" * 60_000, "junk.jsonl", "too many bad lines"),
    ],
)
def test_unusable_batch_files_are_refused_in_one_line_and_nothing_stored(
    tmp_path: Path, fake_worker: str, database_url: str, content: bytes, name: str, said: str
) -> None:
    batch = tmp_path / name
    batch.write_bytes(content)
    env = _env(tmp_path, REDIS_URL=fake_worker, DATABASE_URL=database_url, S2S_MAX_BATCH_ITEMS="50000")
    done = _s2s(env, "batch", "submit", str(batch))
    assert done.returncode == 2, done.stderr
    assert said in _one_clear_line(done)
    assert _stored(database_url, QAJob) == 0


def test_a_million_line_batch_file_is_refused_by_the_size_limit_before_anything_is_stored(
    tmp_path: Path, fake_worker: str, database_url: str
) -> None:
    batch = tmp_path / "million.jsonl"
    with batch.open("w", encoding="utf-8") as out:
        for i in range(1_000_000):
            out.write(_line(f"k{i}") + "\n")
    assert batch.stat().st_size > 50_000_000  # over the default S2S_MAX_UPLOAD_BYTES
    done = _s2s(
        _env(tmp_path, REDIS_URL=fake_worker, DATABASE_URL=database_url), "batch", "submit", str(batch)
    )
    assert done.returncode == 2, done.stderr
    assert "too large" in _one_clear_line(done)
    assert _stored(database_url, QAJob) == 0 and _stored(database_url, QAJobItem) == 0


def test_broken_csv_quotes_and_duplicate_ids_are_reported_per_line_and_the_rest_stored(
    tmp_path: Path, fake_worker: str, database_url: str
) -> None:
    batch = tmp_path / "broken.csv"
    batch.write_text(
        'id,question,passage\na,Where?,Oslo\na,Again?,Oslo\nb,Who?,"Bob\nc,When?,1990\n', encoding="utf-8"
    )
    done = _s2s(
        _env(tmp_path, REDIS_URL=fake_worker, DATABASE_URL=database_url), "batch", "submit", str(batch)
    )
    assert done.returncode == 0, done.stderr
    assert "line 3: duplicate id 'a'" in done.stderr
    assert "line 4: unreadable CSV from this line on" in done.stderr
    assert _stored(database_url, QAJobItem) == 1


def test_the_per_owner_request_limit_holds_in_the_terminal_too(
    tmp_path: Path, fake_worker: str, database_url: str
) -> None:
    env = _env(
        tmp_path,
        REDIS_URL=fake_worker,
        DATABASE_URL=database_url,
        S2S_OWNER_REQUESTS_PER_MINUTE="2",
        S2S_REQUEST_TIMEOUT_S="1",
    )
    for _ in range(2):  # stored and queued; no real worker answers them
        _s2s(env, "ask", "--passage", PASSAGE, "--question", QUESTION)
    done = _s2s(env, "ask", "--passage", PASSAGE, "--question", QUESTION)
    assert done.returncode == 2
    assert "too many requests: the limit is 2 a minute" in _one_clear_line(done)
    assert _stored(database_url, Question) == 2
