"""Waiting for an answer by reading its row when the worker says it has ended: the one wait of the terminal
commands and the benchmarks.

A worker stores the answer (or the failure) in the database and no Celery result, then publishes a notice
(workers.notices). A waiter registers for that notice (`watching`) before it enqueues the request, and reads
the request's row, in a read transaction (on SQLite a deferred one, which a worker's write never waits for),
each time it is woken, until the row is no longer pending. The row is the truth and a notice only a hint: a lost
one costs a read FALLBACK_POLL_S later. While the process is not subscribed (Redis unreachable, reconnecting) the
waiter reads as it did before notices: soon at first, the interval growing to POLL_MAX_S.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from flows.queueing import EngineSource
from storage.db import read_transaction
from workers import notices
from workers.client import ResultTimeout

FALLBACK_POLL_S = 0.5  # subscribed: a read this often anyway, in case a notice was lost
POLL_FIRST_S = 0.002  # not subscribed: poll, soon at first
POLL_GROWTH = 1.5
POLL_MAX_S = 0.1

REPLY = notices.REPLY
QUESTION = notices.QUESTION
Watch = notices.Watch


@contextmanager
def watching(kind: str, request_id: object) -> Iterator[notices.Watch]:
    """Listen for the worker's notice about `request_id` (a reply turn id for REPLY, a question id for QUESTION)
    while the block runs; enter it before enqueueing and wait inside it (`wait_until_ended(..., watch=...)`)."""
    with notices.watch(kind, request_id) as watch:
        yield watch


def wait_for(
    engine: EngineSource,
    kind: str,
    request_id: object,
    read: Callable[[Session], dict[str, Any]],
    *,
    timeout: float,
    watch: notices.Watch | None = None,
) -> dict[str, Any]:
    """`wait_until_ended` for `request_id`: with the `watch` the caller entered before it enqueued, or (None)
    watching from now, which reads the row first."""
    if watch is not None:
        return wait_until_ended(engine, read, timeout=timeout, watch=watch, enqueued_after_watch=True)
    with watching(kind, request_id) as watch:
        return wait_until_ended(engine, read, timeout=timeout, watch=watch)


def wait_until_ended(
    engine: EngineSource,
    read: Callable[[Session], dict[str, Any]],
    *,
    timeout: float,
    watch: notices.Watch,
    enqueued_after_watch: bool = False,
) -> dict[str, Any]:
    """`read(db)` (an outcome dict with a "status"), again each time `watch` is woken (or FALLBACK_POLL_S has
    passed), until its status is no longer "pending"; ResultTimeout if it still is after `timeout` seconds (the
    request stays queued and will still be answered).

    `enqueued_after_watch`: the request was enqueued inside the watch, so while the listener was subscribed
    from the start no answer can be stored unnoticed, and the first read waits for the first notice."""
    deadline = time.monotonic() + timeout
    interval = POLL_FIRST_S
    bound = engine()
    skip_read = enqueued_after_watch and watch.listening_from_start
    while True:
        watch.event.clear()  # before the read: a notice that comes during it wakes the next wait at once
        if not skip_read:
            with read_transaction(bound) as db:
                outcome = read(db)
            if outcome["status"] != "pending":
                return outcome
        skip_read = False
        left = deadline - time.monotonic()
        if left <= 0:
            raise ResultTimeout(f"no answer within {timeout:.0f} s (is a worker running?)")
        if watch.listening:
            watch.event.wait(min(FALLBACK_POLL_S, left))
        else:
            watch.event.wait(min(interval, left))
            interval = min(interval * POLL_GROWTH, POLL_MAX_S)
