"""Thin Celery tasks: take ids, call jobs.py with this process's runtime, return the outcome as JSON.

Also the worker's lifecycle hooks: load the model before the worker consumes (worker_init for the threads and
solo pools, worker_process_init in prefork children, never in a prefork parent), restore messages a killed
worker left unacked, and keep the heartbeat. The poison guard counts decodes a worker did not survive, not
deliveries: the micro-batcher records them in Redis around each model call (workers/attempts.py), so a task
that is delivered again after its worker died costs its request nothing unless it was being decoded then.

A database outage (runtime.DATABASE_OUTAGE) fails no task: the task is sent again with backoff and runs once
the database answers. Before, a chunk task that met a locked SQLite file was acked as failed and its items
stayed pending for good; a worker that started during an outage never wrote its heartbeat nor gave back a
dead worker's messages, so it now waits for the database before it takes work.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from workers import jobs, metrics
from workers.celery_app import (
    ITEMS_TASK,
    QUESTION_TASK,
    REPLY_TASK,
    START_JOB_TASK,
    app,
    send_item_chunks,
)
from workers.heartbeat import Heartbeat
from workers.recovery import recover_from_dead_workers
from workers.runtime import (
    DATABASE_OUTAGE,
    OUTAGE_BACKOFF_MAX_S,
    get_runtime,
    init_runtime,
    shutdown_runtime,
    until_database_answers,
)

logger = logging.getLogger(__name__)

# Celery's autoretry: on a database outage, publish the task again (same id, so a waiting caller keeps waiting and
# cancel_job still revokes it) after a jittered 1, 2, 4 ... OUTAGE_BACKOFF_MAX_S s, for as long as it lasts, and
# ack this delivery. Tasks are idempotent, so running one again after a partial write is safe.
ON_OUTAGE_RETRY: dict[str, Any] = {
    "autoretry_for": DATABASE_OUTAGE,
    "retry_backoff": 1,
    "retry_backoff_max": OUTAGE_BACKOFF_MAX_S,
    "retry_jitter": True,
    "max_retries": None,
}


@app.task(name=REPLY_TASK, **ON_OUTAGE_RETRY)
def reply_to_turn(turn_id: int) -> dict[str, Any]:
    runtime = get_runtime()
    with runtime.batcher.expecting():
        return jobs.reply_to_turn(runtime.engine, runtime.serving, turn_id)


@app.task(name=QUESTION_TASK, **ON_OUTAGE_RETRY)
def answer_question(question_id: str) -> dict[str, Any]:
    runtime = get_runtime()
    with runtime.batcher.expecting():
        return jobs.answer_question(runtime.engine, runtime.serving, question_id)


@app.task(name=START_JOB_TASK, **ON_OUTAGE_RETRY)
def start_job(job_id: str) -> dict[str, Any]:
    """Fan a job out into chunk tasks of pending items (a redelivery re-sends only what is still pending)."""
    runtime = get_runtime()
    chunks = jobs.plan_job(runtime.engine, job_id, chunk_size=runtime.settings.batch_chunk_size)
    send_item_chunks(app, runtime.redis, job_id, chunks)
    return {"job_id": job_id, "chunks": len(chunks), "items": sum(len(chunk) for chunk in chunks)}


@app.task(name=ITEMS_TASK, ignore_result=True, **ON_OUTAGE_RETRY)
def answer_items(job_id: str, item_ids: list[int]) -> dict[str, int]:
    runtime = get_runtime()
    with runtime.batcher.expecting():
        return jobs.answer_items(runtime.engine, runtime.serving, job_id, item_ids)


# --- worker lifecycle ------------------------------------------------------------------------------------

_heartbeat: Heartbeat | None = None


def _pool_name(worker: Any) -> str:
    pool = getattr(worker, "pool_cls", None) or app.conf.worker_pool
    return (pool if isinstance(pool, str) else getattr(pool, "__module__", "")).lower()


def _start_serving(worker: Any) -> None:
    global _heartbeat
    runtime = init_runtime()
    nodename = str(getattr(worker, "hostname", "") or "unknown")
    consume_from = getattr(app.amqp.queues, "consume_from", None) or {}
    queues = sorted(consume_from) or [q.name for q in app.conf.task_queues]
    until_database_answers(lambda: recover_from_dead_workers(app, runtime.redis, runtime.engine, nodename=nodename,
                                                             chunk_size=runtime.settings.batch_chunk_size),
                           what="recovering a dead worker's messages")
    _heartbeat = Heartbeat(
        runtime.redis,
        nodename=nodename,
        record={
            "versions": runtime.versions,
            "device": runtime.device,
            "queues": queues,
            "started_at": runtime.started_at,
            "microbatch_max_size": runtime.batcher.max_size,
        },
        stats=runtime.batcher.stats.as_dict,
    )
    _heartbeat.start()
    settings = runtime.settings
    metrics.serve_metrics(port=settings.metrics_port, host=settings.metrics_host, node=nodename,
                          device=runtime.device, versions=runtime.versions)
    logger.info("serving %s on %s from queues %s", runtime.versions, runtime.device, queues)


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_kwargs: Any) -> None:
    if "prefork" in _pool_name(sender):
        return  # the parent never touches the model (CUDA cannot cross a fork); children load it
    _start_serving(sender)


@signals.worker_process_init.connect
def _on_worker_process_init(**_kwargs: Any) -> None:
    init_runtime()


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_kwargs: Any) -> None:
    metrics.READY.set(0)
    if _heartbeat is not None:
        _heartbeat.stop()
    shutdown_runtime()


__all__ = ["answer_items", "answer_question", "reply_to_turn", "start_job"]
