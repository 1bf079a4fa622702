"""Work lost by a killed worker or a killed Redis is sent again, against a real Redis and SQLite: batch items at
the next start (workers/recovery.py), and batch items, chat replies and questions while the service runs
(workers/sweeper.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine

from settings import get_settings
from storage import batch_jobs, conversations, questions
from storage.db import transaction
from tests.workers.conftest import OWNER, PASSAGE, QUESTION
from tests.workers.service_fixtures import (
    interactive_messages,
    redis_for_tests,
    store_question,
    store_turn,
)
from workers import jobs
from workers.celery_app import (
    ITEMS_TASK,
    QUESTION_TASK,
    REPLY_TASK,
    START_JOB_TASK,
    TASK_ROUTES,
    build_config,
    send_item_chunks,
)
from workers.recovery import queued_batch_work, resend_lost_items
from workers.sweeper import LostItemSweeper, Missing, carried_work


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[Celery, redis.Redis]]:
    with redis_for_tests(tmp_path) as url:
        celery = Celery("s2s-recovery-test", set_as_current=False)
        celery.conf.update(build_config(get_settings(), url))
        yield celery, redis.Redis.from_url(url)


def _job(engine: Engine, count: int) -> tuple[str, list[int]]:
    items = [{"item_key": f"k{i}", "question": QUESTION, "passage": PASSAGE} for i in range(count)]
    with transaction(engine) as db:
        job_id = batch_jobs.create_job(db, owner=OWNER, filename="lost.jsonl", items=items)
    [item_ids] = jobs.plan_job(engine, job_id, chunk_size=count)
    return job_id, item_ids


def test_pending_items_no_queued_message_carries_are_sent_again_once(
    engine: Engine, broker: tuple[Celery, redis.Redis]
) -> None:
    celery, client = broker
    job_id, item_ids = _job(engine, 20)
    send_item_chunks(celery, client, job_id, [item_ids[:8], item_ids[16:]])  # items 8-15 were lost
    assert queued_batch_work(client) == (set(), set(item_ids[:8] + item_ids[16:]))

    assert resend_lost_items(celery, client, engine, chunk_size=5) == 8
    jobs_to_plan, queued = queued_batch_work(client)
    assert jobs_to_plan == set() and queued == set(item_ids)
    assert client.llen("batch") == 4  # the two chunks that were there and the lost 8 items in chunks of 5
    assert int(client.get(f"s2s:job:{job_id}:chunks") or 0) == 4  # cancel_job revokes the new chunks too
    assert resend_lost_items(celery, client, engine, chunk_size=5) == 0


def test_a_job_whose_start_message_is_queued_is_left_to_it(
    engine: Engine, broker: tuple[Celery, redis.Redis]
) -> None:
    celery, client = broker
    job_id, _ = _job(engine, 6)
    celery.send_task(START_JOB_TASK, args=[job_id], **TASK_ROUTES[START_JOB_TASK])
    assert queued_batch_work(client) == ({job_id}, set())
    assert resend_lost_items(celery, client, engine, chunk_size=5) == 0
    with transaction(engine) as db:
        assert batch_jobs.cancel_job(db, job_id=job_id, owner=OWNER)
    client.delete("batch")
    assert resend_lost_items(celery, client, engine, chunk_size=5) == 0  # a cancelled job gets nothing


def test_start_up_recovery_and_the_sweeper_read_the_batch_queue_alike(
    broker: tuple[Celery, redis.Redis],
) -> None:
    """One reading of messages serves both (recovery.carried_by): what queued_batch_work finds in the batch
    queue is what carried_work finds there, whatever else the queues hold."""
    celery, client = broker
    celery.send_task(START_JOB_TASK, args=["job-a"], **TASK_ROUTES[START_JOB_TASK])
    send_item_chunks(celery, client, "job-b", [[1, 2], [3]])
    celery.send_task(REPLY_TASK, args=[7], **TASK_ROUTES[REPLY_TASK])  # interactive: neither job nor item
    celery.send_task(QUESTION_TASK, args=["q"], **TASK_ROUTES[QUESTION_TASK])
    foreign = base64.b64encode(json.dumps([["job-x", [9]], {}, {}]).encode()).decode()
    client.lpush(
        "batch",
        json.dumps(
            {"body": foreign, "headers": {"task": "other.task"}, "properties": {"body_encoding": "base64"}}
        ),
    )
    plain = json.dumps([["job-c", [4, 5]], {}, {}])  # a body kombu did not encode
    client.lpush("batch", json.dumps({"body": plain, "headers": {"task": ITEMS_TASK}, "properties": {}}))
    carried = carried_work(client)
    assert queued_batch_work(client) == ({"job-a"}, {1, 2, 3, 4, 5}) == (carried.jobs, carried.items)
    assert (carried.turns, carried.questions) == ({7}, {"q"})


def test_a_request_is_lost_once_missing_on_two_sweeps_in_a_row_for_the_grace_period() -> None:
    missing = Missing(grace_s=20.0)
    assert missing.lost(["a", "b"], now=0.0) == []  # first seen missing: maybe inside BRPOP's window
    assert missing.lost(["a", "b", "c"], now=15.0) == []  # 15 s < 20 s
    assert missing.lost(["a", "c"], now=30.0) == ["a"]  # b was carried at this sweep; c missing for 15 s only
    assert missing.lost(["a", "c"], now=45.0) == ["c"]  # a, sent again at 30 s, starts over
    assert missing.lost(["b"], now=50.0) == []  # b was carried in between: it starts over too
    assert Missing(grace_s=0.0).lost(["x"], now=0.0) == []  # two sweeps in a row, whatever the grace


def test_a_sweep_sends_again_the_replies_and_questions_no_message_carries_once_each(
    engine: Engine, broker: tuple[Celery, redis.Redis]
) -> None:
    celery, client = broker
    lost_turn, queued_turn, done_turn = (store_turn(engine, text) for text in ("lost", "queued", "done"))
    lost_question = store_question(engine)
    with transaction(engine) as db:
        assert conversations.save_reply(db, turn_id=done_turn, text="hi", model_version="v")
    celery.send_task(REPLY_TASK, args=[queued_turn], **TASK_ROUTES[REPLY_TASK])
    sweeper = LostItemSweeper(celery, client, engine, nodename="test", chunk_size=8, grace_s=0.0)
    assert sweeper.sweep() == 0  # missing once: not yet lost
    assert sweeper.sweep() == 2
    carried = carried_work(client)
    assert carried.turns == {lost_turn, queued_turn} and carried.questions == {lost_question}
    assert interactive_messages(client) == sorted(
        [(REPLY_TASK, lost_turn), (REPLY_TASK, queued_turn), (QUESTION_TASK, lost_question)], key=str
    )
    assert sweeper.sweep() == 0 and sweeper.sweep() == 0  # carried now: nothing is sent twice
    with transaction(engine) as db:
        assert questions.cancel_question(db, question_id=lost_question, owner=OWNER)
    client.delete("interactive")
    assert (
        sweeper.sweep() == 0 and sweeper.sweep() == 2
    )  # the two pending replies, not the cancelled question
    assert interactive_messages(client) == sorted(
        [(REPLY_TASK, lost_turn), (REPLY_TASK, queued_turn)], key=str
    )
