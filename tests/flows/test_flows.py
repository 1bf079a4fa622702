"""The request flows on a real SQLite file with the workers.client boundary faked: what each stores, when it
enqueues, and that a request whose enqueue raises is failed instead of left pending. The UI's handlers
(tests/ui/test_handlers.py) and the CLI (test_cli_enqueue_failures.py, tests/workers/test_cli_failures.py)
run the same flows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, func, select

from cli.main import main
from flows import batch, chat, exports, questions
from flows.queueing import NOT_QUEUED
from flows.uploads import BatchFileError
from storage.models import QAJob, Question
from tests.ui.conftest import OWNER, PASSAGE, FakeQueue
from workers.client import NoWorker

BROKEN = redis.ConnectionError("connection refused")


def _refuse(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make workers.client's `name` (an enqueue call) raise; the worker check before it still passes."""
    from workers import client

    def broken(*_args: object) -> str:
        raise BROKEN

    monkeypatch.setattr(client, name, broken)


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_a_question_is_queued_once_stored_and_failed_when_that_raises(
    engine: Engine, queue: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = questions.ask(lambda: engine, OWNER, PASSAGE, "Where was Bob born?")
    assert queue.questions == [asked.question_id] and asked.task_id == f"task-{asked.question_id}"
    assert questions.result(lambda: engine, OWNER, asked.question_id)["status"] == "pending"
    _refuse(monkeypatch, "enqueue_question")
    with pytest.raises(redis.ConnectionError):
        questions.ask(lambda: engine, OWNER, PASSAGE, "Where did Bob move?")
    failed = [
        r
        for r in (questions.result(lambda: engine, OWNER, q) for q in _question_ids(engine))
        if r["status"] == "failed"
    ]
    assert [(r["question"], r["error"]) for r in failed] == [("Where did Bob move?", NOT_QUEUED)]


def _question_ids(engine: Engine) -> list[str]:
    with engine.connect() as db:
        return list(db.scalars(select(Question.id)))


def test_without_a_worker_nothing_is_stored(engine: Engine, queue: FakeQueue) -> None:
    queue.workers = []
    with pytest.raises(NoWorker):
        questions.ask(lambda: engine, OWNER, PASSAGE, "Where?")
    with pytest.raises(NoWorker):
        chat.start(lambda: engine, OWNER, "terminal chat")
    assert _count(engine, Question) == 0 and chat.list_conversations(lambda: engine, OWNER) == []


def test_stored_questions_reuse_their_passage_and_wait_unqueued(engine: Engine, queue: FakeQueue) -> None:
    ids = questions.store(
        lambda: engine, "bench", [("Where?", PASSAGE), ("Who?", PASSAGE), ("Where?", PASSAGE)]
    )
    assert len(set(ids)) == 3 and queue.questions == []
    assert {questions.result(lambda: engine, "bench", i)["status"] for i in ids} == {"pending"}


def test_a_chat_reply_that_cannot_be_queued_is_failed_then_retried(
    engine: Engine, queue: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation_id = chat.start(lambda: engine, OWNER, "terminal chat")
    with monkeypatch.context() as patched:
        _refuse(patched, "enqueue_reply")
        with pytest.raises(redis.ConnectionError):
            chat.send(lambda: engine, OWNER, conversation_id, "hello")
    turns = chat.history(lambda: engine, OWNER, conversation_id)
    assert [(t["status"], t["error"]) for t in turns] == [("done", None), ("failed", NOT_QUEUED)]
    turn_id = chat.retry(lambda: engine, OWNER, conversation_id)
    assert queue.replies == [turn_id] and chat.poll(lambda: engine, OWNER, turn_id)["status"] == "pending"
    with pytest.raises(chat.NoFailedReply):
        chat.retry(lambda: engine, OWNER, conversation_id)


def _upload(*records: dict[str, str] | str) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records).encode()


def test_a_job_without_a_valid_item_is_stored_failed_and_never_queued(
    engine: Engine, queue: FakeQueue
) -> None:
    parsed = batch.parse_upload(_upload("{oops"), "bad.jsonl")
    job = batch.submit(lambda: engine, OWNER, parsed, "bad.jsonl")
    assert (job.items, queue.jobs) == (0, [])
    status = batch.status(lambda: engine, OWNER, job.job_id)
    assert status["state"] == "failed" and status["bad_records"] == 1
    assert status["errors"][0]["where"] == "line 1"


def test_a_job_that_cannot_be_queued_is_failed(
    engine: Engine, queue: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refuse(monkeypatch, "enqueue_job")
    parsed = batch.parse_upload(_upload({"id": "a", "question": "Where?", "passage": PASSAGE}), "q.jsonl")
    with pytest.raises(redis.ConnectionError):
        batch.submit(lambda: engine, OWNER, parsed, "q.jsonl")
    [job_id] = [j["job_id"] for j in batch.list_jobs(lambda: engine, OWNER)]
    assert (batch.status(lambda: engine, OWNER, job_id)["state"], _count(engine, QAJob)) == ("failed", 1)


def test_cancel_checks_the_broker_before_it_changes_the_job(engine: Engine, queue: FakeQueue) -> None:
    parsed = batch.parse_upload(_upload({"id": "a", "question": "Where?", "passage": PASSAGE}), "q.jsonl")
    job_id = batch.submit(lambda: engine, OWNER, parsed, "q.jsonl").job_id
    queue.fail_with = BROKEN
    with pytest.raises(redis.ConnectionError):
        batch.cancel(lambda: engine, OWNER, job_id)
    assert batch.status(lambda: engine, OWNER, job_id)["state"] == "queued" and queue.cancelled == []
    queue.fail_with = None
    assert batch.cancel(lambda: engine, OWNER, job_id) is True and queue.cancelled == [job_id]


def test_an_upload_over_the_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from settings import get_settings

    path = tmp_path / "big.jsonl"
    path.write_bytes(b"x" * 2048)
    monkeypatch.setenv("S2S_MAX_UPLOAD_BYTES", "1024")
    get_settings.cache_clear()
    try:
        with pytest.raises(BatchFileError, match="big.jsonl is too large: 2048 bytes > limit 1024"):
            batch.read_upload(path)
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("kind", ["jsonl", "csv", "squad"])
def test_the_cli_and_the_ui_export_the_same_files(
    engine: Engine, queue: FakeQueue, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "q.jsonl"
    path.write_bytes(
        _upload(
            {"id": "a", "question": "Where?", "passage": PASSAGE},
            {"id": "b", "question": "Who?", "passage": "小明出生在杭州。"},
        )
    )
    assert main(["batch", "submit", str(path)]) == 0
    job_id = capsys.readouterr().out.strip()
    assert main(["batch", "results", job_id, "--format", kind]) == 0
    printed = capsys.readouterr().out
    jsonl, csv_path, squad = exports.write_exports(
        batch.results(lambda: engine, "cli", job_id), job_id, tmp_path
    )
    assert printed == Path({"jsonl": jsonl, "csv": csv_path, "squad": squad}[kind]).read_bytes().decode()
    assert main(["batch", "status", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pending"] == 2
