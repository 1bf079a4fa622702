"""Two workers, started as the containers start them, share one Redis and one PostgreSQL (marked slow).

The database is a fresh schema in DATABASE_URL's PostgreSQL (skipped when DATABASE_URL names none), migrated
by the migrate service's command; Redis is 127.0.0.1:6379 on an empty database number, else a private one.
A batch job of 40 items submitted with `s2s batch submit` must be answered, and each worker's /metrics must
show that it answered some of them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from storage import batch_jobs
from storage.db import make_engine, transaction
from tests.storage.conftest import empty_database, postgres_url
from tests.workers.conftest import PASSAGE, QUESTION, REPO_ROOT
from tests.workers.service_fixtures import redis_for_tests, service_env, start_worker, stop_worker

pytestmark = [pytest.mark.slow, pytest.mark.db]

ITEMS = 40
ANSWERED = 's2s_worker_requests_total{kind="batch_item",outcome="answered"}'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def s2s(env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if postgres_url() is None:
        pytest.skip(
            "DATABASE_URL does not name a PostgreSQL database (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
    tmp = tmp_path_factory.mktemp("deploy")
    with empty_database("postgresql", tmp) as url, redis_for_tests(tmp) as redis_url:
        database_url = url.render_as_string(hide_password=False)
        base = service_env(
            redis_url,
            database_url,
            S2S_BATCH_CHUNK_SIZE="2",
            S2S_MICROBATCH_MAX_SIZE="4",
            S2S_METRICS_HOST="127.0.0.1",
            S2S_DATA_DIR=str(tmp / "data"),
        )
        migrated = s2s(base, "db", "upgrade")  # what the migrate service runs
        assert migrated.returncode == 0, migrated.stderr[-2000:]
        ports = {"w1": free_port(), "w2": free_port()}
        workers = {}
        try:
            for name, port in ports.items():
                env = dict(base, S2S_METRICS_PORT=str(port))
                workers[name] = start_worker(env, tmp / f"{name}.log", name=f"{name}@%h")
            yield {"env": base, "ports": ports, "database_url": database_url, "tmp": tmp}
        finally:
            for process in workers.values():
                stop_worker(process)


def test_worker_check_reports_ready_workers_only(cluster: dict[str, Any]) -> None:
    assert s2s(cluster["env"], "worker", "--check").returncode == 0
    named = s2s(cluster["env"], "worker", "--check", "--name", "w2@%h")
    assert named.returncode == 0 and "w2@" in named.stdout
    assert s2s(cluster["env"], "worker", "--check", "--name", "nobody@%h").returncode == 1


def test_both_workers_take_work_from_one_job(cluster: dict[str, Any]) -> None:
    before = {name: scrape(port).get(ANSWERED, 0.0) for name, port in cluster["ports"].items()}
    batch_file = cluster["tmp"] / "questions.jsonl"
    batch_file.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": QUESTION, "passage": f"{PASSAGE} Item {i}."}) + "\n"
            for i in range(ITEMS)
        ),
        encoding="utf-8",
    )
    submitted = s2s(cluster["env"], "batch", "submit", str(batch_file))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]

    engine = make_engine(cluster["database_url"])
    try:
        deadline = time.monotonic() + 60
        while True:
            with transaction(engine) as db:
                progress = batch_jobs.job_progress(db, job_id=job_id, owner="cli")
            if progress.pending == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        engine.dispose()
    assert (progress.done, progress.failed, progress.pending) == (ITEMS, 0, 0)

    after = {name: scrape(port) for name, port in cluster["ports"].items()}
    answered = {name: after[name].get(ANSWERED, 0.0) - before[name] for name in after}
    assert sum(answered.values()) == ITEMS
    assert all(count > 0 for count in answered.values()), answered  # both workers took part
    for values in after.values():
        assert values.get("s2s_worker_ready") == 1.0
        assert values.get('s2s_worker_queue_wait_seconds_count{kind="batch_items"}', 0.0) > 0
        assert values.get("s2s_worker_microbatch_size_count", 0.0) > 0
        assert values.get('s2s_queue_depth{queue="batch"}') == 0.0
        assert values.get('s2s_workers_alive{queue="batch"}') == 2.0
