"""Answer notices through a real Redis and a real worker (marked slow): the worker publishes on the kind's
channel after it has stored the answer, a waiter listening from before the enqueue reads the row at once; with
notices lost, or the subscription dropped, the slow fallback read still delivers the answer."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flows import chat, waiting
from flows import questions as question_flow
from storage import questions
from storage.db import transaction
from tests.workers.conftest import OWNER, PASSAGE, QUESTION
from tests.workers.service_fixtures import running_service
from workers import client, notices

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_service(tmp_path_factory.mktemp("service")) as state:
        yield state


def _stored_question(engine: Any) -> str:
    with transaction(engine) as db:
        passage_id = questions.upsert_passage(db, text=PASSAGE)
        return questions.create_question(db, owner=OWNER, passage_id=passage_id, question=QUESTION).id


def _own_tcp_ports() -> set[int]:
    """Local ports of this process's TCP sockets (Linux /proc), to tell its connections from other processes'."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _kill_own_subscriptions(admin: redis.Redis) -> int:
    """Close this process's subscribed connections from the server's side (the shared Redis of other test
    sessions and their workers' subscriptions are left alone)."""
    ports = _own_tcp_ports()
    killed = 0
    for entry in admin.client_list(_type="pubsub"):
        port = entry["addr"].rsplit(":", 1)[1]
        if port.isdigit() and int(port) in ports:
            killed += admin.client_kill_filter(_id=entry["id"])
    return killed


def _ask(service: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Store a question, listen, enqueue it and wait (20 s at most); the outcome and the seconds it took."""
    question_id = _stored_question(service["engine"])
    started = time.monotonic()
    with waiting.watching(waiting.QUESTION, question_id) as watch:
        client.enqueue_question(question_id)
        outcome = question_flow.wait(lambda: service["engine"], question_id, timeout=20, watch=watch)
    return outcome, time.monotonic() - started


def test_the_worker_notice_wakes_the_waiter(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "FALLBACK_POLL_S", 60.0)  # only a notice can end the wait before the timeout
    _ask(service)  # the process's first wait starts the listener
    assert notices.listener().subscribed
    outcome, took = _ask(service)
    assert outcome["status"] == "done" and outcome["answer"] == "Oslo"
    assert took < 10


def test_a_chat_reply_is_noticed(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "FALLBACK_POLL_S", 60.0)
    sent, outcome = chat.send_and_wait(lambda: service["engine"], OWNER, None, "hello there", timeout=20)
    assert outcome["status"] == "done" and outcome["text"]
    assert outcome["turn_id"] == sent.reply_turn_id


def test_lost_notices_are_made_up_by_the_slow_read(
    service: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every notice for an id is dropped on the waiter's side (as if Redis had lost them): the answer still
    comes, by the fallback read FALLBACK_POLL_S after the enqueue."""
    _ask(service)
    wake = notices.Listener._wake
    monkeypatch.setattr(
        notices.Listener, "_wake", lambda self, key=None: None if key is not None else wake(self, key)
    )
    monkeypatch.setattr(waiting, "FALLBACK_POLL_S", 1.0)
    outcome, took = _ask(service)
    assert outcome["status"] == "done" and outcome["answer"] == "Oslo"
    assert 0.9 <= took < 10  # the answer was stored within milliseconds; only the slow read found it


def test_a_dropped_subscription_does_not_hang_the_waiter(
    service: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener's connection killed by Redis: waiters poll meanwhile, and it subscribes again."""
    monkeypatch.setattr(waiting, "FALLBACK_POLL_S", 60.0)
    _ask(service)
    assert _kill_own_subscriptions(redis.Redis.from_url(service["redis_url"])) >= 1
    outcome, took = _ask(service)
    assert outcome["status"] == "done" and took < 15
    deadline = time.monotonic() + 10
    while not notices.listener().subscribed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert notices.listener().subscribed
    outcome, took = _ask(service)
    assert outcome["status"] == "done" and took < 10


def test_a_notice_that_cannot_be_sent_raises_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(notices, "redis_client", lambda: dead)
    notices.publish(notices.QUESTION, "q-1")  # logged; the waiter's slow read finds the answer
