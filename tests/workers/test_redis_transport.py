"""The Redis transport that keeps one redis-py client per channel, against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from settings import get_settings
from tests.workers.service_fixtures import redis_for_tests
from workers.celery_app import broker_transport_for, build_config
from workers.redis_transport import TRANSPORT


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[Connection]:
    with redis_for_tests(tmp_path) as url, Connection(url, transport=TRANSPORT) as conn:
        yield conn


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("redis://127.0.0.1:6379/0", TRANSPORT),
        ("redis://:secret@redis.internal:6380/3", TRANSPORT),
        ("rediss://redis.internal:6380/0", None),  # TLS: kombu's own transport and its SSL handling
        ("sentinel://sentinel.internal:26379", None),
        ("socket:///run/redis.sock", None),
    ],
)
def test_only_plain_redis_urls_use_the_client_reusing_transport(url: str, transport: str | None) -> None:
    assert broker_transport_for(url) == transport
    assert build_config(get_settings(), url)["broker_transport"] == transport


def test_a_channel_reuses_one_client_until_its_pool_is_replaced(connection: Connection) -> None:
    channel = connection.channel()
    client = channel._create_client()
    assert channel._create_client() is client
    assert client.connection_pool is channel.pool
    channel._pool = None  # what kombu does when it drops its connections
    fresh = channel._create_client()
    assert fresh is not client and fresh.connection_pool is channel.pool
    assert channel._create_client(asynchronous=True) is not fresh  # the polling client stays kombu's own


def test_messages_are_delivered_acknowledged_and_redelivered_when_not_acked(connection: Connection) -> None:
    queue = connection.SimpleQueue("s2s-transport-test")
    try:
        queue.put({"n": 1})
        queue.put({"n": 2})
        first = queue.get(timeout=5)
        first.ack()
        second = queue.get(timeout=5)
        assert (first.payload, second.payload) == ({"n": 1}, {"n": 2})
        second.requeue()  # not acked: back in the queue through the same shared client
        assert queue.get(timeout=5).payload == {"n": 2}
    finally:
        queue.clear()
        queue.close()


def test_a_message_its_consumer_left_unacked_comes_back_marked_redelivered(connection: Connection) -> None:
    queue = connection.SimpleQueue("s2s-transport-test")
    try:
        queue.put({"n": 1})
        first = queue.get(timeout=5)
        assert not first.delivery_info.get("redelivered")
        queue.channel.qos.restore_unacked()  # what a worker's shutdown (or recovery.py) does with unacked ones
        again = queue.get(timeout=5)
        assert again.payload == {"n": 1} and again.delivery_info["redelivered"] is True
        again.ack()
    finally:
        queue.clear()
        queue.close()
