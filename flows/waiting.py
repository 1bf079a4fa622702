"""Waiting for an answer by reading its row: the one wait of the terminal commands and the benchmarks.

A worker stores the answer (or the failure) in the database and no Celery result, so a caller waits by reading
the request's row until it is no longer pending, in a read transaction (on SQLite a deferred one, which a
worker's write never waits for). The first reads come quickly, since a reply takes tens of milliseconds; the
interval then grows to POLL_MAX_S, so a long decode costs a read every POLL_MAX_S at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from flows.queueing import EngineSource
from storage.db import read_transaction
from workers.client import ResultTimeout

POLL_FIRST_S = 0.002
POLL_GROWTH = 1.5
POLL_MAX_S = 0.1


def wait_until_ended(
    engine: EngineSource, read: Callable[[Session], dict[str, Any]], *, timeout: float
) -> dict[str, Any]:
    """`read(db)` (an outcome dict with a "status"), again until its status is no longer "pending";
    ResultTimeout if it still is after `timeout` seconds (the request stays queued and will still be
    answered)."""
    deadline = time.monotonic() + timeout
    interval = POLL_FIRST_S
    bound = engine()
    while True:
        with read_transaction(bound) as db:
            outcome = read(db)
        if outcome["status"] != "pending":
            return outcome
        left = deadline - time.monotonic()
        if left <= 0:
            raise ResultTimeout(f"no answer within {timeout:.0f} s (is a worker running?)")
        time.sleep(min(interval, left))
        interval = min(interval * POLL_GROWTH, POLL_MAX_S)
