"""Several processes writing at once: no lost or duplicated turns, replies, answers or migrations."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL

from storage import batch_jobs, migrate
from storage import conversations as conv
from storage.db import make_engine, transaction
from storage.models import ItemStatus, JobStatus, QAJobItem, Role, TurnStatus
from tests.storage import concurrent_writers

WORKERS = 4
ROUNDS = 5
CONVERSATIONS = 2
ITEMS = 30

pytestmark = pytest.mark.slow


def _run_processes(target: Any, kwargs_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(kwargs_list))
    results = context.Queue()
    processes = [
        context.Process(target=target, kwargs={**kwargs, "barrier": barrier, "results": results})
        for kwargs in kwargs_list
    ]
    for process in processes:
        process.start()
    outputs = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert [output.get("error") for output in outputs] == [None] * len(outputs)
    assert [process.exitcode for process in processes] == [0] * len(processes)
    return outputs


def test_processes_starting_at_once_migrate_the_database_exactly_once(fresh_url: URL) -> None:
    url = fresh_url.render_as_string(hide_password=False)
    outputs = _run_processes(concurrent_writers.ensure_schema, [{"url": url}] * 3)
    assert sorted(output["migrated"] for output in outputs) == [False, False, True]
    assert migrate.is_up_to_date(fresh_url)


def test_concurrent_writers_and_redelivered_tasks_leave_no_lost_or_duplicated_rows(fresh_url: URL) -> None:
    migrate.upgrade(fresh_url)
    engine = make_engine(fresh_url)
    owner = concurrent_writers.OWNER
    with transaction(engine) as db:
        conversation_ids = [conv.create_conversation(db, owner=owner).id for _ in range(CONVERSATIONS)]
        items = [{"item_key": f"k{i}", "question": f"Q{i}?", "passage": f"P{i % 3}."} for i in range(ITEMS)]
        job_id = batch_jobs.create_job(
            db, owner=owner, filename="f.jsonl", items=items, limits=concurrent_writers.LIMITS
        )
        item_ids = list(db.scalars(select(QAJobItem.id).where(QAJobItem.job_id == job_id)))
    url = fresh_url.render_as_string(hide_password=False)
    plan = {
        "url": url,
        "rounds": ROUNDS,
        "conversation_ids": conversation_ids,
        "job_id": job_id,
        "item_ids": item_ids,
    }

    outputs = _run_processes(
        concurrent_writers.write_turns_and_answers, [{**plan, "worker": worker} for worker in range(WORKERS)]
    )

    totals = sum((Counter(output) for output in outputs), Counter())
    messages_per_conversation = WORKERS * ROUNDS + ROUNDS  # own messages + one shared (redelivered) per round
    try:
        with transaction(engine) as db:
            turns = {cid: conv.list_turns(db, conversation_id=cid, owner=owner) for cid in conversation_ids}
            progress = batch_jobs.job_progress(db, job_id=job_id, owner=owner)
            answers = batch_jobs.export_results(db, job_id=job_id, owner=owner)
    finally:
        engine.dispose()
    assert totals == {
        "saved_replies": CONVERSATIONS * messages_per_conversation,
        "answered_items": ITEMS,
        "finished_jobs": 1,
    }
    for conversation_turns in turns.values():
        assert [turn.position for turn in conversation_turns] == list(range(2 * messages_per_conversation))
        assert [turn.role for turn in conversation_turns] == [
            Role.USER,
            Role.ASSISTANT,
        ] * messages_per_conversation
        assert {turn.status for turn in conversation_turns} == {TurnStatus.DONE}
        requests = [turn.client_request_id for turn in conversation_turns if turn.role is Role.USER]
        assert len(set(requests)) == messages_per_conversation
        for user, reply in zip(conversation_turns[::2], conversation_turns[1::2], strict=True):
            assert reply.text == f"reply to {user.text}"
    assert (progress.status, progress.done, progress.pending) == (JobStatus.DONE, ITEMS, 0)
    assert [row["status"] for row in answers] == [ItemStatus.DONE.value] * ITEMS
