"""The poison guard's record: decodes of each request that started and never finished.

Whoever runs the model (the micro-batcher's thread, or `Unbatched` without one) calls `started(keys)` just
before a model call on those requests and `finished(keys)` after it returns or raises. What stays counted is
therefore the number of model calls on a request that its worker did not survive (SIGKILL, a crash, the stuck-
decode exit), plus one while a call is in progress. A request that only waited (in the broker, in a task
thread, in the batcher's queue) when its worker died is not counted, however often that happens; counting
deliveries instead failed innocent batch items whose chunk was redelivered by a few unrelated restarts.

Keys name requests: `request_key("item", 12)` -> "item:12". The worker keeps the record in Redis, which
outlives its process; `LocalAttempts` is the same record in memory for tests and single-process use.

An end that Redis does not take (killed, restarting, stalled) is kept and sent once it answers: before, a
decode that started with Redis up and ended with it down left its counter at 1 for the key's TTL, so the
request was decoded alone from then on and failed after `max_attempts` such outages, though no decode of it
had stopped its worker. A worker that dies owing ends leaves those counters behind, as it would have anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol

import redis

logger = logging.getLogger(__name__)

ATTEMPTS_TTL_S = 7 * 24 * 3600
ATTEMPTS_PREFIX = "s2s:decoding:"

# DECR each key; drop the ones back at zero (a finished decode leaves nothing behind).
_FINISH_SCRIPT = """
for _, key in ipairs(KEYS) do
  if redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
return #KEYS
"""

# Redis not answering: what was not written is kept and sent again (every 0.5 s, doubling to 5 s, until it is).
# A stalled Redis (TimeoutError) may still run what it was sent when it wakes, so an end can then be counted
# twice: a key at 1 goes as it should (at or below zero it is deleted), one at 2 loses a count.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
RESEND_FIRST_WAIT_S = 0.5
RESEND_MAX_WAIT_S = 5.0


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
    """An AttemptLog in Redis, one counter per request under ATTEMPTS_PREFIX, expiring after ATTEMPTS_TTL_S.

    Ends Redis did not take are owed (`owed()`) and sent before this process's next write or read of the record,
    and by a thread of their own until Redis takes them, so a count this process reads is never one it owes."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = ATTEMPTS_TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._finish = client.register_script(_FINISH_SCRIPT)
        self._owed: Counter[str] = Counter()  # key -> decode ends not yet written
        self._lock = threading.Lock()  # guards _owed and _resender
        self._sending = threading.Lock()  # one sender at a time: two must not both send the same ends
        self._resender: threading.Thread | None = None

    def started(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        self._send_owed()
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.incr(ATTEMPTS_PREFIX + key)
            pipe.expire(ATTEMPTS_PREFIX + key, self.ttl_s)
        pipe.execute()

    def finished(self, keys: Sequence[str]) -> None:
        """Record the ends; with Redis not answering they are owed and sent later (this does not raise then)."""
        if not keys:
            return
        with self._lock:
            self._owed.update(keys)
        try:
            self._send_owed()
        except REDIS_DOWN as error:
            logger.warning(
                "the end of %d decode(s) waits for Redis to answer (%s); it is sent when Redis does",
                len(keys),
                str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
            self._keep_sending()

    def interrupted(self, keys: Iterable[str]) -> dict[str, int]:
        wanted = list(keys)
        if not wanted:
            return {}
        self._send_owed()
        values = self.client.mget([ATTEMPTS_PREFIX + key for key in wanted])
        counts = {key: int(value) for key, value in zip(wanted, values, strict=True) if value is not None}
        return {key: count for key, count in counts.items() if count > 0}

    def owed(self) -> dict[str, int]:
        """Decode ends not yet written, by key."""
        with self._lock:
            return dict(self._owed)

    def _send_owed(self) -> int:
        """Write every owed end; returns how many it wrote. Raises what Redis raises: on REDIS_DOWN they stay
        owed, on any other error (one Redis will never take) they are dropped."""
        with self._sending:
            with self._lock:
                owed = Counter(self._owed)
            if not owed:
                return 0
            try:
                self._finish(keys=[ATTEMPTS_PREFIX + key for key in owed.elements()])
            except REDIS_DOWN:
                raise
            except Exception:
                self._settled(owed)
                raise
            self._settled(owed)
            return owed.total()

    def _settled(self, sent: Counter[str]) -> None:
        with self._lock:
            self._owed.subtract(sent)
            self._owed = +self._owed  # drops the keys at zero

    def _keep_sending(self) -> None:
        with self._lock:
            if self._resender is None:
                self._resender = threading.Thread(
                    target=self._send_until_done, name="s2s-attempts-resender", daemon=True
                )
                self._resender.start()

    def _send_until_done(self) -> None:
        wait_s = RESEND_FIRST_WAIT_S
        while True:
            time.sleep(wait_s)
            try:
                sent = self._send_owed()
            except REDIS_DOWN:
                wait_s = min(wait_s * 2, RESEND_MAX_WAIT_S)
                continue
            except Exception as error:
                logger.warning("dropped decode ends Redis will not take: %s", error)
            else:
                if sent:
                    logger.warning(
                        "Redis answers again: sent the end of %d decode(s) that waited for it", sent
                    )
            with self._lock:
                if not self._owed:
                    self._resender = None
                    return
