"""Worker presence in Redis: each worker refreshes a key with what it serves; the UI and CLI read them.

Key `s2s:worker:<nodename>` holds JSON {hostname (the Celery node name), host, pid, versions, device, queues, started_at, last_seen, batching}
and expires HEARTBEAT_TTL_S after the last refresh, so a killed worker disappears on its own. Reading lives in
workers/client.py; this module only writes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis

logger = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "s2s:worker:"
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_TTL_S = 15


def heartbeat_key(nodename: str) -> str:
    return HEARTBEAT_PREFIX + nodename


class Heartbeat:
    """A daemon thread that writes this worker's record every HEARTBEAT_INTERVAL_S seconds."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        nodename: str,
        record: dict[str, Any],
        stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.client = client
        self.key = heartbeat_key(nodename)
        self.record = {"hostname": nodename, "host": socket.gethostname(), "pid": os.getpid(), **record}
        self.stats = stats
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="s2s-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.client.delete(self.key)
        except redis.RedisError:
            pass

    def beat(self) -> None:
        record = dict(self.record, last_seen=datetime.now(UTC).isoformat())
        if self.stats is not None:
            record["batching"] = self.stats()
        self.client.set(self.key, json.dumps(record), ex=HEARTBEAT_TTL_S)

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                self.beat()
            except redis.RedisError as error:
                logger.warning("heartbeat failed: %s", error)
