"""Send again, while the service runs, work that no message in Redis carries any more: batch items, chat replies
and single questions.

A message can leave Redis without reaching a worker's unacked record: kombu pops it (BRPOP) and only then
writes it to the `unacked` hash, so if Redis is killed (or the connection drops) between the two, the pop is
kept (append-only file) and the message is gone. recovery.py sends such batch items again when a worker
starts; this does it without a restart, which a Redis restart does not cause: Redis killed and started again
in the middle of a 400-item job left one chunk's 4 items pending for good (tests/workers/test_faults.py). A chat
reply or a question in that spot stayed pending for good too, restart or not, until this sent them again.

Every SWEEP_INTERVAL_S one worker (a Redis key with a TTL elects it) reads what Redis carries: both queues, and
every delivered, unacknowledged message (the unacked hash, which covers messages other live workers hold). A
pending item of an active job that no message carries on two sweeps in a row (so a message inside the BRPOP
window of the first sweep is not taken for lost) is sent again as a new chunk task; a pending reply or question
likewise, once no message has carried it for S2S_LOST_REQUEST_GRACE_S too (longer than a sender takes between
storing a row and enqueueing it, or a worker to give back what it held when Redis comes back). Answering a
request twice stores it once (every write only changes a pending row), so a resend that was not needed costs
only a decode, never a second reply.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Hashable, Iterable
from typing import Any, TypeVar

import redis
from celery import Celery
from sqlalchemy import Engine

from storage import batch_jobs, conversations, questions
from storage.db import transaction
from workers import jobs
from workers.celery_app import (
    QUESTION_TASK,
    QUEUES,
    REPLY_TASK,
    TASK_ROUTES,
    send_item_chunks,
)
from workers.recovery import UNACKED_KEY, Carried, carried_by

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 15.0
SWEEP_LOCK_KEY = "s2s:sweep-lost-items"


def carried_work(client: redis.Redis) -> Carried:
    """What Redis carries: every queue's messages and every delivered, unacknowledged one."""
    messages: list[dict[str, Any]] = [
        json.loads(raw) for queue in QUEUES for raw in client.lrange(queue, 0, -1)
    ]
    messages += [json.loads(raw)[0] for raw in client.hvals(UNACKED_KEY)]  # [message, exchange, routing key]
    return carried_by(messages)


K = TypeVar("K", bound=Hashable)


class Missing:
    """Since when each request of one kind has been missing (carried by no message) at this process's sweeps."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.since: dict[Any, float] = {}

    def lost(self, missing: Iterable[K], now: float) -> list[K]:
        """Of `missing` (the requests no message carries at this sweep), those missing at the last sweep as well
        and for at least grace_s, which are then forgotten (they are sent again); the rest is remembered."""
        seen = {key: self.since.get(key, now) for key in missing}
        lost = [key for key, since in seen.items() if key in self.since and now - since >= self.grace_s]
        for key in lost:
            del seen[key]
        self.since = seen
        return lost


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
        grace_s: float,
        interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.app, self.client, self.engine = app, client, engine
        self.nodename, self.chunk_size, self.interval_s = nodename, chunk_size, interval_s
        self.items, self.turns, self.questions = Missing(0.0), Missing(grace_s), Missing(grace_s)
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
        """One sweep; returns how many requests it sent again."""
        carried = carried_work(self.client)
        now = time.monotonic()
        return self._sweep_items(carried, now) + self._sweep_interactive(carried, now)

    def _sweep_items(self, carried: Carried, now: float) -> int:
        with transaction(self.engine) as db:
            active = [job_id for job_id in batch_jobs.active_job_ids(db) if job_id not in carried.jobs]
        missing: dict[int, str] = {}  # item id -> its job
        for job_id in active:
            [pending] = jobs.plan_job(self.engine, job_id, chunk_size=10**9, queued=carried.items) or [[]]
            missing.update((item_id, job_id) for item_id in pending)
        lost: dict[str, list[int]] = {}
        for item_id in self.items.lost(missing, now):
            lost.setdefault(missing[item_id], []).append(item_id)
        for job_id, items in lost.items():
            chunks = [
                items[start : start + self.chunk_size] for start in range(0, len(items), self.chunk_size)
            ]
            send_item_chunks(self.app, self.client, job_id, chunks)
        resent = sum(len(items) for items in lost.values())
        if resent:
            logger.warning("sent %d batch item(s) again that no message in Redis carried any more", resent)
        return resent

    def _sweep_interactive(self, carried: Carried, now: float) -> int:
        with transaction(self.engine) as db:
            turns = [turn for turn in conversations.pending_reply_ids(db) if turn not in carried.turns]
            asked = [asked for asked in questions.pending_question_ids(db) if asked not in carried.questions]
        lost: list[tuple[str, int | str]] = [(REPLY_TASK, turn) for turn in self.turns.lost(turns, now)]
        lost += [(QUESTION_TASK, asked) for asked in self.questions.lost(asked, now)]
        for task, request_id in lost:
            self.app.send_task(task, args=[request_id], ignore_result=True, **TASK_ROUTES[task])
        if lost:
            logger.warning(
                "sent %d chat reply(ies) and %d question(s) again that no message in Redis carried for %.0f s",
                sum(task == REPLY_TASK for task, _ in lost),
                sum(task == QUESTION_TASK for task, _ in lost),
                self.turns.grace_s,
            )
        return len(lost)
