"""Work stopped by a database outage resumes by itself once the database answers, with a real Redis, worker and
SQLite file.

The outage is another process's connection holding `BEGIN EXCLUSIVE` on the SQLite file for LOCK_S seconds,
longer than the worker waits for a lock (S2S_SQLITE_BUSY_TIMEOUT_MS, shortened here from 30 s so that the
test takes seconds), so the worker's transactions fail with OperationalError meanwhile.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from flows import chat
from storage import conversations
from storage.db import transaction
from storage.models import ItemStatus, QAJobItem
from tests.workers import service_fixtures as fixtures
from tests.workers.conftest import OWNER

pytestmark = pytest.mark.slow

LOCK_S = 6.0
BUSY_TIMEOUT_MS = 1000
ITEMS = 300


@pytest.fixture
def service(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with fixtures.running_service(
        tmp_path, S2S_SQLITE_BUSY_TIMEOUT_MS=str(BUSY_TIMEOUT_MS), S2S_TEST_DECODE_DELAY_MS="40"
    ) as state:
        yield state


@contextmanager
def database_locked(engine: Engine) -> Iterator[None]:
    """Another connection holds the SQLite file's exclusive lock for the block."""
    holder = sqlite3.connect(str(engine.url.database), isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
    finally:
        holder.close()


def test_a_job_interrupted_by_a_locked_database_finishes_once_it_answers(service: dict[str, Any]) -> None:
    engine = service["engine"]
    job_id = fixtures.submit_job(engine, ITEMS)
    assert fixtures.wait_job(engine, job_id, timeout_s=60, done_at_least=40).pending > 0, (
        "the lock must come mid-job"
    )
    with database_locked(engine):
        time.sleep(LOCK_S)
    released = time.monotonic()
    done_at_release = fixtures.job_progress(engine, job_id).done
    resumed_s = None
    while time.monotonic() - released < 90:
        progress = fixtures.job_progress(engine, job_id)
        if resumed_s is None and progress.done > done_at_release:
            resumed_s = time.monotonic() - released
        if progress.pending == 0:
            break
        time.sleep(0.1)
    finished_s = time.monotonic() - released
    print(
        f"done {done_at_release} at release; resumed after {resumed_s} s, finished after {finished_s:.1f} s: "
        f"done {progress.done}, failed {progress.failed}"
    )
    assert progress.status.value == "done"
    assert progress.done == ITEMS and progress.failed == 0
    with transaction(engine) as db:
        rows = db.execute(select(QAJobItem.status, QAJobItem.answer).where(QAJobItem.job_id == job_id)).all()
    assert all(status is ItemStatus.DONE and answer for status, answer in rows)
    assert fixtures.answered_in_log(service["log"]) == ITEMS  # each item stored by exactly one decode


def test_turns_sent_during_an_outage_and_a_worker_restart_in_it_are_answered_after_it(
    service: dict[str, Any],
) -> None:
    from workers import client

    engine = service["engine"]
    with transaction(engine) as db:
        conversation_id = conversations.create_conversation(db, owner=OWNER).id
        turns = [
            conversations.add_user_turn(db, conversation_id=conversation_id, owner=OWNER, text=f"hello {i}")
            for i in range(2)
        ]
    restarted: list[Any] = []
    with database_locked(engine):
        before_restart = turns[0].reply_turn_id
        client.enqueue_reply(before_restart)  # fails on the lock in the first worker
        time.sleep(BUSY_TIMEOUT_MS / 1000 + 1.0)
        held = turns[1].reply_turn_id
        client.enqueue_reply(held)  # the worker dies holding it
        time.sleep(0.3)
        fixtures.stop_worker(service["worker"], sig=signal.SIGKILL)
        log_size = service["log"].stat().st_size
        starting = threading.Thread(
            target=lambda: restarted.append(fixtures.start_worker(service["env"], service["log"]))
        )
        starting.start()  # a fresh worker, starting while the database is still locked
        deadline = time.monotonic() + 30
        while (
            b"database is locked" not in service["log"].read_bytes()[log_size:]
        ):  # its start-up met the lock
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(2 * BUSY_TIMEOUT_MS / 1000)
    released = time.monotonic()
    starting.join(timeout=90)
    assert restarted, "the worker did not start after the outage"
    service["worker"] = restarted[0]
    outcomes = [chat.wait(lambda: engine, turn_id, timeout=60) for turn_id in (before_restart, held)]
    print(f"both turns answered {time.monotonic() - released:.1f} s after the lock was released")
    assert [outcome["status"] for outcome in outcomes] == ["done", "done"]
    assert all(outcome["text"] for outcome in outcomes)
