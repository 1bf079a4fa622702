"""The broker transport: kombu's Redis transport, made to ride out Redis dying under a worker that lives on.

Two kombu defects, each seen in tests/workers/test_faults.py with Redis SIGKILLed mid-job and started again:

1. The consumer died (kombu #582, celery #4652 are the same class of bug), about one run in five, with
   "Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")" from
   kombu.transport.redis.Channel._connparams. On a lost connection Celery's consumer
   (on_connection_error_after_connected) first calls `connection.collect()`, which closes the default channel
   and then clears the transport's `client`, then calls `connection.close()`, which closes the default channel
   again. When the channel had a BRPOP in flight (its `_in_poll` set: which of the consumer's sockets reports
   the dead Redis first is a race), the first close reads that BRPOP's reply, gets the ConnectionError, and
   stops there, before the channel is marked closed; collect() swallows the error. The second close then goes
   on to give back the unacknowledged messages, which needs a new connection pool, whose parameters come from
   the transport's `client`, now None: the AttributeError, which is not a connection error, escapes the
   consumer, and Celery stops the worker instead of reconnecting. This channel treats a BRPOP whose connection
   is gone as read: it closes the rest of the way the first time, while the transport still has its client.

2. Messages stayed recorded as delivered in kombu's `unacked` hash for the visibility timeout (an hour) while
   the worker lived on, and a job never finished (1 run in 10 once 1 was fixed). With late acks kombu writes
   each delivery there before handing it to Celery, removes it on ack, and puts a channel's unacknowledged
   deliveries back on their queues when the channel closes. With Redis dead all three can fail, and kombu then
   forgets what it meant to do: the record written for a chunk that BRPOP had just popped reached Redis, but
   its reply did not, so kombu dropped the message without handing it to Celery (the stuck job: nothing was
   working on that chunk, and the sweeper, workers/sweeper.py, took its items for carried by a live worker);
   an ack that cannot reach Redis is only logged ("Couldn't ack"), or, once the channel is closed, raises and
   is lost; the put-back at close stops at its first ConnectionError. This QoS keeps all three in `owed`:
   - a delivery this process finished (acked, or rejected without requeue): its record is removed;
   - a delivery of a channel that closed while Redis did not answer, not finished: it is put back on its
     queue, as kombu would have at close, once no request of this process's Celery worker has held it for
     GIVE_BACK_AFTER_S. One still being worked on is left alone until its request ends, so nothing runs twice;
   - a delivery whose record may or may not have reached Redis: it is put back from its record if Redis has
     one, else from the copy kept here (the pop that Redis did keep took it off its queue).
   The consumer settles what is owed when it starts consuming again (`basic_consume`) and then with kombu's
   periodic restore of visible messages (every 10 s), through a live channel; while nothing is owed nothing
   is read. A process that dies owing something leaves the records to the next worker's start-up recovery
   (workers/recovery.py), as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from queue import Empty
from typing import Any, cast
from urllib.parse import urlsplit

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

logger = logging.getLogger(__name__)

TRANSPORT = "workers.broker:Transport"


# A stranded delivery goes back once no request of this worker has held it for this long: longer than the
# consumer's event loop takes to run the acks that waited for it to reconnect (see QoS.settle_owed).
GIVE_BACK_AFTER_S = 2.0

# What kombu records for a delivery: (message, exchange, routing key).
Payload = tuple[dict[str, Any], str, str]


class Owed:
    """What this process owes Redis's record of delivered messages, since Redis stopped answering."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finished: set[str] = set()  # records to remove
        # deliveries to put back once no request here holds them, with the copy to put back if Redis has no
        # record (only for deliveries whose record may not have reached it)
        self._stranded: dict[str, Payload | None] = {}
        self._unheld_since: dict[str, float] = {}  # stranded ones no request held at the last settles: since

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._finished or self._stranded)

    def strand(self, tag: str, unrecorded: Payload | None = None) -> None:
        with self._lock:
            self._stranded[tag] = unrecorded
            self._finished.discard(tag)

    def finished(self, tag: str) -> None:
        with self._lock:
            self._stranded.pop(tag, None)
            self._unheld_since.pop(tag, None)
            self._finished.add(tag)

    def snapshot(self) -> tuple[set[str], dict[str, Payload | None], dict[str, float]]:
        """(finished, stranded, since when each stranded one has not been held)"""
        with self._lock:
            return set(self._finished), dict(self._stranded), dict(self._unheld_since)

    def settled(
        self, *, removed: Collection[str], given_back: Collection[str], unheld_since: dict[str, float]
    ) -> None:
        with self._lock:
            self._finished.difference_update(removed)
            for tag in given_back:
                self._stranded.pop(tag, None)
            self._unheld_since = {tag: at for tag, at in unheld_since.items() if tag in self._stranded}


owed = Owed()  # one per process: the unacked hash is shared by every channel on this Redis database


def held_by_this_worker() -> set[str] | None:
    """Delivery tags of the requests this process's Celery worker holds and has not finished (running, or
    waiting for a pool thread); empty outside a worker, None if they could not be read."""
    from celery.worker import state

    for _ in range(10):
        try:
            requests = [*state.active_requests, *state.reserved_requests]
        except RuntimeError:  # a pool thread changed one of the sets while it was read
            continue
        tags = {getattr(request.message, "delivery_tag", None) for request in requests}
        return {tag for tag in tags if isinstance(tag, str)}
    return None


class QoS(kombu_redis.QoS):
    """kombu's Redis ack emulation, keeping what it could not tell Redis in `owed` instead of dropping it."""

    # This channel closed while Redis did not answer; its unfinished deliveries are in `owed`.
    stranded = False

    def append(self, message: Any, delivery_tag: str) -> None:
        """Record a delivery before Celery gets it. If Redis does not answer, the record may have reached it
        all the same (the reply is what was lost): the message is owed back, and Celery never sees it."""
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors:
            delivery = message.delivery_info
            owed.strand(
                delivery_tag, unrecorded=(message._raw, delivery["exchange"], delivery["routing_key"])
            )
            raise

    def restore_unacked(self, client: Any = None) -> None:
        """At close: give back the unacknowledged deliveries; if Redis does not answer, owe them."""
        try:
            super().restore_unacked(client)
        except self.channel.connection_errors as error:
            delivered = cast("dict[str, Any]", self._delivered)  # typed None on kombu's class
            dirty = cast("set[str]", self._dirty)
            tags = [tag for tag in delivered if tag not in dirty]
            self.stranded = True
            delivered.clear()
            for tag in tags:
                owed.strand(tag)
            logger.warning(
                "could not give back %d unacknowledged message(s): Redis does not answer (%s); they go back "
                "once it answers, unless this worker is still working on them",
                len(tags),
                _first_line(error),
            )

    def ack(self, delivery_tag: str) -> None:
        self._finish(delivery_tag, requeue=False)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self._finish(delivery_tag, requeue=requeue)

    def _finish(self, delivery_tag: str, *, requeue: bool) -> None:
        if self.channel.closed:
            if self.stranded:
                _owe(delivery_tag, requeue=requeue)
            # else: the close gave the delivery back, and its record went with it: nothing to remove
            virtual.QoS.ack(self, delivery_tag)
            return
        try:
            if requeue:
                super().reject(delivery_tag, requeue=True)
            else:
                super().ack(delivery_tag)
        except self.channel.connection_errors as error:
            _owe(delivery_tag, requeue=requeue)
            virtual.QoS.ack(self, delivery_tag)
            logger.info(
                "%s of a delivery waits for Redis to answer (%s)",
                "putting back" if requeue else "the acknowledgement",
                _first_line(error),
            )

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        self.settle_owed()
        super().restore_visible(*args, **kwargs)

    def settle_owed(self) -> None:
        """Through this (live) channel: remove the records of finished deliveries, and put back the stranded
        ones that no request of this worker has held for GIVE_BACK_AFTER_S. What Redis does not take now
        stays owed for the next call.

        Not at the first look, because a request that has ended can still have its ack waiting: Celery runs
        acks on the consumer's event loop, which does not turn while it reconnects, so the acks of the tasks
        that ended during the outage run only after the new connection has started consuming (and settled
        once). Putting those deliveries back would run them again."""
        if not owed:
            return
        now = time.monotonic()
        held = held_by_this_worker()  # before the snapshot: a request that ends in between waits a settle
        finished, stranded, unheld_before = owed.snapshot()
        unheld = [] if held is None else [tag for tag in stranded if tag not in held]
        unheld_since = {tag: unheld_before.get(tag, now) for tag in unheld}
        removed: list[str] = []
        given_back: list[str] = []
        try:
            with self.channel.conn_or_acquire() as client:
                if finished:
                    pipe = client.pipeline()
                    for tag in finished:
                        self._remove_from_indices(tag, pipe)
                    pipe.execute()
                    removed = list(finished)
                for tag, since in unheld_since.items():
                    if now - since >= GIVE_BACK_AFTER_S:
                        self._give_back(tag, stranded[tag], client)
                        given_back.append(tag)
        except self.channel.connection_errors as error:
            logger.info("settling with Redis waits: it does not answer (%s)", _first_line(error))
        finally:
            owed.settled(removed=removed, given_back=given_back, unheld_since=unheld_since)
        if removed or given_back:
            logger.warning(
                "Redis answers again: removed %d finished delivery(ies) from its unacked record, gave back %d "
                "that no request here held; %d still held here",
                len(removed),
                len(given_back),
                len(stranded) - len(unheld),
            )

    def _give_back(self, tag: str, unrecorded: Payload | None, client: Any) -> None:
        """kombu's restore_by_tag (the record, if Redis has one, back on its queue, in one transaction), and if
        it has none, the copy kept of a delivery whose record may not have reached it."""

        def give_back(pipe: Any) -> None:
            record = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)
            payload = loads(bytes_to_str(record)) if record else unrecorded
            if payload:
                message, exchange, routing_key = payload
                self.channel._do_restore_message(message, exchange, routing_key, pipe)

        client.transaction(give_back, self.unacked_key)


def _owe(delivery_tag: str, *, requeue: bool) -> None:
    if requeue:
        owed.strand(delivery_tag)
    else:
        owed.finished(delivery_tag)


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class Channel(kombu_redis.Channel):
    QoS = QoS

    def close(self) -> None:
        if self._in_poll and not self.closed:
            try:
                self._brpop_read()  # sets _in_poll to None, whatever it raises
            except Empty:
                pass
            except self.connection_errors as error:
                logger.info("closing a channel whose BRPOP lost its connection (%s)", error)
        super().close()

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        consumer_tag = super().basic_consume(queue, *args, **kwargs)
        self.qos.settle_owed()  # consuming again after a reconnect: what the dead connection left is settled now
        return consumer_tag


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(broker_url: str) -> str | None:
    """The transport for `broker_url`: this module's for redis:// URLs; None (kombu picks by scheme) for
    others, e.g. rediss://, whose TLS defaults kombu applies only under its own transport name."""
    return TRANSPORT if urlsplit(broker_url).scheme == "redis" else None
