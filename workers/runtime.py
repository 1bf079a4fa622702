"""Per-process resources of a worker: the model, the micro-batcher, the database engine, a Redis client.

Created once per worker process, after any fork: `init_runtime` is called from the worker_init signal for
the threads and solo pools (everything runs in the one process) and from worker_process_init for prefork
children (see tasks.py); `get_runtime()` also creates it lazily under a lock, so a task can never run before
it. Loading picks the device from Settings (GPU when present with "auto"), warms the model up, and only then
does the worker take work. Nothing runs at import.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from sqlalchemy import Engine

from settings import Settings, get_settings
from workers.jobs import Serving
from workers.microbatch import BATCH, Decoder, MicroBatcher
from workers.service_discovery import resolve_redis_url

logger = logging.getLogger(__name__)


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


class _BatchPriority:
    """The batcher seen by batch items: same calls, lower priority than interactive requests."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self.batcher = batcher

    def answer(self, questions: list[tuple[str, str]], decode: object = None) -> list[list[object]]:
        return self.batcher.answer(questions, decode, priority=BATCH)

    def reply(self, histories: list[list[str]], decode: object = None) -> list[list[object]]:
        return self.batcher.reply(histories, decode, priority=BATCH)


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


def _build(settings: Settings) -> Runtime:
    import torch

    from model.inference import ModelSet
    from storage import migrate
    from storage.db import make_engine

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    started = time.perf_counter()
    model = ModelSet.load(settings.checkpoint_dir, device=settings.device)
    model.warm_up()
    logger.info(
        "model %s on %s loaded and warmed up in %.2f s", model.versions, model.device, time.perf_counter() - started
    )
    url = settings.resolved_database_url
    migrate.ensure_schema(url)
    engine = make_engine(url)
    batcher = MicroBatcher(
        model,
        max_size=settings.microbatch_max_size,
        max_wait_ms=settings.microbatch_max_wait_ms,
        timeout_s=float(settings.task_time_limit_s),
    )
    batcher.start()
    overrides = {
        "beam_size": settings.beam_size,
        "n_best": settings.n_best,
        "max_length": settings.max_output_tokens,
    }
    rc_decode = model.default_decode("rc").replace(**overrides)
    chat_decode = model.default_decode("chat").replace(**overrides)
    batch_decoder: Decoder = _BatchPriority(batcher)
    serving = Serving(
        model=model,
        decoder=batcher,
        batch_decoder=batch_decoder,
        rc_decode=rc_decode,
        chat_decode=chat_decode,
        history_turns=settings.history_turns,
        max_attempts=settings.max_task_attempts,
        decoding_record={"rc": _decode_dict(rc_decode), "chat": _decode_dict(chat_decode)},
    )
    return Runtime(
        settings=settings,
        engine=engine,
        serving=serving,
        batcher=batcher,
        redis=redis.Redis.from_url(resolve_redis_url(settings)),
        versions=dict(model.versions),
        device=str(model.device),
    )


def _decode_dict(decode: object) -> dict[str, object]:
    from dataclasses import asdict, is_dataclass

    return asdict(decode) if is_dataclass(decode) and not isinstance(decode, type) else {}
