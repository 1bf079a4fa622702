"""The terminal commands when something is missing or broken: one clear line, and nothing stored that no worker
would ever see. Real processes (`python -m cli.main ...`), a real Redis, real SQLite and PostgreSQL databases;
a fake worker heartbeat stands in for a worker where only its presence matters."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from settings import get_settings
from storage.db import make_engine
from storage.models import QAJob, QAJobItem, Turn
from tests.storage.conftest import empty_database
from tests.workers.conftest import REPO_ROOT
from tests.workers.service_fixtures import redis_for_tests
from workers.heartbeat import HEARTBEAT_PREFIX
from workers.service_discovery import ServiceNotRunning

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.db)]
GOOD_LINE = json.dumps({"id": "a", "question": "Where was Bob born?", "passage": "Bob was born in Oslo."})


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(S2S_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO_ROOT), S2S_REQUEST_TIMEOUT_S="3")
    env.update(extra)
    return env


def _s2s(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_clear_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_for_tests(tmp_path) as url:
        yield url


@pytest.fixture
def fake_worker(redis_url: str) -> str:
    """A heartbeat as a live worker writes it, so `ask` and `chat` go on to store their request."""
    record = {"hostname": "fake@test", "pid": os.getpid(), "queues": ["interactive", "batch"]}
    redis.Redis.from_url(redis_url).set(HEARTBEAT_PREFIX + "fake@test", json.dumps(record), ex=120)
    return redis_url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    (tmp_path / "db").mkdir()
    with empty_database(request.param, tmp_path / "db") as url:
        yield url.render_as_string(hide_password=False)


def _count(database_url: str, model: type) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        engine.dispose()


# --- no service: no default broker, nothing stored ------------------------------------------------------


def test_the_celery_app_has_no_default_broker_to_fall_back_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.celery_app import ServiceCelery

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("S2S_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    app = ServiceCelery("no-service", set_as_current=False)
    try:
        for _ in range(2):  # still refused on a second try: the first did not leave Celery's defaults behind
            with pytest.raises(ServiceNotRunning):
                app.send_task("workers.start_job", args=["job"], queue="batch")
        monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")
        get_settings.cache_clear()
        assert app.conf.broker_url == "redis://127.0.0.1:6379/15"
        assert app.conf.task_acks_late is True
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    "command",
    [
        ["ask", "--passage", "Bob was born in Oslo.", "--question", "Where?"],
        ["chat"],
        ["batch", "submit", "FILE"],
        ["batch", "cancel", "0" * 32],
    ],
)
def test_without_a_service_a_command_fails_in_one_line_before_storing_anything(
    tmp_path: Path, command: list[str]
) -> None:
    batch_file = tmp_path / "batch.jsonl"
    batch_file.write_text(GOOD_LINE + "\n", encoding="utf-8")
    data_dir = tmp_path / "data"
    args = [str(batch_file) if arg == "FILE" else arg for arg in command]
    done = _s2s(_env(data_dir), *args, stdin="hello\n/quit\n", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    line = _one_clear_line(done)
    assert "no service running" in line and "s2s up" in line
    assert not (data_dir / "s2s.sqlite3").exists()  # not even an empty job, nor a schema


def test_a_worker_without_a_service_refuses_to_start(tmp_path: Path) -> None:
    done = _s2s(_env(tmp_path), "worker", "--pool", "solo", timeout=90)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no service running" in done.stderr and "Traceback" not in done.stderr


# --- batch files ---------------------------------------------------------------------------------------


def test_a_batch_file_without_a_valid_line_fails_with_each_reason(tmp_path: Path, redis_url: str) -> None:
    batch_file = tmp_path / "bad.jsonl"
    batch_file.write_text('{"id": "a", "question": ""}\n{oops\n', encoding="utf-8")
    env = _env(tmp_path, REDIS_URL=redis_url)
    done = _s2s(env, "batch", "submit", str(batch_file))
    assert done.returncode != 0, done.stdout + done.stderr
    assert "no valid record" in done.stderr
    assert "line 1: missing or empty 'question'" in done.stderr
    assert "line 2: invalid JSON" in done.stderr
    assert done.stdout == ""  # no job id
    assert (
        not (tmp_path / "s2s.sqlite3").exists() or _count(f"sqlite:///{tmp_path / 's2s.sqlite3'}", QAJob) == 0
    )


def test_a_nul_in_a_batch_question_is_reported_for_its_line_and_the_rest_runs(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    batch_file = tmp_path / "nul.jsonl"
    nul_line = json.dumps({"id": "b", "question": "Where\u0000?", "passage": "Bob was born in Oslo."})
    batch_file.write_text(GOOD_LINE + "\n" + nul_line + "\n", encoding="utf-8")
    done = _s2s(
        _env(tmp_path, REDIS_URL=redis_url, DATABASE_URL=database_url), "batch", "submit", str(batch_file)
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "line 2: question contains a NUL character" in done.stderr
    assert _count(database_url, QAJobItem) == 1


# --- chat -----------------------------------------------------------------------------------------------


def test_a_nul_in_a_chat_message_is_refused_in_one_line_and_the_chat_goes_on(
    tmp_path: Path, fake_worker: str, database_url: str
) -> None:
    env = _env(tmp_path, REDIS_URL=fake_worker, DATABASE_URL=database_url)
    done = _s2s(env, "chat", stdin="he\x00llo\n/quit\n")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "message contains a NUL character (U+0000) at position 3" in done.stderr
    assert _count(database_url, Turn) == 0


# --- Redis or the database not answering ---------------------------------------------------------------


def test_ask_with_a_stalled_redis_says_so_in_one_line(tmp_path: Path) -> None:
    # A socket that is listening but never accepted: connections complete and then nothing ever answers,
    # which is what a stopped (SIGSTOP) redis-server looks like to a client.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stalled:
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(16)
        port = stalled.getsockname()[1]
        started = time.monotonic()
        done = _s2s(
            _env(tmp_path, REDIS_URL=f"redis://127.0.0.1:{port}/0"),
            "ask",
            "--passage",
            "Bob was born in Oslo.",
            "--question",
            "Where?",
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert "Redis is not answering" in _one_clear_line(done)
    assert time.monotonic() - started < 45


def test_ask_with_an_unreachable_database_says_so_in_one_line(tmp_path: Path, fake_worker: str) -> None:
    env = _env(tmp_path, REDIS_URL=fake_worker, DATABASE_URL="postgresql://postgres@127.0.0.1:1/test")
    done = _s2s(env, "ask", "--passage", "Bob was born in Oslo.", "--question", "Where?")
    assert done.returncode == 2, done.stderr
    assert "the database is not answering" in _one_clear_line(done)


@pytest.mark.slow
def test_ask_while_the_sqlite_file_is_locked_says_so_in_one_line(tmp_path: Path, fake_worker: str) -> None:
    env = _env(tmp_path, REDIS_URL=fake_worker)
    first = _s2s(env, "batch", "status", "0" * 32)  # creates the schema; the job is not found
    assert first.returncode == 2, first.stderr
    holder = sqlite3.connect(tmp_path / "s2s.sqlite3", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(60, holder.rollback)  # storage waits 30 s for a lock before it gives up
    released.start()
    try:
        done = _s2s(env, "ask", "--passage", "Bob was born in Oslo.", "--question", "Where?")
    finally:
        released.cancel()
        holder.rollback()
        holder.close()
    assert done.returncode == 2, done.stderr
    line = _one_clear_line(done)
    assert "the database is not answering" in line and "locked" in line
