"""The Celery application: broker, result store, queues, routes and reliability settings, all from Settings.

Nothing connects at import. The configuration is built the first time `app.conf` is read (the on_configure
hook), from `get_settings()` and the Redis URL `resolve_redis_url` finds, so a test or a command can set the
environment first. Without a Redis to use, that read raises ServiceNotRunning: there is no default broker. Task names live here as constants, so the client sends tasks by name without importing
tasks.py (and torch).
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery, signals
from kombu import Queue

from settings import Settings, get_settings
from workers.broker import transport_for
from workers.service_discovery import resolve_redis_url

SENT_AT_HEADER = "s2s_sent_at"  # epoch seconds, stamped on every message by the publishing process (below)

INTERACTIVE_QUEUE = "interactive"
BATCH_QUEUE = "batch"
QUEUES = (INTERACTIVE_QUEUE, BATCH_QUEUE)

REPLY_TASK = "workers.reply_to_turn"
QUESTION_TASK = "workers.answer_question"
START_JOB_TASK = "workers.start_job"
ITEMS_TASK = "workers.answer_items"

JOB_CHUNKS_KEY = "s2s:job:{job_id}:chunks"  # how many chunk task ids a job has used, for cancel_job
JOB_CHUNKS_TTL_S = 7 * 24 * 3600

TASK_ROUTES = {
    REPLY_TASK: {"queue": INTERACTIVE_QUEUE},
    QUESTION_TASK: {"queue": INTERACTIVE_QUEUE},
    START_JOB_TASK: {"queue": BATCH_QUEUE},
    ITEMS_TASK: {"queue": BATCH_QUEUE},
}


def chunk_task_id(job_id: str, index: int) -> str:
    """Chunk task ids derive from the job, so cancelling revokes them without a stored list."""
    return f"{job_id}-c{index}"


def send_item_chunks(celery: Celery, client: Any, job_id: str, chunks: list[list[int]]) -> None:
    """Queue one answer_items task per chunk of item ids, numbered after the job's earlier chunk tasks (the count
    in JOB_CHUNKS_KEY, which cancel_job revokes up to)."""
    if not chunks:
        return
    key = JOB_CHUNKS_KEY.format(job_id=job_id)
    pipe = client.pipeline()
    pipe.incrby(key, len(chunks))
    pipe.expire(key, JOB_CHUNKS_TTL_S)
    first = int(pipe.execute()[0]) - len(chunks)
    for index, item_ids in enumerate(chunks, start=first):
        celery.send_task(
            ITEMS_TASK,
            args=[job_id, item_ids],
            task_id=chunk_task_id(job_id, index),
            ignore_result=True,
            **TASK_ROUTES[ITEMS_TASK],
        )


def build_config(settings: Settings, redis_url: str) -> dict[str, Any]:
    """Every Celery setting the service uses, with the reason for each that is not a default."""
    transport = {"visibility_timeout": settings.visibility_timeout_s}
    return {
        "broker_url": redis_url,
        # kombu's Redis transport with a channel that finishes closing when Redis is gone (workers/broker.py):
        # with kombu's own, Redis killed mid-job stopped the worker's consumer about one time in five.
        "broker_transport": transport_for(redis_url),
        # Answers live in SQL, and callers wait by reading the row (flows/): no task stores a result. The
        # backend serves only a caller that asks for one (bench_queue's no-op round trip).
        "result_backend": redis_url,
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_queues": [Queue(name) for name in QUEUES],
        "task_default_queue": INTERACTIVE_QUEUE,
        "task_routes": TASK_ROUTES,
        # At-least-once: a message is acked only after the answer is stored; a worker that dies mid-decode
        # (even SIGKILL) leaves it to be delivered again. Loops are stopped by the attempt counters (jobs.py).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # An unacked message is redelivered after the visibility timeout: keep it above the longest task,
        # and the same on the broker and the result store (a shorter one anywhere wins).
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "visibility_timeout": settings.visibility_timeout_s,
        "task_time_limit": settings.task_time_limit_s,  # enforced by prefork; the micro-batcher enforces its own
        "result_expires": 3600,
        "task_track_started": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "worker_enable_remote_control": True,
        "broker_pool_limit": 20,
    }


class ServiceCelery(Celery):
    """Celery configured by a method rather than the on_configure signal.

    Celery's signal dispatch only logs a receiver's exception, so a ServiceNotRunning raised there left the app
    on Celery's built-in broker, amqp://guest@localhost:5672//, and work went to whatever AMQP server answered
    on this machine. Celery calls an `on_configure` method directly (Celery._load_config, its pre-4.0 path), so
    the error reaches whoever read `app.conf` first (sending a task, starting a worker), and the configuration
    stays pending: the next read tries again, e.g. once REDIS_URL is set.

    The values go into the constructor's settings (`_preconf`, what `Celery(broker=...)` fills), not through
    `conf.update`: that notifies observers such as `app.amqp`, which read `app.conf` again while it is still
    pending, and Celery recursed until RecursionError once a failed first read had created `app.amqp`.
    """

    def on_configure(self) -> None:  # type: ignore[override]
        settings = get_settings()
        self._preconf.update(build_config(settings, resolve_redis_url(settings)))


app = ServiceCelery("s2s", include=["workers.tasks"], set_as_current=False)


def get_app() -> Celery:
    return app


@signals.before_task_publish.connect(dispatch_uid="s2s-sent-at")
def _stamp_sent_at(headers: dict[str, Any] | None = None, **_kwargs: Any) -> None:
    """Every message carries its enqueue time, so a worker can measure queue wait (workers/metrics.py)."""
    if headers is not None:
        headers.setdefault(SENT_AT_HEADER, time.time())
