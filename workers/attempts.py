"""The poison guard's record: decodes of each request that started and never finished.

Whoever runs the model (the micro-batcher's thread, or `Unbatched` without one) calls `started(keys)` just
before a model call on those requests and `finished(keys)` after it returns or raises. What stays counted is
therefore the number of model calls on a request that its worker did not survive (SIGKILL, a crash, the stuck-
decode exit), plus one while a call is in progress. A request that only waited (in the broker, in a task
thread, in the batcher's queue) when its worker died is not counted, however often that happens; counting
deliveries instead failed innocent batch items whose chunk was redelivered by a few unrelated restarts.

Keys name requests: `request_key("item", 12)` -> "item:12". The worker keeps the record in Redis, which
outlives its process; `LocalAttempts` is the same record in memory for tests and single-process use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

import redis

ATTEMPTS_TTL_S = 7 * 24 * 3600
ATTEMPTS_PREFIX = "s2s:decoding:"

# DECR each key; drop the ones back at zero (a finished decode leaves nothing behind).
_FINISH_SCRIPT = """
for _, key in ipairs(KEYS) do
  if redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
return #KEYS
"""


def request_key(kind: str, request_id: object) -> str:
    """The record's name for one request: kind is "turn", "question" or "item"."""
    return f"{kind}:{request_id}"


class AttemptLog(Protocol):
    def started(self, keys: Sequence[str]) -> None: ...

    def finished(self, keys: Sequence[str]) -> None: ...

    def interrupted(self, keys: Iterable[str]) -> dict[str, int]:
        """Decodes started and not finished, for the keys that have any."""
        ...


class LocalAttempts:
    """An AttemptLog in this process's memory."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def started(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._counts[key] = self._counts.get(key, 0) + 1

    def finished(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                left = self._counts.pop(key, 0) - 1
                if left > 0:
                    self._counts[key] = left

    def interrupted(self, keys: Iterable[str]) -> dict[str, int]:
        with self._lock:
            return {key: self._counts[key] for key in keys if self._counts.get(key, 0) > 0}


class RedisAttempts:
    """An AttemptLog in Redis, one counter per request under ATTEMPTS_PREFIX, expiring after ATTEMPTS_TTL_S."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = ATTEMPTS_TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._finish = client.register_script(_FINISH_SCRIPT)

    def started(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.incr(ATTEMPTS_PREFIX + key)
            pipe.expire(ATTEMPTS_PREFIX + key, self.ttl_s)
        pipe.execute()

    def finished(self, keys: Sequence[str]) -> None:
        if keys:
            self._finish(keys=[ATTEMPTS_PREFIX + key for key in keys])

    def interrupted(self, keys: Iterable[str]) -> dict[str, int]:
        wanted = list(keys)
        if not wanted:
            return {}
        values = self.client.mget([ATTEMPTS_PREFIX + key for key in wanted])
        counts = {key: int(value) for key, value in zip(wanted, values, strict=True) if value is not None}
        return {key: count for key, count in counts.items() if count > 0}
