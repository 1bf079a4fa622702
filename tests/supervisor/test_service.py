"""The restart budget of `s2s up`'s supervisor, with real child processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from settings import Settings
from supervisor.service import (
    RESTART_LIMIT,
    RESTART_WINDOW_S,
    Child,
    Service,
    restart_child,
    spawn,
    stop_child,
)


def _service(tmp_path: Path) -> Service:
    service = Service(settings=Settings(S2S_DATA_DIR=str(tmp_path)))
    service.record = {"pid": 0}
    return service


def test_an_exited_child_is_started_again_until_its_restarts_are_used_up(tmp_path: Path) -> None:
    service = _service(tmp_path)
    child = spawn("worker", [sys.executable, "-c", "pass"], env={}, log_dir=tmp_path / "logs")
    service.children.append(child)
    try:
        for restart in range(RESTART_LIMIT):
            exited = service.children[0]
            exited.process.wait(timeout=30)
            assert restart_child(service, exited, now=1000.0 + restart)
            fresh = service.children[0]
            assert fresh is not exited and fresh.process.pid != exited.process.pid
            assert len(fresh.restarts) == restart + 1
            assert json.loads((tmp_path / "service.json").read_text())["children"] == {
                "worker": fresh.process.pid
            }
        service.children[0].process.wait(timeout=30)
        assert not restart_child(service, service.children[0], now=1000.0 + RESTART_LIMIT)
        # restarts older than the window no longer count
        assert restart_child(service, service.children[0], now=1000.0 + RESTART_WINDOW_S + 1)
    finally:
        for child in service.children:
            stop_child(child, grace_s=5)


def test_a_child_without_a_command_is_never_restarted(tmp_path: Path) -> None:
    service = _service(tmp_path)
    redis_like = spawn("redis", [sys.executable, "-c", "pass"], env={}, log_dir=tmp_path / "logs")
    redis_like = Child(
        name="redis", process=redis_like.process, log=redis_like.log
    )  # as start_service builds it
    service.children.append(redis_like)
    redis_like.process.wait(timeout=30)
    assert not restart_child(service, redis_like)
    stop_child(redis_like, grace_s=5)
