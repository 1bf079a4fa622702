"""The result store that writes a success without reading first, against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery, states

from tests.workers.service_fixtures import redis_for_tests
from workers.celery_app import result_backend_for
from workers.result_backend import BACKEND, StoreOnceRedisBackend


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[StoreOnceRedisBackend]:
    with redis_for_tests(tmp_path) as url:
        app = Celery("s2s-result-backend-test", set_as_current=False)
        app.conf.update(result_backend=result_backend_for(url), result_serializer="json",
                        result_accept_content=["json"], accept_content=["json"])
        store = app.backend
        assert isinstance(store, StoreOnceRedisBackend)
        yield store


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", f"{BACKEND}+redis://127.0.0.1:6379/0"),
        ("rediss://redis.internal:6380/0", "rediss://redis.internal:6380/0"),  # TLS: Celery's own backend
        ("sentinel://sentinel.internal:26379", "sentinel://sentinel.internal:26379"),
    ],
)
def test_only_plain_redis_urls_use_the_store_once_backend(url: str, expected: str) -> None:
    assert result_backend_for(url) == expected


def test_a_success_is_stored_without_reading_the_key_first(
    backend: StoreOnceRedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[object] = []
    read = backend.get
    monkeypatch.setattr(backend, "get", lambda key: reads.append(key) or read(key))
    backend.store_result("task-1", {"status": "done", "answer": "Oslo"}, states.SUCCESS)
    assert reads == []  # no read on the way to the write
    monkeypatch.undo()
    meta = backend.get_task_meta("task-1")
    assert (meta["status"], meta["result"]) == (states.SUCCESS, {"status": "done", "answer": "Oslo"})


def test_a_failure_still_cannot_replace_a_stored_success(backend: StoreOnceRedisBackend) -> None:
    backend.store_result("task-2", {"status": "done"}, states.SUCCESS)
    backend.mark_as_failure("task-2", RuntimeError("a lost duplicate failed late"))
    meta = backend.get_task_meta("task-2")
    assert (meta["status"], meta["result"]) == (states.SUCCESS, {"status": "done"})


def test_a_failure_is_stored_when_there_is_no_success(backend: StoreOnceRedisBackend) -> None:
    backend.mark_as_failure("task-3", RuntimeError("decoder crashed"))
    assert backend.get_task_meta("task-3")["status"] == states.FAILURE
