"""Per-process resources of a worker: the model, the micro-batcher, the database engine, a Redis client.

Created once per worker process, after any fork: `init_runtime` is called from the worker_init signal for
the threads and solo pools (everything runs in the one process) and from worker_process_init for prefork
children (see tasks.py); `get_runtime()` also creates it lazily under a lock, so a task can never run before
it. Loading picks the device from Settings (GPU when present with "auto"), warms the model up, and only then
does the worker take work. Nothing runs at import.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import redis
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from settings import Settings, get_settings
from workers.attempts import RedisAttempts
from workers.client import redis_client
from workers.jobs import Serving
from workers.microbatch import BATCH, Decoder, MicroBatcher

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A database that does not answer: SQLite locked by another process past the busy timeout, PostgreSQL down or
# unreachable. An outage, not a fault of the request at hand: the work waits for it instead of failing.
DATABASE_OUTAGE = (OperationalError,)
OUTAGE_BACKOFF_MAX_S = 30


def until_database_answers(call: Callable[[], T], *, what: str, first_wait_s: float = 0.5) -> T:
    """`call()`, again and again with backoff (up to OUTAGE_BACKOFF_MAX_S apart) while the database does not
    answer. For start-up steps a worker cannot serve without: it takes no work until they are done."""
    wait_s = first_wait_s
    while True:
        try:
            return call()
        except DATABASE_OUTAGE as error:
            logger.warning(
                "%s: the database does not answer (%s); trying again in %.1f s",
                what,
                str(error).splitlines()[0],
                wait_s,
            )
        time.sleep(wait_s)
        wait_s = min(wait_s * 2, OUTAGE_BACKOFF_MAX_S)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    serving: Serving
    batcher: MicroBatcher
    redis: redis.Redis
    versions: dict[str, str]
    device: str
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


class _TestHooks:
    """Test-only faults in front of the model, set from the environment (never in a deployment): a model call
    sleeps S2S_TEST_DECODE_DELAY_MS first, and one whose questions or history contain S2S_TEST_EXIT_ON ends
    the process at once, as a decode that crashes its worker (a poison input) would."""

    EXIT_CODE = 99

    def __init__(self, model: Decoder, *, exit_on: str, delay_ms: float) -> None:
        self.model = model
        self.exit_on = exit_on
        self.delay_s = delay_ms / 1000.0

    @classmethod
    def wrap(cls, model: Decoder) -> Decoder:
        exit_on = os.environ.get("S2S_TEST_EXIT_ON", "")
        delay_ms = float(os.environ.get("S2S_TEST_DECODE_DELAY_MS", "0") or 0)
        if not exit_on and not delay_ms:
            return model
        logger.warning("test hooks on: exit on %r, %.0f ms per model call", exit_on, delay_ms)
        return cls(model, exit_on=exit_on, delay_ms=delay_ms)

    def _fault(self, texts: list[str]) -> None:
        time.sleep(self.delay_s)
        if self.exit_on and any(self.exit_on in text for text in texts):
            os._exit(self.EXIT_CODE)

    def answer(self, questions: list[tuple[str, str]], decode: object = None) -> list[list[object]]:
        self._fault([question for question, _ in questions])
        return self.model.answer(questions, decode)

    def reply(self, histories: list[list[str]], decode: object = None) -> list[list[object]]:
        self._fault([text for history in histories for text in history])
        return self.model.reply(histories, decode)


STUCK_EXIT_CODE = 70  # EX_SOFTWARE: the worker stopped itself after a decode ran past the time limit


def exit_stuck_worker(elapsed_s: float) -> None:
    """The micro-batcher's watchdog: a model call has outlived S2S_TASK_TIME_LIMIT_S (every task waiting on it has
    already failed with a timeout). The threads pool cannot interrupt it, so the process exits, as prefork's hard
    time limit would end a child: `s2s up` or the container's restart policy starts a fresh worker, which puts the
    unacknowledged messages back, and a request that keeps doing this fails after S2S_MAX_TASK_ATTEMPTS."""
    logger.critical(
        "a decode has run for %.0f s, past S2S_TASK_TIME_LIMIT_S; exiting so that a fresh worker takes over",
        elapsed_s,
    )
    logging.shutdown()
    os._exit(STUCK_EXIT_CODE)


_lock = threading.Lock()
_runtime: Runtime | None = None


def init_runtime(settings: Settings | None = None) -> Runtime:
    """Load, warm up and start everything this process serves with; a second call returns the first's."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = _build(settings or get_settings())
        return _runtime


def get_runtime() -> Runtime:
    return _runtime if _runtime is not None else init_runtime()


def shutdown_runtime() -> None:
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.batcher.stop()
            _runtime.engine.dispose()
            _runtime = None


def decode_overrides(settings: Settings) -> dict[str, int]:
    """The decoding settings the operator set (S2S_BEAM_SIZE, S2S_N_BEST, S2S_MAX_OUTPUT_TOKENS). Only these
    override a model's own defaults (its model card's settings, e.g. the chat model's 10-beam MMI reranking);
    what is unset keeps each checkpoint's values."""
    chosen = {"beam_size": "beam_size", "n_best": "n_best", "max_length": "max_output_tokens"}
    values = {key: getattr(settings, name) for key, name in chosen.items()}
    return {key: value for key, value in values.items() if value is not None}


def _build(settings: Settings) -> Runtime:
    import torch

    from model.inference import ModelSet
    from storage import migrate
    from storage.db import make_engine

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    started = time.perf_counter()
    model = ModelSet.load(
        settings.checkpoint_dir, device=settings.device, output_precision=settings.output_precision
    )
    model.warm_up()
    logger.info(
        "model %s on %s (output layer in %s) loaded and warmed up in %.2f s",
        model.versions,
        model.device,
        settings.output_precision,
        time.perf_counter() - started,
    )
    url = settings.resolved_database_url
    until_database_answers(
        lambda: migrate.ensure_schema(url, busy_timeout_ms=settings.sqlite_busy_timeout_ms),
        what="checking the database schema",
    )
    engine = make_engine(url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    client = redis_client()  # the process's one client: attempts, heartbeat, recovery and chunk sends
    attempts = RedisAttempts(client)
    batcher = MicroBatcher(
        _TestHooks.wrap(model),
        max_size=settings.microbatch_max_size,
        max_wait_ms=settings.microbatch_max_wait_ms,
        timeout_s=float(settings.task_time_limit_s),
        stuck_after_s=float(settings.task_time_limit_s),
        on_stuck=exit_stuck_worker,
        attempts=attempts,
    )
    batcher.start()
    overrides = decode_overrides(settings)
    rc_decode = model.default_decode("rc").replace(**overrides) if overrides else None
    chat_decode = model.default_decode("chat").replace(**overrides) if overrides else None
    serving = Serving(
        model=model,
        decoder=batcher,
        batch_decoder=batcher.at_priority(BATCH),
        rc_decode=rc_decode,
        chat_decode=chat_decode,
        history_turns=settings.history_turns,
        max_attempts=settings.max_task_attempts,
        attempts=attempts,
    )
    # The model, the ORM and Celery are loaded: move every object made so far out of the garbage collector's
    # generations, so that full collections (pauses of several ms in a task's tail latency) scan only what
    # requests create.
    gc.collect()
    gc.freeze()
    return Runtime(
        settings=settings,
        engine=engine,
        serving=serving,
        batcher=batcher,
        redis=client,
        versions=dict(model.versions),
        device=str(model.device),
    )
