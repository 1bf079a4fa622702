"""What the UI and the CLI call to use the workers: enqueue by task name, see workers and queues.

Never imports torch or tasks.py: tasks are sent by name (celery_app's constants). Enqueue only after the
transaction that created the rows has committed. Nothing here waits for an answer: a task stores it in the
database and stores no Celery result, and a caller waits by reading the row (flows.questions.wait,
flows.chat.wait).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from settings import get_settings
from workers.celery_app import (
    BATCH_QUEUE,
    INTERACTIVE_QUEUE,
    ITEMS_TASK,
    JOB_CHUNKS_KEY,
    QUESTION_TASK,
    QUEUES,
    REPLY_TASK,
    START_JOB_TASK,
    TASK_ROUTES,
    app,
    chunk_task_id,
)
from workers.heartbeat import HEARTBEAT_PREFIX
from workers.service_discovery import resolve_redis_url


class NoWorker(RuntimeError):
    """No live worker consumes the queue a request needs."""


class ResultTimeout(TimeoutError):
    """The answer did not arrive in time (the request stays queued and will still be answered); raised by the
    flows that wait."""


# A stalled Redis raises redis.TimeoutError after about (1 + REDIS_RETRIES) * REDIS_TIMEOUT_S instead of hanging
# the caller for good (redis-py's default: no socket timeout, then 10 retries).
REDIS_TIMEOUT_S = 5.0
REDIS_RETRIES = 1


_clients_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis:
    """This process's one Redis client (its connection pool is thread-safe and shared by every caller: the
    client functions below, the worker's attempt log, heartbeat and recovery). One per resolved URL, so a
    test or a command that points REDIS_URL elsewhere gets a client for the new server."""
    url = resolve_redis_url(get_settings())
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), REDIS_RETRIES),
            )
            _clients[url] = client
        return client


def require_broker() -> None:
    """Raise ServiceNotRunning (no REDIS_URL, no live `s2s up`) or a redis.RedisError (not answering) unless
    Redis answers: a caller checks this before storing rows it will enqueue."""
    redis_client().ping()


def _send(name: str, *args: Any) -> str:
    # ignore_result: the sender does not subscribe to a result that no task stores
    return str(app.send_task(name, args=list(args), ignore_result=True, **TASK_ROUTES[name]).id)


def enqueue_reply(turn_id: int) -> str:
    """Queue the reply for a pending assistant turn; returns the task id to wait on."""
    return _send(REPLY_TASK, turn_id)


def enqueue_question(question_id: str) -> str:
    """Queue a pending interactive question; returns the task id to wait on."""
    return _send(QUESTION_TASK, question_id)


def enqueue_job(job_id: str) -> str:
    """Queue a stored batch job (the worker splits it into chunk tasks of pending items)."""
    return _send(START_JOB_TASK, job_id)


def cancel_job(job_id: str) -> int:
    """Revoke the job's queued chunk tasks (no terminate: a running chunk stops at its next status check).

    Call it after storage.batch_jobs.cancel_job committed: that is what stops items; revoking only spares workers the
    messages. Returns how many chunk tasks were revoked.
    """
    raw = redis_client().get(JOB_CHUNKS_KEY.format(job_id=job_id))
    count = int(raw) if raw is not None else 0
    if count:
        app.control.revoke([chunk_task_id(job_id, index) for index in range(count)])
    return count


def list_workers() -> list[dict[str, Any]]:
    """Live workers from their heartbeats: {hostname, pid, versions, device, queues, started_at, last_seen, ...}."""
    client = redis_client()
    keys = sorted(client.scan_iter(match=HEARTBEAT_PREFIX + "*"))
    records = []
    for raw in client.mget(keys) if keys else []:
        if raw is not None:
            records.append(json.loads(raw))
    return records


def require_worker(queue: str = INTERACTIVE_QUEUE) -> None:
    """Raise NoWorker with a clear message if no live worker consumes `queue`."""
    if not any(queue in worker.get("queues", []) for worker in list_workers()):
        raise NoWorker(f"no worker is consuming the {queue!r} queue: start `s2s up`, or `s2s worker`")


def queue_depths() -> dict[str, int]:
    """Messages waiting (not yet taken by a worker) per queue: {"interactive": n, "batch": m}."""
    client = redis_client()
    pipe = client.pipeline()
    for name in QUEUES:
        pipe.llen(name)
    return dict(zip(QUEUES, (int(n) for n in pipe.execute()), strict=True))


__all__ = [
    "BATCH_QUEUE",
    "INTERACTIVE_QUEUE",
    "ITEMS_TASK",
    "NoWorker",
    "ResultTimeout",
    "cancel_job",
    "enqueue_job",
    "enqueue_question",
    "enqueue_reply",
    "list_workers",
    "queue_depths",
    "require_broker",
    "require_worker",
]
