"""What the UI and the CLI call to use the workers: enqueue by task name, wait for results, see workers and queues.

Never imports torch or tasks.py: tasks are sent by name (celery_app's constants). Enqueue only after the
transaction that created the rows has committed. Waiting uses the result backend's pub/sub (AsyncResult.get),
so a result arrives as soon as it is stored, with no polling interval.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import redis
from celery.result import AsyncResult
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
    """The answer did not arrive in time (the request stays queued and will still be answered)."""


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
            client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
                                          retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), REDIS_RETRIES))
            _clients[url] = client
        return client




def require_broker() -> None:
    """Raise ServiceNotRunning (no REDIS_URL, no live `s2s up`) or a redis.RedisError (not answering) unless
    Redis answers: a caller checks this before storing rows it will enqueue."""
    redis_client().ping()


def _send(name: str, *args: Any) -> str:
    return str(app.send_task(name, args=list(args), **TASK_ROUTES[name]).id)


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

    Call it after storage.qa.cancel_job committed: that is what stops items; revoking only spares workers the
    messages. Returns how many chunk tasks were revoked.
    """
    raw = redis_client().get(JOB_CHUNKS_KEY.format(job_id=job_id))
    count = int(raw) if raw is not None else 0
    if count:
        app.control.revoke([chunk_task_id(job_id, index) for index in range(count)])
    return count


def wait_for_result(task_id: str, *, timeout: float) -> dict[str, Any]:
    """The task's outcome dict; ResultTimeout if it does not come within `timeout` seconds."""
    result = AsyncResult(task_id, app=app)
    try:
        outcome = result.get(timeout=timeout, propagate=True)
    except TimeoutError as error:  # celery.exceptions.TimeoutError subclasses the builtin
        raise ResultTimeout(f"no answer within {timeout:.0f} s (is a worker running?)") from error
    return dict(outcome)


def wait_for_turn(task_id: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """{"turn_id", "status" ("done"/"failed"), "text", "model_version", "latency_ms", "error"}."""
    return wait_for_result(task_id, timeout=timeout)


def wait_for_question(task_id: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """{"question_id", "status", "answer", "score", "span", "n_best", "model_version", "latency_ms", "error"}."""
    return wait_for_result(task_id, timeout=timeout)


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
    "wait_for_question",
    "wait_for_result",
    "wait_for_turn",
]
