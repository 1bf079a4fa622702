"""Send again, while the service runs, batch items that no message in Redis carries any more.

A message can leave Redis without reaching a worker's unacked record: kombu pops it (BRPOP) and only then
writes it to the `unacked` hash, so if Redis is killed (or the connection drops) between the two, the pop is
kept (append-only file) and the message is gone. recovery.py sends such items again when a worker starts;
this does it without a restart, which a Redis restart does not cause: Redis killed and started again in the
middle of a 400-item job left one chunk's 4 items pending for good (tests/workers/test_faults.py).

Every SWEEP_INTERVAL_S one worker (a Redis key with a TTL elects it) reads what Redis carries: the batch
queue, and every delivered, unacknowledged message (the unacked hash, which covers messages other live
workers hold). A pending item of an active job that no message carries, on two sweeps in a row (so a message
inside the BRPOP window of the first sweep is not taken for lost), is sent again as a new chunk task.
Answering an item twice stores it once, so a resend that was not needed costs only a decode.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery
from sqlalchemy import Engine

from storage import batch_jobs
from storage.db import transaction
from workers import jobs
from workers.celery_app import BATCH_QUEUE, ITEMS_TASK, START_JOB_TASK, send_item_chunks
from workers.recovery import UNACKED_KEY

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 15.0
SWEEP_LOCK_KEY = "s2s:sweep-lost-items"


def carried_batch_work(client: redis.Redis) -> tuple[set[str], set[int]]:
    """What Redis carries for batch jobs, queued or delivered and not yet acked: (ids of jobs with a start_job
    message, ids of items in answer_items messages)."""
    messages: list[dict[str, Any]] = [json.loads(raw) for raw in client.lrange(BATCH_QUEUE, 0, -1)]
    messages += [json.loads(raw)[0] for raw in client.hvals(UNACKED_KEY)]  # [message, exchange, routing key]
    return _batch_work(messages)


def _batch_work(messages: Iterable[dict[str, Any]]) -> tuple[set[str], set[int]]:
    jobs_to_plan: set[str] = set()
    items: set[int] = set()
    for message in messages:
        body = message.get("body", "")
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        task = message.get("headers", {}).get("task")
        if task not in (START_JOB_TASK, ITEMS_TASK):
            continue
        args = json.loads(body)[0]
        if task == START_JOB_TASK:
            jobs_to_plan.add(args[0])
        else:
            items.update(args[1])
    return jobs_to_plan, items


class LostItemSweeper:
    """The sweep loop of one worker process (a daemon thread)."""

    def __init__(
        self,
        app: Celery,
        client: redis.Redis,
        engine: Engine,
        *,
        nodename: str,
        chunk_size: int,
        interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.app, self.client, self.engine = app, client, engine
        self.nodename, self.chunk_size, self.interval_s = nodename, chunk_size, interval_s
        self.missing_before: dict[str, set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="s2s-lost-item-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.client.set(
                    SWEEP_LOCK_KEY, self.nodename, nx=True, ex=max(1, int(self.interval_s * 0.8))
                ):
                    self.sweep()
            except Exception as error:  # Redis or the database not answering: the next sweep tries again
                logger.info(
                    "lost-item sweep skipped: %s", str(error).splitlines()[0] if str(error) else error
                )

    def sweep(self) -> int:
        """One sweep; returns how many items it sent again."""
        jobs_to_plan, carried = carried_batch_work(self.client)
        with transaction(self.engine) as db:
            active = [job_id for job_id in batch_jobs.active_job_ids(db) if job_id not in jobs_to_plan]
        missing_now: dict[str, set[int]] = {}
        resent = 0
        for job_id in active:
            [missing] = jobs.plan_job(self.engine, job_id, chunk_size=10**9, queued=carried) or [[]]
            missing_now[job_id] = set(missing)
            lost = [item for item in missing if item in self.missing_before.get(job_id, set())]
            if lost:
                chunks = [
                    lost[start : start + self.chunk_size] for start in range(0, len(lost), self.chunk_size)
                ]
                send_item_chunks(self.app, self.client, job_id, chunks)
                missing_now[job_id] -= set(lost)
                resent += len(lost)
        self.missing_before = missing_now
        if resent:
            logger.warning("sent %d batch item(s) again that no message in Redis carried any more", resent)
        return resent
