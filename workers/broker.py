"""The broker transport: kombu's Redis transport with a channel that finishes closing when Redis is gone.

Redis killed mid-job made the worker's consumer die about one time in five (tests/workers/test_faults.py),
with "Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")" from
kombu.transport.redis.Channel._connparams (kombu #582, celery #4652 are the same class of bug). On a lost
connection Celery's consumer (on_connection_error_after_connected) first calls `connection.collect()`, which
closes the default channel and then clears the transport's `client`, then calls `connection.close()`, which
closes the default channel again. When the channel had a BRPOP in flight (its `_in_poll` set: which of the
consumer's sockets reports the dead Redis first is a race), the first close reads that BRPOP's reply,
gets the ConnectionError, and stops there, before the channel is marked closed; collect() swallows the error.
The second close then goes on to give back the unacknowledged messages, which needs a new connection pool,
whose parameters come from the transport's `client`, now None: the AttributeError, which is not a
connection error, escapes the consumer, and Celery stops the worker ("Unrecoverable error") instead of
reconnecting.

This channel treats a BRPOP whose connection is gone as read: it closes the rest of the way the first time,
while the transport still has its client, so the second close does nothing and the consumer reconnects.
"""

from __future__ import annotations

import logging
from queue import Empty
from urllib.parse import urlsplit

from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)

TRANSPORT = "workers.broker:Transport"


class Channel(kombu_redis.Channel):
    def close(self) -> None:
        if self._in_poll and not self.closed:
            try:
                self._brpop_read()  # sets _in_poll to None, whatever it raises
            except Empty:
                pass
            except self.connection_errors as error:
                logger.info("closing a channel whose BRPOP lost its connection (%s)", error)
        super().close()


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(broker_url: str) -> str | None:
    """The transport for `broker_url`: this module's for redis:// URLs; None (kombu picks by scheme) for
    others, e.g. rediss://, whose TLS defaults kombu applies only under its own transport name."""
    return TRANSPORT if urlsplit(broker_url).scheme == "redis" else None
