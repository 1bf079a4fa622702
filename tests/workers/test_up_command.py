"""`s2s up` with REDIS_URL unset: private Redis, worker, answers, and nothing left running after SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.workers.conftest import PASSAGE, QUESTION, REPO_ROOT, TINY_MODEL
from workers.service_discovery import pid_alive

pytestmark = pytest.mark.slow


def test_up_serves_and_stops_without_stray_processes(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(S2S_DATA_DIR=str(tmp_path), S2S_CHECKPOINT=str(TINY_MODEL), S2S_TORCH_THREADS="1",
               PYTHONPATH=str(REPO_ROOT))
    up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--no-ui"], env=env, cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines: list[str] = []
        assert up.stdout is not None
        # A reader thread, because `s2s up` may print several lines at once and a buffered pipe then holds
        # the rest where select() cannot see them.
        threading.Thread(target=lambda: lines.extend(up.stdout or []), daemon=True).start()
        deadline = time.monotonic() + 90
        while "press Ctrl-C" not in "".join(lines):
            assert time.monotonic() < deadline and up.poll() is None, "".join(lines)
            time.sleep(0.2)
        assert "worker: ready" in "".join(lines)
        info = json.loads((tmp_path / "service.json").read_text())
        assert info["redis_url"].startswith("redis://127.0.0.1:")
        children = list(info["children"].values())

        ask = [sys.executable, "-m", "cli.main", "ask", "--passage", PASSAGE, "--question", QUESTION]
        done = subprocess.run(ask, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "Oslo"

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        assert not (tmp_path / "service.json").exists()
        assert [pid for pid in children if pid_alive(pid)] == []
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def test_killing_up_with_sigkill_takes_its_children_down_too(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(S2S_DATA_DIR=str(tmp_path), S2S_CHECKPOINT=str(TINY_MODEL), S2S_TORCH_THREADS="1",
               PYTHONPATH=str(REPO_ROOT))
    up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--no-ui"], env=env, cwd=REPO_ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while not children:
            assert time.monotonic() < deadline and up.poll() is None
            service_file = tmp_path / "service.json"
            if service_file.exists():
                info = json.loads(service_file.read_text())
                if len(info.get("children", {})) >= 2:  # redis and the worker
                    children = list(info["children"].values())
            time.sleep(0.3)
        up.kill()
        up.wait()
        deadline = time.monotonic() + 30
        while [pid for pid in children if pid_alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.3)
        assert [pid for pid in children if pid_alive(pid)] == []
    finally:
        for pid in children:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_commands_without_a_service_say_how_to_start_one(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(S2S_DATA_DIR=str(tmp_path), PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-m", "cli.main", "ask", "--passage", "p", "--question", "q"],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no service running" in done.stderr and "s2s up" in done.stderr
