"""The load benchmark's CI variant (bench/load.py): a few chat users for about 30 s while a batch job runs, on
a real Redis, a real worker with the tiny checkpoint and SQLite; then every message must have exactly one
reply and every item exactly one answer, counted in the database. It asserts the counts, not the speed (the
figures are printed; the long run with 32 users is the benchmark itself)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from settings import get_settings
from tests.workers.conftest import TINY_MODEL

pytestmark = pytest.mark.slow


@pytest.fixture
def restored_environment() -> Iterator[None]:
    saved = {
        key: os.environ.get(key) for key in ("REDIS_URL", "DATABASE_URL", "S2S_OWNER_REQUESTS_PER_MINUTE")
    }
    os.environ["S2S_OWNER_REQUESTS_PER_MINUTE"] = "0"  # simulated users with no think time outpace a person
    get_settings.cache_clear()
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        get_settings.cache_clear()


def test_chat_users_and_a_batch_job_at_once_lose_and_repeat_nothing(restored_environment: None) -> None:
    from bench.load import run_load, service_with_workers

    with service_with_workers(str(TINY_MODEL), workers=1, device="cpu") as service:
        report = run_load(service, users=4, seconds=30, items=300, think_ms=50, drain_s=300)
    print(json.dumps(report))
    assert report["chat_requests"] > 0 and report["chat_refused_before_storing"] == 0
    database = report["database"]
    assert database["messages"] == report["chat_requests"]
    assert database["replies"] == database["messages"] == database["messages_with_one_done_reply"]
    assert database["items"] == {"done": 300} and database["items_with_an_answer"] == 300
    assert database["distinct_item_keys"] == 300
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["exactly_once"]
