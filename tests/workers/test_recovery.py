"""Batch items lost by a killed worker are sent again at the next start, against a real Redis and SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine

from settings import get_settings
from storage import batch_jobs
from storage.db import transaction
from tests.workers.conftest import OWNER, PASSAGE, QUESTION
from tests.workers.service_fixtures import redis_for_tests
from workers import jobs
from workers.celery_app import START_JOB_TASK, TASK_ROUTES, build_config, send_item_chunks
from workers.recovery import queued_batch_work, resend_lost_items


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
