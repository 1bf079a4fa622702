"""`s2s ask`, `s2s chat` and `s2s batch submit` when the broker passes the check made before anything is
stored but then refuses the message: the request is failed (not left pending for good, where no worker would
ever see it), and the command prints one line and exits non-zero. In-process (cli.main.main) on a real SQLite
file, with workers.client faked: a worker is online, and the enqueue call raises as Celery does when it cannot
publish."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from kombu.exceptions import OperationalError
from sqlalchemy import Engine, select

from cli.main import main
from flows.queueing import NOT_QUEUED
from storage.models import QAJob, Question, Turn
from tests.ui.conftest import PASSAGE, FakeQueue


def _refuse(*_args: object) -> str:
    raise OperationalError("Error 32 while writing to socket. Broken pipe.")


def _one_line(capsys: pytest.CaptureFixture[str], command: str, *, stdout: str = "") -> str:
    """The one line the command wrote to stderr (chat's greeting aside), having printed only `stdout`."""
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if not line.startswith("conversation ")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"s2s {command}: ") and out == stdout, (out, err)
    return lines[0]


def test_ask_fails_the_question_when_it_cannot_be_queued(
    engine: Engine, queue: FakeQueue, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from workers import client

    monkeypatch.setattr(client, "enqueue_question", _refuse)
    assert main(["ask", "--passage", PASSAGE, "--question", "Where was Bob born?"]) == 2
    assert "Broken pipe" in _one_line(capsys, "ask")
    with engine.connect() as db:
        assert db.execute(select(Question.status, Question.error)).one() == ("failed", NOT_QUEUED)


def test_chat_fails_the_reply_when_it_cannot_be_queued(
    engine: Engine, queue: FakeQueue, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from workers import client

    monkeypatch.setattr(client, "enqueue_reply", _refuse)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/quit\n"))
    assert main(["chat"]) == 2
    assert "Broken pipe" in _one_line(capsys, "chat", stdout="you> ")  # the prompt, and no "bot>" line
    with engine.connect() as db:
        reply = db.execute(select(Turn.status, Turn.error).where(Turn.role == "assistant")).one()
    assert reply == ("failed", NOT_QUEUED)


def test_batch_submit_fails_the_job_when_it_cannot_be_queued(
    engine: Engine,
    queue: FakeQueue,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from workers import client

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "Where was Bob born?", "passage": PASSAGE}) + "\n")
    monkeypatch.setattr(client, "enqueue_job", _refuse)
    assert main(["batch", "submit", str(path)]) == 2
    assert "Broken pipe" in _one_line(capsys, "batch")  # and no job id on stdout: nothing was queued
    with engine.connect() as db:
        assert db.execute(select(QAJob.status, QAJob.error)).one() == ("failed", NOT_QUEUED)
