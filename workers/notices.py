"""Answer notices: a worker says on Redis pub/sub that a request's row has ended, so whoever waits reads it now.

The database row is the answer; a notice only says "read it again". After a task has committed a chat reply or
a question's answer (or its failure, or found it cancelled), the worker publishes the id on the kind's channel
(`channel(kind)`: one per kind and Redis database number, since pub/sub channels are not scoped to a database).
A waiting process holds one subscription to both channels, on a thread of its own (`listener()`), and wakes the
waiters registered for that id; a waiter registers before it enqueues, so no notice can come before it listens.

Nothing depends on a notice arriving: Redis does not keep a message nobody listened to, a publish can fail, a
subscription can drop, and each of these only costs a waiter its next slow read (flows.waiting.FALLBACK_POLL_S).
When the listener is not subscribed (Redis gone, still connecting), waiters poll as they did before notices.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from workers.client import redis_client

logger = logging.getLogger(__name__)

REPLY = "reply"  # a chat reply turn, by turn id
QUESTION = "question"  # an interactive question, by question id
KINDS = (REPLY, QUESTION)
CHANNEL = "s2s:{db}:answered:{kind}"

LISTEN_TICK_S = 1.0  # how long the listener blocks on its socket before it looks again
SUBSCRIBE_WAIT_S = 1.0  # a process's first waiter waits this long at most for the subscription
RECONNECT_MAX_S = 5.0


def channel(kind: str, client: redis.Redis | None = None) -> str:
    client = client or redis_client()
    return CHANNEL.format(db=client.connection_pool.connection_kwargs.get("db", 0), kind=kind)


def publish(kind: str, request_id: object) -> None:
    """Tell waiters that the row of `request_id` has ended. Never raises: a notice that does not go out only
    makes the waiter's next read a slow one."""
    try:
        client = redis_client()
        client.publish(channel(kind, client), str(request_id))
    except redis.RedisError as error:
        logger.warning(
            "could not publish the %s %s notice (waiters will read the row): %s", kind, request_id, error
        )


class Watch:
    """One waiter's registration: `event` is set when a notice for its id arrives, or when the listener
    (re)subscribes or loses its subscription (a notice may have been missed: read again)."""

    def __init__(self, listener: Listener | None) -> None:
        self.event = threading.Event()
        self._listener = listener
        self.listening_from_start = self.listening

    @property
    def listening(self) -> bool:
        """Whether a notice would reach this waiter now (the listener is subscribed)."""
        return self._listener is not None and self._listener.subscribed


class Listener:
    """A process's one subscription to the answer channels of one Redis, and the waiters it wakes by id."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._channels = {channel(kind, client): kind for kind in KINDS}
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, str], set[Watch]] = {}
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    @contextmanager
    def watch(self, kind: str, request_id: object) -> Iterator[Watch]:
        """Registered for notices about `request_id` while the block runs: enter it before enqueueing."""
        started = self._start()
        if started:  # this process's first waiter: give the subscription a moment, so the wait can rely on it
            self._subscribed.wait(SUBSCRIBE_WAIT_S)
        watch = Watch(self)
        key = (kind, str(request_id))
        with self._lock:
            self._waiters.setdefault(key, set()).add(watch)
        try:
            yield watch
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(watch)
                    if not waiters:
                        del self._waiters[key]

    def _start(self) -> bool:
        with self._lock:
            if self._thread is not None:
                return False
            self._thread = threading.Thread(target=self._run, name="s2s-answer-notices", daemon=True)
            self._thread.start()
            return True

    def _wake(self, key: tuple[str, str] | None = None) -> None:
        with self._lock:
            if key is None:
                watches = [watch for waiters in self._waiters.values() for watch in waiters]
            else:
                watches = list(self._waiters.get(key, ()))
        for watch in watches:
            watch.event.set()

    def _run(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(*self._channels)
                confirmed: set[str] = set()
                while True:
                    message = pubsub.get_message(timeout=LISTEN_TICK_S)
                    if message is None:
                        continue
                    name = message["channel"]
                    name = name.decode() if isinstance(name, bytes) else str(name)
                    if message["type"] == "subscribe":  # also after redis-py reconnected on its own
                        confirmed.add(name)
                        if confirmed >= set(self._channels):
                            self._subscribed.set()
                            backoff = 0.1
                            self._wake()  # a notice may have gone out while we were not subscribed
                    elif message["type"] == "message" and name in self._channels:
                        data = message["data"]
                        request_id = data.decode() if isinstance(data, bytes) else str(data)
                        self._wake((self._channels[name], request_id))
            except Exception as error:  # Redis gone or reset: poll meanwhile, subscribe again
                logger.debug("answer notices: subscription lost (%s); waiters poll until it is back", error)
            finally:
                self._subscribed.clear()
                self._wake()
                try:
                    pubsub.close()
                except Exception:  # the connection is gone already
                    pass
            time.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)


_listeners_lock = threading.Lock()
_listeners: dict[int, Listener] = {}


@contextmanager
def watch(kind: str, request_id: object) -> Iterator[Watch]:
    """Registered with this process's listener for notices about `request_id` while the block runs. Without a
    Redis to listen on (no service running: the enqueue will say so), a Watch that is never woken."""
    try:
        found = listener()
    except Exception as error:
        logger.debug("answer notices: not listening (%s)", error)
        yield Watch(None)
        return
    with found.watch(kind, request_id) as registered:
        yield registered


def listener() -> Listener:
    """This process's listener for the Redis `redis_client()` points at now (one per client, so a test or a
    command that points REDIS_URL elsewhere gets one for the new server)."""
    client = redis_client()
    with _listeners_lock:
        found = _listeners.get(id(client))
        if found is None:
            found = _listeners[id(client)] = Listener(client)
        return found
