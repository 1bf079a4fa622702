"""Prometheus metrics of a worker process, and the collector of queue depths the UI exposes as well.

What is measured, and where it is recorded:

- requests by task kind and outcome, task duration, and queue wait (enqueue to start, from the `s2s-sent-at`
  header celery_app stamps on every message): Celery's task_prerun/task_postrun/task_failure signals,
  connected by `serve_metrics` (tasks.py calls it once the model is loaded);
- batch sizes the micro-batcher forms, the time requests wait in it, decode time per batched model call, and
  decode errors: workers/microbatch.py;
- queue depth (LLEN of each Celery queue in Redis) and live workers per queue (heartbeats): read at scrape
  time by `RedisCollector`, so no process has to keep them up to date.

One worker is one process (threads or solo pool), so the default registry needs no multiprocess mode. This
module imports neither torch nor tasks.py: the UI imports it for the collector. It reads Redis through
workers.client, which never imports it (celery_app stamps the header this module reads).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workers.celery_app import ITEMS_TASK, QUESTION_TASK, REPLY_TASK, SENT_AT_HEADER, START_JOB_TASK
from workers.client import list_workers, queue_depths

logger = logging.getLogger(__name__)

# Task names -> the `kind` label: short, stable, and independent of module paths.
TASK_KINDS = {
    REPLY_TASK: "reply",
    QUESTION_TASK: "question",
    START_JOB_TASK: "start_job",
    ITEMS_TASK: "batch_items",
}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUESTS = Counter(
    "s2s_worker_requests",
    "Requests finished, by task kind and outcome (batch items count one each).",
    ["kind", "outcome"],
)
TASK_SECONDS = Histogram(
    "s2s_worker_task_seconds",
    "Task run time on the worker, start to finish.",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
QUEUE_WAIT_SECONDS = Histogram(
    "s2s_worker_queue_wait_seconds",
    "Time from enqueue to the task starting on a worker (wall clocks).",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
BATCH_WAIT_SECONDS = Histogram(
    "s2s_worker_microbatch_wait_seconds",
    "Time a request waits in the micro-batcher before its batch decodes.",
    buckets=LATENCY_BUCKETS,
)
DECODE_SECONDS = Histogram(
    "s2s_worker_decode_seconds",
    "Duration of one batched model call, by call (answer or reply).",
    ["call"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "s2s_worker_microbatch_size",
    "Requests in each batch the micro-batcher formed.",
    buckets=BATCH_SIZE_BUCKETS,
)
ERRORS = Counter(
    "s2s_worker_errors",
    "Errors: decodes that failed (where=decode) and tasks that raised (where=task).",
    ["where", "kind", "error"],
)
READY = Gauge("s2s_worker_ready", "1 once the model is loaded and warmed up and the worker consumes.")
INFO = Gauge(
    "s2s_worker_info", "Constant 1, labelled with what this worker serves.", ["node", "device", "versions"]
)


def task_kind(name: str | None) -> str:
    return TASK_KINDS.get(name or "", name or "unknown")


# --- recording helpers (called where the events happen) -------------------------------------------------


def observe_batch(size: int, waits_s: Iterable[float]) -> None:
    """One batch formed by the micro-batcher: its size and how long each of its requests waited."""
    BATCH_SIZE.observe(size)
    for wait_s in waits_s:
        BATCH_WAIT_SECONDS.observe(max(wait_s, 0.0))


def observe_decode(call: str, seconds: float) -> None:
    DECODE_SECONDS.labels(call=call).observe(seconds)


def count_error(where: str, kind: str, error: BaseException) -> None:
    ERRORS.labels(where=where, kind=kind, error=type(error).__name__).inc()


def record_outcome(kind: str, result: Any) -> None:
    """Count what a task returned: the outcome status of a turn or question, or a chunk's item counts."""
    if kind == "batch_items" and isinstance(result, dict):
        for outcome in ("answered", "failed", "skipped"):
            count = int(result.get(outcome, 0) or 0)
            if count:
                REQUESTS.labels(kind="batch_item", outcome=outcome).inc(count)
    elif isinstance(result, dict) and isinstance(result.get("status"), str):
        REQUESTS.labels(kind=kind, outcome=result["status"]).inc()
    else:
        REQUESTS.labels(kind=kind, outcome="done").inc()


# --- Celery signal handlers -----------------------------------------------------------------------------

_started: dict[str, float] = {}
_started_lock = threading.Lock()


def _on_task_prerun(task_id: str | None = None, task: Any = None, **_kwargs: Any) -> None:
    kind = task_kind(getattr(task, "name", None))
    sent_at = getattr(getattr(task, "request", None), SENT_AT_HEADER, None)
    if isinstance(sent_at, int | float):
        QUEUE_WAIT_SECONDS.labels(kind=kind).observe(max(time.time() - float(sent_at), 0.0))
    if task_id is not None:
        with _started_lock:
            _started[task_id] = time.perf_counter()


def _on_task_postrun(
    task_id: str | None = None, task: Any = None, retval: Any = None, state: str | None = None, **_kwargs: Any
) -> None:
    kind = task_kind(getattr(task, "name", None))
    with _started_lock:
        started = _started.pop(task_id or "", None)
    if started is not None:
        TASK_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)
    if state == "SUCCESS":
        record_outcome(kind, retval)


def _on_task_failure(sender: Any = None, exception: BaseException | None = None, **_kwargs: Any) -> None:
    kind = task_kind(getattr(sender, "name", None))
    REQUESTS.labels(kind=kind, outcome="error").inc()
    if exception is not None:
        count_error("task", kind, exception)


def connect_task_signals() -> None:
    """Record every task this process runs (idempotent: Celery signals ignore a repeated receiver)."""
    from celery import signals

    signals.task_prerun.connect(_on_task_prerun, weak=False, dispatch_uid="s2s-metrics-prerun")
    signals.task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="s2s-metrics-postrun")
    signals.task_failure.connect(_on_task_failure, weak=False, dispatch_uid="s2s-metrics-failure")


# --- what is read at scrape time ------------------------------------------------------------------------


class RedisCollector(Collector):
    """Queue depths (Redis LLEN of the Celery queues) and live workers per queue, read when scraped.

    `depths` and `workers` are workers.client.queue_depths and list_workers (passed in, so a test can give
    its own). A scrape while Redis is down reports nothing for these rather than failing.
    """

    def __init__(
        self, depths: Callable[[], dict[str, int]], workers: Callable[[], list[dict[str, Any]]] | None = None
    ) -> None:
        self.depths = depths
        self.workers = workers

    def describe(self) -> list[Any]:
        return []  # values come from Redis at collect time; no scrape at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            depths = self.depths()
            workers = self.workers() if self.workers is not None else None
        except Exception as error:  # Redis down or unresolvable: the scrape still answers
            logger.warning("queue depth not available: %s", error)
            return
        depth = GaugeMetricFamily(
            "s2s_queue_depth", "Messages waiting in each Celery queue (Redis LLEN).", labels=["queue"]
        )
        for queue, value in sorted(depths.items()):
            depth.add_metric([queue], value)
        yield depth
        if workers is not None:
            alive = GaugeMetricFamily(
                "s2s_workers_alive",
                "Workers with a fresh heartbeat, by queue they consume.",
                labels=["queue"],
            )
            for queue in sorted(depths):
                alive.add_metric([queue], sum(queue in worker.get("queues", []) for worker in workers))
            yield alive


_collector_lock = threading.Lock()
_collectors: dict[int, RedisCollector] = {}


def register_redis_collector(registry: CollectorRegistry = REGISTRY) -> None:
    """Add the queue-depth collector to `registry` once (the UI and the worker both call this)."""
    with _collector_lock:
        if id(registry) not in _collectors:
            collector = RedisCollector(queue_depths, list_workers)
            registry.register(collector)
            _collectors[id(registry)] = collector


def serve_metrics(*, port: int, host: str, node: str, device: str, versions: dict[str, str]) -> int | None:
    """Start recording tasks and, when `port` > 0, serve /metrics on host:port; returns the bound port.

    A port that is taken (two workers on one machine with the same S2S_METRICS_PORT) is logged, not fatal:
    the worker still serves requests.
    """
    connect_task_signals()
    register_redis_collector()
    INFO.labels(
        node=node, device=device, versions=",".join(f"{k}={v}" for k, v in sorted(versions.items()))
    ).set(1)
    READY.set(1)
    if port <= 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as error:
        logger.error("metrics server not started on %s:%d: %s", host, port, error)
        return None
    bound = int(server.server_port)
    logger.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
    return bound
