"""The one place a stored pending row is handed to the queue: enqueue it, or mark it failed.

A row stored as pending and never enqueued would stay pending for good (no worker would ever see it), so when
enqueueing raises (Redis gone between the check and the send, the broker refusing the message), the row is
marked failed with `NOT_QUEUED` before the error goes on to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.db import transaction

logger = logging.getLogger(__name__)

EngineSource = Callable[[], Engine]  # the caller's engine, asked for only when a flow needs the database
NOT_QUEUED = "it could not be queued"


def enqueue_or_fail(
    engine: EngineSource, enqueue: Callable[[], str], fail: Callable[[Session, str], object]
) -> str:
    """`enqueue()`'s task id; if it raises, `fail(db, NOT_QUEUED)` in a transaction, then the error again."""
    try:
        return enqueue()
    except Exception:
        try:
            with transaction(engine()) as db:
                fail(db, NOT_QUEUED)
        except Exception:  # the database is gone too: the queue's error is the one to report
            logger.exception("could not mark an unqueued request failed")
        raise
