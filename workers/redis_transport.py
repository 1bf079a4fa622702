"""kombu's Redis transport, reusing one redis-py client per channel instead of building one per operation.

kombu's Redis channel makes a new `redis.Redis` object for every operation that does not use its polling
client: each message published, each delivery recorded for late acknowledgement, each ack. With redis-py 8 a
new client copies the whole table of response callbacks, about 0.2 ms; a request paid it three times (once in
the sender, twice in the worker). A `redis.Redis` is safe to share between threads (every command takes a
connection from the pool and returns it), so this channel keeps one per connection pool and makes a new one
only when kombu has replaced its pool (after a reconnect). Everything else is kombu's own.

Used for plain `redis://` URLs (celery_app.broker_transport_for); TLS, Unix-socket and Sentinel URLs keep
kombu's transports unchanged.
"""

from __future__ import annotations

import threading
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._shared_client: Any = None
        self._shared_client_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            with self._shared_client_lock:
                client = self._shared_client
                if client is None or client.connection_pool is not self.pool:
                    client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
