"""Delivery numbers of turns and questions: free for a first delivery, counted in a real Redis after that."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.workers.service_fixtures import redis_for_tests
from workers.tasks import ATTEMPTS_TTL_S, delivery_number


@pytest.fixture
def client(tmp_path: Path) -> Iterator[redis.Redis]:
    with redis_for_tests(tmp_path) as url:
        yield redis.Redis.from_url(url)


def test_a_first_delivery_is_number_one_and_writes_nothing(client: redis.Redis) -> None:
    assert delivery_number(client, {"redelivered": False}, "question", "q1") == 1
    assert delivery_number(client, None, "question", "q1") == 1
    assert client.keys("s2s:attempts:*") == []


def test_each_redelivery_counts_from_two_and_the_counter_expires(client: redis.Redis) -> None:
    numbers = [delivery_number(client, {"redelivered": True}, "turn", 7) for _ in range(3)]
    assert numbers == [2, 3, 4]
    assert delivery_number(client, {"redelivered": True}, "turn", 8) == 2  # one counter per request
    assert 0 < client.ttl("s2s:attempts:turn:7") <= ATTEMPTS_TTL_S
