"""The broker transport (workers/broker.py) against the two kombu defects Redis killed under a worker showed:
the consumer's cleanup after a lost connection, replayed step by step on a Redis of the test's own (never the
machine's shared one), with a BRPOP in flight when Redis dies; and what that connection held unacknowledged
when Redis died, after Redis is started again on its own files and a new connection consumes."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.worker import state as worker_state
from celery.worker.request import Request
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message

from tests.workers.service_fixtures import OwnRedis, own_redis
from workers import broker
from workers.broker import TRANSPORT, transport_for


@pytest.fixture
def doomed_redis(tmp_path: Path) -> Iterator[tuple[str, object]]:
    from supervisor.embedded_redis import start_redis

    server = start_redis(tmp_path / "redis", log_file=tmp_path / "redis.log")
    try:
        yield server.url, server.process
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(timeout=10)


def _lose_redis_with_a_brpop_in_flight(url: str, process: object, transport: str | None) -> Connection:
    """A connection shaped like a worker's: its default channel consumes a queue and holds one message
    unacknowledged (as a late-ack task does), a second channel consumes a fanout queue that is deleted when the
    channel closes (as remote control's does). Then, with the default channel's next BRPOP sent and its reply
    not read, SIGKILL Redis."""
    connection = Connection(url, transport=transport)
    channel = connection.default_channel
    queue = Queue("s2s-broker-test")(channel)
    queue.declare()
    with Connection(url) as publisher:  # not through `channel`: the consumer's channel has no sync pool yet
        Producer(publisher.default_channel).publish({"n": 1}, routing_key=queue.name, serializer="json")
    held: list[Message] = []
    consumer = Consumer(channel, queues=[queue], callbacks=[lambda body, message: held.append(message)])
    consumer.qos(prefetch_count=10)
    consumer.consume()
    control = connection.channel()
    broadcast = Queue(
        "s2s-broker-test-bcast", Exchange("s2s-broker-test-bcast", type="fanout"), auto_delete=True
    )
    Consumer(
        control, queues=[broadcast(control)], callbacks=[lambda body, message: None], no_ack=True
    ).consume()
    for _ in range(20):
        try:
            connection.drain_events(timeout=0.3)
        except TimeoutError:
            pass
        if held and channel._in_poll:  # type: ignore[attr-defined]
            break
    assert len(held) == 1 and channel._in_poll  # type: ignore[attr-defined]
    process.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
    process.wait(timeout=10)  # type: ignore[attr-defined]
    return connection


def _consumer_cleanup(connection: Connection) -> None:
    """What celery's Consumer.on_connection_error_after_connected does with the lost connection."""
    try:
        connection.collect(socket_timeout=1.0)
    except Exception:
        pass
    connection.close()  # celery: ignore_errors(connection, connection.close), connection and channel errors only


def test_kombus_own_transport_has_the_bug(doomed_redis: tuple[str, object]) -> None:
    """Guards the premise: if kombu fixes this, workers/broker.py can go."""
    connection = _lose_redis_with_a_brpop_in_flight(*doomed_redis, transport=None)
    with pytest.raises(AttributeError, match="hostname"):
        _consumer_cleanup(connection)


def test_the_service_transport_closes_cleanly_after_redis_died_mid_brpop(
    doomed_redis: tuple[str, object],
) -> None:
    connection = _lose_redis_with_a_brpop_in_flight(*doomed_redis, transport=TRANSPORT)
    _consumer_cleanup(connection)  # no AttributeError: the consumer goes on to reconnect


def test_the_service_transport_is_used_for_redis_urls_only() -> None:
    assert transport_for("redis://127.0.0.1:6379/0") == TRANSPORT
    assert transport_for("rediss://example.org:6380/0") is None  # kombu applies its TLS defaults by name


def test_the_service_app_connects_with_the_service_transport() -> None:
    from celery import Celery

    from settings import Settings
    from workers.broker import Transport
    from workers.celery_app import build_config

    app = Celery("s2s-broker-test", set_as_current=False)
    app.conf.update(build_config(Settings(), "redis://127.0.0.1:1/0"))  # nothing connects to it here
    for connection in (app.connection_for_read(), app.connection_for_write()):
        with connection:
            assert isinstance(connection.transport, Transport)


# --- what a connection held when Redis died, once Redis is back ---------------------------------------------------

QUEUE = "s2s-broker-held"


@pytest.fixture
def restartable_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnRedis]:
    """A Redis that can be SIGKILLed and started again on its append-only file, on the same port; and a fresh
    record of what this process owes Redis (workers.broker.owed), so no test sees another's."""
    monkeypatch.setattr(broker, "owed", broker.Owed())
    with own_redis(tmp_path / "redis") as server:
        yield server


def _publish(url: str, bodies: list[dict[str, Any]], **headers: Any) -> None:
    with Connection(url) as publisher:
        producer = Producer(publisher.default_channel)
        for body in bodies:
            producer.publish(body, routing_key=QUEUE, serializer="json", headers=headers or None)


def _consume_and_hold(url: str, transport: str | None, count: int) -> tuple[Connection, list[Message]]:
    """A worker-shaped connection whose default channel has taken `count` messages and acknowledged none (late
    acks), with its next BRPOP in flight."""
    connection = Connection(url, transport=transport)
    channel = connection.default_channel
    Queue(QUEUE)(channel).declare()
    held: list[Message] = []
    consumer = Consumer(
        channel, queues=[Queue(QUEUE)], callbacks=[lambda body, message: held.append(message)]
    )
    consumer.qos(prefetch_count=10)
    consumer.consume()
    for _ in range(30):
        with contextlib.suppress(TimeoutError):
            connection.drain_events(timeout=0.3)
        if len(held) == count and channel._in_poll:  # type: ignore[attr-defined]
            break
    assert len(held) == count
    return connection, held


def _delivered_again(url: str, transport: str | None, *, seconds: float) -> list[dict[str, Any]]:
    """Bodies a new consumer of the queue receives in `seconds` (it acks them)."""
    bodies: list[dict[str, Any]] = []

    def take(body: dict[str, Any], message: Message) -> None:
        bodies.append(body)
        message.ack()

    with Connection(url, transport=transport) as connection:
        channel = connection.default_channel
        consumer = Consumer(channel, queues=[Queue(QUEUE)], callbacks=[take])
        consumer.qos(prefetch_count=10)
        consumer.consume()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.5)
    return bodies


def _unacked(url: str) -> int:
    return int(redis.Redis.from_url(url).hlen("unacked"))


def _finish_during_the_outage(message: Message) -> None:
    """A task that ends while Redis is dead acks its message (Celery's ack_log_error logs a connection error)."""
    with contextlib.suppress(*message.channel.connection_errors):
        message.ack()


def _kill_and_clean_up(server: OwnRedis, connection: Connection) -> None:
    server.kill()
    with contextlib.suppress(AttributeError):  # kombu's own transport: kombu #582, covered above
        _consumer_cleanup(connection)


def test_kombus_own_transport_keeps_what_it_held_in_the_unacked_hash(restartable_redis: OwnRedis) -> None:
    """Guards the premise: with kombu's transport, a message finished while Redis was dead and one never
    finished both stay recorded as delivered, and neither comes back, until the visibility timeout (1 h)."""
    url = restartable_redis.url
    _publish(url, [{"n": 1}, {"n": 2}])
    connection, held = _consume_and_hold(url, None, 2)
    restartable_redis.kill()
    _finish_during_the_outage(held[0])
    with contextlib.suppress(AttributeError):
        _consumer_cleanup(connection)
    restartable_redis.start()
    assert _delivered_again(url, None, seconds=3) == []
    assert _unacked(url) == 2


def test_the_service_transport_gives_back_what_it_held_and_forgets_what_it_finished(
    restartable_redis: OwnRedis,
) -> None:
    """Message 1's task finished while Redis was dead, message 2's never will (its request was dropped, as
    Celery drops scheduled ones on a lost connection): once a new connection consumes, 2 comes back and 1 does
    not, and nothing is left recorded as delivered."""
    url = restartable_redis.url
    _publish(url, [{"n": 1}, {"n": 2}])
    connection, held = _consume_and_hold(url, TRANSPORT, 2)
    restartable_redis.kill()
    _finish_during_the_outage(held[0])
    _consumer_cleanup(connection)
    restartable_redis.start()
    assert _unacked(url) == 2  # what Redis itself kept of the two deliveries
    assert _delivered_again(url, TRANSPORT, seconds=5) == [{"n": 2}]
    assert _unacked(url) == 0
    assert not broker.owed


def test_the_service_transport_leaves_a_delivery_this_worker_still_works_on(
    restartable_redis: OwnRedis,
) -> None:
    """A message whose request the worker still holds (a long decode) when Redis comes back is not given to
    anyone again, so it is not run twice; when the request ends, its ack removes the record."""
    app = Celery("s2s-broker-test", set_as_current=False)

    @app.task(name="s2s-broker-test.noop")
    def noop() -> None: ...

    url = restartable_redis.url
    _publish(url, [[[], {}, {}]], task="s2s-broker-test.noop", id="held-1", lang="py")
    connection, held = _consume_and_hold(url, TRANSPORT, 1)
    request = Request(held[0], app=app)
    worker_state.task_reserved(request)  # what Celery's consumer does with a task it takes
    try:
        assert broker.held_by_this_worker() == {held[0].delivery_tag}
        _kill_and_clean_up(restartable_redis, connection)
        restartable_redis.start()
        assert _delivered_again(url, TRANSPORT, seconds=3) == []
        assert _unacked(url) == 1
    finally:
        worker_state.task_ready(request)
    held[0].ack()  # the request ends: its ack reaches the closed channel, and is owed
    assert broker.owed
    assert _delivered_again(url, TRANSPORT, seconds=2) == []  # the new connection settles what is owed
    assert _unacked(url) == 0
    assert not broker.owed


class CuttingProxy:
    """A loopback TCP proxy to Redis that cuts, once, the connection whose client sends the transaction that
    records a delivery in the unacked hash: after passing it on, and before passing Redis's reply back
    (`lands=True`: the record reaches Redis, its reply does not), or before passing its EXEC on (False)."""

    def __init__(self, target_port: int, *, lands: bool) -> None:
        self.target_port = target_port
        self.lands = lands
        self.cut = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        seen = b""
        try:
            while data := client.recv(65536):
                seen = (seen + data)[-200_000:]
                recording = b"HSET" in seen and b"unacked" in seen and b"EXEC" in seen
                if recording and not self.cut.is_set():
                    self.cut.set()  # the downstream pump passes nothing more back
                    if self.lands:
                        server.sendall(data)
                        time.sleep(0.3)  # Redis reads and runs it
                    break
                server.sendall(data)
        except OSError:
            pass
        for end in (client, server):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def _downstream(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while (data := server.recv(65536)) and not self.cut.is_set():
                client.sendall(data)
        except OSError:
            pass


def _record_cut(url: str, port: int, transport: str | None, *, lands: bool) -> None:
    """A consumer behind a CuttingProxy takes the one queued message; the connection that records its delivery
    is cut; the consumer cleans up as Celery does."""
    proxy = CuttingProxy(port, lands=lands)
    try:
        connection = Connection(f"redis://127.0.0.1:{proxy.port}/0", transport=transport)
        channel = connection.default_channel
        consumer = Consumer(channel, queues=[Queue(QUEUE)], callbacks=[lambda body, message: None])
        consumer.qos(prefetch_count=10)
        consumer.consume()
        with pytest.raises(connection.connection_errors):
            for _ in range(20):
                with contextlib.suppress(TimeoutError):
                    connection.drain_events(timeout=0.3)
        assert proxy.cut.is_set()
        with contextlib.suppress(AttributeError):  # kombu's own transport: kombu #582, covered above
            _consumer_cleanup(connection)
    finally:
        proxy.close()
    assert redis.Redis.from_url(url).llen(QUEUE) == 0  # the pop took it off its queue


@pytest.mark.parametrize("lands", [True, False], ids=["record landed", "record lost"])
def test_kombus_own_transport_drops_a_delivery_whose_record_got_no_reply(
    restartable_redis: OwnRedis, lands: bool
) -> None:
    """Guards the premise: a message popped by BRPOP whose unacked record's reply never came back is neither
    handed to the consumer nor given back: it stays recorded for the visibility timeout, or is gone."""
    url = restartable_redis.url
    _publish(url, [{"n": 1}])
    _record_cut(url, restartable_redis.port, None, lands=lands)
    assert _delivered_again(url, None, seconds=3) == []
    assert _unacked(url) == int(lands)


@pytest.mark.parametrize("lands", [True, False], ids=["record landed", "record lost"])
def test_the_service_transport_gives_back_a_delivery_whose_record_got_no_reply(
    restartable_redis: OwnRedis, lands: bool
) -> None:
    """The stuck chunk of the Redis-kill fault test, made to happen every time: the message comes back once,
    from its record if it reached Redis, else from the copy the transport kept, and nothing stays recorded."""
    url = restartable_redis.url
    _publish(url, [{"n": 1}])
    _record_cut(url, restartable_redis.port, TRANSPORT, lands=lands)
    assert _unacked(url) == int(lands)
    assert _delivered_again(url, TRANSPORT, seconds=5) == [{"n": 1}]
    assert _unacked(url) == 0
    assert not broker.owed
