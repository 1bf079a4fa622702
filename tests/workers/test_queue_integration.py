"""End to end through a real Redis and real worker processes with the tiny checkpoint (marked slow)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flows import chat
from flows import questions as question_flow
from storage import batch_jobs, conversations, questions
from storage.db import transaction
from storage.models import ItemStatus, QAJobItem
from tests.workers.conftest import OWNER, PASSAGE, QUESTION, REPO_ROOT
from tests.workers.service_fixtures import running_service, start_worker, stop_worker, submit_job, wait_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_service(tmp_path_factory.mktemp("service")) as state:
        yield state


def test_question_goes_through_the_queue(service: dict[str, Any]) -> None:
    from workers import client

    with transaction(service["engine"]) as db:
        passage_id = questions.upsert_passage(db, text=PASSAGE)
        question_id = questions.create_question(db, owner=OWNER, passage_id=passage_id, question=QUESTION).id
    client.enqueue_question(question_id)
    outcome = question_flow.wait(lambda: service["engine"], question_id, timeout=30)
    assert outcome["answer"] == "Oslo"
    with transaction(service["engine"]) as db:
        assert questions.get_question(db, question_id=question_id, owner=OWNER).answer == "Oslo"


def test_chat_turn_is_stored_and_answered(service: dict[str, Any]) -> None:
    from workers import client

    with transaction(service["engine"]) as db:
        conversation_id = conversations.create_conversation(db, owner=OWNER).id
        turns = conversations.add_user_turn(db, conversation_id=conversation_id, owner=OWNER, text="hello")
    client.enqueue_reply(turns.reply_turn_id)
    outcome = chat.wait(lambda: service["engine"], turns.reply_turn_id, timeout=30)
    assert outcome["status"] == "done" and outcome["text"]
    with transaction(service["engine"]) as db:
        stored = conversations.list_turns(db, conversation_id=conversation_id, owner=OWNER)
    assert [turn.status.value for turn in stored] == ["done", "done"]


def test_workers_report_model_and_queues(service: dict[str, Any]) -> None:
    from workers import client

    [worker] = client.list_workers()
    assert worker["device"] == "cpu"
    assert worker["queues"] == ["batch", "interactive"]
    assert set(client.queue_depths()) == {"interactive", "batch"}


def test_ask_command_prints_the_answer_first(service: dict[str, Any]) -> None:
    command = [
        sys.executable,
        "-m",
        "cli.main",
        "ask",
        "--passage",
        PASSAGE,
        "--question",
        QUESTION,
        "--json",
    ]
    done = subprocess.run(
        command, env=service["env"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "Oslo"


def test_batch_file_with_bad_lines_runs_the_good_ones(service: dict[str, Any], tmp_path: Path) -> None:
    lines = [
        '{"id": "a", "question": "Where was Bob born?", "passage": "Bob was born in Oslo. He lives in Paris."}',
        "{broken",
        '{"id": "b", "question": "Where does he live?", "passage": "Bob was born in Oslo. He lives in Paris."}',
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")

    def s2s(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=service["env"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    job_id = s2s("batch", "submit", str(path)).splitlines()[0]
    deadline = time.monotonic() + 30
    while s2s("batch", "status", job_id).splitlines()[0] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert '"a": "Oslo"' in s2s("batch", "results", job_id, "--format", "squad")
    assert s2s("batch", "results", job_id, "--format", "csv").splitlines()[0].startswith("id,")


def test_cancel_stops_the_remaining_items(service: dict[str, Any]) -> None:
    from workers import client

    engine = service["engine"]
    job_id = submit_job(engine, 800)
    time.sleep(0.5)
    with transaction(engine) as db:
        assert batch_jobs.cancel_job(db, job_id=job_id, owner=OWNER)
    client.cancel_job(job_id)
    progress = wait_job(engine, job_id, timeout_s=5)
    assert progress.status.value == "cancelled"
    assert progress.pending == 0 and progress.cancelled > 0


def test_worker_killed_mid_job_loses_nothing(service: dict[str, Any]) -> None:
    engine = service["engine"]
    job_id = submit_job(engine, 600)
    progress = wait_job(engine, job_id, timeout_s=30, done_at_least=40)
    assert 0 < progress.done < progress.total, "the job must be killed half-way"
    stop_worker(service["worker"], sig=signal.SIGKILL)
    service["worker"] = start_worker(service["env"], service["tmp"] / "worker.log")
    progress = wait_job(engine, job_id, timeout_s=90)
    assert progress.status.value == "done"
    assert progress.done == 600 and progress.failed == 0
    with transaction(engine) as db:
        rows = db.execute(select(QAJobItem.status, QAJobItem.answer).where(QAJobItem.job_id == job_id)).all()
    assert all(status is ItemStatus.DONE and answer for status, answer in rows)
