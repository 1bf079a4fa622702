"""A worker's death counts only against the requests it was decoding, with a real Redis, worker and SQLite.

The worker runs the tiny model behind the test hooks (workers/runtime.py `_TestHooks`): every model call is
slowed, so most items of a job wait while others decode, and the one item whose question holds POISON ends
the worker whenever its decode starts. The test restarts the worker after each death and also SIGKILLs it
a few times mid-job, as an operator or the OOM killer would.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from settings import get_settings
from storage.db import transaction
from storage.models import ItemStatus, QAJobItem
from tests.workers.service_fixtures import (
    answered_in_log,
    job_progress,
    running_service,
    start_worker,
    stop_worker,
    submit_job,
)

pytestmark = pytest.mark.slow

POISON = "POISON where was Bob born?"
ITEMS = 300
POISON_AT = 20
EXTERNAL_KILLS = 3


@pytest.fixture
def service(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with running_service(
        tmp_path, S2S_TEST_EXIT_ON="POISON", S2S_TEST_DECODE_DELAY_MS="100", S2S_MICROBATCH_MAX_SIZE="8"
    ) as state:
        yield state


def test_only_the_poison_item_fails_however_often_the_worker_dies(service: dict[str, Any]) -> None:
    engine = service["engine"]
    job_id = submit_job(engine, ITEMS, poison={POISON_AT: POISON})
    poison_deaths = kills = 0
    done_at_start = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        progress = job_progress(engine, job_id)
        if progress.pending == 0:
            break
        worker = service["worker"]
        if worker.poll() is not None:  # the poison item's decode ended it
            poison_deaths += 1
        elif kills < EXTERNAL_KILLS and progress.done - done_at_start >= 40 and progress.pending >= 60:
            stop_worker(worker, sig=signal.SIGKILL)  # mid-job, while most items wait for a decode
            kills += 1
        else:
            time.sleep(0.05)
            continue
        service["worker"] = start_worker(service["env"], service["log"])
        done_at_start = job_progress(engine, job_id).done

    progress = job_progress(engine, job_id)
    with transaction(engine) as db:
        rows = db.execute(
            select(QAJobItem.position, QAJobItem.status, QAJobItem.answer, QAJobItem.error)
            .where(QAJobItem.job_id == job_id)
            .order_by(QAJobItem.position)
        ).all()
    failed = {position: error for position, status, _, error in rows if status is ItemStatus.FAILED}
    print(f"poison deaths {poison_deaths}, SIGKILLs {kills}: done {progress.done}, failed {progress.failed}")
    assert kills == EXTERNAL_KILLS, "the job ended before the worker was killed mid-job every time"
    assert poison_deaths == get_settings().max_task_attempts  # the poison input decoded this often, no more
    assert progress.status.value == "done"
    assert list(failed) == [POISON_AT] and "gave up" in (failed[POISON_AT] or "")
    assert all(
        status is ItemStatus.DONE and answer for position, status, answer, _ in rows if position != POISON_AT
    )
    assert progress.done == ITEMS - 1
    # No item stored twice: a task SIGKILLed after its commit never logs its count, so the log may say fewer.
    assert answered_in_log(service["log"]) <= ITEMS - 1
