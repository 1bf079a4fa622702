"""Give back messages a killed worker held, as soon as a worker starts, instead of after the visibility timeout.

With late acks the Redis transport keeps every delivered, unacknowledged message in the `unacked` hash and
puts it back on its queue only when it is older than the visibility timeout (an hour by default), so a job
whose worker was SIGKILLed would stall that long. A worker that starts while no other worker's heartbeat is
alive knows every entry there belongs to a dead worker (its own consumer has not started yet), and restores
them all at once. With other workers alive it leaves the entries alone: they may be theirs, and the
visibility timeout still covers a dead one. Redelivery is safe because tasks are idempotent.

One message can escape that record: kombu pops a message (BRPOP) before it writes it to `unacked`, so a worker
killed between the two loses it, and a batch job would wait for its items for ever. Once every recorded message
is back on its queue, the batch queue holds all the batch work still owed; `resend_lost_items` sends again, as
new chunk tasks, the pending items of active jobs that no queued message carries.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from sqlalchemy import Engine

from storage import batch_jobs
from storage.db import transaction
from workers import jobs
from workers.celery_app import (
    BATCH_QUEUE,
    ITEMS_TASK,
    QUESTION_TASK,
    REPLY_TASK,
    START_JOB_TASK,
    send_item_chunks,
)
from workers.heartbeat import HEARTBEAT_PREFIX, heartbeat_key

logger = logging.getLogger(__name__)

UNACKED_KEY = "unacked"  # kombu.transport.redis.Channel.unacked_key


def other_live_workers(client: redis.Redis, *, nodename: str) -> list[str]:
    """Heartbeat keys of other workers, leaving out ones from this machine whose process is gone (kill -9)."""
    from workers.service_discovery import pid_alive

    own = heartbeat_key(nodename)
    live = []
    for raw_key in client.scan_iter(match=HEARTBEAT_PREFIX + "*"):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        raw = client.get(key)
        if key == own or raw is None:
            continue
        record = json.loads(raw)
        if record.get("host") == socket.gethostname() and not pid_alive(int(record.get("pid", 0))):
            continue
        live.append(key)
    return live


def recover_from_dead_workers(
    app: Celery, client: redis.Redis, engine: Engine, *, nodename: str, chunk_size: int
) -> tuple[int, int]:
    """If no other worker is alive: put every unacked message back on its queue, then send again the batch
    items no message carries. Returns (messages restored, items sent again)."""
    others = other_live_workers(client, nodename=nodename)
    if others:
        logger.info("not restoring unacked messages: other workers are alive (%s)", ", ".join(others))
        return 0, 0
    restored = restore_unacked_messages(app, client)
    return restored, resend_lost_items(app, client, engine, chunk_size=chunk_size)


def restore_unacked_messages(app: Celery, client: redis.Redis) -> int:
    """Put every unacked message back on its queue; return how many."""
    tags = [tag.decode() if isinstance(tag, bytes) else str(tag) for tag in client.hkeys(UNACKED_KEY)]
    if not tags:
        return 0
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for tag in tags:
            qos.restore_by_tag(tag, leftmost=True)
    logger.warning("restored %d unacknowledged message(s) left by a worker that stopped", len(tags))
    return len(tags)


@dataclass
class Carried:
    """What a set of messages carries (queued, or delivered and not yet acked)."""

    jobs: set[str] = field(default_factory=set)  # ids of jobs with a start_job message (it plans them whole)
    items: set[int] = field(default_factory=set)  # item ids of answer_items messages
    turns: set[int] = field(default_factory=set)  # reply turn ids of reply_to_turn messages
    questions: set[str] = field(default_factory=set)  # question ids of answer_question messages


def carried_by(messages: Iterable[dict[str, Any]]) -> Carried:
    """What these kombu messages (as the Redis transport stores them) carry; the arguments of other tasks are
    not read. The one reading of messages, for recovery at start-up and for the sweeper (sweeper.py)."""
    carried = Carried()
    for message in messages:
        body = message.get("body", "")
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        task = message.get("headers", {}).get("task")
        if task not in (START_JOB_TASK, ITEMS_TASK, REPLY_TASK, QUESTION_TASK):
            continue
        args = json.loads(body)[0]
        if task == START_JOB_TASK:
            carried.jobs.add(args[0])
        elif task == ITEMS_TASK:
            carried.items.update(args[1])
        elif task == REPLY_TASK:
            carried.turns.add(args[0])
        else:
            carried.questions.add(args[0])
    return carried


def queued_batch_work(client: redis.Redis) -> tuple[set[str], set[int]]:
    """What the batch queue still carries: ids of jobs with a start_job message (it plans all their pending
    items), and the item ids of answer_items messages."""
    carried = carried_by(json.loads(raw) for raw in client.lrange(BATCH_QUEUE, 0, -1))
    return carried.jobs, carried.items


def resend_lost_items(app: Celery, client: redis.Redis, engine: Engine, *, chunk_size: int) -> int:
    """Send again the pending items of active jobs that no queued message carries; return how many. Only right
    when no worker holds messages (recover_from_dead_workers)."""
    jobs_to_plan, queued = queued_batch_work(client)
    with transaction(engine) as db:
        active = [job_id for job_id in batch_jobs.active_job_ids(db) if job_id not in jobs_to_plan]
    resent = 0
    for job_id in active:
        chunks = jobs.plan_job(engine, job_id, chunk_size=chunk_size, queued=queued)
        send_item_chunks(app, client, job_id, chunks)
        resent += sum(len(chunk) for chunk in chunks)
    if resent:
        logger.warning(
            "sent %d batch item(s) again that no queued message carried (lost by a killed worker)", resent
        )
    return resent
