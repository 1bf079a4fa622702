"""Thin Celery tasks: take ids, call jobs.py with this process's runtime, return the outcome as JSON.

Also the worker's lifecycle hooks: load the model before the worker consumes (worker_init for the threads and
solo pools, worker_process_init in prefork children, never in a prefork parent), restore messages a killed
worker left unacked, keep the heartbeat, and exit promptly with a failure status once the consumer has met an
error it cannot recover from (_ExitPromptlyOnFailure). The poison guard counts decodes a worker did not survive, not
deliveries: the micro-batcher records them in Redis around each model call (workers/attempts.py), so a task
that is delivered again after its worker died costs its request nothing unless it was being decoded then.

A database outage (runtime.DATABASE_OUTAGE) fails no task: the task is sent again with backoff and runs once
the database answers. Before, a chunk task that met a locked SQLite file was acked as failed and its items
stayed pending for good; a worker that started during an outage never wrote its heartbeat nor gave back a
dead worker's messages, so it now waits for the database before it takes work.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from celery import bootsteps, signals
from kombu.exceptions import OperationalError as BrokerError

from settings import get_settings
from workers import jobs, metrics, notices
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
    Runtime,
    get_runtime,
    init_runtime,
    shutdown_runtime,
    until_database_answers,
)
from workers.sweeper import LostItemSweeper

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


# After the row has ended (answered, failed, or found no longer pending) and committed, a notice tells a waiting
# caller to read it now (workers.notices); a notice that does not go out costs the caller a slower read.
@app.task(name=REPLY_TASK, **ON_OUTAGE_RETRY)
def reply_to_turn(turn_id: int) -> dict[str, Any]:
    runtime = get_runtime()
    with runtime.batcher.expecting():
        outcome = jobs.reply_to_turn(runtime.engine, runtime.serving, turn_id)
    notices.publish(notices.REPLY, turn_id)
    return outcome


@app.task(name=QUESTION_TASK, **ON_OUTAGE_RETRY)
def answer_question(question_id: str) -> dict[str, Any]:
    runtime = get_runtime()
    with runtime.batcher.expecting():
        outcome = jobs.answer_question(runtime.engine, runtime.serving, question_id)
    notices.publish(notices.QUESTION, question_id)
    return outcome


# Redis not answering: refused (killed, restarting), reset, or stalled past the client's socket timeout.
BROKER_OUTAGE = (redis.ConnectionError, redis.TimeoutError, BrokerError)
BROKER_OUTAGE_WAIT_S = 3600.0  # a publish waits this long for Redis to come back, then its task fails
T = TypeVar("T")


def until_broker_answers(call: Callable[[], T], *, what: str) -> T:
    """`call()`, again with backoff (0.5 s doubling to 5 s) while Redis does not answer, for up to
    BROKER_OUTAGE_WAIT_S. For publishes a task cannot leave half done: a job's chunk messages."""
    wait_s, give_up = 0.5, time.monotonic() + BROKER_OUTAGE_WAIT_S
    while True:
        try:
            return call()
        except BROKER_OUTAGE as error:
            if time.monotonic() > give_up:
                raise
            logger.warning(
                "%s: Redis does not answer (%s); trying again in %.1f s",
                what,
                str(error).splitlines()[0] if str(error) else type(error).__name__,
                wait_s,
            )
        time.sleep(wait_s)
        wait_s = min(wait_s * 2, 5.0)


@app.task(name=START_JOB_TASK, **ON_OUTAGE_RETRY)
def start_job(job_id: str) -> dict[str, Any]:
    """Fan a job out into chunk tasks of pending items (a redelivery re-sends only what is still pending).

    Each chunk is sent on its own, waiting for Redis if it stops answering: before, Redis killed mid-fan-out
    failed this task after the chunks sent so far, and the rest of the job's items stayed pending for good
    (112 of 400 in tests/workers/test_faults.py) until some worker's start-up recovery."""
    runtime = get_runtime()
    chunks = jobs.plan_job(runtime.engine, job_id, chunk_size=runtime.settings.batch_chunk_size)
    for chunk in chunks:
        until_broker_answers(
            functools.partial(send_item_chunks, app, runtime.redis, job_id, [chunk]),
            what=f"sending job {job_id}'s items",
        )
    return {"job_id": job_id, "chunks": len(chunks), "items": sum(len(chunk) for chunk in chunks)}


@app.task(name=ITEMS_TASK, ignore_result=True, **ON_OUTAGE_RETRY)
def answer_items(job_id: str, item_ids: list[int]) -> dict[str, int]:
    runtime = get_runtime()
    with runtime.batcher.expecting():
        return jobs.answer_items(runtime.engine, runtime.serving, job_id, item_ids)


# --- worker lifecycle ------------------------------------------------------------------------------------

_heartbeat: Heartbeat | None = None
_sweeper: LostItemSweeper | None = None
_worker: Any = None  # this process's Celery WorkController, from worker_init

CANNOT_SERVE_EXIT_CODE = 78  # EX_CONFIG: the checkpoint (or another start-up input) is missing or unusable
# After an error the consumer cannot recover from, how long the tasks in progress may go on before the process
# exits; what it holds unacknowledged then goes back with the next worker's start (workers/recovery.py).
FAILED_EXIT_GRACE_S = 10.0


def worker_exit_code() -> int:
    """The status this process's worker stopped with: Celery's (1 after an unrecoverable error), else 0.
    app.worker_main drops it, and `s2s worker` must exit with it."""
    return int(getattr(_worker, "exitcode", None) or 0)


def _runtime_or_exit() -> Runtime:
    """This process's runtime; if it cannot be built (a missing, truncated or corrupt checkpoint, a checkpoint
    that is not a plain tensor file), say so in one line and end the process before it consumes anything.

    Celery's signal dispatch only logs a receiver's exception, so before this a worker whose model did not
    load logged a traceback and then ran as "ready" with no model: it took messages it could never answer."""
    try:
        return init_runtime()
    except Exception as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        message = (
            f"s2s worker: cannot start, nothing taken from the queue: {reason} "
            f"(S2S_CHECKPOINT={get_settings().checkpoint_dir})"
        )
        logger.critical("%s", message)
        logging.shutdown()
        os._exit(CANNOT_SERVE_EXIT_CODE)


def _pool_name(worker: Any) -> str:
    pool = getattr(worker, "pool_cls", None) or app.conf.worker_pool
    return (pool if isinstance(pool, str) else getattr(pool, "__module__", "")).lower()


def _start_serving(worker: Any) -> None:
    global _heartbeat, _sweeper
    runtime = _runtime_or_exit()
    nodename = str(getattr(worker, "hostname", "") or "unknown")
    consume_from = getattr(app.amqp.queues, "consume_from", None) or {}
    queues = sorted(consume_from) or [q.name for q in app.conf.task_queues]
    until_database_answers(
        lambda: recover_from_dead_workers(
            app,
            runtime.redis,
            runtime.engine,
            nodename=nodename,
            chunk_size=runtime.settings.batch_chunk_size,
        ),
        what="recovering a dead worker's messages",
    )
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
    # Work lost in Redis while the service runs is sent again (workers/sweeper.py), by whichever worker, whatever
    # its queues: before, only workers consuming `batch` swept, and only batch items.
    _sweeper = LostItemSweeper(
        app,
        runtime.redis,
        runtime.engine,
        nodename=nodename,
        chunk_size=runtime.settings.batch_chunk_size,
        grace_s=runtime.settings.lost_request_grace_s,
    )
    _sweeper.start()
    settings = runtime.settings
    metrics.serve_metrics(
        port=settings.metrics_port,
        host=settings.metrics_host,
        node=nodename,
        device=runtime.device,
        versions=runtime.versions,
    )
    logger.info("serving %s on %s from queues %s", runtime.versions, runtime.device, queues)


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_kwargs: Any) -> None:
    global _worker
    _worker = sender
    if "prefork" in _pool_name(sender):
        return  # the parent never touches the model (CUDA cannot cross a fork); children load it
    _start_serving(sender)


@signals.worker_process_init.connect
def _on_worker_process_init(**_kwargs: Any) -> None:
    _runtime_or_exit()


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_kwargs: Any) -> None:
    metrics.READY.set(0)
    if _heartbeat is not None:
        _heartbeat.stop()
    if _sweeper is not None:
        _sweeper.stop()
    if worker_exit_code():
        _exit_once_tasks_end(worker_exit_code(), grace_s=FAILED_EXIT_GRACE_S)
        return  # the runtime stays up for tasks still in progress: stopping the batcher would fail their requests
    shutdown_runtime()


class _ExitPromptlyOnFailure(bootsteps.StartStopStep):
    """After an error the consumer cannot recover from (Celery logs "Unrecoverable error", e.g. Redis answering
    BRPOP with an error), the worker stops consuming for good and then stops its steps, the pool last, which
    waits for every task in progress (a decode, or a publish that waits up to an hour for Redis): the process
    lived on without consuming until then, and exited 0 (app.worker_main drops the status), so neither `s2s up`
    nor a restart policy on failure knew to start a fresh worker. Celery closes every step before it stops
    any: this one then arms the exit, with the worker's status, within FAILED_EXIT_GRACE_S."""

    def close(self, worker: Any) -> None:
        if code := int(getattr(worker, "exitcode", None) or 0):
            _exit_once_tasks_end(code, grace_s=FAILED_EXIT_GRACE_S)


app.steps["worker"].add(_ExitPromptlyOnFailure)
_exit_armed = threading.Event()


def _exit_once_tasks_end(code: int, *, grace_s: float) -> None:
    """End the process with `code` once no task is in progress, within `grace_s` (once, however often asked)."""
    from celery.worker import state

    if _exit_armed.is_set():
        return
    _exit_armed.set()
    logger.critical(
        "the worker stopped consuming; exiting with status %d once its %d task(s) in progress end, "
        "in at most %.0f s",
        code,
        len(state.active_requests),
        grace_s,
    )

    def exit_then() -> None:
        deadline = time.monotonic() + grace_s
        while len(state.active_requests) and time.monotonic() < deadline:
            time.sleep(0.1)
        if left := len(state.active_requests):
            logger.critical("exiting with %d task(s) still in progress; the next worker takes them", left)
        logging.shutdown()
        os._exit(code)

    threading.Thread(target=exit_then, name="s2s-exit-after-failure", daemon=True).start()


__all__ = ["answer_items", "answer_question", "reply_to_turn", "start_job"]
