"""The broker transport (workers/broker.py) against the kombu bug that stopped a worker when Redis was killed:
the consumer's cleanup after a lost connection, replayed step by step on a Redis of the test's own (never the
machine's shared one), with a BRPOP in flight when Redis dies."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message

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
